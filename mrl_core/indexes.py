"""One vocabulary of index types x precisions, their bytes per vector, and the FAISS indexes mrl_core builds.

``INDEX_PRECISIONS`` is the one table of which codes each index type holds and what mrl_core does with
each pair: every listed pair is costed (``mrl_core.cost``) and exported (``mrl_core.export``); the bench
measures the pairs marked ``MEASURED``; a funnel's stage 1 searches those marked ``FIRST_STAGE``.
Everything else (the bench's, the tuner's, the planner's, the CLI's and the app's choices) is derived
from it, so adding an index type touches this file.

Storage per vector (FAISS wiki, "Guidelines to choose an index"): Flat 4*d bytes, SQfp16 2*d, SQ8 d,
binary d/8; HNSW adds M*2*4 bytes of links ("The memory usage is (d * 4 + M * 2 * 4) bytes per
vector"); IVF adds an 8-byte id per vector. experiments/storage_formula_check.py compares these with
FAISS's serialised sizes: exact for Flat/SQ/binary/IVF; HNSW serialises ~16 more bytes per vector.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Literal, Sequence, get_args

import faiss
import numpy as np

from mrl_core.widths import PRECISIONS, Precision

IndexType = Literal["flat", "binary", "hnsw", "ivf"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)
"""``flat``: exhaustive scan of float/fp16/int8 codes; ``binary``: exhaustive Hamming scan of sign bits;
``hnsw``: a graph; ``ivf``: inverted lists around k-means centroids."""
APPROXIMATE_INDEX_TYPES: tuple[str, ...] = ("hnsw", "ivf")
"""Index types that do not search every vector: their recall against exact search is measured with their latency."""
BINARY_PRECISIONS: tuple[str, ...] = ("binary", "binary+rescore")
"""Precisions stored as sign bits (``binary+rescore`` reranks its Hamming shortlist with the float query)."""

MEASURED = "measured"
"""The bench builds and times this pair (``mrl_core.bench.run_bench``)."""
FIRST_STAGE = "first_stage"
"""A funnel's stage 1 can search this pair (``mrl_core.funnel``)."""

INDEX_PRECISIONS: dict[str, dict[str, frozenset[str]]] = {
    "flat": {
        "fp32": frozenset({MEASURED, FIRST_STAGE}),
        "fp16": frozenset({MEASURED, FIRST_STAGE}),
        "int8": frozenset({MEASURED, FIRST_STAGE}),
    },
    "binary": {"binary": frozenset({MEASURED, FIRST_STAGE}), "binary+rescore": frozenset({MEASURED})},
    # FAISS also builds HNSW and IVF over SQ codes and bits (IndexHNSWSQ, IndexBinaryHNSW, IndexIVFScalarQuantizer,
    # IndexBinaryIVF): costed and exported, not yet measured here.
    "hnsw": {
        "fp32": frozenset({MEASURED, FIRST_STAGE}),
        "fp16": frozenset(), "int8": frozenset(), "binary": frozenset(), "binary+rescore": frozenset(),
    },
    "ivf": {
        "fp32": frozenset({MEASURED, FIRST_STAGE}),
        "fp16": frozenset(), "int8": frozenset(), "binary": frozenset(), "binary+rescore": frozenset(),
    },
}
"""index type -> precision it can hold -> what mrl_core does with the pair beyond costing and exporting it.
Within an index type the first precision is its default."""


def _with(capability: str) -> dict[str, tuple[str, ...]]:
    table = {
        index_type: tuple(precision for precision, uses in precisions.items() if capability in uses)
        for index_type, precisions in INDEX_PRECISIONS.items()
    }
    return {index_type: precisions for index_type, precisions in table.items() if precisions}


