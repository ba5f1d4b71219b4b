"""Cost model: bytes per vector and per corpus, split RAM vs disk, and latency at a corpus size.

Storage comes from published formulas (no measurement can replace them for a corpus you have not built
yet); latency comes only from the bench rows in the store, measured on this hardware, and is projected
beyond the measured corpus sizes with the bench's scaling fit, which says how far off it was on the data.

Bytes per vector come from ``mrl_core.indexes`` (the FAISS wiki's formulas); on top of them an IVF index
keeps nlist centroids (nlist*d*4 bytes, or nlist*d/8 for binary IVF, whose centroids are bits), and a
``mrl_core.deployment.Deployment`` says which vendor's overhead factor applies, how many replicas there
are, and where a funnel keeps its rescoring vectors. experiments/storage_formula_check.py compares the
formulas with FAISS's serialised sizes.

A corpus whose RAM does not fit one ``Machine`` is split into shards (``plan_shards``), one a machine, and
its latency is one shard's at its own size plus the merge of every shard's results, timed here
(``sharded_latency_at``).

Units: every size is in bytes; ``GB`` is 10**9 bytes (as vendors bill storage). Qdrant's worked example
quotes "5.72 GB" for 6,144,000,000 bytes, which is 5.72 GiB; tests pin both readings.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field, replace

import faiss
import numpy as np
import pandas as pd

from mrl_core.deployment import MAX_CORPUS_SIZE, Deployment, Machine, Vendor
from mrl_core.indexes import (
    BINARY_PRECISIONS,
    FLOAT32_BYTES,
    IndexType,
    code_bytes_per_vector,
    default_ivf_nlist,
    index_bytes_per_vector,
)
from mrl_core.scaling import fit_latency, project_latency_ms, tail_ratio
from mrl_core.widths import Precision

GB = 10**9


def originals_bytes_per_vector(width: int, precision: Precision, vendor: Vendor) -> float:
    """Float32 originals a vendor keeps on disk next to quantized codes (0 for FAISS and float precisions).

    Qdrant quantizes on ingest and keeps the original vectors (on disk in mrl_core's export, which sets
    ``on_disk``), so int8 and binary codes there come with 4*w bytes of disk per vector. Weaviate and
    OpenSearch are costed by their published factors only.
    """
    if vendor == "qdrant" and precision in ("int8", *BINARY_PRECISIONS):
        return float(width * FLOAT32_BYTES)
    return 0.0


@dataclass(frozen=True)
class StorageEstimate:
    """What a configuration costs for a whole corpus, after vendor overhead and replicas.

    ``storage_bytes`` = ``ram_bytes`` + ``disk_bytes``. ``rescore_location`` says where the vectors that
    later funnel stages rescore with were put ('ram' or 'disk'), None for a single-stage index.
    ``breakdown`` holds the pre-overhead bytes of each part for one replica.
    """

    storage_bytes: float
    ram_bytes: float
    disk_bytes: float
    index_bytes_per_vector: float
    rescore_bytes_per_vector: float
    rescore_location: str | None
    vendor: str
    vendor_overhead: float
    replicas: int
    breakdown: dict = field(default_factory=dict)

    @property
    def storage_gb(self) -> float:
        return self.storage_bytes / GB

    @property
    def ram_gb(self) -> float:
        return self.ram_bytes / GB


def check_corpus_size(corpus_size) -> None:
    """Refuse a corpus size that is not a whole number of vectors in [1, ``MAX_CORPUS_SIZE``].

    Example:
        >>> check_corpus_size(10**13)
        Traceback (most recent call last):
        ...
        ValueError: corpus_size=10000000000000: expected at most 1,000,000,000,000 vectors (10**12)
    """
    if isinstance(corpus_size, bool) or not isinstance(corpus_size, (int, np.integer)) or corpus_size < 1:
        raise ValueError(f"corpus_size={corpus_size!r}: expected a positive whole number of vectors")
    if corpus_size > MAX_CORPUS_SIZE:
        raise ValueError(f"corpus_size={corpus_size!r}: expected at most {MAX_CORPUS_SIZE:,} vectors (10**12)")


def _check_inputs(corpus_size: int, deployment: Deployment) -> None:
    check_corpus_size(corpus_size)
    if not isinstance(deployment, Deployment):
        raise ValueError(f"deployment={deployment!r}: expected a mrl_core.deployment.Deployment")


def _index_bytes(
    corpus_size: int, width: int, precision: Precision, index_type: IndexType, deployment: Deployment
) -> tuple[float, float]:
    """(bytes per vector, fixed bytes) of one index before vendor overhead: codes plus links or ids, and
    IVF's centroids."""
    per_vector = index_bytes_per_vector(width, precision, index_type, hnsw_m=deployment.hnsw_m)
    fixed = 0.0
    if index_type == "ivf":
        nlist = deployment.ivf_nlist if deployment.ivf_nlist is not None else default_ivf_nlist(corpus_size)
        # The coarse quantizer holds one centroid per list: float for float codes, bits for bit codes
        # (IndexBinaryIVF clusters in Hamming space).
        centroid_bytes = code_bytes_per_vector(width, "binary") if precision in BINARY_PRECISIONS else width * FLOAT32_BYTES
        fixed = float(nlist * centroid_bytes)
    return per_vector, fixed


