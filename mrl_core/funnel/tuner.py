"""Tuning: the funnel with the lowest measured single-query latency at a target recall@k."""

from __future__ import annotations

from typing import Callable, Sequence

import faiss
import numpy as np

from mrl_core.funnel.searcher import FunnelSearcher, query_matrix
from mrl_core.funnel.stages import Funnel, FunnelStage
from mrl_core.funnel.timing import time_funnel, time_round_robin
from mrl_core.indexes import (
    FIRST_STAGE_INDEX_TYPES,
    FIRST_STAGE_PRECISION_CHOICES,
    FIRST_STAGE_PRECISIONS,
    HNSW_M,
    HNSW_MAX_CORPUS_SIZE,
    search_threads,
)
from mrl_core.metrics import fidelity_at_k
from mrl_core.pareto import pareto_flags
from mrl_core.progress import Progress

MIN_SPEEDUP_OVER_EXACT = 1.1
"""The tuner picks a funnel over exact search only when its retimed p50 is at least this much faster."""
IVF_PROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Lists probed per query that the tuner tries for an IVF stage 1 (those above the list count are skipped)."""
DEFAULT_FIRST_STAGE_WIDTHS = (8, 16, 32, 64, 128, 256, 384)
INTERMEDIATE_WIDTHS = (16, 32, 64, 128, 256)
"""Widths the tuner tries for stages between stage 1 and the full-width last stage."""


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
        index_types: stage-1 index types to try, of ``FIRST_STAGE_INDEX_TYPES``.
        precisions: stage-1 precisions to try, where the index type stores them (``FIRST_STAGE_PRECISIONS``).
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
        index_types: Sequence[str] = FIRST_STAGE_INDEX_TYPES,
        precisions: Sequence[str] = FIRST_STAGE_PRECISION_CHOICES,
        max_stages: int = 4,
        max_shortlist_size: int = 4000,
        latency_query_count: int = 50,
        finalist_count: int = 3,
        finalist_rounds: int = 3,
        hnsw_m: int = HNSW_M,
        hnsw_max_corpus_size: int = HNSW_MAX_CORPUS_SIZE,
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
            if index_type not in FIRST_STAGE_INDEX_TYPES:
                raise ValueError(f"index_types: {index_type!r} is not one of {list(FIRST_STAGE_INDEX_TYPES)}")
        for precision in self.precisions:
            if precision not in FIRST_STAGE_PRECISION_CHOICES:
                raise ValueError(f"precisions: {precision!r} is not one of {list(FIRST_STAGE_PRECISION_CHOICES)}")
        if not any(set(FIRST_STAGE_PRECISIONS[index_type]) & set(self.precisions) for index_type in self.index_types):
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
        queries = query_matrix(sample_queries, searcher.width)
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
        flags = pareto_flags(
            lower_is_better=[[row["p50_ms"] for row in self.frontier_]],
            higher_is_better=[[row["recall_at_10"] for row in self.frontier_]],
        )
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
            for precision in [p for p in FIRST_STAGE_PRECISIONS[index_type] if p in self.precisions]:
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
