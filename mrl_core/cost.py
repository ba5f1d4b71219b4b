"""Cost model: bytes per vector and per corpus, split RAM vs disk, and latency at a corpus size.

Storage comes from published formulas (no measurement can replace them for a corpus you have not built
yet); latency comes only from the bench rows in the store, measured on this hardware, and is projected
beyond the measured corpus sizes with the bench's scaling fit, which says how far off it was on the data.

Formula sources:
- FAISS wiki, "Guidelines to choose an index": Flat 4*d bytes, SQfp16 2*d, SQ8 d, binary d/8; HNSW adds
  M*2*4 bytes of links per vector ("The memory usage is (d * 4 + M * 2 * 4) bytes per vector"); IVF adds
  an 8-byte id per vector plus nlist*d*4 bytes of centroids (nlist*d/8 for binary IVF, whose centroids
  are bits). experiments/storage_formula_check.py compares these with FAISS's serialised sizes: exact for
  Flat/SQ/binary/IVF; HNSW serialises ~16 more bytes per vector (levels and offsets) than M*2*4.
- Qdrant capacity planning (https://qdrant.tech/documentation/cloud/capacity-sizing):
  memory_size = number_of_vectors * vector_dimension * 4 bytes * 1.5.
- OpenSearch k-NN index docs (_search-plugins/knn/knn-index.md, "HNSW memory estimation"):
  1.1 * (4 * dimension + 8 * M) bytes/vector.
- Weaviate resource planning (https://weaviate.io/developers/weaviate/concepts/resources):
  "Memory usage = 2x the memory footprint of all vectors"; 1M x 384 float32 -> 3 GB.

Units: every size is in bytes; ``GB`` is 10**9 bytes (as vendors bill storage). Qdrant's worked example
quotes "5.72 GB" for 6,144,000,000 bytes, which is 5.72 GiB; tests pin both readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

from mrl_core.widths import PRECISIONS, Precision

IndexType = Literal["flat", "hnsw", "ivf", "binary"]
Vendor = Literal["faiss", "qdrant", "weaviate", "opensearch"]
Location = Literal["ram", "disk"]

INDEX_TYPES: tuple[str, ...] = get_args(IndexType)
VENDORS: tuple[str, ...] = get_args(Vendor)
LOCATIONS: tuple[str, ...] = get_args(Location)

GB = 10**9
BINARY_PRECISIONS = ("binary", "binary+rescore")
# Vendors' published sizing multipliers on top of the raw index bytes (see module docstring).
VENDOR_OVERHEAD = {"faiss": 1.0, "qdrant": 1.5, "weaviate": 2.0, "opensearch": 1.1}
HNSW_LINK_BYTES = 2 * 4  # FAISS stores 2*M neighbour ids of 4 bytes on level 0
IVF_ID_BYTES = 8  # IVF inverted lists keep an int64 id next to every code
FLOAT32_BYTES = 4


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {list(allowed)}")


def check_index_precision(index_type: str, precision: str) -> None:
    """Raise ValueError when an index cannot hold codes of that precision ('binary' needs binary codes)."""
    _check("index_type", index_type, INDEX_TYPES)
    _check("precision", precision, PRECISIONS)
    if index_type == "binary" and precision not in BINARY_PRECISIONS:
        raise ValueError(
            f"index_type='binary' holds bit codes; precision={precision!r} is not one of {list(BINARY_PRECISIONS)}"
        )
    if index_type == "flat" and precision in BINARY_PRECISIONS:
        raise ValueError(f"precision={precision!r} is searched by index_type='binary' (a flat scan over bits), not 'flat'")


def code_bytes_per_vector(width: int, precision: Precision) -> float:
    """Bytes one vector's code takes: fp32 4*w, fp16 2*w, int8 w, binary ceil(w/8).

    ``binary+rescore`` stores only the bit codes: it rescores the binary shortlist with the float query
    against those same bits, so it needs nothing more.
    """
    _check("precision", precision, PRECISIONS)
    if width < 1:
        raise ValueError(f"width={width!r}: expected a positive number of dimensions")
    if precision == "fp32":
        return 4.0 * width
    if precision == "fp16":
        return 2.0 * width
    if precision == "int8":
        return 1.0 * width
    return float(math.ceil(width / 8))


def default_ivf_nlist(corpus_size: int) -> int:
    """The FAISS wiki's lower guideline for IVF lists, 4*sqrt(N), at least 1."""
    return max(1, int(round(4 * math.sqrt(corpus_size))))


