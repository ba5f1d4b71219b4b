"""Latency scaling fits: p50/p95 against corpus size per configuration, and the latency a fit projects.

Numbers in, numbers out (numpy and pandas only): the bench fits what it measured, the cost model and the
planner project those fits to corpus sizes nobody measured, and say how far off the fit was on the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, get_args

import numpy as np
import pandas as pd

FitForm = Literal["linear", "log"]
Metric = Literal["p50_ms", "p95_ms"]


@dataclass(frozen=True)
class ScalingFit:
    """latency_ms = intercept_ms + slope_ms * x, with x = corpus_size (linear) or ln(corpus_size) (log).

    ``holdout_relative_error`` is |predicted - measured| / measured at the largest measured size when the
    line was fitted without it (None with fewer than three sizes); the stored line uses every size.
    ``measured_ms`` are the medians it was fitted to, one per size: the floor of its projections.
    """

    index_type: str
    precision: str
    width: int
    metric: str
    form: str
    intercept_ms: float
    slope_ms: float
    corpus_sizes: tuple[int, ...]
    measured_ms: tuple[float, ...]
    holdout_corpus_size: int | None
    holdout_relative_error: float | None

    def to_dict(self) -> dict:
        return {
            "index_type": self.index_type,
            "precision": self.precision,
            "width": self.width,
            "metric": self.metric,
            "form": self.form,
            "intercept_ms": self.intercept_ms,
            "slope_ms": self.slope_ms,
            "corpus_sizes": list(self.corpus_sizes),
            "measured_ms": list(self.measured_ms),
            "holdout_corpus_size": self.holdout_corpus_size,
            "holdout_relative_error": self.holdout_relative_error,
        }


def _x(form: str, corpus_size) -> np.ndarray:
    sizes = np.asarray(corpus_size, dtype=float)
    return np.log(sizes) if form == "log" else sizes


def _line(form: str, sizes: np.ndarray, latencies_ms: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of the Theil-Sen line: the median of pairwise slopes (held >= 0), then the median
    intercept.

    A search never gets faster as the corpus grows, and one noisy size (a 3.6 ms spike among 0.2-0.6 ms
    timings was seen here) must not tilt the line: least squares through three points did, projecting 0 ms
    at 1M. The intercept may be negative (small corpora sit in cache and scan faster per vector); the
    measured floor in ``project_latency_ms`` keeps projections above what was measured. On
    experiments/bench_scaling.py's rows (5,183...400,000 fitted, 1M held out, flat and binary scans) the median
    held-out error was 4.2 % this way against 7.3 % for least squares (max 19.6 % against 22.1 %).
    """
    x = _x(form, sizes)
    pairs = [(latencies_ms[j] - latencies_ms[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x))]
    slope = max(0.0, float(np.median(pairs)))
    return float(np.median(latencies_ms - slope * x)), slope


def fit_latency(rows: pd.DataFrame | Sequence[dict], metric: Metric = "p50_ms") -> dict[tuple[str, str, int], ScalingFit]:
    """Fit latency against corpus size for each (index_type, precision, width) measured at two or more sizes.

    Flat and binary scans read every vector, so their time is linear in corpus size; HNSW visits about
    log(n) layers of neighbours, so it is fitted as a + b*ln(n). Repeated sizes use their median; the line
    is robust to one outlying size, and its intercept and slope are never negative (see ``_line``).

    Args:
        rows: ``latency`` rows (a DataFrame from the store, or ``run_bench``'s dicts).
        metric: ``p50_ms`` or ``p95_ms``.

    Returns:
        {(index_type, precision, width): ScalingFit}.
    """
    if metric not in get_args(Metric):
        raise ValueError(f"metric={metric!r}: expected one of {list(get_args(Metric))}")
    frame = pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows)
    fits: dict[tuple[str, str, int], ScalingFit] = {}
    if frame.empty:
        return fits
    for (index_type, precision, width), group in frame.groupby(["index_type", "precision", "width"]):
        by_size = group.groupby("corpus_size")[metric].median().sort_index()
        if len(by_size) < 2:
            continue
        form = "log" if index_type == "hnsw" else "linear"
        sizes = by_size.index.to_numpy(dtype=float)
        latencies = by_size.to_numpy(dtype=float)
        holdout_size, holdout_error = None, None
        if len(sizes) >= 3:
            intercept, slope = _line(form, sizes[:-1], latencies[:-1])
            predicted = max(intercept + slope * float(_x(form, sizes[-1])), latencies[-2])
            holdout_size = int(sizes[-1])
            holdout_error = abs(predicted - latencies[-1]) / latencies[-1]
        intercept, slope = _line(form, sizes, latencies)
        fits[(str(index_type), str(precision), int(width))] = ScalingFit(
            str(index_type), str(precision), int(width), metric, form, intercept, slope,
            tuple(int(size) for size in sizes), tuple(float(value) for value in latencies), holdout_size, holdout_error,
        )
    return fits


def tail_ratio(rows: pd.DataFrame) -> float:
    """p95 / p50 of one configuration at its largest measured size (at least 1): how much slower its slow
    queries are than its typical one where the corpus is largest, which is where a projection starts.

    Example:
        >>> tail_ratio(pd.DataFrame({"corpus_size": [1000, 10000], "p50_ms": [0.5, 4.0], "p95_ms": [2.0, 5.0]}))
        1.25
    """
    largest = rows[rows["corpus_size"] == rows["corpus_size"].max()]
    p50, p95 = float(largest["p50_ms"].median()), float(largest["p95_ms"].median())
    return max(1.0, p95 / p50) if p50 > 0 else 1.0


def project_latency_ms(fit: ScalingFit | dict, corpus_size: int) -> float:
    """Latency a fit predicts at ``corpus_size``, never below what was measured.

    The floor: at or above a measured size, the latency measured at the largest such size (a larger
    corpus is not searched faster); below every measured size, the smallest measurement scaled down in
    proportion to the corpus size, which stays above 0.

    Example:
        >>> project_latency_ms({"form": "linear", "intercept_ms": 0.5, "slope_ms": 1e-5}, 1_000_000)
        10.5
        >>> fit = {"form": "linear", "intercept_ms": -0.3, "slope_ms": 1e-4, "corpus_sizes": [10_000, 100_000],
        ...        "measured_ms": [0.7, 9.7]}
        >>> round(project_latency_ms(fit, 1_000), 3), round(project_latency_ms(fit, 1_000_000), 3)
        (0.07, 99.7)
    """
    if corpus_size < 1:
        raise ValueError(f"corpus_size={corpus_size}: expected a positive number of rows")
    values = fit.to_dict() if isinstance(fit, ScalingFit) else fit
    form = values["form"]
    if form not in get_args(FitForm):
        raise ValueError(f"form={form!r}: expected one of {list(get_args(FitForm))}")
    line = float(values["intercept_ms"] + values["slope_ms"] * float(_x(form, corpus_size)))
    sizes, measured = values.get("corpus_sizes") or [], values.get("measured_ms") or []
    if not measured:
        return max(0.0, line)
    at_or_below = [latency for size, latency in zip(sizes, measured) if size <= corpus_size]
    if at_or_below:
        floor = at_or_below[-1]
    else:
        floor = measured[0] * corpus_size / sizes[0]
    return max(line, floor)