def _total(
    corpus_size: int,
    deployment: Deployment,
    *,
    index_bytes_per_vector_: float,
    fixed_bytes: float,
    rescore_bytes_per_vector: float,
    rescore_location: str | None,
    originals_bytes_per_vector_: float,
) -> StorageEstimate:
    index_bytes = index_bytes_per_vector_ * corpus_size
    rescore_bytes = rescore_bytes_per_vector * corpus_size
    metadata_bytes = deployment.metadata_bytes_per_vector * corpus_size
    originals_bytes = originals_bytes_per_vector_ * corpus_size
    factor = deployment.vendor_overhead
    replicas = deployment.replicas
    # The vendor factor covers the engine's own structures around the vectors it indexes; the user's
    # ids/metadata are counted as given. Replicas copy everything.
    ram = (index_bytes + fixed_bytes + (rescore_bytes if rescore_location == "ram" else 0.0)) * factor + metadata_bytes
    disk = ((rescore_bytes if rescore_location == "disk" else 0.0) + originals_bytes) * factor
    return StorageEstimate(
        storage_bytes=(ram + disk) * replicas,
        ram_bytes=ram * replicas,
        disk_bytes=disk * replicas,
        index_bytes_per_vector=index_bytes_per_vector_,
        rescore_bytes_per_vector=rescore_bytes_per_vector,
        rescore_location=rescore_location,
        vendor=deployment.vendor,
        vendor_overhead=factor,
        replicas=replicas,
        breakdown={
            "index_bytes": index_bytes,
            "fixed_bytes": fixed_bytes,
            "rescore_bytes": rescore_bytes,
            "metadata_bytes": metadata_bytes,
            "originals_bytes": originals_bytes,
        },
    )


def estimate_storage(
    corpus_size: int,
    width: int,
    precision: Precision,
    index_type: IndexType,
    deployment: Deployment = Deployment(),
) -> StorageEstimate:
    """Storage of a single-stage index over ``corpus_size`` vectors: the index in RAM, and on disk only the
    originals a vendor keeps beside quantized codes (see ``originals_bytes_per_vector``).

    Args:
        corpus_size: number of vectors.
        width: dimensions kept (the Matryoshka prefix).
        precision: code precision.
        index_type: 'flat', 'hnsw', 'ivf', or 'binary' (flat scan over bit codes).
        deployment: vendor (overhead factor), replicas, metadata bytes per vector, HNSW M and IVF lists.

    Returns:
        A StorageEstimate.

    Example:
        >>> estimate_storage(1_000_000, 1024, "fp32", "flat", Deployment(vendor="qdrant")).storage_bytes
        6144000000.0
    """
    _check_inputs(corpus_size, deployment)
    per_vector, fixed = _index_bytes(corpus_size, width, precision, index_type, deployment)
    return _total(
        corpus_size, deployment, index_bytes_per_vector_=per_vector, fixed_bytes=fixed, rescore_bytes_per_vector=0.0,
        rescore_location=None,
        originals_bytes_per_vector_=originals_bytes_per_vector(width, precision, deployment.vendor),
    )