def originals_bytes_per_vector(width: int, precision: Precision, vendor: Vendor) -> float:
    """Float32 originals a vendor keeps on disk next to quantized codes (0 for FAISS and float precisions).

    Qdrant quantizes on ingest and keeps the original vectors (on disk in mrl_core's export, which sets
    ``on_disk``), so int8 and binary codes there come with 4*w bytes of disk per vector. Weaviate and
    OpenSearch are costed by their published factors only.
    """
    if vendor == "qdrant" and precision in ("int8", *BINARY_PRECISIONS):
        return float(width * FLOAT32_BYTES)
    return 0.0


def index_bytes_per_vector(width: int, precision: Precision, index_type: IndexType, *, hnsw_m: int = 32) -> float:
    """Bytes per vector of an index: the code plus HNSW links (M*2*4) or an IVF id (8); no fixed costs."""
    check_index_precision(index_type, precision)
    per_vector = code_bytes_per_vector(width, precision)
    if index_type == "hnsw":
        per_vector += hnsw_m * HNSW_LINK_BYTES
    elif index_type == "ivf":
        per_vector += IVF_ID_BYTES
    return per_vector


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


def _total(
    index_bytes: float,
    fixed_bytes: float,
    rescore_bytes: float,
    rescore_location: str | None,
    metadata_bytes: float,
    originals_bytes: float,
    *,
    index_bytes_per_vector_: float,
    rescore_bytes_per_vector: float,
    vendor: str,
    replicas: int,
) -> StorageEstimate:
    factor = VENDOR_OVERHEAD[vendor]
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
        vendor=vendor,
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


def _check_common(corpus_size: int, vendor: str, replicas: int, metadata_bytes_per_vector: float) -> None:
    if not isinstance(corpus_size, (int, np.integer)) or corpus_size < 1:
        raise ValueError(f"corpus_size={corpus_size!r}: expected a positive whole number of vectors")
    _check("vendor", vendor, VENDORS)
    if not isinstance(replicas, (int, np.integer)) or replicas < 1:
        raise ValueError(f"replicas={replicas!r}: expected a whole number >= 1")
    if metadata_bytes_per_vector < 0:
        raise ValueError(f"metadata_bytes_per_vector={metadata_bytes_per_vector!r}: expected >= 0")