MEASURED_PRECISIONS: dict[str, tuple[str, ...]] = _with(MEASURED)
"""Index type -> the precisions the bench measures on it."""
BENCH_INDEX_TYPES: tuple[str, ...] = tuple(MEASURED_PRECISIONS)
FIRST_STAGE_PRECISIONS: dict[str, tuple[str, ...]] = _with(FIRST_STAGE)
"""Index type -> the precisions a funnel's stage 1 can store (the first is its default); later stages
always rescore in fp32."""
FIRST_STAGE_INDEX_TYPES: tuple[str, ...] = tuple(FIRST_STAGE_PRECISIONS)
FIRST_STAGE_PRECISION_CHOICES: tuple[str, ...] = tuple(
    dict.fromkeys(precision for precisions in FIRST_STAGE_PRECISIONS.values() for precision in precisions)
)

HNSW_M = 32
"""HNSW links per node (FAISS's common choice; storage adds M*2*4 bytes per vector)."""
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
HNSW_MAX_CORPUS_SIZE = 50_000
"""HNSW is not built above this many rows by default: at 1M rows one HNSW32 build takes about a minute
on both cores here (57-65 s in experiments/funnel_1m.py), per width."""
HNSW_LINK_BYTES = 2 * 4
"""FAISS stores 2*M neighbour ids of 4 bytes on level 0."""
IVF_ID_BYTES = 8
"""IVF inverted lists keep an int64 id next to every code."""
IVF_TRAINING_ROWS_PER_LIST = 64
"""k-means for IVF trains on at most this many rows per list (FAISS asks for 39 or more)."""
FLOAT32_BYTES = 4