def rescore_bytes_per_vector(later_stages: list[dict]) -> float:
    """Bytes per vector that the rescoring stages of a funnel read.

    Every later stage reads a prefix of one stored vector per precision, so what must be kept is, for each
    precision used after stage 1, the code of the widest prefix read at that precision.
    """
    widest: dict[str, int] = {}
    for stage in later_stages:
        precision = stage.get("precision", "fp32")
        widest[precision] = max(widest.get(precision, 0), int(stage["width"]))
    return sum(code_bytes_per_vector(width, precision) for precision, width in widest.items())


def estimate_funnel_storage(
    corpus_size: int, stages: list[dict], deployment: Deployment = Deployment()
) -> StorageEstimate:
    """Storage of a funnel: the stage-1 index plus the vectors later stages rescore with.

    Args:
        corpus_size: number of vectors.
        stages: [{width, precision, index_type, shortlist_size}, ...] in search order; stage 1 is the
            index searched first, later stages rescore its shortlist.
        deployment: as in ``estimate_storage``; its ``rescore_location`` says whether the rescoring vectors
            are kept in 'ram' or on 'disk' (read per query).

    Returns:
        A StorageEstimate whose ``rescore_location`` says where the rescoring vectors are.
    """
    _check_inputs(corpus_size, deployment)
    if not stages:
        raise ValueError("stages=[]: a funnel needs at least one stage")
    first = stages[0]
    width, precision = int(first["width"]), first.get("precision", "fp32")
    per_vector, fixed = _index_bytes(corpus_size, width, precision, first.get("index_type", "flat"), deployment)
    return _total(
        corpus_size, deployment, index_bytes_per_vector_=per_vector, fixed_bytes=fixed,
        rescore_bytes_per_vector=rescore_bytes_per_vector(stages[1:]),
        rescore_location=deployment.rescore_location if len(stages) > 1 else None,
        originals_bytes_per_vector_=originals_bytes_per_vector(width, precision, deployment.vendor),
    )


# -- latency ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyEstimate:
    """Latency of one configuration at a corpus size: measured there, or projected from other sizes.

    ``relative_error`` is 0 for a measurement; for a projection it is the scaling fit's holdout error
    (fitted without the largest measured size, then compared with it), None with only two sizes.
    """

    p50_ms: float | None
    p95_ms: float | None
    projected: bool
    relative_error: float | None
    measured_sizes: tuple[int, ...]
    basis: str