def estimate_storage(
    corpus_size: int,
    width: int,
    precision: Precision,
    index_type: IndexType,
    *,
    hnsw_m: int = 32,
    ivf_nlist: int | None = None,
    metadata_bytes_per_vector: float = 0.0,
    vendor: Vendor = "faiss",
    replicas: int = 1,
) -> StorageEstimate:
    """Storage of a single-stage index over ``corpus_size`` vectors: the index in RAM, and on disk only the
    originals a vendor keeps beside quantized codes (see ``originals_bytes_per_vector``).

    Args:
        corpus_size: number of vectors.
        width: dimensions kept (the Matryoshka prefix).
        precision: code precision.
        index_type: 'flat', 'hnsw', 'ivf', or 'binary' (flat scan over bit codes).
        hnsw_m: HNSW links per vector (M).
        ivf_nlist: IVF lists; None uses the FAISS guideline 4*sqrt(corpus_size).
        metadata_bytes_per_vector: ids/metadata the application keeps per vector.
        vendor: applies the vendor's overhead factor.
        replicas: copies of everything.

    Returns:
        A StorageEstimate.

    Example:
        >>> estimate_storage(1_000_000, 1024, "fp32", "flat", vendor="qdrant").storage_bytes
        6144000000.0
    """
    _check_common(corpus_size, vendor, replicas, metadata_bytes_per_vector)
    per_vector = index_bytes_per_vector(width, precision, index_type, hnsw_m=hnsw_m)
    fixed = 0.0
    if index_type == "ivf":
        nlist = ivf_nlist if ivf_nlist is not None else default_ivf_nlist(corpus_size)
        # The coarse quantizer holds one centroid per list: float for float codes, bits for bit codes
        # (IndexBinaryIVF clusters in Hamming space).
        centroid_bytes = code_bytes_per_vector(width, "binary") if precision in BINARY_PRECISIONS else width * FLOAT32_BYTES
        fixed = float(nlist * centroid_bytes)
    return _total(
        per_vector * corpus_size, fixed, 0.0, None, metadata_bytes_per_vector * corpus_size,
        originals_bytes_per_vector(width, precision, vendor) * corpus_size,
        index_bytes_per_vector_=per_vector, rescore_bytes_per_vector=0.0, vendor=vendor, replicas=replicas,
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
    corpus_size: int,
    stages: list[dict],
    *,
    rescore_location: Location = "ram",
    hnsw_m: int = 32,
    ivf_nlist: int | None = None,
    metadata_bytes_per_vector: float = 0.0,
    vendor: Vendor = "faiss",
    replicas: int = 1,
) -> StorageEstimate:
    """Storage of a funnel: the stage-1 index plus the vectors later stages rescore with.

    Args:
        corpus_size: number of vectors.
        stages: [{width, precision, index_type, shortlist_size}, ...] in search order; stage 1 is the
            index searched first, later stages rescore its shortlist.
        rescore_location: keep the rescoring vectors in 'ram' or on 'disk' (read per query).
        hnsw_m, ivf_nlist, metadata_bytes_per_vector, vendor, replicas: as in ``estimate_storage``.

    Returns:
        A StorageEstimate whose ``rescore_location`` says where the rescoring vectors are.
    """
    _check_common(corpus_size, vendor, replicas, metadata_bytes_per_vector)
    _check("rescore_location", rescore_location, LOCATIONS)
    if not stages:
        raise ValueError("stages=[]: a funnel needs at least one stage")
    first = stages[0]
    stage_one = estimate_storage(
        corpus_size, int(first["width"]), first.get("precision", "fp32"), first.get("index_type", "flat"),
        hnsw_m=hnsw_m, ivf_nlist=ivf_nlist,
    )
    rescore_per_vector = rescore_bytes_per_vector(stages[1:])
    return _total(
        stage_one.breakdown["index_bytes"], stage_one.breakdown["fixed_bytes"],
        rescore_per_vector * corpus_size, rescore_location if len(stages) > 1 else None,
        metadata_bytes_per_vector * corpus_size,
        originals_bytes_per_vector(int(first["width"]), first.get("precision", "fp32"), vendor) * corpus_size,
        index_bytes_per_vector_=stage_one.index_bytes_per_vector, rescore_bytes_per_vector=rescore_per_vector,
        vendor=vendor, replicas=replicas,
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
    ``mrl_core.bench.fit_latency`` (linear in corpus size for scans, logarithmic for HNSW) and flagged
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
    from mrl_core.bench import fit_latency, project_latency_ms  # bench builds on cost's formulas

    (p95_fit,) = fit_latency(rows, "p95_ms").values()
    p50_fits = fit_latency(rows.dropna(subset=["p50_ms"]), "p50_ms")
    p50_ms = project_latency_ms(next(iter(p50_fits.values())), corpus_size) if p50_fits else None
    error = p95_fit.holdout_relative_error
    error_text = (
        "error unknown: two sizes" if error is None
        else f"holdout error {error:.0%} at {p95_fit.holdout_corpus_size:,}"
    )
    return LatencyEstimate(
        p50_ms=p50_ms,
        p95_ms=project_latency_ms(p95_fit, corpus_size),
        projected=True,
        relative_error=error,
        measured_sizes=measured_sizes,
        basis=(
            f"projected to {corpus_size:,} from sizes {', '.join(f'{size:,}' for size in measured_sizes)} "
            f"({p95_fit.form} in corpus size; {error_text})"
        ),
    )
