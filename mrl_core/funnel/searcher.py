"""Running a funnel: stage 1 searches an index over a prefix, later stages rescore its shortlist."""

from __future__ import annotations

import os
import time
from typing import Sequence

import faiss
import numpy as np

from mrl_core.funnel.stages import Funnel, FunnelResult, FunnelStage
from mrl_core.indexes import HNSW_EF_CONSTRUCTION, HNSW_M, build_index, default_ivf_nlist, search_threads
from mrl_core.widths import prefix_norms, renormalised_prefix

BINARY_HEAP_MAX_SHORTLIST = 100
"""Above this shortlist size a binary scan selects by counting Hamming distances instead of a heap
(``IndexBinaryFlat.use_heap = False``): at 1M rows and 384 bits a 10,000-row shortlist costs 3.1 ms
that way and 8.5 ms with the heap, while a 10-row one costs 2.0 ms with the heap and 2.5 ms without."""
RESCORE_BLOCK_FLOATS = 32 * 2**20
"""Floats gathered per rescore block (128 MB); longer query batches are split into chunks."""
DENSE_RESCORE_RATIO = 8
"""A batch rescore multiplies by the whole corpus instead of gathering rows when the corpus is at most
this many times the shortlist."""


def query_matrix(queries: np.ndarray, width: int) -> np.ndarray:
    queries = np.atleast_2d(np.ascontiguousarray(queries, dtype=np.float32))
    if queries.shape[1] != width:
        raise ValueError(f"queries have {queries.shape[1]} dimensions; the corpus has {width}")
    return queries


class FunnelSearcher:
    """Searches one corpus of full-width L2-normalised vectors with any funnel.

    Stage-1 indexes and prefix norms are built on first use and kept, so a funnel's timed searches
    measure search only. Call ``prepare(funnel)`` to build them ahead of timing. Indexes are built with
    ``build_threads`` FAISS/BLAS threads whatever the threads searches run with (a single-query search
    is timed on one thread; an HNSW build on one thread takes twice as long on this 2-core machine).

    Args:
        corpus: (documents, full_width) float32 matrix of unit-norm rows; kept by reference.
        hnsw_m: neighbours per node of HNSW stage-1 indexes.
        hnsw_ef_construction: build-time candidate list length of HNSW indexes.
        ivf_lists: lists of IVF stage-1 indexes (None: ``default_ivf_nlist`` of the corpus size).
        build_threads: threads while building an index (None: as the caller has them set).

    Attributes:
        build_seconds: wall seconds each built index took, keyed like ``"hnsw fp32 384"``.

    Raises:
        ValueError: if the corpus is empty, not 2-D, or its rows are not unit norm.
    """

    def __init__(
        self,
        corpus: np.ndarray,
        *,
        hnsw_m: int = HNSW_M,
        hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION,
        ivf_lists: int | None = None,
        build_threads: int | None = os.cpu_count(),
    ):
        corpus = np.ascontiguousarray(corpus, dtype=np.float32)
        if corpus.ndim != 2 or corpus.shape[0] == 0:
            raise ValueError(f"corpus: expected a non-empty (documents, width) matrix, got shape {corpus.shape}")
        self.corpus = corpus
        self.corpus_size, self.width = corpus.shape
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.ivf_lists = ivf_lists if ivf_lists is not None else default_ivf_nlist(self.corpus_size)
        self.build_threads = build_threads
        self.build_seconds: dict[str, float] = {}
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

    def has_index(self, stage: FunnelStage) -> bool:
        """Whether the index ``stage`` searches (its index type, precision and width) is built already."""
        return (stage.index_type, stage.precision, stage.width) in self._indexes

    def _check(self, funnel: Funnel) -> None:
        for number, stage in enumerate(funnel.stages, start=1):
            if stage.width > self.width:
                raise ValueError(f"stage {number}: width={stage.width} exceeds the corpus width {self.width}")

    def _first_stage_index(self, stage: FunnelStage):
        key = (stage.index_type, stage.precision, stage.width)
        if key not in self._indexes:
            width = stage.width
            if (stage.index_type, stage.precision) == ("flat", "fp32"):
                # faiss.knn runs the same exhaustive inner-product scan as IndexFlatIP.search; at full
                # width it scans the corpus itself, so exact search holds no second copy of it.
                index = self.corpus if width == self.width else renormalised_prefix(self.corpus, width, self.norms(width))
            elif stage.index_type == "binary":
                # Sign bits need no renormalisation: the raw prefix has the same signs.
                index = build_index(self.corpus[:, :width], "binary", stage.precision)
            else:
                start = time.perf_counter()
                with search_threads(self.build_threads):
                    index = build_index(
                        renormalised_prefix(self.corpus, width, self.norms(width)), stage.index_type, stage.precision,
                        hnsw_m=self.hnsw_m, hnsw_ef_construction=self.hnsw_ef_construction, ivf_lists=self.ivf_lists,
                    )
                self.build_seconds[f"{stage.index_type} {stage.precision} {width}"] = time.perf_counter() - start
            self._indexes[key] = index
        return self._indexes[key]

    def first_stage(self, queries: np.ndarray, stage: FunnelStage) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1 alone: (ids, scores) of the best ``stage.shortlist_size`` rows per query, best first.

        Scores are cosine at the prefix for fp32 stages (approximate for fp16 and int8 codes) and the
        sign agreement (bits - 2*hamming)/bits for binary ones.
        """
        queries = query_matrix(queries, self.width)
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
        parameters = faiss.SearchParametersHNSW(efSearch=max(stage.hnsw_ef_search, shortlist_size))
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
        queries = query_matrix(queries, self.width)
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
        dense = len(queries) > 1 and self.corpus_size <= DENSE_RESCORE_RATIO * candidate_ids.shape[1]
        if width == self.width and not dense:
            return self._rescore_full_width(queries, candidate_ids, stage.shortlist_size)
        valid = candidate_ids >= 0
        safe_ids = np.where(valid, candidate_ids, 0)
        query_prefix = queries[:, :width]
        if dense:
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

    def _rescore_full_width(self, queries: np.ndarray, candidate_ids: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
        """Full-width rescoring of unit-norm rows: inner products of the candidates and top ``keep`` in one FAISS
        call (``knn_inner_products_by_idx``), which reads each candidate row in place instead of gathering a copy:
        half the time of the numpy path for 1,500 candidates of 384 dims. A candidate list ends at its first -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        candidates = np.ascontiguousarray(candidate_ids, dtype=np.int64)
        count, subset = candidates.shape
        keep = min(keep, subset)
        scores = np.empty((count, keep), dtype=np.float32)
        ids = np.empty((count, keep), dtype=np.int64)
        faiss.knn_inner_products_by_idx(
            faiss.swig_ptr(queries), faiss.swig_ptr(self.corpus), faiss.swig_ptr(candidates), self.width, count,
            self.corpus_size, subset, keep, faiss.swig_ptr(scores), faiss.swig_ptr(ids), subset,
        )
        empty = ids < 0
        return np.where(empty, -1, ids), np.where(empty, -np.inf, scores).astype(np.float32)

    def search(self, queries: np.ndarray, funnel: Funnel) -> FunnelResult:
        """Run every stage of ``funnel`` for a batch of queries (one query: a 1-D vector or a 1-row matrix)."""
        self.prepare(funnel)
        queries = query_matrix(queries, self.width)
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
