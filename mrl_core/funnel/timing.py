"""Timing funnels one query at a time, and one live query beside exact search."""

from __future__ import annotations

import time
from typing import Sequence

import faiss
import numpy as np

from mrl_core.funnel.searcher import FunnelSearcher, query_matrix
from mrl_core.funnel.stages import Funnel
from mrl_core.indexes import search_threads
from mrl_core.metrics import fidelity_at_k


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
    queries = query_matrix(queries, searcher.width)
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
    query = query_matrix(query_vector, searcher.width)[:1]
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
