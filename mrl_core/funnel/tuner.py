"""Tuning: the funnel with the lowest measured single-query latency at a target recall@k."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import faiss
import numpy as np

from mrl_core.cost import estimate_funnel_storage
from mrl_core.deployment import Deployment, Location
from mrl_core.funnel.searcher import FunnelSearcher, query_matrix
from mrl_core.funnel.stages import Funnel, FunnelStage
from mrl_core.funnel.timing import time_funnel, time_round_robin
from mrl_core.indexes import (
    FIRST_STAGE_INDEX_TYPES,
    FIRST_STAGE_PRECISION_CHOICES,
    FIRST_STAGE_PRECISIONS,
    HNSW_M,
    search_threads,
)
from mrl_core.metrics import fidelity_at_k
from mrl_core.pareto import pareto_flags
from mrl_core.progress import Progress

MIN_SPEEDUP_OVER_EXACT = 1.1
"""The tuner picks a funnel over exact search only when its retimed p50 is at least this much faster."""
IVF_PROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Lists probed per query that the tuner tries for an IVF stage 1 (those above the list count are skipped)."""
HNSW_EF_SEARCHES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
"""efSearch (candidates HNSW keeps while walking the graph) that the tuner tries, from the shortest up; a
stage's shortlist can be at most its efSearch."""
STANDARD_INDEX_TYPES = ("hnsw", "ivf")
"""The single indexes a user would pick instead of a funnel: each is measured alone at full width, at the
smallest efSearch / lists probed that meets the target, on every corpus the tuner tunes on."""
MAX_BUILD_ROWS = 250_000
"""Above this many rows the full-width standard indexes are measured on a random sample of this many rows
(recorded as ``measured_on_sample``) and HNSW stage 1s on prefixes are not built unless the searcher holds
them already. Measured on this 2-core machine while other jobs ran (load 4-6, faiss 1.15.1, both cores,
100,000 SciFact-like rows): HNSW32 (efConstruction 80) over 384 dims 84 s, i.e. ~840 s per million rows
and more (a graph build grows as n log n), over 128 dims 67 s; IVF over 384 dims 32 s. 250,000 rows keep
the full-width HNSW build near 3.5 minutes on a busy machine."""
DEFAULT_HNSW_WIDTHS = (64, 128, 256)
"""Prefix widths HNSW stage 1s are built at by default (one graph each): narrower prefixes make poor graphs
whose shortlists need more rows than a scan's, and the full width is the standard index."""
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


TUNING_TARGET_Z = 1.645
"""One-sided 95 % normal quantile: the margin above the target that a candidate's sample recall must keep."""