def latency_at(rows: pd.DataFrame, corpus_size: int) -> LatencyEstimate:
    """Latency at ``corpus_size`` from one configuration's bench rows.

    ``rows`` has the ``latency`` table's index_type, precision, width, corpus_size, p50_ms and p95_ms. A
    measured size is reported as measured (the last row for it counts); any other size is projected with
    ``mrl_core.scaling.fit_latency`` (bytes scanned for scans, log n for HNSW, sqrt n for IVF) and flagged
    ``projected`` with the fit's holdout error. With one measured size nothing can be projected and the
    estimate is empty (p95_ms None).
    """
    p95_all = rows["p95_ms"].to_numpy(dtype=float)
    rows = rows[np.isfinite(p95_all) & (p95_all > 0)]
    measured_sizes = tuple(sorted(int(size) for size in set(rows["corpus_size"].tolist())))
    if not measured_sizes:
        return LatencyEstimate(None, None, False, None, (), "no latency measured")
    exact = rows[rows["corpus_size"] == corpus_size]
    if not exact.empty:
        last = exact.iloc[-1]
        p50_ms = float(last["p50_ms"]) if pd.notna(last.get("p50_ms")) else None
        return LatencyEstimate(p50_ms, float(last["p95_ms"]), False, 0.0, measured_sizes, f"measured at {corpus_size:,} vectors")
    if len(measured_sizes) < 2:
        return LatencyEstimate(
            None, None, False, None, measured_sizes,
            f"measured only at {measured_sizes[0]:,} vectors; two or more sizes are needed to project to {corpus_size:,}",
        )
    (p95_fit,) = fit_latency(rows, "p95_ms").values()
    with_p50 = rows.dropna(subset=["p50_ms"])
    p50_fits = fit_latency(with_p50, "p50_ms")
    if p50_fits and (with_p50["p50_ms"] > 0).all():
        # p95 = projected p50 x the tail measured at the largest size: two free lines can cross (p95 < p50).
        p50_ms = project_latency_ms(next(iter(p50_fits.values())), corpus_size)
        p95_ms = p50_ms * tail_ratio(with_p50)
    else:
        p50_ms, p95_ms = None, project_latency_ms(p95_fit, corpus_size)
    error = p95_fit.holdout_relative_error
    error_text = (
        "error unknown: two sizes" if error is None
        else f"holdout error {error:.0%} at {p95_fit.holdout_corpus_size:,}"
    )
    scan_fit = next(iter(p50_fits.values()), p95_fit)
    form_text = {
        "linear": "linear in corpus size",
        "log": "a + b ln(corpus size) at its tuned efSearch",
        "sqrt": (
            f"a + b nprobe sqrt(corpus size), nprobe {scan_fit.probes} as tuned at the largest size"
            if scan_fit.probes else "a + b sqrt(corpus size) at its tuned nprobe"
        ),
    }[scan_fit.form]
    if scan_fit.scan_bytes_per_s:
        form_text += f", scanning {scan_fit.scan_bytes_per_s / 1e9:.1f} GB/s"
        if scan_fit.read_bytes_per_s:
            form_text += f" of this machine's {scan_fit.read_bytes_per_s / 1e9:.1f} GB/s read bandwidth"
    return LatencyEstimate(
        p50_ms=p50_ms,
        p95_ms=p95_ms,
        projected=True,
        relative_error=error,
        measured_sizes=measured_sizes,
        basis=(
            f"projected to {corpus_size:,} from sizes {', '.join(f'{size:,}' for size in measured_sizes)} "
            f"({form_text}; {error_text})"
        ),
    )


# -- past one machine ------------------------------------------------------------------------------

MAX_SHARDS = 100_000
"""Most shards a plan may take. The largest clusters vendors describe run thousands of nodes; a plan past
a hundred thousand machines comes from a mistyped machine size, and is refused with the size that fits."""

MERGE_TOP_K = 10
"""Results every shard returns and the merge keeps: the k the planner's quality is measured at (nDCG@10)."""

# A merge takes microseconds: 51 timings give a p95 from more than one sample; the budget keeps a plan of
# 100,000 shards (~2 ms a merge) from timing for long.
MERGE_REPEATS = 51
MERGE_TIME_BUDGET_S = 0.05


