"""Latency benchmarks: measured search time and index memory per (width, precision, index), and scaling fits.

Every row is measured on this machine with FAISS and records the faiss version, threads and batch size,
and the machine's measured read bandwidth and last-level cache (the floor and the knee of a scan's cost).
Corpus sizes beyond the real corpus are reached with rows drawn from a mixture fitted to the data
(``sample_mixture_corpus``; ``enlarge_corpus``'s noisy copies of real rows are kept for comparisons); the
row's details say so. Approximate indexes (HNSW, IVF) are measured at the smallest efSearch / nprobe whose
recall@10 against exact search meets ``RECALL_FLOOR``, and the row carries that recall. Indexes come from
``mrl_core.indexes``; the p50/p95 scaling fits of a run (``mrl_core.scaling``) go into its summary.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import faiss
import numpy as np

from mrl_core.dataset import RetrievalDataset
from mrl_core.encode import DatasetEmbeddings
from mrl_core.evaluate import RESCORE_MULTIPLIER, rescore_shortlist
from mrl_core.indexes import (
    APPROXIMATE_INDEX_TYPES,
    BENCH_INDEX_TYPES,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    MEASURED_PRECISIONS,
    binary_codes,
    build_index,
    default_ivf_nlist,
    index_bytes_per_vector,
    measured_bytes_per_vector,
    measured_pairs,
    search_threads,
)
from mrl_core.metrics import fidelity_at_k
from mrl_core.progress import Progress
from mrl_core.scaling import fit_latency
from mrl_core.widths import PRECISIONS, normalise_rows, renormalised_prefix

BENCH_WIDTHS = (384, 128, 64, 32)
"""Prefix widths measured when none are given: full MiniLM width and the usual Matryoshka cuts below it."""
DATASET_BENCH_CORPUS_SIZES = (10_000, 30_000, 100_000, 1_000_000)
"""Sizes ``bench_dataset`` measures at. 10,000-100,000 fit or nearly fit in the last-level cache and give the
fixed cost; 1,000,000 rows of 384 fp32 (1.5 GB) are far past it, where a scan runs at memory speed, so a
plan for 1M is measured, not projected, and larger plans extend the line through 100,000 and 1,000,000,
with its error held out at 1,000,000. Projections from 10k-100k alone were off by 72 % here."""
DATASET_BENCH_APPROXIMATE_WIDTHS: dict[int, int | None] = {384: 100_000, 128: None}
"""Widths ``bench_dataset`` builds HNSW and IVF at -> the largest corpus size it builds them at (None: every
size): 128, a common Matryoshka cut, at every size up to 1M; the base model's full width (the standard index
a user would pick instead of a funnel) up to 100,000, since a 1M-row HNSW over 384 dimensions takes minutes
more on 2 cores; its 1M latency is projected (log n) with its held-out error. Other widths' HNSW/IVF
candidates say no latency measured."""
DATASET_BENCH_QUERY_COUNT = 50
"""Single queries ``bench_dataset`` times per configuration, half ``run_bench``'s default: 50 samples still
leave two and a half above the p95."""
RECALL_FLOOR = 0.99
"""recall@10 against exact search an approximate index must reach: the bench times HNSW and IVF at the
smallest efSearch / nprobe that reaches it on the timed queries (the funnel tuner's default target too)."""
HNSW_EF_SEARCH_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
IVF_NPROBE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
"""Search parameters tried in order until the recall floor is met (nprobe values above the list count are skipped)."""
ENLARGEMENT_CLUSTERS = 64
"""Mixture components of the rows that enlarge a corpus (``sample_mixture_corpus``), at most."""
ENLARGEMENT_ROWS_PER_CLUSTER = 8
"""Real rows per mixture component at least, so the pooled within-cluster covariance has residuals to pool:
with one row per cluster it is zero and every synthetic row is a copy of a real one."""


def enlargement_cluster_count(real_rows: int, most: int = ENLARGEMENT_CLUSTERS) -> int:
    """Mixture components for enlarging a corpus of ``real_rows``: ``most``, fewer on a small corpus.

    Example:
        >>> enlargement_cluster_count(1_002), enlargement_cluster_count(200)
        (64, 25)
    """
    return max(1, min(most, real_rows // ENLARGEMENT_ROWS_PER_CLUSTER))
THROUGHPUT_BUDGET_S = 1.0
"""The batched throughput run stops after its first batch once it has run this long: at 1M rows an SQ scan
of a 64-query batch takes seconds, and one batch measures throughput as well as two."""
READ_PROBE_BYTES = 256 * 2**20
"""Array read to measure memory bandwidth: eight times this machine's 32 MB last-level cache, so the read
comes from memory."""


def read_bandwidth_bytes_per_s(probe_bytes: int = READ_PROBE_BYTES, repeats: int = 5) -> float:
    """Single-thread sequential read bandwidth of this machine's memory: the fastest of ``repeats`` passes of
    ``np.max`` over ``probe_bytes`` of float32. No single-query scan can read its codes faster, so
    ``bytes scanned / this`` is a floor under any projected scan latency."""
    array = np.ones(max(1, probe_bytes // 4), dtype=np.float32)
    fastest = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        array.max()
        fastest = min(fastest, time.perf_counter() - start)
    return array.nbytes / fastest


def last_level_cache_bytes() -> int | None:
    """Size of this CPU's largest cache, read from Linux's sysfs (None where it is not exposed)."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        try:
            sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
        except (ValueError, IndexError):
            continue
    return max(sizes) if sizes else None


def machine_facts() -> dict:
    """What a scan's cost depends on besides the index: memory read bandwidth (measured) and last-level cache."""
    return {
        "read_bytes_per_s": read_bandwidth_bytes_per_s(),
        "last_level_cache_bytes": last_level_cache_bytes(),
        "cpu_count": os.cpu_count(),
    }


def enlarge_corpus(embeddings: np.ndarray, corpus_size: int, *, noise_scale: float = 0.5, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Grow (or subsample) a unit-norm corpus to ``corpus_size`` rows.

    Beyond the real size, the real rows come first and unchanged; each extra row is a real row drawn at
    random plus gaussian noise whose per-coordinate standard deviation is ``noise_scale`` times the real
    corpus's, renormalised. Scaling the noise per coordinate keeps a Matryoshka model's falling variance
    across coordinates, so prefixes stay as informative as in the real data. Below the real size a random
    subset of rows is kept.

    Returns:
        (matrix, details): the (corpus_size, width) float32 matrix and a dict saying how it was made.
    """
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    real_rows, width = embeddings.shape
    if corpus_size < 1:
        raise ValueError(f"corpus_size={corpus_size}: expected a positive number of rows")
    rng = np.random.default_rng(seed)
    if corpus_size <= real_rows:
        keep = np.sort(rng.choice(real_rows, corpus_size, replace=False))
        return embeddings[keep], {"enlarged": False, "real_rows": corpus_size, "synthetic_rows": 0, "seed": seed}
    matrix = np.empty((corpus_size, width), dtype=np.float32)
    matrix[:real_rows] = embeddings
    coordinate_std = embeddings.std(axis=0).astype(np.float32)
    chunk_rows = 65536
    for start in range(real_rows, corpus_size, chunk_rows):
        stop = min(start + chunk_rows, corpus_size)
        block = embeddings[rng.integers(0, real_rows, stop - start)]
        block = block + rng.standard_normal(block.shape, dtype=np.float32) * (noise_scale * coordinate_std)
        matrix[start:stop] = normalise_rows(block)
    details = {
        "enlarged": True,
        "real_rows": real_rows,
        "synthetic_rows": corpus_size - real_rows,
        "noise_scale": noise_scale,
        "seed": seed,
        "method": "real rows first; extra rows = random real row + N(0, (noise_scale * per-coordinate std)^2), renormalised",
    }
    return matrix, details


def sample_mixture_corpus(
    base_embeddings: np.ndarray,
    corpus_size: int,
    *,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    cluster_count: int = 64,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Enlarge a corpus with new vectors drawn from a Gaussian mixture fitted to its base embeddings.

    The base (pre-Matryoshka) embeddings are clustered with k-means; each synthetic row picks a cluster
    in proportion to its size, is drawn from a normal distribution around that cluster's mean with the
    full within-cluster covariance pooled over clusters, is renormalised, and goes through ``transform``
    (e.g. a Matryoshka adaptor's), exactly like a real row. Unlike noisy copies of real rows
    (``enlarge_corpus``), synthetic rows are not near-duplicates of any real row, and since they are
    drawn in the base space they carry the real embeddings' spectrum and the model's Matryoshka
    structure. The covariance is pooled (tied) because a cluster of a few rows cannot estimate a full
    covariance of its own. More clusters give tighter neighbourhoods (as many clusters as rows tends to
    noisy copies again, with noise shaped like the data); ``experiments/funnel_1m.py`` picks the count
    whose synthetic rows' nearest-neighbour similarities match the real rows' at equal density.

    Args:
        base_embeddings: (real_rows, base_width) unit-norm base-model embeddings.
        corpus_size: rows wanted; at or below the real size a random subset of (transformed) real rows.
        transform: maps (rows, base_width) unit-norm base vectors to the corpus space (unit-norm rows);
            None keeps the base space.
        cluster_count: mixture components, 1..real_rows.
        seed: random seed for clustering and sampling.

    Returns:
        (matrix, details): the (corpus_size, width) float32 matrix, real rows first and unchanged apart
        from ``transform``, and a dict saying how it was made.

    Raises:
        ValueError: for a non-positive corpus size or a cluster count outside 1..real_rows.

    Example:
        >>> base = normalise_rows(np.random.default_rng(0).normal(size=(500, 16)))
        >>> corpus, details = sample_mixture_corpus(base, 2_000, cluster_count=8)
        >>> corpus.shape, details["real_rows"], details["synthetic_rows"]
        ((2000, 16), 500, 1500)
        >>> bool(np.allclose(corpus[:500], base))  # real rows first and unchanged (no transform here)
        True
    """
    base_embeddings = np.ascontiguousarray(base_embeddings, dtype=np.float32)
    real_rows, base_width = base_embeddings.shape
    if corpus_size < 1:
        raise ValueError(f"corpus_size={corpus_size}: expected a positive number of rows")
    if not 1 <= cluster_count <= real_rows:
        raise ValueError(f"cluster_count={cluster_count}: expected 1..{real_rows} (the number of real rows)")
    transform = transform or (lambda matrix: matrix)
    rng = np.random.default_rng(seed)
    if corpus_size <= real_rows:
        keep = np.sort(rng.choice(real_rows, corpus_size, replace=False))
        return np.ascontiguousarray(transform(base_embeddings[keep]), dtype=np.float32), {
            "enlarged": False, "real_rows": corpus_size, "synthetic_rows": 0, "seed": seed,
        }
    # A few rows per cluster is intended (see the docstring), so FAISS's minimum-points warning is off.
    kmeans = faiss.Kmeans(base_width, cluster_count, niter=20, seed=seed, min_points_per_centroid=1)
    kmeans.train(base_embeddings)
    assignment = kmeans.index.search(base_embeddings, 1)[1][:, 0]
    cluster_sizes = np.bincount(assignment, minlength=cluster_count)
    means = np.stack([
        base_embeddings[assignment == cluster].mean(axis=0) if size else kmeans.centroids[cluster]
        for cluster, size in enumerate(cluster_sizes)
    ]).astype(np.float64)
    residuals = base_embeddings.astype(np.float64) - means[assignment]
    covariance = residuals.T @ residuals / max(1, real_rows - int(np.count_nonzero(cluster_sizes)))
    # A tiny ridge keeps the Cholesky factor defined when the residuals do not span every direction.
    ridge = 1e-6 * np.trace(covariance) / base_width
    factor = np.linalg.cholesky(covariance + ridge * np.eye(base_width)).astype(np.float32)
    means = means.astype(np.float32)
    weights = cluster_sizes / real_rows

    real = np.ascontiguousarray(transform(base_embeddings), dtype=np.float32)
    matrix = np.empty((corpus_size, real.shape[1]), dtype=np.float32)
    matrix[:real_rows] = real
    chunk_rows = 65536
    for start in range(real_rows, corpus_size, chunk_rows):
        stop = min(start + chunk_rows, corpus_size)
        clusters = rng.choice(cluster_count, stop - start, p=weights)
        block = means[clusters] + rng.standard_normal((stop - start, base_width), dtype=np.float32) @ factor.T
        matrix[start:stop] = transform(normalise_rows(block))
    details = {
        "enlarged": True,
        "real_rows": real_rows,
        "synthetic_rows": corpus_size - real_rows,
        "cluster_count": cluster_count,
        "within_cluster_variance": float(np.trace(covariance)),
        "total_variance": float(base_embeddings.var(axis=0).sum()),
        "seed": seed,
        "method": "real rows first; extra rows drawn in the base space from a k-means Gaussian mixture "
        "(cluster means, pooled full within-cluster covariance), renormalised, then transformed",
    }
    return matrix, details


def index_searcher(
    index, index_type: str, precision: str, *, k: int = 10, hnsw_ef_search: int = HNSW_EF_SEARCH, ivf_nprobe: int = 1
):
    """A function ``search(query_codes, query_floats) -> ids`` running one search on ``index`` as the bench times it.

    ``query_codes`` are what the index compares (sign bits for a binary index, the float prefixes
    otherwise); ``query_floats`` are the renormalised float prefixes, which only ``binary+rescore`` reads:
    it takes a Hamming shortlist of ``RESCORE_MULTIPLIER`` x k and reranks it with
    ``mrl_core.evaluate.rescore_shortlist`` against the index's own bits, as the evaluation does.

    Raises:
        ValueError: for an (index_type, precision) pair the bench does not measure (``MEASURED_PRECISIONS``).
    """
    if precision not in MEASURED_PRECISIONS.get(index_type, ()):
        raise ValueError(
            f"index_type={index_type!r} with precision={precision!r}: the bench measures {MEASURED_PRECISIONS}"
        )
    if precision == "binary+rescore":
        corpus_codes = binary_codes(index)
        shortlist_size = RESCORE_MULTIPLIER * k

        def search(query_codes: np.ndarray, query_floats: np.ndarray) -> np.ndarray:
            _, shortlist = index.search(query_codes, shortlist_size)
            return rescore_shortlist(shortlist, corpus_codes, query_floats, k)

        return search
    if index_type == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(hnsw_ef_search, k))
        return lambda query_codes, query_floats: index.search(query_codes, k, params=params)[1]
    if index_type == "ivf":
        params = faiss.SearchParametersIVF(nprobe=min(ivf_nprobe, index.nlist))
        return lambda query_codes, query_floats: index.search(query_codes, k, params=params)[1]
    return lambda query_codes, query_floats: index.search(query_codes, k)[1]


def time_index(
    index, queries: np.ndarray, index_type: str, precision: str, *, k: int = 10, batch_size: int = 64,
    hnsw_ef_search: int = HNSW_EF_SEARCH, ivf_nprobe: int = 1,
) -> dict:
    """Single-query p50/p95 (one query per call) and batched throughput of one index.

    Query encoding (sign bits for a binary index) happens before the clock starts; ``binary+rescore``'s
    rescoring is inside it.

    Args:
        index: a FAISS index built by ``build_index``.
        queries: (queries, width) renormalised float32 prefixes (binary indexes take their sign bits).
        index_type: of ``BENCH_INDEX_TYPES``.
        precision: of ``MEASURED_PRECISIONS[index_type]``.
        k: results per query.
        batch_size: queries per call in the throughput run: two batches, or one where that one took longer
            than ``THROUGHPUT_BUDGET_S``.
        hnsw_ef_search: HNSW search-time candidate list length.
        ivf_nprobe: IVF lists probed per query.

    Returns:
        {"p50_ms", "p95_ms", "queries_per_s", "query_count", "throughput_query_count"}.
    """
    search = index_searcher(index, index_type, precision, k=k, hnsw_ef_search=hnsw_ef_search, ivf_nprobe=ivf_nprobe)
    floats = np.ascontiguousarray(queries, dtype=np.float32)
    codes = np.packbits(floats > 0, axis=1) if index_type == "binary" else floats
    search(codes[:1], floats[:1])
    single_ms = []
    for row in range(len(codes)):
        start = time.perf_counter()
        search(codes[row : row + 1], floats[row : row + 1])
        single_ms.append((time.perf_counter() - start) * 1000)
    batch_count = max(2, math.ceil(len(codes) / batch_size))
    batch_rows = [np.arange(b * batch_size, (b + 1) * batch_size) % len(codes) for b in range(batch_count)]
    batches = [(np.take(codes, rows, axis=0), np.take(floats, rows, axis=0)) for rows in batch_rows]
    start = time.perf_counter()
    batches_run = 0
    for batch_codes, batch_floats in batches:
        search(batch_codes, batch_floats)
        batches_run += 1
        if time.perf_counter() - start > THROUGHPUT_BUDGET_S:
            break
    elapsed_s = time.perf_counter() - start
    return {
        "p50_ms": float(np.percentile(single_ms, 50)),
        "p95_ms": float(np.percentile(single_ms, 95)),
        "queries_per_s": batches_run * batch_size / elapsed_s,
        "query_count": len(codes),
        "throughput_query_count": batches_run * batch_size,
    }


@dataclass
class BenchResult:
    """Rows written to the ``latency`` table, fits over them, and configurations left out (with why)."""

    run_id: int | None
    rows: list[dict]
    fits: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_bench(
    corpus_embeddings: np.ndarray,
    *,
    widths: Sequence[int] = BENCH_WIDTHS,
    index_types: Sequence[str] = BENCH_INDEX_TYPES,
    precisions: Sequence[str] = PRECISIONS,
    corpus_sizes: Sequence[int] | None = None,
    query_embeddings: np.ndarray | None = None,
    query_count: int = 100,
    batch_size: int = 64,
    k: int = 10,
    threads: int | None = 1,
    hnsw_m: int = HNSW_M,
    hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION,
    approximate_widths: Sequence[int] | Mapping[int, int | None] | None = None,
    recall_floor: float = RECALL_FLOOR,
    cluster_count: int = ENLARGEMENT_CLUSTERS,
    seed: int = 0,
    store=None,
    run_fields: dict | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Measure single-query p50/p95, batched throughput and memory per vector for every configuration.

    HNSW and IVF are built on all cores (their build is not what is timed) and searched at the smallest
    efSearch / nprobe of ``HNSW_EF_SEARCH_GRID`` / ``IVF_NPROBE_GRID`` whose recall@10 against exact search
    at the same width reaches ``recall_floor`` (the largest tried when none does; the row says so).

    Args:
        corpus_embeddings: (documents, full_width) unit-norm matrix (real embeddings).
        widths: prefix widths to measure (above the full width: skipped).
        index_types: of ``BENCH_INDEX_TYPES``; combined with ``precisions`` where FAISS supports the pair.
        precisions: of ``mrl_core.widths.PRECISIONS``.
        corpus_sizes: sizes to measure at; larger than the real corpus means enlarged with rows drawn from
            a mixture fitted to it (see ``sample_mixture_corpus``). None: the real size only.
        query_embeddings: (queries, full_width) real query vectors; None or empty: random corpus rows.
        query_count: single queries timed per configuration (real queries are cycled if fewer).
        batch_size: queries per call for throughput.
        k: results per query.
        threads: FAISS/BLAS threads for the timed searches (None: leave as is; see
            ``indexes.search_threads``); recorded on every row.
        hnsw_m, hnsw_ef_construction: HNSW graph parameters.
        approximate_widths: widths HNSW and IVF are built at (None: every width), or a mapping of those widths
            to the largest corpus size each is built at (None: every size).
        recall_floor: recall@10 against exact search that HNSW and IVF are tuned to reach.
        cluster_count: mixture components of the enlargement rows, at most (see ``enlargement_cluster_count``).
        seed: randomness of the enlargement and of query sampling.
        store: a ``ResultStore``; rows go to its ``latency`` table under one run of kind ``bench``.
        run_fields: extra ``start_run`` fields (model, dataset, fingerprints).
        progress: called as progress(done, total) over configurations.

    Returns:
        A ``BenchResult`` with the rows, the p50/p95 fits (with held-out error) and what was skipped.
    """
    corpus_embeddings = np.ascontiguousarray(corpus_embeddings, dtype=np.float32)
    real_rows, full_width = corpus_embeddings.shape
    configs = measured_pairs(index_types, precisions)
    sizes = sorted({int(size) for size in (corpus_sizes or [real_rows])})
    if sizes[0] < 1:
        raise ValueError(f"corpus_sizes: {sizes[0]} is not a positive number of rows")
    if batch_size < 1 or query_count < 1:
        raise ValueError(f"batch_size={batch_size}, query_count={query_count}: expected positive numbers")
    if not 0 < recall_floor <= 1:
        raise ValueError(f"recall_floor={recall_floor!r}: expected a recall in (0, 1]")
    rng = np.random.default_rng(seed)
    if query_embeddings is not None and len(query_embeddings):
        pool = np.ascontiguousarray(query_embeddings, dtype=np.float32)
        query_source = "dataset queries"
    else:
        pool = corpus_embeddings[rng.choice(real_rows, min(real_rows, query_count), replace=False)]
        query_source = "random corpus rows"
    queries = pool[np.arange(query_count) % len(pool)]
    skipped: list[str] = []
    usable_widths = []
    for width in dict.fromkeys(int(width) for width in widths):
        if not 1 <= width <= full_width:
            skipped.append(f"width {width}: outside 1..{full_width}")
        else:
            usable_widths.append(width)
    if approximate_widths is None:
        approximate_widths = usable_widths
    if not isinstance(approximate_widths, Mapping):
        approximate_widths = dict.fromkeys(approximate_widths)
    approximate_at = {int(width): limit for width, limit in approximate_widths.items()}

    # Queries do not depend on the corpus size, so each width's prefixes serve every size.
    query_prefixes = {width: renormalised_prefix(queries, width) for width in usable_widths}
    machine = machine_facts()
    rows: list[dict] = []
    total = len(sizes) * len(usable_widths) * len(configs)
    done = 0
    with search_threads(threads):
        for corpus_size in sizes:
            corpus, enlarge_details = sample_mixture_corpus(
                corpus_embeddings, corpus_size, cluster_count=enlargement_cluster_count(real_rows, cluster_count), seed=seed
            )
            for width in usable_widths:
                # Rows are unit-norm already: the full width needs no copy (at 4M x 384 each copy is 6 GB).
                prefix = corpus if width == full_width else renormalised_prefix(corpus, width)
                query_prefix = query_prefixes[width]
                exact_ids = None
                for index_type, precision in configs:
                    done += 1
                    reason = None
                    if index_type == "binary" and width % 8:
                        reason = f"{precision} {width}: not a multiple of 8 bits"
                    elif index_type in APPROXIMATE_INDEX_TYPES and width not in approximate_at:
                        reason = f"{index_type} {width}: not among the approximate-index widths {sorted(approximate_at)}"
                    elif index_type in APPROXIMATE_INDEX_TYPES and (approximate_at[width] or corpus_size) < corpus_size:
                        reason = f"{index_type} {width} at {corpus_size}: built up to {approximate_at[width]} rows at this width"
                    if reason:
                        skipped.append(reason)
                    else:
                        if index_type in APPROXIMATE_INDEX_TYPES and exact_ids is None:
                            exact_ids = _exact_neighbours(prefix, query_prefix, k)
                        row = _bench_one(
                            prefix, query_prefix, index_type, precision, k=k, batch_size=batch_size,
                            hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction, exact_ids=exact_ids,
                            recall_floor=recall_floor,
                            details=dict(enlarge_details, query_source=query_source, **machine),
                        )
                        rows.append(row)
                    if progress is not None:
                        progress(done, total)
                del prefix
            del corpus

    fits = [fit.to_dict() for metric in ("p50_ms", "p95_ms") for fit in fit_latency(rows, metric).values()]
    run_id = None
    if store is not None:
        fields = dict(run_fields or {})
        params = dict(fields.pop("params", None) or {})
        params.update(
            widths=usable_widths, configs=[list(config) for config in configs], corpus_sizes=sizes, query_count=query_count,
            batch_size=batch_size, k=k, hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction,
            approximate_widths={str(width): limit for width, limit in sorted(approximate_at.items())},
            recall_floor=recall_floor, cluster_count=cluster_count, seed=seed,
        )
        fields.setdefault("corpus_size", real_rows)
        fields.setdefault("query_count", query_count)
        with store.run("bench", params=params, threads=rows[0]["threads"] if rows else None, **fields) as run_id:
            store.add_rows("latency", run_id, rows)
            store.finish_run(run_id, summary={"fits": fits, "skipped": skipped, "machine": machine})
    return BenchResult(run_id, rows, fits, skipped)


def _exact_neighbours(prefix: np.ndarray, query_prefix: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids of the queries over the prefix rows (inner product), on every core: the recall reference."""
    index = faiss.IndexFlatIP(prefix.shape[1])
    index.add(prefix)
    with search_threads(os.cpu_count()):
        return index.search(query_prefix, k)[1]


def _tune_search_parameter(index, index_type, precision, query_prefix, exact_ids, k, recall_floor) -> tuple[dict, float, bool]:
    """The smallest efSearch (HNSW) or nprobe (IVF) whose recall@k meets the floor: (parameter, recall, met)."""
    if index_type == "hnsw":
        grid = [value for value in HNSW_EF_SEARCH_GRID if value >= k]
        name = "hnsw_ef_search"
    else:
        grid = [value for value in IVF_NPROBE_GRID if value <= index.nlist] or [index.nlist]
        if grid[-1] < index.nlist and index.nlist <= IVF_NPROBE_GRID[-1]:
            grid.append(index.nlist)
        name = "ivf_nprobe"
    recall = 0.0
    for value in grid:
        found = index_searcher(index, index_type, precision, k=k, **{name: value})(query_prefix, query_prefix)
        recall = fidelity_at_k(found, exact_ids, k)
        if recall >= recall_floor:
            return {name: value}, recall, True
    return {name: grid[-1]}, recall, False


def _bench_one(
    prefix, query_prefix, index_type, precision, *, k, batch_size, hnsw_m, hnsw_ef_construction, exact_ids, recall_floor,
    details,
) -> dict:
    width, corpus_size = prefix.shape[1], int(prefix.shape[0])
    approximate = index_type in APPROXIMATE_INDEX_TYPES
    start = time.perf_counter()
    # A graph or k-means build is not what is timed: it gets every core.
    with search_threads(os.cpu_count() if approximate else None):
        index = build_index(prefix, index_type, precision, hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction)
    build_s = time.perf_counter() - start
    search_parameter, recall, recall_met = {}, None, None
    if approximate:
        search_parameter, recall, recall_met = _tune_search_parameter(
            index, index_type, precision, query_prefix, exact_ids, k, recall_floor
        )
    timing = time_index(index, query_prefix, index_type, precision, k=k, batch_size=batch_size, **search_parameter)
    bytes_per_vector = measured_bytes_per_vector(index)
    del index
    return {
        "index_type": index_type,
        "width": width,
        "precision": precision,
        "corpus_size": corpus_size,
        "batch_size": batch_size,
        "threads": faiss.omp_get_max_threads(),
        "faiss_version": faiss.__version__,
        "p50_ms": timing["p50_ms"],
        "p95_ms": timing["p95_ms"],
        "queries_per_s": timing["queries_per_s"],
        "bytes_per_vector": bytes_per_vector,
        "formula_bytes_per_vector": index_bytes_per_vector(width, precision, index_type, hnsw_m=hnsw_m),
        "recall_at_10": recall,
        "details": dict(
            details,
            k=k,
            build_s=build_s,
            single_query_count=timing["query_count"],
            throughput_query_count=timing["throughput_query_count"],
            bytes_measured_by="len(faiss.serialize_index) / ntotal",
            **search_parameter,
            **({"hnsw_m": hnsw_m, "hnsw_ef_construction": hnsw_ef_construction} if index_type == "hnsw" else {}),
            **({"ivf_lists": default_ivf_nlist(corpus_size)} if index_type == "ivf" else {}),
            **({"recall_floor": recall_floor, "recall_met": recall_met, "recall_against": "exact search at the same width"}
               if approximate else {}),
            # The rescore reads the index's own bits, so it adds time but no bytes.
            **({"rescore_shortlist_size": RESCORE_MULTIPLIER * k} if precision == "binary+rescore" else {}),
        ),
    }


def bench_dataset(
    dataset: RetrievalDataset,
    embeddings: DatasetEmbeddings,
    *,
    widths: Sequence[int] = BENCH_WIDTHS,
    corpus_sizes: Sequence[int] | None = None,
    approximate_widths: Sequence[int] | Mapping[int, int | None] | None = None,
    query_count: int = DATASET_BENCH_QUERY_COUNT,
    store=None,
    progress: Progress | None = None,
    **bench_options,
) -> BenchResult:
    """Benchmark latency on a dataset's embeddings, as the app's first start does, recorded against the dataset.

    The run is stored under the dataset's name and fingerprint and the embeddings' model and model
    fingerprint, so the planner finds it next to that dataset's evaluations. The dataset's own queries are
    the timed queries.

    Args:
        dataset: the dataset the embeddings came from.
        embeddings: its full-width embeddings (``mrl_core.encode.embed_dataset``).
        widths: prefix widths to measure.
        corpus_sizes: sizes to measure at (enlarged beyond the real corpus, see ``sample_mixture_corpus``);
            None: ``DATASET_BENCH_CORPUS_SIZES``.
        approximate_widths: widths HNSW and IVF are built at, as in ``run_bench``; None: those of
            ``DATASET_BENCH_APPROXIMATE_WIDTHS`` that are measured, with their size limits (all measured widths
            at every size if none is).
        query_count: single queries timed per configuration.
        store: a ``ResultStore`` for the ``bench`` run; None measures without storing.
        progress: called as progress(done, total) over configurations.
        **bench_options: any other ``run_bench`` argument (index_types, precisions, threads, ...).

    Returns:
        ``run_bench``'s ``BenchResult``.

    """
    if approximate_widths is None:
        approximate_widths = {
            width: limit for width, limit in DATASET_BENCH_APPROXIMATE_WIDTHS.items() if width in widths
        } or list(widths)
    return run_bench(
        embeddings.corpus,
        widths=widths,
        corpus_sizes=DATASET_BENCH_CORPUS_SIZES if corpus_sizes is None else corpus_sizes,
        approximate_widths=approximate_widths,
        query_embeddings=embeddings.queries,
        query_count=query_count,
        store=store,
        run_fields={
            "model": embeddings.model,
            "model_fingerprint": embeddings.model_fingerprint,
            "dataset": dataset.name,
            "dataset_fingerprint": dataset.fingerprint,
        },
        progress=progress,
        **bench_options,
    )