def tuning_target(target_recall: float, query_count: int, k: int) -> float:
    """The recall a candidate must reach on ``query_count`` sample queries so that it meets ``target_recall`` on
    other queries too: the target plus ``TUNING_TARGET_Z`` binomial standard errors over queries x k results,
    at most 1.

    Example:
        >>> round(tuning_target(0.99, 300, 10), 4), tuning_target(1.0, 300, 10)
        (0.993, 1.0)
    """
    margin = TUNING_TARGET_Z * math.sqrt(target_recall * (1 - target_recall) / (query_count * k))
    return min(1.0, target_recall + margin)


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
    meets the target when a full-width stage reranks it (HNSW and IVF stage 1s do this for each efSearch
    or lists-probed count from the smallest up, until two have met the target); deeper funnels then
    insert wider intermediate stages, each with the smallest shortlist that still meets the target.

    The standard single indexes a user would pick instead (``STANDARD_INDEX_TYPES``: HNSW and IVF over
    the full-width vectors, at the smallest efSearch / lists probed that meets the target) are always
    measured too, on the whole corpus up to ``max_build_rows`` rows and on a random sample of that many
    rows above it (then they are reported, not picked). Every candidate is then timed query by query,
    and the fastest few, the fastest standard index among them, are timed again in turn with exact
    search to pick ``best_`` (exact search itself unless a funnel is ``MIN_SPEEDUP_OVER_EXACT`` times
    faster). Recall measured on a sample is itself noisy, and the smallest shortlists that pass on the sample
    would land below the target on other queries about half the time; so candidates must reach
    ``tuning_target_`` on the sample: the target plus a one-sided 95 % margin for that sampling error,
    1.645 x sqrt(target x (1 - target) / (queries x k)) (0.9930 for 0.99 on 300 queries at k=10).

    ``comparison_`` sets the pick beside exact search and the fastest standard index meeting the same
    target: p50, recall and RAM and disk bytes per vector of each (``mrl_core.cost`` formulas, with a
    funnel's rescoring vectors where ``rescore_location`` says), which is faster and which is smaller.

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
        hnsw_max_corpus_size: above this corpus size HNSW stage 1s on prefixes are skipped (None: tried
            at every size up to ``max_build_rows``).
        hnsw_widths: stage-1 widths HNSW is tried at (None: ``DEFAULT_HNSW_WIDTHS``); each is one index
            to build (on every core, see ``FunnelSearcher``), the slow part on a large corpus. Indexes
            already built in a ``FunnelSearcher`` passed to ``fit`` are reused.
        ivf_widths: the same for IVF (``searcher.ivf_lists`` lists, 4*sqrt(N) by default), tried at each
            of ``IVF_PROBES`` lists probed from the fewest up.
        hnsw_max_shortlist_size: largest HNSW efSearch (and so stage-1 shortlist) tried, of ``HNSW_EF_SEARCHES``,
            for stage 1s and the standard HNSW index alike.
        include_reference: also measure the MRL paper's funnel.
        standard_index_types: standard single indexes measured alone at full width (of ``STANDARD_INDEX_TYPES``;
            empty: none).
        max_build_rows: above this corpus size the standard indexes are measured on a sample of this many
            rows, and HNSW stage 1s on prefixes are skipped.
        rescore_location: where a funnel's rescoring vectors are counted, 'ram' or 'disk' (latency is
            measured with them in RAM either way).
        threads: FAISS/BLAS threads while searching (see ``search_threads``); None leaves them as they are.
            Indexes are built with the searcher's ``build_threads`` (every core by default).

    Attributes (after ``fit``):
        best_: the chosen ``Funnel``.
        best_timing_: its measured {"p50_ms", "p95_ms", "stage_p50_ms", "query_count"} and recall.
        heldout_: the pick measured on other queries by ``measure_heldout`` (None until it is called).
        tuning_target_: the recall candidates had to reach on the sample (``tuning_target``).
        exact_timing_: the same for exact full-width search, timed alongside the finalists.
        frontier_: one dict per measured config: stages, description, recall_at_10, p50_ms, p95_ms,
            stage_p50_ms, meets_target, on_frontier, chosen, reference, exact, standard_index,
            ram_bytes_per_vector, disk_bytes_per_vector, corpus_size, exact_p50_ms and
            measured_on_sample (None, or {sample_rows, corpus_size, reason} for a standard index measured
            on a sample).
        comparison_: the pick, exact search and the fastest standard index meeting the target (None when
            none does), each {label, p50_ms, p95_ms, recall_at_10, ram_bytes_per_vector,
            disk_bytes_per_vector, ...}; speedup_vs_exact, speedup_vs_baseline, ram_ratio_vs_baseline
            (the pick's RAM over the baseline's), faster, smaller_in_ram and a one-line verdict.
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
        hnsw_max_corpus_size: int | None = None,
        hnsw_max_shortlist_size: int = HNSW_EF_SEARCHES[-1],
        hnsw_widths: Sequence[int] | None = None,
        ivf_widths: Sequence[int] | None = None,
        include_reference: bool = True,
        standard_index_types: Sequence[str] = STANDARD_INDEX_TYPES,
        max_build_rows: int = MAX_BUILD_ROWS,
        rescore_location: Location = "ram",
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
        self.standard_index_types = standard_index_types
        self.max_build_rows = max_build_rows
        self.rescore_location = rescore_location
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
        for index_type in self.standard_index_types:
            if index_type not in STANDARD_INDEX_TYPES:
                raise ValueError(f"standard_index_types: {index_type!r} is not one of {list(STANDARD_INDEX_TYPES)}")
        if int(self.max_build_rows) < 1:
            raise ValueError(f"max_build_rows={self.max_build_rows!r}: expected a positive number of rows")
        Deployment(rescore_location=self.rescore_location)  # refuses a location other than 'ram' or 'disk'

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
        self.tuning_target_ = tuning_target(self.target_recall, len(queries), k)
        exact_ids = searcher.exact_search(queries, k).ids
        self.skipped_: list[str] = []
        candidates = self._candidates(searcher, queries, exact_ids)
        reference = Funnel.reference(full_width, k) if self.include_reference else None
        if reference is not None and reference not in candidates:
            candidates[reference] = fidelity_at_k(searcher.search(queries, reference).ids, exact_ids, k)
        # Standard indexes above max_build_rows are measured on a sample, unless the caller built them already.
        on_whole_corpus = [
            index_type for index_type in self.standard_index_types
            if searcher.corpus_size <= int(self.max_build_rows) or searcher.has_index(_standard_stage(index_type, full_width, k))
        ]
        on_sample = [index_type for index_type in self.standard_index_types if index_type not in on_whole_corpus]
        standard = self._standard_indexes(searcher, queries, exact_ids, on_whole_corpus)
        candidates.update(standard)

        latency_queries = queries[: self.latency_query_count]
        measured = []
        for done, (funnel, recall) in enumerate(candidates.items(), start=1):
            timing = time_funnel(searcher, latency_queries, funnel)
            measured.append((funnel, recall, timing))
            if progress is not None:
                progress(done, len(candidates))

        exact = Funnel.exact(full_width, k)
        meeting = sorted(
            (entry for entry in measured if entry[1] >= self.tuning_target_ and entry[0] != exact),
            key=lambda entry: entry[2]["p50_ms"],
        )
        finalists = [entry[0] for entry in meeting[: self.finalist_count]]
        # The fastest standard index is timed in the same round robin, so the pick's speedup over it is
        # measured under the same load.
        fastest_standard = next((entry[0] for entry in meeting if entry[0] in standard), None)
        if fastest_standard is not None and fastest_standard not in finalists:
            finalists.append(fastest_standard)
        finalists.append(exact)
        final_timings = time_round_robin(searcher, latency_queries, finalists, self.finalist_rounds)
        retimed = dict(zip(finalists, final_timings))
        self.exact_timing_ = dict(retimed[exact], recall_at_10=1.0)
        best = pick_fastest(retimed, exact)

        self.frontier_ = []
        for funnel, recall, timing in measured:
            timing = retimed.get(funnel, timing)
            self.frontier_.append(
                self._frontier_row(searcher, funnel, recall, timing, exact_p50_ms=self.exact_timing_["p50_ms"],
                                   chosen=funnel == best, reference=funnel == reference, exact=funnel == exact,
                                   standard_index=funnel in standard)
            )
        flags = pareto_flags(
            lower_is_better=[[row["p50_ms"] for row in self.frontier_]],
            higher_is_better=[[row["recall_at_10"] for row in self.frontier_]],
        )
        for row, flag in zip(self.frontier_, flags):
            row["on_frontier"] = flag
        if on_sample:
            # Measured on another (sampled) corpus: beside the frontier, never on it or picked.
            for row in self._standard_indexes_on_sample(searcher, queries, on_sample):
                self.frontier_.append(dict(row, on_frontier=False))
        self.best_ = best
        best_row = next(row for row in self.frontier_ if row["chosen"])
        self.best_timing_ = dict(retimed[best], recall_at_10=best_row["recall_at_10"])
        self.comparison_ = self._compare(best_row, self.frontier_)
        self.threads_ = faiss.omp_get_max_threads()
        self.corpus_size_ = searcher.corpus_size
        self.query_count_ = len(queries)
        self.searcher_ = searcher
        self.heldout_ = None
        return self

    def measure_heldout(self, heldout_queries: np.ndarray) -> dict | None:
        """The pick and exact search on queries the tuner did not see: recall@k against exact, and latency.

        Both are timed one query per call, in turn (``time_round_robin``, ``finalist_rounds`` rounds), on
        ``threads`` threads. The tuning sample's figures were what the pick was chosen on; these say
        whether it holds on other queries.

        Returns:
            {"query_count", "recall_at_10", "p50_ms", "p95_ms", "exact_p50_ms", "exact_p95_ms", "speedup"}
            (speedup = exact p50 / pick p50), stored as ``heldout_``; None, with nothing measured, when
            there are no held-out queries.
        """
        searcher = self.searcher_
        queries = query_matrix(heldout_queries, searcher.width)
        if len(queries) == 0:
            self.heldout_ = None
            return None
        k = int(self.k)
        exact = Funnel.exact(searcher.width, k)
        with search_threads(self.threads):
            recall = fidelity_at_k(searcher.search(queries, self.best_).ids, searcher.exact_search(queries, k).ids, k)
            pick, reference = time_round_robin(searcher, queries, [self.best_, exact], self.finalist_rounds)
        self.heldout_ = {
            "query_count": len(queries),
            "recall_at_10": recall,
            "p50_ms": pick["p50_ms"],
            "p95_ms": pick["p95_ms"],
            "exact_p50_ms": reference["p50_ms"],
            "exact_p95_ms": reference["p95_ms"],
            "speedup": reference["p50_ms"] / pick["p50_ms"],
        }
        return self.heldout_

    def _bytes_per_vector(self, searcher: FunnelSearcher, funnel: Funnel) -> tuple[float, float]:
        """(RAM, disk) bytes per vector of ``funnel`` over the whole corpus (``mrl_core.cost`` formulas;
        IVF centroids spread over the rows)."""
        deployment = Deployment(hnsw_m=searcher.hnsw_m, ivf_nlist=searcher.ivf_lists, rescore_location=self.rescore_location)
        storage = estimate_funnel_storage(int(searcher.corpus_size), funnel.to_dicts(), deployment)
        return storage.ram_bytes / searcher.corpus_size, storage.disk_bytes / searcher.corpus_size

    def _frontier_row(self, searcher, funnel: Funnel, recall: float, timing: dict, *, exact_p50_ms: float,
                      chosen: bool = False, reference: bool = False, exact: bool = False, standard_index: bool = False,
                      measured_on_sample: dict | None = None, bytes_searcher: FunnelSearcher | None = None) -> dict:
        ram_bytes, disk_bytes = self._bytes_per_vector(bytes_searcher or searcher, funnel)
        return {
            "stages": funnel.to_dicts(),
            "description": funnel.describe(),
            "recall_at_10": recall,
            "p50_ms": timing["p50_ms"],
            "p95_ms": timing["p95_ms"],
            "stage_p50_ms": timing["stage_p50_ms"],
            "latency_query_count": timing["query_count"],
            "meets_target": recall >= self.tuning_target_,
            "chosen": chosen,
            "reference": reference,
            "exact": exact,
            "standard_index": standard_index,
            "ram_bytes_per_vector": ram_bytes,
            "disk_bytes_per_vector": disk_bytes,
            "corpus_size": searcher.corpus_size,
            "exact_p50_ms": exact_p50_ms,
            "measured_on_sample": measured_on_sample,
        }

    def _standard_indexes(
        self, searcher: FunnelSearcher, queries: np.ndarray, exact_ids: np.ndarray, index_types: Sequence[str]
    ) -> dict[Funnel, float]:
        """Each standard index alone over the full-width vectors, at the smallest efSearch / lists probed that
        meets the target (at the largest tried when none does, so that what it reaches is on record)."""
        k, full_width, target = int(self.k), searcher.width, self.tuning_target_
        found: dict[Funnel, float] = {}
        for index_type in index_types:
            if index_type == "hnsw":
                settings = [ef for ef in HNSW_EF_SEARCHES if k <= ef <= int(self.hnsw_max_shortlist_size)] or [k]
            else:
                settings = [probes for probes in IVF_PROBES if probes <= searcher.ivf_lists] or [searcher.ivf_lists]

            def recall_of(setting: int, index_type: str = index_type) -> float:
                stage = _standard_stage(index_type, full_width, k, setting)
                return fidelity_at_k(searcher.first_stage(queries, stage)[0], exact_ids, k)

            setting, recall = _smallest_meeting(settings, recall_of, target)
            if setting is None:
                setting = settings[-1]
                self.skipped_.append(
                    f"{Funnel((_standard_stage(index_type, full_width, k, setting),)).index_label()}: the standard "
                    f"index reaches recall@{k} {recall:.4f} at most, below {target}"
                )
            found[Funnel((_standard_stage(index_type, full_width, k, setting),))] = recall
        return found

    def _standard_indexes_on_sample(self, searcher: FunnelSearcher, queries: np.ndarray, index_types: Sequence[str]) -> list[dict]:
        """The standard indexes measured on a random sample of ``max_build_rows`` rows, as frontier rows."""
        sample_rows = int(self.max_build_rows)
        rows = np.sort(np.random.default_rng(0).choice(searcher.corpus_size, sample_rows, replace=False))
        sample = FunnelSearcher(
            searcher.corpus[rows], hnsw_m=searcher.hnsw_m, hnsw_ef_construction=searcher.hnsw_ef_construction,
            build_threads=searcher.build_threads,
        )
        exact_ids = sample.exact_search(queries, int(self.k)).ids
        before = len(self.skipped_)
        found = self._standard_indexes(sample, queries, exact_ids, index_types)
        for position in range(before, len(self.skipped_)):
            self.skipped_[position] += f" (on a sample of {sample_rows:,} rows)"
        exact = Funnel.exact(sample.width, int(self.k))
        funnels = list(found) + [exact]
        timings = time_round_robin(sample, queries[: self.latency_query_count], funnels, self.finalist_rounds)
        exact_p50_ms = timings[-1]["p50_ms"]
        reason = (
            f"building over all {searcher.corpus_size:,} rows would take too long (max_build_rows={sample_rows:,}); "
            f"built and searched on a random sample of {sample_rows:,} rows, against exact search over that sample"
        )
        return [
            self._frontier_row(
                sample, funnel, recall, timing, exact_p50_ms=exact_p50_ms, standard_index=True,
                measured_on_sample={"sample_rows": sample_rows, "corpus_size": searcher.corpus_size, "reason": reason},
                bytes_searcher=searcher,
            )
            for (funnel, recall), timing in zip(found.items(), timings)
        ]

    def _compare(self, best_row: dict, frontier: list[dict]) -> dict:
        """The pick beside exact search and the fastest standard index meeting the target."""

        def entry(row: dict) -> dict:
            return {
                "label": Funnel.from_dicts(row["stages"]).index_label() if row["standard_index"] else row["description"],
                "stages": row["stages"],
                "p50_ms": row["p50_ms"],
                "p95_ms": row["p95_ms"],
                "recall_at_10": row["recall_at_10"],
                "ram_bytes_per_vector": row["ram_bytes_per_vector"],
                "disk_bytes_per_vector": row["disk_bytes_per_vector"],
                "corpus_size": row["corpus_size"],
                "measured_on_sample": row["measured_on_sample"],
            }

        exact_row = next(row for row in frontier if row["exact"])
        standard = [row for row in frontier if row["standard_index"] and row["meets_target"]]
        baseline_row = min(standard, key=lambda row: row["p50_ms"]) if standard else None
        pick, exact, baseline = entry(best_row), entry(exact_row), entry(baseline_row) if baseline_row else None
        comparison = {
            "funnel": pick,
            "exact": exact,
            "baseline": baseline,
            "standard_indexes": [entry(row) for row in frontier if row["standard_index"]],
            "target_recall": self.target_recall,
            "rescore_location": self.rescore_location,
            "speedup_vs_exact": exact["p50_ms"] / pick["p50_ms"] if pick["p50_ms"] > 0 else None,
            "speedup_vs_baseline": None,
            "ram_ratio_vs_baseline": None,
            "faster": None,
            "smaller_in_ram": None,
        }
        if baseline is None:
            reached = ", ".join(
                f"{row['label']} {row['recall_at_10']:.3f}" for row in comparison["standard_indexes"]
            ) or "none measured"
            comparison["verdict"] = f"No standard index met recall@{self.k} {self.target_recall} ({reached})."
            return comparison
        same = pick["stages"] == baseline["stages"]
        comparison["speedup_vs_baseline"] = baseline["p50_ms"] / pick["p50_ms"] if pick["p50_ms"] > 0 else None
        comparison["ram_ratio_vs_baseline"] = (
            pick["ram_bytes_per_vector"] / baseline["ram_bytes_per_vector"] if baseline["ram_bytes_per_vector"] else None
        )
        comparison["faster"] = "same" if same else ("funnel" if pick["p50_ms"] < baseline["p50_ms"] else "baseline")
        comparison["smaller_in_ram"] = "same" if same or pick["ram_bytes_per_vector"] == baseline["ram_bytes_per_vector"] else (
            "funnel" if pick["ram_bytes_per_vector"] < baseline["ram_bytes_per_vector"] else "baseline"
        )
        comparison["verdict"] = _verdict(pick, baseline, comparison)
        return comparison

    def _candidates(self, searcher: FunnelSearcher, queries: np.ndarray, exact_ids: np.ndarray) -> dict[Funnel, float]:
        """Funnels that meet the target on the sample, each with the recall@k measured while searching.

        Exhaustive stage 1s (flat, binary) are searched once at the largest shortlist and sliced, since
        their top s is the first s of their top max (up to the order of exact ties); so are HNSW and IVF
        stage 1s at each efSearch or lists-probed count.
        """
        full_width, k = searcher.width, int(self.k)
        max_shortlist = min(int(self.max_shortlist_size), searcher.corpus_size)
        grid = shortlist_grid(k, max_shortlist)
        last = FunnelStage(full_width, k)
        candidates = {Funnel.exact(full_width, k): 1.0}
        for index_type in self.index_types:
            if index_type == "hnsw" and self.hnsw_max_corpus_size is not None and searcher.corpus_size > self.hnsw_max_corpus_size:
                self.skipped_.append(
                    f"hnsw: corpus of {searcher.corpus_size} rows is above hnsw_max_corpus_size={self.hnsw_max_corpus_size}"
                )
                continue
            for precision in [p for p in FIRST_STAGE_PRECISIONS[index_type] if p in self.precisions]:
                widths = {"hnsw": self.hnsw_widths or DEFAULT_HNSW_WIDTHS, "ivf": self.ivf_widths}.get(index_type) or self.first_stage_widths
                for width in sorted(set(int(w) for w in widths)):
                    if width > full_width or (index_type == "binary" and width % 8):
                        self.skipped_.append(f"{index_type} {width}: not a usable width for a {full_width}-d corpus")
                        continue
                    too_big = index_type == "hnsw" and searcher.corpus_size > self.max_build_rows
                    if too_big and not searcher.has_index(FunnelStage(width, k, "hnsw", precision)):
                        self.skipped_.append(
                            f"hnsw {width}: corpus of {searcher.corpus_size:,} rows is above max_build_rows="
                            f"{self.max_build_rows:,} (a graph would take too long to build; pass a searcher with it built)"
                        )
                        continue
                    if (index_type, precision) == ("flat", "fp32") and width == full_width:
                        continue  # that is exact search, already a candidate
                    if index_type in self.standard_index_types and width == full_width:
                        continue  # a standard index, measured alone with its own efSearch / probes search
                    if index_type in ("hnsw", "ivf"):
                        candidates.update(self._searched_candidates(searcher, queries, exact_ids, index_type, width, grid, last))
                        continue
                    first = FunnelStage(width, k, index_type, precision)
                    candidates.update(self._candidates_from(searcher, queries, exact_ids, first, grid, last))
        return candidates

    def _searched_candidates(self, searcher, queries, exact_ids, index_type: str, width: int, grid, last) -> dict[Funnel, float]:
        """HNSW or IVF stage 1s at ``width``: from the fewest candidates kept (efSearch) or lists probed up,
        until two settings have met the target (more scan more rows and only buy shorter shortlists)."""
        k = int(self.k)
        if index_type == "ivf":
            settings = [probes for probes in IVF_PROBES if probes <= searcher.ivf_lists]
            limit = f"{min(IVF_PROBES[-1], searcher.ivf_lists)} lists probed"
        else:
            settings = [ef for ef in HNSW_EF_SEARCHES if k <= ef <= int(self.hnsw_max_shortlist_size)] or [k]
            limit = f"efSearch {settings[-1]}"
        found: dict[Funnel, float] = {}
        meeting = 0
        for setting in settings:
            if index_type == "ivf":
                kind, setting_grid = FunnelStage(width, k, "ivf", "fp32", setting), grid
            else:
                kind = FunnelStage(width, k, "hnsw", "fp32", ef_search=setting)
                setting_grid = [size for size in grid if size <= setting] or [k]
            before = len(self.skipped_)
            from_setting = self._candidates_from(searcher, queries, exact_ids, kind, setting_grid, last)
            if from_setting:
                found.update(from_setting)
                meeting += 1
                if meeting == 2:
                    break
            else:
                del self.skipped_[before:]  # fewer probes/candidates falling short is the expected start, not news
        if not found:
            self.skipped_.append(f"{index_type} {width}: recall@{k} stays below {self.tuning_target_:.4f} up to {limit}")
        return found

    def _candidates_from(self, searcher, queries, exact_ids, kind: FunnelStage, grid, last) -> dict[Funnel, float]:
        """Funnels whose stage 1 is ``kind`` (its width, index type, precision, probes and efSearch; any
        shortlist size in ``grid``)."""
        k, target = int(self.k), self.tuning_target_
        width, index_type, precision = kind.width, kind.index_type, kind.precision
        probes, ef_search = kind.probes, kind.ef_search

        def stage(size: int) -> FunnelStage:
            return FunnelStage(width, size, index_type, precision, probes, ef_search)

        label = Funnel((kind,)).index_label()
        found: dict[Funnel, float] = {}
        # A scan's top s (of the whole corpus, or of the probed IVF lists, or of the candidates HNSW kept
        # at one efSearch) is the first s of its top max: search once, slice after.
        all_ids = searcher.first_stage(queries, stage(grid[-1]))[0]

        def stage1_ids(size: int) -> np.ndarray:
            return all_ids[:, :size]

        if width == last.width:
            single_recall = fidelity_at_k(stage1_ids(k), exact_ids, k)
            if single_recall >= target:
                found[Funnel((stage(k),))] = single_recall
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
        first = stage(first_size)
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
        k, target = int(self.k), self.tuning_target_
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


