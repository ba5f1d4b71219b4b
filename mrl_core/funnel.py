"""Funnel (adaptive) retrieval: shortlist with a short prefix, rerank with wider prefixes, one stored vector.

A funnel is an ordered list of stages. Stage 1 searches the whole corpus through a FAISS index on the
renormalised prefix of its width: ``flat`` (an exhaustive inner-product scan over fp32 prefixes, what
``IndexFlatIP`` runs, or over fp16 or int8 codes of them), ``binary`` (``IndexBinaryFlat`` over the
prefix's sign bits, Hamming distance), ``hnsw`` (``IndexHNSWFlat``, inner product) or ``ivf``
(``IndexIVFFlat``, inner product over the lists nearest the query). Every later stage rescores only
the previous shortlist with a wider renormalised prefix of the same stored full-width vector (a numpy
gather and matmul); the last stage's shortlist is the answer. Prefix norms come from cumulative sums
of squares, so a later stage never needs a renormalised copy of the corpus.

``FunnelTuner`` measures which funnel is fastest at a target recall@k against exact full-width search.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence, get_args

import faiss
import numpy as np

from mrl_core.cost import default_ivf_nlist
from mrl_core.metrics import fidelity_at_k
from mrl_core.widths import truncate

StageIndexType = Literal["flat", "binary", "hnsw", "ivf"]
STAGE_INDEX_TYPES: tuple[str, ...] = get_args(StageIndexType)
STAGE_PRECISIONS = {"flat": ("fp32", "fp16", "int8"), "binary": ("binary",), "hnsw": ("fp32",), "ivf": ("fp32",)}
"""What each stage-1 index can store (the first is its default); later stages always rescore in fp32."""
STAGE_PRECISION_CHOICES: tuple[str, ...] = tuple(
    dict.fromkeys(precision for allowed in STAGE_PRECISIONS.values() for precision in allowed)
)
BINARY_HEAP_MAX_SHORTLIST = 100
"""Above this shortlist size a binary scan selects by counting Hamming distances instead of a heap
(``IndexBinaryFlat.use_heap = False``): at 1M rows and 384 bits a 10,000-row shortlist costs 3.1 ms
that way and 8.5 ms with the heap, while a 10-row one costs 2.0 ms with the heap and 2.5 ms without."""

MIN_SPEEDUP_OVER_EXACT = 1.1
"""The tuner picks a funnel over exact search only when its retimed p50 is at least this much faster."""
IVF_PROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Lists probed per query that the tuner tries for an IVF stage 1 (those above the list count are skipped)."""
DEFAULT_FIRST_STAGE_WIDTHS = (8, 16, 32, 64, 128, 256, 384)
INTERMEDIATE_WIDTHS = (16, 32, 64, 128, 256)
"""Widths the tuner tries for stages between stage 1 and the full-width last stage."""
REFERENCE_WIDTHS = (16, 32, 64, 128)
REFERENCE_SHORTLISTS = (200, 100, 50, 25)
"""The MRL paper's hand-picked funnel: 16->32->64->128->full with shortlists 200->100->50->25->k."""

Progress = Callable[[int, int], None]
RESCORE_BLOCK_FLOATS = 32 * 2**20
"""Floats gathered per rescore block (128 MB); longer query batches are split into chunks."""
DENSE_RESCORE_RATIO = 8
"""A batch rescore multiplies by the whole corpus instead of gathering rows when the corpus is at most
this many times the shortlist."""


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


# -- funnel description ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FunnelStage:
    """One stage: keep the best ``shortlist_size`` rows scored at ``width`` dimensions.

    ``index_type``, ``precision`` and ``probes`` only matter for stage 1, which searches the whole
    corpus (a flat scan over fp32, fp16 or int8 prefixes, a Hamming scan over sign bits, HNSW over
    fp32, or IVF over fp32 scanning the ``probes`` lists nearest the query); later stages rescore the
    previous shortlist in fp32 and must say ``flat``/``fp32``. ``precision`` defaults to the index
    type's first of ``STAGE_PRECISIONS``; ``probes`` is required for IVF and refused otherwise.
    """

    width: int
    shortlist_size: int
    index_type: StageIndexType = "flat"
    precision: str | None = None
    probes: int | None = None

    def __post_init__(self) -> None:
        if self.index_type not in STAGE_INDEX_TYPES:
            raise ValueError(f"index_type={self.index_type!r}: expected one of {list(STAGE_INDEX_TYPES)}")
        allowed = STAGE_PRECISIONS[self.index_type]
        if self.precision is None:
            object.__setattr__(self, "precision", allowed[0])
        elif self.precision not in allowed:
            raise ValueError(
                f"precision={self.precision!r}: a {self.index_type} stage stores one of {list(allowed)}"
            )
        if int(self.width) < 1:
            raise ValueError(f"width={self.width!r}: expected a positive number of dimensions")
        if int(self.shortlist_size) < 1:
            raise ValueError(f"shortlist_size={self.shortlist_size!r}: expected a positive number of rows")
        if self.index_type == "binary" and self.width % 8:
            raise ValueError(f"width={self.width}: a binary stage needs a multiple of 8 bits")
        if self.index_type == "ivf":
            if self.probes is None or int(self.probes) < 1:
                raise ValueError(f"probes={self.probes!r}: an ivf stage needs a positive number of lists to probe")
            object.__setattr__(self, "probes", int(self.probes))
        elif self.probes is not None:
            raise ValueError(f"probes={self.probes!r}: only an ivf stage probes lists")

    def to_dict(self) -> dict:
        stage = {
            "width": int(self.width),
            "precision": self.precision,
            "index_type": self.index_type,
            "shortlist_size": int(self.shortlist_size),
        }
        if self.probes is not None:
            stage["probes"] = self.probes
        return stage