def _check(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {list(allowed)}")


def check_index_precision(index_type: str, precision: str) -> None:
    """Raise ValueError when an index type cannot hold codes of that precision.

    Example:
        >>> check_index_precision("binary", "fp32")
        Traceback (most recent call last):
        ...
        ValueError: index_type='binary' holds bit codes; precision='fp32' is not one of ['binary', 'binary+rescore']
    """
    _check("index_type", index_type, INDEX_TYPES)
    _check("precision", precision, PRECISIONS)
    if precision in INDEX_PRECISIONS[index_type]:
        return
    if index_type == "binary":
        raise ValueError(
            f"index_type='binary' holds bit codes; precision={precision!r} is not one of {list(BINARY_PRECISIONS)}"
        )
    if index_type == "flat" and precision in BINARY_PRECISIONS:
        raise ValueError(f"precision={precision!r} is searched by index_type='binary' (a flat scan over bits), not 'flat'")
    raise ValueError(
        f"index_type={index_type!r} holds {list(INDEX_PRECISIONS[index_type])}; precision={precision!r} is not one of them"
    )


def index_types_holding(precision: str, index_types: Sequence[str] = INDEX_TYPES) -> list[str]:
    """The index types among ``index_types`` that can hold codes of ``precision``, in table order.

    Example:
        >>> index_types_holding("binary")
        ['binary', 'hnsw', 'ivf']
    """
    return [index_type for index_type in INDEX_TYPES if index_type in index_types and precision in INDEX_PRECISIONS[index_type]]


def measured_pairs(index_types: Sequence[str], precisions: Sequence[str]) -> list[tuple[str, str]]:
    """The (index_type, precision) pairs the bench measures among those asked for, index types in the order given.

    Raises:
        ValueError: for an index type the bench does not build or an unknown precision.

    Example:
        >>> measured_pairs(["flat", "binary"], ["fp32", "binary"])
        [('flat', 'fp32'), ('binary', 'binary')]
    """
    for index_type in index_types:
        if index_type not in BENCH_INDEX_TYPES:
            raise ValueError(f"index_types: {index_type!r} is not one of {list(BENCH_INDEX_TYPES)}")
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ValueError(f"precisions: {precision!r} is not one of {list(PRECISIONS)}")
    return [
        (index_type, precision)
        for index_type in index_types
        for precision in precisions
        if precision in MEASURED_PRECISIONS[index_type]
    ]


# -- bytes per vector ----------------------------------------------------------------------------------
def code_bytes_per_vector(width: int, precision: Precision) -> float:
    """Bytes one vector's code takes: fp32 4*w, fp16 2*w, int8 w, binary ceil(w/8).

    ``binary+rescore`` stores only the bit codes: it rescores the binary shortlist with the float query
    against those same bits, so it needs nothing more.

    Example:
        >>> code_bytes_per_vector(384, "fp32"), code_bytes_per_vector(384, "binary")
        (1536.0, 48.0)
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


def index_bytes_per_vector(width: int, precision: Precision, index_type: IndexType, *, hnsw_m: int = HNSW_M) -> float:
    """Bytes per vector of an index: the code plus HNSW links (M*2*4) or an IVF id (8); no fixed costs.

    Example:
        >>> index_bytes_per_vector(384, "fp32", "hnsw")
        1792.0
    """
    check_index_precision(index_type, precision)
    per_vector = code_bytes_per_vector(width, precision)
    if index_type == "hnsw":
        per_vector += hnsw_m * HNSW_LINK_BYTES
    elif index_type == "ivf":
        per_vector += IVF_ID_BYTES
    return per_vector


def default_ivf_nlist(corpus_size: int) -> int:
    """The FAISS wiki's lower guideline for IVF lists, 4*sqrt(N), at least 1.

    Example:
        >>> default_ivf_nlist(1_000_000)
        4000
    """
    return max(1, int(round(4 * math.sqrt(corpus_size))))


# -- building and searching ------------------------------------------------------------------------------
@contextmanager
def search_threads(threads: int | None) -> Iterator[None]:
    """Inside the block FAISS's OpenMP and numpy's BLAS use ``threads`` threads (None: leave them as they are).

    Single-query timings use one thread by default: a single query's scan runs on one thread anyway,
    and on a shared CPU a second OpenMP thread waiting at a barrier turns p95 into tens of ms of noise.
    """
    if threads is None:
        yield
        return
    if int(threads) < 1:
        raise ValueError(f"threads={threads!r}: expected a positive number")
    from threadpoolctl import threadpool_limits

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        with threadpool_limits(limits=int(threads)):
            yield
    finally:
        faiss.omp_set_num_threads(previous)


class Int8PrefixIndex:
    """Exhaustive inner-product search over int8 codes, scanned by FAISS's direct signed-int8 kernel.

    Each dimension is centred on the middle of its range over the rows and scaled so that the range
    fills -127..127 (per-dimension ranges, as ``ScalarQuantizer.QT_8bit`` and sentence-transformers'
    calibrated int8 use), and the codes are stored as ``QT_8bit_direct_signed``, whose scan needs no
    per-dimension decoding: at 1M x 128 one query takes 4.4 ms against QT_8bit's 9.2 ms here, about
    80 % of this machine's read bandwidth. That kernel reads the query as int8 too, so the query is
    divided by the scales, stretched so its largest entry is 127 and rounded (the stretch is divided
    out of the scores again; the rounding is the second approximation); the centre's share of each
    score, the same for every row, is added back, so scores approximate the float inner product.

    Args:
        rows: (vectors, width) float matrix (renormalised prefixes).
        chunk_rows: rows encoded at a time (bounds the temporary float copy).
    """

    def __init__(self, rows: np.ndarray, chunk_rows: int = 131072):
        rows = np.asarray(rows, dtype=np.float32)
        low, high = rows.min(axis=0), rows.max(axis=0)
        self.centre = ((high + low) / 2).astype(np.float32)
        self.scale = (254.0 / np.maximum(high - low, 1e-12)).astype(np.float32)
        self.index = faiss.IndexScalarQuantizer(
            rows.shape[1], faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT
        )
        for start in range(0, len(rows), chunk_rows):
            block = (rows[start : start + chunk_rows] - self.centre) * self.scale
            self.index.add(np.clip(np.rint(block), -127, 127))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def serialized_bytes(self) -> int:
        return len(faiss.serialize_index(self.index)) + self.centre.nbytes + self.scale.nbytes

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the best ``k`` rows per query, as ``faiss.Index.search`` returns them."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        scaled = queries / self.scale
        peak = np.abs(scaled).max(axis=1, keepdims=True)
        factor = 127.0 / np.where(peak > 0, peak, 1.0)
        scores, ids = self.index.search(np.rint(scaled * factor), k)
        return scores / factor + (queries @ self.centre)[:, None], ids


def build_index(
    prefix: np.ndarray,
    index_type: str,
    precision: str,
    *,
    hnsw_m: int = HNSW_M,
    hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION,
    ivf_lists: int | None = None,
):
    """The FAISS index mrl_core searches for one (index type, precision) over prefix rows, inner product.

    ``flat`` fp32 is ``IndexFlatIP``, fp16 ``QT_fp16`` codes, int8 an ``Int8PrefixIndex``; ``binary``
    (either binary precision) is ``IndexBinaryFlat`` over the rows' sign bits (an unnormalised prefix gives
    the same bits); ``hnsw`` is ``IndexHNSWFlat``; ``ivf`` is ``IndexIVFFlat`` with ``ivf_lists`` lists
    (None: ``default_ivf_nlist``), k-means trained on a fixed sample of ``IVF_TRAINING_ROWS_PER_LIST``
    rows per list.

    Args:
        prefix: (vectors, width) float32 rows, renormalised prefixes except for ``binary``.
        index_type, precision: a pair with ``MEASURED`` or ``FIRST_STAGE`` in ``INDEX_PRECISIONS``.
        hnsw_m, hnsw_ef_construction: HNSW graph parameters.
        ivf_lists: IVF list count (capped at the row count).

    Raises:
        ValueError: for a pair mrl_core does not build, or a binary width that is not whole bytes.
    """
    width = prefix.shape[1]
    if not INDEX_PRECISIONS.get(index_type, {}).get(precision):
        built = {index_type: sorted(set(MEASURED_PRECISIONS.get(index_type, ())) | set(FIRST_STAGE_PRECISIONS.get(index_type, ())))
                 for index_type in INDEX_TYPES}
        raise ValueError(f"index_type={index_type!r} with precision={precision!r}: mrl_core builds {built}")
    if index_type == "binary":
        if width % 8:
            raise ValueError(f"width={width}: a binary index needs a multiple of 8 bits")
        index = faiss.IndexBinaryFlat(width)
        index.add(np.packbits(prefix > 0, axis=1))
        return index
    prefix = np.ascontiguousarray(prefix, dtype=np.float32)
    if precision == "int8":
        return Int8PrefixIndex(prefix)
    if precision == "fp16":
        index = faiss.IndexScalarQuantizer(width, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        index.train(prefix)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(width, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = hnsw_ef_construction
    elif index_type == "ivf":
        rows = len(prefix)
        lists = min(ivf_lists if ivf_lists is not None else default_ivf_nlist(rows), rows)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(width), width, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(rows, min(rows, IVF_TRAINING_ROWS_PER_LIST * lists), replace=False)
        index.cp.min_points_per_centroid = 1
        index.train(prefix[np.sort(sample)])
    else:
        index = faiss.IndexFlatIP(width)
    index.add(prefix)
    return index


def measured_bytes_per_vector(index) -> float:
    """Size of the serialised index divided by its vector count (headers included, negligible at scale)."""
    if isinstance(index, faiss.IndexBinary):
        return len(faiss.serialize_index_binary(index)) / index.ntotal
    if isinstance(index, Int8PrefixIndex):
        return index.serialized_bytes / index.ntotal
    return len(faiss.serialize_index(index)) / index.ntotal


def binary_codes(index) -> np.ndarray:
    """The (vectors, width/8) uint8 sign bits a binary index holds, copied out of it."""
    return faiss.vector_to_array(index.xb).reshape(index.ntotal, index.code_size)