def _standard_stage(index_type: str, full_width: int, k: int, setting: int | None = None) -> FunnelStage:
    """The standard ``index_type`` alone at full width, at efSearch (HNSW) or lists probed (IVF) ``setting``."""
    if index_type == "ivf":
        return FunnelStage(full_width, k, "ivf", probes=setting or 1)
    return FunnelStage(full_width, k, "hnsw", ef_search=setting)


def _bytes(value: float) -> str:
    return f"{value:,.0f} B" if value < 10_000 else f"{value / 1000:,.1f} kB"


def _verdict(pick: dict, baseline: dict, comparison: dict) -> str:
    """One line: which is faster, which takes less RAM, at what recall."""
    if comparison["faster"] == "same":
        return (
            f"The standard index {baseline['label']} is the fastest at the target: {pick['p50_ms']:.3f} ms p50, "
            f"{_bytes(pick['ram_bytes_per_vector'])} of RAM per vector."
        )
    speedup = comparison["speedup_vs_baseline"]
    speed = (
        f"{speedup:.2f}x faster than {baseline['label']}" if comparison["faster"] == "funnel"
        else f"{1 / speedup:.2f}x slower than {baseline['label']}"
    )
    ram = (
        f"{comparison['ram_ratio_vs_baseline']:.0%} of its RAM per vector "
        f"({_bytes(pick['ram_bytes_per_vector'])} vs {_bytes(baseline['ram_bytes_per_vector'])})"
    )
    sample = baseline["measured_on_sample"]
    where = f" (the standard index measured on a sample of {sample['sample_rows']:,} rows)" if sample else ""
    return (
        f"The pick is {speed} at recall@10 {pick['recall_at_10']:.3f} vs {baseline['recall_at_10']:.3f}, "
        f"with {ram}{where}."
    )