@dataclass(frozen=True)
class ShardPlan:
    """How each replica of a corpus is split over machines of one size, and how many machines that takes.

    Each shard holds ``per_shard_corpus_size`` vectors (the last one up to ``shards - 1`` fewer) and the
    index's fixed part: an IVF index's coarse quantizer is trained once on the whole corpus and copied to
    every shard, so its centroids count on each. Each shard runs on its own machine and every query goes to
    all of them at once; replicas copy every shard. Only RAM decides the split: disk-resident parts (a
    funnel's rescoring vectors on disk, Qdrant's originals) are ``disk_bytes_per_shard`` and never count
    against the machine's RAM.
    """

    shards: int
    replicas: int
    corpus_size: int
    per_shard_corpus_size: int
    ram_bytes_per_shard: float
    disk_bytes_per_shard: float
    machine: Machine

    @property
    def machines(self) -> int:
        """Machines in all: shards x replicas."""
        return self.shards * self.replicas


def plan_shards(storage: StorageEstimate, corpus_size: int, machine: Machine) -> ShardPlan:
    """The fewest shards whose RAM fits ``machine``'s usable RAM, for a storage estimate of ``corpus_size`` vectors.

    Per replica, RAM = fixed part + RAM per vector x vectors; a shard of n vectors needs fixed part + RAM per
    vector x n, so shards = ceil(corpus_size / vectors one machine holds): ceil(RAM per replica / usable RAM)
    when there is no fixed part. Machines = shards x replicas.

    Args:
        storage: ``estimate_storage`` or ``estimate_funnel_storage`` for the whole corpus.
        corpus_size: the vectors that estimate was made for.
        machine: the size of each machine (``mrl_core.deployment.Machine``).

    Returns:
        A ShardPlan.

    Raises:
        ValueError: the machine cannot hold one vector plus the fixed part, or would need more than
            ``MAX_SHARDS`` shards; the message gives the machine size that would do.

    Example:
        >>> from mrl_core.deployment import Machine
        >>> plan = plan_shards(estimate_storage(10**9, 384, "fp32", "flat"), 10**9, Machine.from_gb(64, cores=8))
        >>> plan.shards, plan.machines, plan.per_shard_corpus_size
        (35, 35, 28571429)
    """
    check_corpus_size(corpus_size)
    if not isinstance(machine, Machine):
        raise ValueError(f"machine={machine!r}: expected a mrl_core.deployment.Machine")
    ram_per_replica = storage.ram_bytes / storage.replicas
    fixed_ram = storage.breakdown.get("fixed_bytes", 0.0) * storage.vendor_overhead
    ram_per_vector = (ram_per_replica - fixed_ram) / corpus_size
    usable = machine.usable_ram_bytes
    share = f"{usable / GB:.3g} GB usable ({machine.usable_ram_fraction:.0%} of its RAM)"
    smallest_shard = fixed_ram + ram_per_vector
    if smallest_shard > usable:
        raise ValueError(
            f"machine_ram_gb={machine.ram_gb:.4g}: smaller than one shard: {share}, but one vector and the "
            f"index's fixed part (IVF centroids) need {smallest_shard / GB:.3g} GB; expected a machine of at "
            f"least {smallest_shard / machine.usable_ram_fraction / GB:.3g} GB"
        )
    vectors_per_machine = math.floor((usable - fixed_ram) / ram_per_vector) if ram_per_vector > 0 else corpus_size
    shards = max(1, math.ceil(corpus_size / max(1, vectors_per_machine)))
    if shards > MAX_SHARDS:
        needed = (fixed_ram + ram_per_vector * math.ceil(corpus_size / MAX_SHARDS)) / machine.usable_ram_fraction
        raise ValueError(
            f"machine_ram_gb={machine.ram_gb:.4g}: the corpus would need {shards:,} shards ({share} each); "
            f"expected a machine that holds it in at most {MAX_SHARDS:,}: at least {needed / GB:.3g} GB"
        )
    per_shard_corpus_size = math.ceil(corpus_size / shards)
    return ShardPlan(
        shards=shards,
        replicas=storage.replicas,
        corpus_size=int(corpus_size),
        per_shard_corpus_size=per_shard_corpus_size,
        ram_bytes_per_shard=fixed_ram + ram_per_vector * per_shard_corpus_size,
        disk_bytes_per_shard=storage.disk_bytes / storage.replicas / shards,
        machine=machine,
    )