@dataclass(frozen=True)
class Funnel:
    """Stages in search order; the last stage's ``shortlist_size`` is k, the number of results."""

    stages: tuple[FunnelStage, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("a funnel needs at least one stage")
        for number, stage in enumerate(self.stages[1:], start=2):
            if (stage.index_type, stage.precision) != ("flat", "fp32"):
                raise ValueError(
                    f"stage {number}: index_type={stage.index_type!r}, precision={stage.precision!r}; only "
                    "stage 1 searches an index, later stages rescore the shortlist in fp32 and must be 'flat'"
                )
        for number, (before, after) in enumerate(zip(self.stages, self.stages[1:]), start=2):
            if after.shortlist_size > before.shortlist_size:
                raise ValueError(
                    f"stage {number}: shortlist_size={after.shortlist_size} exceeds the "
                    f"{before.shortlist_size} rows stage {number - 1} passes on"
                )

    @property
    def k(self) -> int:
        return int(self.stages[-1].shortlist_size)

    def to_dicts(self) -> list[dict]:
        return [stage.to_dict() for stage in self.stages]

    @classmethod
    def from_dicts(cls, stages: Sequence[dict]) -> "Funnel":
        """Rebuild a funnel from ``to_dicts()`` output (as stored in the ``funnels`` table)."""
        return cls(
            tuple(
                FunnelStage(
                    int(stage["width"]), int(stage["shortlist_size"]), stage.get("index_type", "flat"),
                    stage.get("precision"), stage.get("probes"),
                )
                for stage in stages
            )
        )

    def describe(self) -> str:
        """E.g. ``binary 128 -> 400 | 384 -> 10`` or ``flat int8 64 -> 2000 | 384 -> 10``."""
        parts = []
        for number, stage in enumerate(self.stages):
            if number:
                label = f"{stage.width}"
            elif stage.precision == STAGE_PRECISIONS[stage.index_type][0]:
                label = f"{stage.index_type} {stage.width}"
            else:
                label = f"{stage.index_type} {stage.precision} {stage.width}"
            if stage.probes is not None:
                label += f" (probe {stage.probes})"
            parts.append(f"{label} -> {stage.shortlist_size}")
        return " | ".join(parts)

    @classmethod
    def exact(cls, full_width: int, k: int = 10) -> "Funnel":
        """One flat stage at full width: exact search."""
        return cls((FunnelStage(full_width, k, "flat"),))

    @classmethod
    def reference(cls, full_width: int, k: int = 10) -> "Funnel":
        """The MRL paper's funnel 16->32->64->128->full, shortlists 200->100->50->25->k."""
        stages = [FunnelStage(w, s) for w, s in zip(REFERENCE_WIDTHS, REFERENCE_SHORTLISTS) if w < full_width]
        return cls(tuple(stages) + (FunnelStage(full_width, k),))


@dataclass
class FunnelResult:
    """Top-k ids and scores per query (-1 / -inf where a stage found fewer rows) and wall time per stage."""

    ids: np.ndarray
    scores: np.ndarray
    stage_ms: list[float]

    @property
    def total_ms(self) -> float:
        return float(sum(self.stage_ms))


# -- prefix arithmetic -------------------------------------------------------------------------------
def prefix_norms(matrix: np.ndarray, widths: Sequence[int] | None = None, chunk_rows: int = 65536) -> np.ndarray:
    """L2 norms of row prefixes at several widths, from one cumulative sum of squares per chunk of rows.

    Args:
        matrix: (rows, full_width) float matrix.
        widths: prefix widths in 1..full_width; None means every width 1..full_width.
        chunk_rows: rows per chunk, which bounds the temporary cumulative-sum matrix.

    Returns:
        (rows, len(widths)) float32 matrix; column j holds ``norm(matrix[:, :widths[j]], axis=1)``.

    Example:
        >>> prefix_norms(np.array([[3.0, 4.0, 12.0]]), [1, 2, 3])
        array([[ 3.,  5., 13.]], dtype=float32)
    """
    full_width = matrix.shape[1]
    columns = list(range(1, full_width + 1)) if widths is None else [int(width) for width in widths]
    for width in columns:
        if not 1 <= width <= full_width:
            raise ValueError(f"width={width}: expected 1..{full_width}")
    picks = np.array(columns) - 1
    norms = np.empty((matrix.shape[0], len(columns)), dtype=np.float32)
    for start in range(0, matrix.shape[0], chunk_rows):
        block = np.asarray(matrix[start : start + chunk_rows], dtype=np.float64)
        norms[start : start + len(block)] = np.sqrt(np.cumsum(block * block, axis=1)[:, picks])
    return norms


def renormalised_prefix(matrix: np.ndarray, width: int, norms: np.ndarray | None = None) -> np.ndarray:
    """The first ``width`` columns of each row divided by their norm (zero rows stay zero), float32.

    ``norms`` are the rows' ``width``-prefix norms when already known (``prefix_norms``); None computes
    them, which is ``mrl_core.widths.truncate``.
    """
    if norms is None:
        return truncate(matrix, width)
    prefix = np.array(matrix[:, :width], dtype=np.float32)
    prefix /= np.where(norms > 0, norms, 1.0)[:, None]
    return prefix


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


def scalar_quantizer_index(prefix: np.ndarray, precision: str):
    """A flat inner-product index over fp16 codes (FAISS ``QT_fp16``) or int8 codes (``Int8PrefixIndex``)
    of ``prefix`` rows."""
    if precision == "int8":
        return Int8PrefixIndex(prefix)
    if precision != "fp16":
        raise ValueError(f"precision={precision!r}: a scalar quantizer stores 'fp16' or 'int8'")
    index = faiss.IndexScalarQuantizer(prefix.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    index.train(prefix)
    index.add(prefix)
    return index


def _query_matrix(queries: np.ndarray, width: int) -> np.ndarray:
    queries = np.atleast_2d(np.ascontiguousarray(queries, dtype=np.float32))
    if queries.shape[1] != width:
        raise ValueError(f"queries have {queries.shape[1]} dimensions; the corpus has {width}")
    return queries


# -- search ------------------------------------------------------------------------------------------
class FunnelSearcher:
    """Searches one corpus of full-width L2-normalised vectors with any funnel.

    Stage-1 indexes and prefix norms are built on first use and kept, so a funnel's timed searches
    measure search only. Call ``prepare(funnel)`` to build them ahead of timing.

    Args:
        corpus: (documents, full_width) float32 matrix of unit-norm rows; kept by reference.
        hnsw_m: neighbours per node of HNSW stage-1 indexes.
        hnsw_ef_construction: build-time candidate list length of HNSW indexes.

    Raises:
        ValueError: if the corpus is empty, not 2-D, or its rows are not unit norm.
    """

    def __init__(
        self, corpus: np.ndarray, *, hnsw_m: int = 32, hnsw_ef_construction: int = 80, ivf_lists: int | None = None
    ):
        corpus = np.ascontiguousarray(corpus, dtype=np.float32)
        if corpus.ndim != 2 or corpus.shape[0] == 0:
            raise ValueError(f"corpus: expected a non-empty (documents, width) matrix, got shape {corpus.shape}")
        self.corpus = corpus
        self.corpus_size, self.width = corpus.shape
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.ivf_lists = ivf_lists if ivf_lists is not None else default_ivf_nlist(self.corpus_size)
        self._norms: dict[int, np.ndarray] = {}
        self._indexes: dict[tuple[str, int], object] = {}
        full_norms = self.norms(self.width)
        worst = float(np.max(np.abs(full_norms - 1.0)))
        if worst > 1e-3:
            raise ValueError(f"corpus rows must be L2-normalised at full width; a row's norm is off by {worst:.3g}")

    def norms(self, width: int) -> np.ndarray:
        """Norms of every row's ``width``-prefix (cached)."""
        self._ensure_norms([width])
        return self._norms[width]

    def _ensure_norms(self, widths: Sequence[int]) -> None:
        missing = sorted({int(width) for width in widths} - set(self._norms))
        if missing:
            # One cumulative-sum pass serves every missing width at once.
            for column, width in zip(prefix_norms(self.corpus, missing).T, missing):
                self._norms[width] = np.ascontiguousarray(column)

    def prepare(self, funnel: Funnel) -> None:
        """Build what ``funnel`` needs (stage-1 index, prefix norms) so that searches time search alone."""
        self._check(funnel)
        self._ensure_norms([stage.width for stage in funnel.stages])
        self._first_stage_index(funnel.stages[0])

    def _check(self, funnel: Funnel) -> None:
        for number, stage in enumerate(funnel.stages, start=1):
            if stage.width > self.width:
                raise ValueError(f"stage {number}: width={stage.width} exceeds the corpus width {self.width}")

    def _first_stage_index(self, stage: FunnelStage):
        key = (stage.index_type, stage.precision, stage.width)
        if key not in self._indexes:
            width = stage.width
            if stage.precision in ("fp16", "int8"):
                index = scalar_quantizer_index(renormalised_prefix(self.corpus, width, self.norms(width)), stage.precision)
            elif stage.index_type == "flat":
                # faiss.knn runs the same exhaustive inner-product scan as IndexFlatIP.search; at full
                # width it scans the corpus itself, so exact search holds no second copy of it.
                index = self.corpus if width == self.width else renormalised_prefix(self.corpus, width, self.norms(width))
            elif stage.index_type == "binary":
                index = faiss.IndexBinaryFlat(width)
                index.add(np.packbits(self.corpus[:, :width] > 0, axis=1))
            elif stage.index_type == "ivf":
                prefix = renormalised_prefix(self.corpus, width, self.norms(width))
                lists = min(self.ivf_lists, self.corpus_size)
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(width), width, lists, faiss.METRIC_INNER_PRODUCT)
                # k-means on at most 64 rows per list (FAISS asks for 39+), a fixed sample.
                sample = np.random.default_rng(0).choice(self.corpus_size, min(self.corpus_size, 64 * lists), replace=False)
                index.cp.min_points_per_centroid = 1
                index.train(prefix[np.sort(sample)])
                index.add(prefix)
            else:
                index = faiss.IndexHNSWFlat(width, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = self.hnsw_ef_construction
                index.add(renormalised_prefix(self.corpus, width, self.norms(width)))
            self._indexes[key] = index
        return self._indexes[key]

    def first_stage(self, queries: np.ndarray, stage: FunnelStage) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1 alone: (ids, scores) of the best ``stage.shortlist_size`` rows per query, best first.

        Scores are cosine at the prefix for fp32 stages (approximate for fp16 and int8 codes) and the
        sign agreement (bits - 2*hamming)/bits for binary ones.
        """
        queries = _query_matrix(queries, self.width)
        index = self._first_stage_index(stage)
        width = stage.width
        shortlist_size = min(stage.shortlist_size, self.corpus_size)
        if stage.index_type == "binary":
            index.use_heap = shortlist_size <= BINARY_HEAP_MAX_SHORTLIST
            distances, ids = index.search(np.packbits(queries[:, :width] > 0, axis=1), shortlist_size)
            return ids, (width - 2.0 * distances.astype(np.float32)) / width
        prefix = renormalised_prefix(queries, width)
        if stage.precision in ("fp16", "int8"):
            scores, ids = index.search(prefix, shortlist_size)
            return ids, scores
        if stage.index_type == "flat":
            scores, ids = faiss.knn(prefix, index, shortlist_size, faiss.METRIC_INNER_PRODUCT)
            return ids, scores
        if stage.index_type == "ivf":
            scores, ids = index.search(prefix, shortlist_size, params=faiss.SearchParametersIVF(nprobe=stage.probes))
            return ids, scores
        # efSearch is the candidate list HNSW keeps; below the shortlist size it could not fill it.
        parameters = faiss.SearchParametersHNSW(efSearch=max(shortlist_size, 16))
        scores, ids = index.search(prefix, shortlist_size, params=parameters)
        return ids, scores

    def rescore(self, queries: np.ndarray, candidate_ids: np.ndarray, stage: FunnelStage) -> tuple[np.ndarray, np.ndarray]:
        """Score each query's candidates at ``stage.width`` (cosine of renormalised prefixes), keep the best.

        Args:
            queries: (queries, full_width) unit-norm matrix.
            candidate_ids: (queries, candidates) corpus row ids; -1 marks an empty slot.
            stage: its width and shortlist size apply.

        Returns:
            (ids, scores), each (queries, min(shortlist_size, candidates)), best first.
        """
        queries = _query_matrix(queries, self.width)
        candidate_ids = np.atleast_2d(candidate_ids)
        # Chunk the queries so the gathered (queries, candidates, width) block stays near 128 MB.
        per_query = max(1, candidate_ids.shape[1] * stage.width)
        chunk = max(1, RESCORE_BLOCK_FLOATS // per_query)
        if len(queries) <= chunk:
            return self._rescore_block(queries, candidate_ids, stage)
        parts = [
            self._rescore_block(queries[start : start + chunk], candidate_ids[start : start + chunk], stage)
            for start in range(0, len(queries), chunk)
        ]
        return np.concatenate([ids for ids, _ in parts]), np.concatenate([scores for _, scores in parts])

    def _rescore_block(self, queries: np.ndarray, candidate_ids: np.ndarray, stage: FunnelStage) -> tuple[np.ndarray, np.ndarray]:
        width = stage.width
        valid = candidate_ids >= 0
        safe_ids = np.where(valid, candidate_ids, 0)
        query_prefix = queries[:, :width]
        if len(queries) > 1 and self.corpus_size <= DENSE_RESCORE_RATIO * candidate_ids.shape[1]:
            # Batches of long shortlists (tuning): one matrix product with the whole corpus is far
            # cheaper than gathering the rows, and gives the same dot products.
            dots = np.take_along_axis(query_prefix @ self.corpus[:, :width].T, safe_ids, axis=1)
        else:
            rows = self.corpus[safe_ids, :width]
            dots = np.matmul(rows, query_prefix[:, :, None])[:, :, 0]
        query_norms = np.linalg.norm(query_prefix, axis=1)
        denominators = self.norms(width)[safe_ids] * query_norms[:, None]
        scores = np.where(valid & (denominators > 0), dots / np.where(denominators > 0, denominators, 1.0), -np.inf)
        keep = min(stage.shortlist_size, scores.shape[1])
        if keep < scores.shape[1]:
            top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        else:
            top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        ids = np.take_along_axis(candidate_ids, top, axis=1)
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        return np.where(np.isfinite(top_scores), ids, -1), top_scores.astype(np.float32)

    def search(self, queries: np.ndarray, funnel: Funnel) -> FunnelResult:
        """Run every stage of ``funnel`` for a batch of queries (one query: a 1-D vector or a 1-row matrix)."""
        self.prepare(funnel)
        queries = _query_matrix(queries, self.width)
        stage_ms = []
        start = time.perf_counter()
        ids, scores = self.first_stage(queries, funnel.stages[0])
        stage_ms.append((time.perf_counter() - start) * 1000)
        for stage in funnel.stages[1:]:
            start = time.perf_counter()
            ids, scores = self.rescore(queries, ids, stage)
            stage_ms.append((time.perf_counter() - start) * 1000)
        return FunnelResult(ids, scores, stage_ms)

    def exact_search(self, queries: np.ndarray, k: int) -> FunnelResult:
        """Exact full-width fp32 inner-product search (the reference every funnel is measured against)."""
        return self.search(queries, Funnel.exact(self.width, k))


# -- timing ------------------------------------------------------------------------------------------
def _percentiles(samples_ms: Sequence[float]) -> tuple[float, float]:
    return float(np.percentile(samples_ms, 50)), float(np.percentile(samples_ms, 95))


def time_funnel(searcher: FunnelSearcher, queries: np.ndarray, funnel: Funnel) -> dict:
    """Single-query latency: each query searched alone (batch size 1), after one warm-up query.

    Returns:
        {"p50_ms", "p95_ms", "stage_p50_ms": [per stage], "query_count"}.
    """
    return time_round_robin(searcher, queries, [funnel], rounds=1)[0]


def time_round_robin(searcher: FunnelSearcher, queries: np.ndarray, funnels: Sequence[Funnel], rounds: int = 3) -> list[dict]:
    """Time several funnels query by query in turn, so a busy spell on a shared CPU hits them all alike."""
    queries = _query_matrix(queries, searcher.width)
    for funnel in funnels:
        searcher.prepare(funnel)
        searcher.search(queries[:1], funnel)
    totals_ms = [[] for _ in funnels]
    stages_ms = [[] for _ in funnels]
    for _ in range(rounds):
        for query in queries:
            for position, funnel in enumerate(funnels):
                start = time.perf_counter()
                result = searcher.search(query[None, :], funnel)
                totals_ms[position].append((time.perf_counter() - start) * 1000)
                stages_ms[position].append(result.stage_ms)
    timings = []
    for totals, stages in zip(totals_ms, stages_ms):
        p50_ms, p95_ms = _percentiles(totals)
        timings.append(
            {
                "p50_ms": p50_ms,
                "p95_ms": p95_ms,
                "stage_p50_ms": [float(value) for value in np.percentile(np.array(stages), 50, axis=0)],
                "query_count": len(totals),
            }
        )
    return timings


# -- tuning ------------------------------------------------------------------------------------------
def shortlist_grid(k: int, max_shortlist_size: int) -> list[int]:
    """Candidate shortlist sizes from k up: k times 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, ... (capped).

    Example:
        >>> shortlist_grid(10, 120)
        [10, 15, 20, 30, 50, 75, 100, 120]
    """
    sizes, scale = [], 1
    while True:
        for step in (1, 1.5, 2, 3, 5, 7.5):
            size = int(round(k * step * scale))
            if size >= max_shortlist_size:
                return sorted(set(sizes + [max_shortlist_size]))
            sizes.append(size)
        scale *= 10


def _smallest_meeting(grid: Sequence[int], recall_of: Callable[[int], float], target: float) -> tuple[int | None, float]:
    """Smallest grid size whose recall meets the target, assuming recall grows with size.

    Galloping from the small end (positions 0, 1, 3, 7, ...) and then bisecting the last gap: the
    large shortlists, which cost the most to evaluate, are only tried when the small ones fall short.
    Returns (size, its recall), or (None, recall at the largest size) when even that falls short.
    """
    checked: dict[int, float] = {}

    def meets(position: int) -> bool:
        if position not in checked:
            checked[position] = recall_of(grid[position])
        return checked[position] >= target

    low, step = 0, 1
    high = 0
    while not meets(high):
        if high == len(grid) - 1:
            return None, checked[high]
        low = high + 1
        high = min(high + step, len(grid) - 1)
        step *= 2
    while low < high:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle + 1
    return grid[high], checked[high]


def pick_fastest(timings: dict[Funnel, dict], exact: Funnel) -> Funnel:
    """The funnel with the lowest p50 in ``timings`` (which include ``exact``'s), or exact search when none
    is ``MIN_SPEEDUP_OVER_EXACT`` times faster: exact always meets the target, and on a small corpus the
    differences are timing noise."""
    best = min(timings, key=lambda funnel: timings[funnel]["p50_ms"])
    if timings[best]["p50_ms"] * MIN_SPEEDUP_OVER_EXACT > timings[exact]["p50_ms"]:
        return exact
    return best


def _pareto_flags(recalls: Sequence[float], latencies_ms: Sequence[float]) -> list[bool]:
    """True where no other config has recall at least as high and latency at most as low (one strictly)."""
    flags = []
    for recall, latency in zip(recalls, latencies_ms):
        dominated = any(
            other_recall >= recall and other_latency <= latency and (other_recall > recall or other_latency < latency)
            for other_recall, other_latency in zip(recalls, latencies_ms)
        )
        flags.append(not dominated)
    return flags


class FunnelTuner:
    """Finds the funnel with the lowest measured single-query p50 latency at a target recall@k.

    Recall is measured against exact full-width fp32 search on the sample queries. The search is
    guided, not exhaustive: for every stage-1 choice (width x index type x precision) a
    galloping-then-bisecting search over a grid of shortlist sizes finds the smallest shortlist that
    meets the target when a full-width stage reranks it; deeper funnels then insert wider intermediate
    stages, each with the smallest shortlist that still meets the target. Every candidate is then timed
    query by query, and the fastest few are timed again in turn with exact search to pick ``best_``
    (exact search itself unless a funnel is ``MIN_SPEEDUP_OVER_EXACT`` times faster). The pick meets the
    target on the sample; on unseen queries its recall can land slightly below (the shortlists are the
    smallest that pass), so tune to a little above the recall you need.

    Args:
        target_recall: recall@k against exact search the pick must reach, in (0, 1].
        k: results per query.
        first_stage_widths: stage-1 widths to try (those above the corpus width are skipped).
        index_types: stage-1 index types to try, of ``STAGE_INDEX_TYPES``.
        precisions: stage-1 precisions to try, where the index type stores them (``STAGE_PRECISIONS``).
        max_stages: most stages in a funnel, 1..4 (the paper's 5-stage funnel is always measured for comparison).
        max_shortlist_size: largest stage-1 shortlist tried.
        latency_query_count: sample queries timed per candidate (the first ones of the sample).
        finalist_count: fastest candidates timed again round robin with exact search.
        finalist_rounds: passes over the latency queries in the final round robin.
        hnsw_m: HNSW neighbours per node.
        hnsw_max_corpus_size: above this corpus size HNSW is skipped (building it costs minutes here).
        hnsw_widths: stage-1 widths HNSW is tried at (None: ``first_stage_widths``); each is one index
            to build, the slow part on a large corpus. Indexes already built in a ``FunnelSearcher``
            passed to ``fit`` (``prepare``, e.g. with more threads) are reused.
        ivf_widths: the same for IVF (``searcher.ivf_lists`` lists, 4*sqrt(N) by default), tried at each
            of ``IVF_PROBES`` lists probed from the fewest up.
        hnsw_max_shortlist_size: largest HNSW stage-1 shortlist (and efSearch) tried.
        include_reference: also measure the MRL paper's funnel.
        threads: FAISS/BLAS threads while fitting (see ``search_threads``); None leaves them as they are.

    Attributes (after ``fit``):
        best_: the chosen ``Funnel``.
        best_timing_: its measured {"p50_ms", "p95_ms", "stage_p50_ms", "query_count"} and recall.
        exact_timing_: the same for exact full-width search, timed alongside the finalists.
        frontier_: one dict per measured config: stages, description, recall_at_10, p50_ms, p95_ms,
            stage_p50_ms, meets_target, on_frontier, chosen, reference.
        skipped_: reasons some stage-1 choices were not tried.
        searcher_: the ``FunnelSearcher`` holding the built indexes.
    """

    def __init__(
        self,
        target_recall: float = 0.99,
        k: int = 10,
        *,
        first_stage_widths: Sequence[int] = DEFAULT_FIRST_STAGE_WIDTHS,
        index_types: Sequence[str] = STAGE_INDEX_TYPES,
        precisions: Sequence[str] = STAGE_PRECISION_CHOICES,
        max_stages: int = 4,
        max_shortlist_size: int = 4000,
        latency_query_count: int = 50,
        finalist_count: int = 3,
        finalist_rounds: int = 3,
        hnsw_m: int = 32,
        hnsw_max_corpus_size: int = 50_000,
        hnsw_max_shortlist_size: int = 1000,
        hnsw_widths: Sequence[int] | None = None,
        ivf_widths: Sequence[int] | None = None,
        include_reference: bool = True,
        threads: int | None = 1,
    ):
        self.target_recall = target_recall
        self.k = k
        self.first_stage_widths = first_stage_widths
        self.index_types = index_types
        self.precisions = precisions
        self.max_stages = max_stages
        self.max_shortlist_size = max_shortlist_size
        self.latency_query_count = latency_query_count
        self.finalist_count = finalist_count
        self.finalist_rounds = finalist_rounds
        self.hnsw_m = hnsw_m
        self.hnsw_max_corpus_size = hnsw_max_corpus_size
        self.hnsw_max_shortlist_size = hnsw_max_shortlist_size
        self.hnsw_widths = hnsw_widths
        self.ivf_widths = ivf_widths
        self.include_reference = include_reference
        self.threads = threads

    def _check_params(self) -> None:
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target_recall={self.target_recall!r}: expected a number in (0, 1]")
        if int(self.k) < 1:
            raise ValueError(f"k={self.k!r}: expected a positive number of results")
        if not 1 <= int(self.max_stages) <= 4:
            raise ValueError(f"max_stages={self.max_stages!r}: expected 1..4")
        for index_type in self.index_types:
            if index_type not in STAGE_INDEX_TYPES:
                raise ValueError(f"index_types: {index_type!r} is not one of {list(STAGE_INDEX_TYPES)}")
        for precision in self.precisions:
            if precision not in STAGE_PRECISION_CHOICES:
                raise ValueError(f"precisions: {precision!r} is not one of {list(STAGE_PRECISION_CHOICES)}")
        if not any(set(STAGE_PRECISIONS[index_type]) & set(self.precisions) for index_type in self.index_types):
            raise ValueError(
                f"index_types={list(self.index_types)} and precisions={list(self.precisions)} leave no stage 1 to try"
            )
        if int(self.max_shortlist_size) < int(self.k):
            raise ValueError(f"max_shortlist_size={self.max_shortlist_size} is below k={self.k}")

    def fit(self, corpus: np.ndarray | FunnelSearcher, sample_queries: np.ndarray, progress: Progress | None = None) -> "FunnelTuner":
        """Search the funnel space on ``corpus`` with ``sample_queries`` and pick the fastest that meets the target.

        Args:
            corpus: (documents, full_width) unit-norm matrix, or a ``FunnelSearcher`` over one (reuses its indexes).
            sample_queries: (queries, full_width) unit-norm matrix; recall is measured on all of them,
                latency on the first ``latency_query_count``.
            progress: called as progress(done, total) over the candidates being timed.

        Returns:
            self, with ``best_``, ``frontier_`` and the other learned attributes set.
        """
        self._check_params()
        with search_threads(self.threads):
            return self._fit(corpus, sample_queries, progress)

    def _fit(self, corpus, sample_queries, progress) -> "FunnelTuner":
        searcher = corpus if isinstance(corpus, FunnelSearcher) else FunnelSearcher(corpus, hnsw_m=self.hnsw_m)
        queries = _query_matrix(sample_queries, searcher.width)
        if len(queries) == 0:
            raise ValueError("sample_queries: expected at least one query")
        full_width, k = searcher.width, int(self.k)
        exact_ids = searcher.exact_search(queries, k).ids
        self.skipped_: list[str] = []
        candidates = self._candidates(searcher, queries, exact_ids)
        reference = Funnel.reference(full_width, k) if self.include_reference else None
        if reference is not None and reference not in candidates:
            candidates[reference] = fidelity_at_k(searcher.search(queries, reference).ids, exact_ids, k)

        latency_queries = queries[: self.latency_query_count]
        measured = []
        for done, (funnel, recall) in enumerate(candidates.items(), start=1):
            timing = time_funnel(searcher, latency_queries, funnel)
            measured.append((funnel, recall, timing))
            if progress is not None:
                progress(done, len(candidates))

        exact = Funnel.exact(full_width, k)
        meeting = sorted(
            (entry for entry in measured if entry[1] >= self.target_recall and entry[0] != exact),
            key=lambda entry: entry[2]["p50_ms"],
        )
        finalists = [entry[0] for entry in meeting[: self.finalist_count]] + [exact]
        final_timings = time_round_robin(searcher, latency_queries, finalists, self.finalist_rounds)
        retimed = dict(zip(finalists, final_timings))
        self.exact_timing_ = dict(retimed[exact], recall_at_10=1.0)
        best = pick_fastest(retimed, exact)

        self.frontier_ = []
        for funnel, recall, timing in measured:
            timing = retimed.get(funnel, timing)
            self.frontier_.append(
                {
                    "stages": funnel.to_dicts(),
                    "description": funnel.describe(),
                    "recall_at_10": recall,
                    "p50_ms": timing["p50_ms"],
                    "p95_ms": timing["p95_ms"],
                    "stage_p50_ms": timing["stage_p50_ms"],
                    "latency_query_count": timing["query_count"],
                    "meets_target": recall >= self.target_recall,
                    "chosen": funnel == best,
                    "reference": funnel == reference,
                    "exact": funnel == exact,
                }
            )
        flags = _pareto_flags([row["recall_at_10"] for row in self.frontier_], [row["p50_ms"] for row in self.frontier_])
        for row, flag in zip(self.frontier_, flags):
            row["on_frontier"] = flag
        self.best_ = best
        best_row = next(row for row in self.frontier_ if row["chosen"])
        self.best_timing_ = dict(retimed[best], recall_at_10=best_row["recall_at_10"])
        self.threads_ = faiss.omp_get_max_threads()
        self.corpus_size_ = searcher.corpus_size
        self.query_count_ = len(queries)
        self.searcher_ = searcher
        return self

    def _candidates(self, searcher: FunnelSearcher, queries: np.ndarray, exact_ids: np.ndarray) -> dict[Funnel, float]:
        """Funnels that meet the target on the sample, each with the recall@k measured while searching.

        Exhaustive stage 1s (flat, binary) are searched once at the largest shortlist and sliced, since
        their top s is the first s of their top max (up to the order of exact ties).
        """
        full_width, k = searcher.width, int(self.k)
        max_shortlist = min(int(self.max_shortlist_size), searcher.corpus_size)
        grid = shortlist_grid(k, max_shortlist)
        last = FunnelStage(full_width, k)
        candidates = {Funnel.exact(full_width, k): 1.0}
        for index_type in self.index_types:
            if index_type == "hnsw" and searcher.corpus_size > self.hnsw_max_corpus_size:
                self.skipped_.append(
                    f"hnsw: corpus of {searcher.corpus_size} rows is above hnsw_max_corpus_size={self.hnsw_max_corpus_size}"
                )
                continue
            for precision in [p for p in STAGE_PRECISIONS[index_type] if p in self.precisions]:
                widths = {"hnsw": self.hnsw_widths, "ivf": self.ivf_widths}.get(index_type) or self.first_stage_widths
                for width in sorted(set(int(w) for w in widths)):
                    if width > full_width or (index_type == "binary" and width % 8):
                        self.skipped_.append(f"{index_type} {width}: not a usable width for a {full_width}-d corpus")
                        continue
                    if (index_type, precision) == ("flat", "fp32") and width == full_width:
                        continue  # that is exact search, already a candidate
                    if index_type == "ivf":
                        candidates.update(self._ivf_candidates(searcher, queries, exact_ids, width, grid, last))
                        continue
                    first = FunnelStage(width, k, index_type, precision)
                    # HNSW's efSearch grows with the shortlist; beyond a few thousand it walks most of the graph.
                    sizes = [size for size in grid if size <= self.hnsw_max_shortlist_size] if index_type == "hnsw" else grid
                    candidates.update(self._candidates_from(searcher, queries, exact_ids, first, sizes, last))
        return candidates

    def _ivf_candidates(self, searcher, queries, exact_ids, width, grid, last) -> dict[Funnel, float]:
        """IVF stage 1s at ``width``: from the fewest lists probed up, until two probe counts have met the
        target (more probes scan more rows and only buy shorter shortlists)."""
        found: dict[Funnel, float] = {}
        meeting = 0
        for probes in [probes for probes in IVF_PROBES if probes <= searcher.ivf_lists]:
            kind = FunnelStage(width, int(self.k), "ivf", "fp32", probes)
            before = len(self.skipped_)
            from_probes = self._candidates_from(searcher, queries, exact_ids, kind, grid, last)
            if from_probes:
                found.update(from_probes)
                meeting += 1
                if meeting == 2:
                    break
            else:
                del self.skipped_[before:]  # fewer probes falling short is the expected start, not news
        if not found:
            self.skipped_.append(f"ivf {width}: recall@{self.k} stays below {self.target_recall} up to "
                                 f"{min(IVF_PROBES[-1], searcher.ivf_lists)} lists probed")
        return found

    def _candidates_from(self, searcher, queries, exact_ids, kind: FunnelStage, grid, last) -> dict[Funnel, float]:
        """Funnels whose stage 1 is ``kind`` (its width, index type and precision; any shortlist size)."""
        k, target = int(self.k), self.target_recall
        width, index_type, precision, probes = kind.width, kind.index_type, kind.precision, kind.probes
        label = Funnel((kind,)).describe().rsplit(" -> ", 1)[0]
        found: dict[Funnel, float] = {}
        if index_type == "hnsw":
            def stage1_ids(size: int) -> np.ndarray:
                return searcher.first_stage(queries, FunnelStage(width, size, index_type, precision))[0]
        else:
            # A scan's top s (of the whole corpus, or of the probed IVF lists) is the first s of its top max:
            # search once, slice after.
            all_ids = searcher.first_stage(queries, FunnelStage(width, grid[-1], index_type, precision, probes))[0]

            def stage1_ids(size: int) -> np.ndarray:
                return all_ids[:, :size]

        if width == last.width:
            single_recall = fidelity_at_k(stage1_ids(k), exact_ids, k)
            if single_recall >= target:
                found[Funnel((FunnelStage(width, k, index_type, precision, probes),))] = single_recall
        if self.max_stages < 2:
            return found

        def two_stage_recall(size: int) -> float:
            # A full-width last stage ranks exactly, so it keeps every true neighbour the shortlist holds.
            ids = stage1_ids(size)
            hits = sum(len(set(row.tolist()) & set(truth.tolist())) for row, truth in zip(ids, exact_ids))
            return hits / (k * len(ids))

        first_size, first_recall = _smallest_meeting(grid, two_stage_recall, target)
        if first_size is None:
            self.skipped_.append(
                f"{label}: recall@{k} stays below {target} up to a shortlist of {grid[-1]} "
                f"(reaches {first_recall:.4f} there)"
            )
            return found
        first = FunnelStage(width, first_size, index_type, precision, probes)
        if not (width == last.width and first_size == k):
            # At full width with a shortlist of k the rerank would repeat stage 1's answer.
            found[Funnel((first, last))] = first_recall
        candidate_ids = stage1_ids(first_size)
        self._deepen(searcher, queries, exact_ids, [first], candidate_ids, last, found)
        return found

    def _deepen(self, searcher, queries, exact_ids, stages, candidate_ids, last, found) -> None:
        """Insert one more intermediate stage after ``stages`` (recursively, up to max_stages)."""
        if len(stages) + 2 > self.max_stages:
            return
        k, target = int(self.k), self.target_recall
        previous = stages[-1]
        sizes = [size for size in shortlist_grid(k, previous.shortlist_size) if size < previous.shortlist_size]
        for width in INTERMEDIATE_WIDTHS:
            if not previous.width < width < last.width or not sizes:
                continue
            scored_ids, _ = searcher.rescore(queries, candidate_ids, FunnelStage(width, previous.shortlist_size))

            def recall_of(size: int) -> float:
                final_ids, _ = searcher.rescore(queries, scored_ids[:, :size], last)
                return fidelity_at_k(final_ids, exact_ids, k)

            size, recall = _smallest_meeting(sizes, recall_of, target)
            if size is None:
                continue
            middle = FunnelStage(width, size)
            found[Funnel(tuple(stages) + (middle, last))] = recall
            self._deepen(searcher, queries, exact_ids, stages + [middle], scored_ids[:, :size], last, found)


# -- live query --------------------------------------------------------------------------------------
def live_query(
    corpus: np.ndarray | FunnelSearcher,
    query_vector: np.ndarray,
    funnel: Funnel,
    k: int = 10,
    *,
    repeats: int = 5,
    threads: int | None = 1,
) -> dict:
    """One query through ``funnel`` and through exact full-width search, side by side.

    Both are run ``repeats`` times in turn and the median times reported (a single run on a shared CPU
    is noise). Ids are corpus row numbers.

    Args:
        corpus: (documents, full_width) unit-norm matrix or a ``FunnelSearcher`` over it.
        query_vector: (full_width,) unit-norm query embedding.
        funnel: the funnel to run; its last shortlist must hold at least ``k`` rows.
        k: results to compare.
        repeats: timed runs of each.
        threads: FAISS/BLAS threads while searching (see ``search_threads``).

    Returns:
        dict with funnel_ids, funnel_scores, exact_ids, exact_scores, stage_ms, funnel_ms, exact_ms,
        overlap_at_k, speedup, k, stages, threads, faiss_version.
    """
    if k > funnel.k:
        raise ValueError(f"k={k}: the funnel returns only {funnel.k} results")
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: expected at least 1")
    searcher = corpus if isinstance(corpus, FunnelSearcher) else FunnelSearcher(corpus)
    query = _query_matrix(query_vector, searcher.width)[:1]
    exact = Funnel.exact(searcher.width, k)
    searcher.prepare(funnel)
    searcher.prepare(exact)
    funnel_runs, exact_runs = [], []
    with search_threads(threads):
        used_threads = faiss.omp_get_max_threads()
        for _ in range(repeats):
            funnel_runs.append(searcher.search(query, funnel))
            exact_runs.append(searcher.search(query, exact))
    funnel_result, exact_result = funnel_runs[-1], exact_runs[-1]
    stage_ms = [float(value) for value in np.median(np.array([run.stage_ms for run in funnel_runs]), axis=0)]
    funnel_ms = float(np.median([run.total_ms for run in funnel_runs]))
    exact_ms = float(np.median([run.total_ms for run in exact_runs]))
    funnel_ids = funnel_result.ids[0, :k]
    exact_ids = exact_result.ids[0, :k]
    return {
        "k": k,
        "stages": funnel.to_dicts(),
        "funnel_ids": [int(value) for value in funnel_ids],
        "funnel_scores": [float(value) for value in funnel_result.scores[0, :k]],
        "exact_ids": [int(value) for value in exact_ids],
        "exact_scores": [float(value) for value in exact_result.scores[0, :k]],
        "stage_ms": stage_ms,
        "funnel_ms": funnel_ms,
        "exact_ms": exact_ms,
        "overlap_at_k": fidelity_at_k(funnel_ids[None, :], exact_ids[None, :], k),
        "speedup": exact_ms / funnel_ms if funnel_ms > 0 else None,
        "threads": used_threads,
        "faiss_version": faiss.__version__,
    }


# -- store and encoding glue -------------------------------------------------------------------------
def funnel_rows(tuner: FunnelTuner) -> list[dict]:
    """Rows for the store's ``funnels`` table: the tuner's frontier, the pick marked ``chosen``."""
    exact_p50_ms = tuner.exact_timing_["p50_ms"]
    rows = []
    for entry in tuner.frontier_:
        rows.append(
            {
                "corpus_size": tuner.corpus_size_,
                "stages": entry["stages"],
                "recall_at_10": entry["recall_at_10"],
                "ndcg_at_10": None,
                "p50_ms": entry["p50_ms"],
                "p95_ms": entry["p95_ms"],
                "exact_p50_ms": exact_p50_ms,
                "speedup": exact_p50_ms / entry["p50_ms"] if entry["p50_ms"] > 0 else None,
                "on_frontier": entry["on_frontier"],
                "chosen": entry["chosen"],
                "details": {
                    "description": entry["description"],
                    "stage_p50_ms": entry["stage_p50_ms"],
                    "latency_query_count": entry["latency_query_count"],
                    "recall_query_count": tuner.query_count_,
                    "meets_target": entry["meets_target"],
                    "target_recall": tuner.target_recall,
                    "k": tuner.k,
                    "reference": entry["reference"],
                    "exact": entry["exact"],
                    "exact_p95_ms": tuner.exact_timing_["p95_ms"],
                    # The tuner times every funnel one query per call (``time_funnel``, ``time_round_robin``).
                    "batch_size": 1,
                    "threads": tuner.threads_,
                    "faiss_version": faiss.__version__,
                },
            }
        )
    return rows


def save_tuning(store, tuner: FunnelTuner, **run_fields) -> int:
    """Store a fitted tuner as one run of kind ``funnel`` (frontier rows, the pick ``chosen``); return its id.

    ``run_fields`` go to ``ResultStore.start_run`` (model, dataset_fingerprint, ...); the tuner's
    target recall and k are added to the run's params so ``load_tuned_funnel`` can match them.
    """
    params = dict(run_fields.pop("params", None) or {})
    params.update(target_recall=tuner.target_recall, k=tuner.k, max_stages=tuner.max_stages)
    with store.run(
        "funnel",
        corpus_size=tuner.corpus_size_,
        query_count=tuner.query_count_,
        threads=tuner.threads_,
        params=params,
        **run_fields,
    ) as run_id:
        store.add_rows("funnels", run_id, funnel_rows(tuner))
        best = tuner.best_timing_
        store.finish_run(
            run_id,
            summary={
                "chosen": tuner.best_.describe(),
                "p50_ms": best["p50_ms"],
                "exact_p50_ms": tuner.exact_timing_["p50_ms"],
                "speedup": tuner.exact_timing_["p50_ms"] / best["p50_ms"],
                "recall_at_10": best["recall_at_10"],
                "skipped": tuner.skipped_,
            },
        )
    return run_id


def load_tuned_funnel(store, *, model: str, dataset_fingerprint: str, target_recall: float, k: int) -> tuple[Funnel, int] | None:
    """The chosen funnel of the newest finished ``funnel`` run for this model, dataset, target and k."""
    runs = store.list_runs("funnel")
    if runs.empty:
        return None
    for run in runs.to_dict("records"):
        params = run.get("params") or {}
        if (
            run["status"] == "finished"
            and run["model"] == model
            and run["dataset_fingerprint"] == dataset_fingerprint
            and params.get("target_recall") == target_recall
            and params.get("k") == k
        ):
            rows = store.rows("funnels", int(run["run_id"]))
            chosen = rows[rows["chosen"]]
            if len(chosen):
                return Funnel.from_dicts(chosen.iloc[0]["stages"]), int(run["run_id"])
    return None


def encode_query(model_spec: str, text: str) -> np.ndarray:
    """Full-width unit-norm embedding of one query text under a model spec (adaptors applied on top).

    Raises:
        ValueError: for ``precomputed``, which has no encoder for new text.
    """
    from mrl_core import encode

    if model_spec == "precomputed":
        raise ValueError("model 'precomputed' cannot encode a new query text; choose 'base', a model folder or an adaptor")
    if encode.is_adaptor(model_spec):
        from mrl_core.adaptor import load_adaptor

        adaptor = load_adaptor(model_spec)
        return np.asarray(adaptor.transform(encode_query(adaptor.base_model, text)[None, :]), dtype=np.float32)[0]
    return encode.encode_texts(model_spec, [text])[0]