def merge_top_k(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The overall top k of every shard's top k: ``scores`` and ``ids`` are (shards, k), each row best first
    (higher score first); FAISS's ``merge_knn_results``, the merge ``faiss.IndexShards`` runs.

    Example:
        >>> scores = np.array([[0.9, 0.5], [0.8, 0.7]], dtype="float32")
        >>> ids = np.array([[1, 2], [10, 11]], dtype="int64")
        >>> merge_top_k(scores, ids)[1].tolist()
        [1, 10]
    """
    scores = np.ascontiguousarray(scores, dtype="float32")[:, None, :]
    ids = np.ascontiguousarray(ids, dtype="int64")[:, None, :]
    merged_scores, merged_ids = faiss.merge_knn_results(scores, ids, keep_max=True)
    return merged_scores[0], merged_ids[0]


def merge_cost_ms(shards: int, top_k: int = MERGE_TOP_K) -> tuple[float, float]:
    """(p50, p95) milliseconds to merge ``shards`` x ``top_k`` results into one top k, timed on this machine
    with ``merge_top_k`` once per process; (0, 0) for one shard. Moving the results between machines is not
    in it."""
    if shards <= 1:
        return 0.0, 0.0
    return _timed_merge_ms(int(shards), int(top_k))


@functools.cache
def _timed_merge_ms(shards: int, top_k: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    scores = -np.sort(-rng.random((shards, top_k), dtype=np.float32), axis=1)
    ids = np.arange(shards * top_k, dtype=np.int64).reshape(shards, top_k)
    for _ in range(3):
        merge_top_k(scores, ids)
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < MERGE_REPEATS and (len(samples) < 11 or time.perf_counter() - started < MERGE_TIME_BUDGET_S):
        begin = time.perf_counter_ns()
        merge_top_k(scores, ids)
        samples.append((time.perf_counter_ns() - begin) / 1e6)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def sharded_latency_at(rows: pd.DataFrame, plan: ShardPlan, top_k: int = MERGE_TOP_K) -> LatencyEstimate:
    """Latency of a sharded plan: one shard's latency at its own size plus the measured merge of every
    shard's ``top_k``.

    Every shard is searched at once on its own machine, so a query takes one shard's search
    (``latency_at(rows, plan.per_shard_corpus_size)``: measured when that size was benched, projected
    otherwise, with that projection's error) and then the merge (``merge_cost_ms``, measured here). Not
    included: network time between machines, and the wait for the slowest of many shards, whose p95 is
    above one shard's. One shard is ``latency_at(rows, plan.corpus_size)`` unchanged.

    Args:
        rows: one configuration's bench rows, as for ``latency_at``.
        plan: ``plan_shards``'s answer for that configuration.
        top_k: results each shard returns.

    Returns:
        A LatencyEstimate whose p50/p95 include the merge's p50/p95 and whose basis says how it was made.
    """
    if plan.shards == 1:
        return latency_at(rows, plan.corpus_size)
    shard = latency_at(rows, plan.per_shard_corpus_size)
    split = f"{plan.shards:,} shards of {plan.per_shard_corpus_size:,} vectors searched in parallel, one a machine"
    if shard.p95_ms is None:
        return replace(shard, basis=f"{split}: {shard.basis}")
    merge_p50_ms, merge_p95_ms = merge_cost_ms(plan.shards, top_k)
    return replace(
        shard,
        p50_ms=None if shard.p50_ms is None else shard.p50_ms + merge_p50_ms,
        p95_ms=shard.p95_ms + merge_p95_ms,
        basis=(
            f"{split}: {shard.basis}; + merging {plan.shards:,} x {top_k} results, {merge_p95_ms:.3g} ms p95 "
            "measured here (network time not included)"
        ),
    )
