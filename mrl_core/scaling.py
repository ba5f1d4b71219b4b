"""Latency scaling fits: p50/p95 against corpus size per configuration, and the latency a fit projects.

What a search costs decides the form of the line. A flat or binary scan reads every code: a fixed cost
(query setup, top-k selection, a binary+rescore's rerank) plus bytes scanned / scan rate, linear in the
corpus size, and never faster than this machine's memory read bandwidth allows. The scan rate is fitted on
the sizes whose codes exceed the last-level cache (smaller corpora are scanned from cache, faster per byte),
so a line through 100,000 and 1,000,000 rows extends to 10M at memory speed. HNSW visits about log(n)
layers of neighbours at its efSearch: a + b*ln(n). IVF with 4*sqrt(n) lists scans nprobe lists of about
sqrt(n)/4 codes each plus the centroids: a + b*nprobe*sqrt(n), with the nprobe the bench tuned at each size
(projections hold the largest size's nprobe: a larger corpus needs at least as many lists to keep recall).

Numbers in, numbers out (numpy and pandas only): the bench fits what it measured, the cost model and the
planner project those fits to corpus sizes nobody measured, and say how far off the fit was on the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, get_args

import numpy as np
import pandas as pd

FitForm = Literal["linear", "log", "sqrt"]
FORMS = {"hnsw": "log", "ivf": "sqrt"}
"""Index type -> its fit's form; every other index type scans all codes and is 'linear'."""
Metric = Literal["p50_ms", "p95_ms"]


@dataclass(frozen=True)
class ScalingFit:
    """latency_ms = intercept_ms + slope_ms * x, with x = corpus_size (linear), ln(corpus_size) (log) or
    sqrt(corpus_size) (sqrt).

    ``holdout_relative_error`` is |predicted - measured| / measured at the largest measured size when the
    line was fitted without it (None with fewer than three sizes); the stored line uses every fitted size.
    ``measured_ms`` are the medians per measured size: the floor of its projections. For a scan,
    ``bytes_per_vector`` is the code it reads per row, ``scan_bytes_per_s`` the rate the slope means
    (bytes_per_vector / slope), ``fitted_sizes`` the sizes past the last-level cache the line went through
    (all sizes where fewer than two are), and ``read_bytes_per_s`` the machine's measured read bandwidth:
    no projection is below corpus_size * bytes_per_vector / read_bytes_per_s.
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
    fitted_sizes: tuple[int, ...] = ()
    bytes_per_vector: float | None = None
    read_bytes_per_s: float | None = None
    probes: int | None = None

    @property
    def scan_bytes_per_s(self) -> float | None:
        """Bytes a scan reads per second past the cache, as the slope says (None for HNSW/IVF or a flat line)."""
        if self.form != "linear" or not self.bytes_per_vector or self.slope_ms <= 0:
            return None
        return self.bytes_per_vector / self.slope_ms * 1000

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
            "fitted_sizes": list(self.fitted_sizes),
            "bytes_per_vector": self.bytes_per_vector,
            "read_bytes_per_s": self.read_bytes_per_s,
            "scan_bytes_per_s": self.scan_bytes_per_s,
            "probes": self.probes,
        }


def _x(form: str, corpus_size, probes=None) -> np.ndarray:
    sizes = np.asarray(corpus_size, dtype=float)
    if form == "log":
        return np.log(sizes)
    if form == "sqrt":
        return np.sqrt(sizes) * (1.0 if probes is None else np.asarray(probes, dtype=float))
    return sizes


def _line(form: str, sizes: np.ndarray, latencies_ms: np.ndarray, probes=None) -> tuple[float, float]:
    """(intercept, slope) of the Theil-Sen line: the median of pairwise slopes (held >= 0), then the median
    intercept.

    A search never gets faster as the corpus grows, and one noisy size (a 3.6 ms spike among 0.2-0.6 ms
    timings was seen here) must not tilt the line: least squares through three points did, projecting 0 ms
    at 1M. The intercept may be negative (small corpora sit in cache and scan faster per vector); the
    measured floor in ``project_latency_ms`` keeps projections above what was measured. On
    experiments/bench_scaling.py's rows (5,183...400,000 fitted, 1M held out, flat and binary scans) the median
    held-out error was 4.2 % this way against 7.3 % for least squares (max 19.6 % against 22.1 %).
    """
    x = _x(form, sizes, probes)
    pairs = [(latencies_ms[j] - latencies_ms[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x))]
    slope = max(0.0, float(np.median(pairs)))
    return float(np.median(latencies_ms - slope * x)), slope


def _probes_per_size(group: pd.DataFrame, sizes: pd.Index) -> np.ndarray | None:
    """IVF lists probed at each size, from the bench rows' details (None unless every size has it)."""
    if "details" not in group.columns:
        return None
    probes = []
    for size in sizes:
        values = [
            details["ivf_nprobe"] for details in group.loc[group["corpus_size"] == size, "details"]
            if isinstance(details, dict) and details.get("ivf_nprobe")
        ]
        if not values:
            return None
        probes.append(float(np.median(values)))
    return np.asarray(probes)


def _machine_value(group: pd.DataFrame, key: str) -> float | None:
    """A machine fact the bench recorded in its rows' details (read bandwidth, cache size), or None."""
    if "details" not in group.columns:
        return None
    values = [details.get(key) for details in group["details"] if isinstance(details, dict) and details.get(key)]
    return float(np.median(values)) if values else None


def _past_cache(sizes: np.ndarray, bytes_per_vector: float | None, cache_bytes: float | None) -> np.ndarray:
    """The sizes to fit a scan through: those whose codes exceed the last-level cache, when two or more do."""
    if not bytes_per_vector or not cache_bytes:
        return sizes
    past = sizes[sizes * bytes_per_vector > cache_bytes]
    return past if len(past) >= 2 else sizes


def fit_latency(rows: pd.DataFrame | Sequence[dict], metric: Metric = "p50_ms") -> dict[tuple[str, str, int], ScalingFit]:
    """Fit latency against corpus size for each (index_type, precision, width) measured at two or more sizes.

    Scans are linear in corpus size through the sizes past the last-level cache (when the rows carry
    ``formula_bytes_per_vector`` and the bench's ``last_level_cache_bytes``); HNSW is a + b*ln(n), IVF
    a + b*sqrt(n) (see the module docstring). Repeated sizes use their median; the line is robust to one
    outlying size, and its slope is never negative (see ``_line``).

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
        form = FORMS.get(str(index_type), "linear")
        bytes_per_vector = None
        if form == "linear" and "formula_bytes_per_vector" in group.columns:
            known = group["formula_bytes_per_vector"].dropna()
            bytes_per_vector = float(known.median()) if not known.empty else None
        cache_bytes = _machine_value(group, "last_level_cache_bytes")
        sizes = by_size.index.to_numpy(dtype=float)
        latencies = by_size.to_numpy(dtype=float)
        probes = _probes_per_size(group, by_size.index) if form == "sqrt" else None
        fitted = _past_cache(sizes, bytes_per_vector, cache_bytes) if form == "linear" else sizes
        holdout_size, holdout_error = None, None
        if len(sizes) >= 3:
            before = _past_cache(sizes[:-1], bytes_per_vector, cache_bytes) if form == "linear" else sizes[:-1]
            intercept, slope = _line(form, before, latencies[np.isin(sizes, before)], None if probes is None else probes[:-1])
            # Projected as a projection would be: with the nprobe of the largest size fitted.
            x_largest = _x(form, sizes[-1], None if probes is None else probes[-2])
            predicted = max(intercept + slope * float(x_largest), latencies[-2])
            holdout_size = int(sizes[-1])
            holdout_error = abs(predicted - latencies[-1]) / latencies[-1]
        intercept, slope = _line(form, fitted, latencies[np.isin(sizes, fitted)], probes)
        fits[(str(index_type), str(precision), int(width))] = ScalingFit(
            str(index_type), str(precision), int(width), metric, form, intercept, slope,
            tuple(int(size) for size in sizes), tuple(float(value) for value in latencies), holdout_size, holdout_error,
            tuple(int(size) for size in fitted), bytes_per_vector, _machine_value(group, "read_bytes_per_s"),
            None if probes is None else int(probes[-1]),
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
    """Latency a fit predicts at ``corpus_size``, never below what was measured or what memory allows.

    The floors: at or above a measured size, the latency measured at the largest such size (a larger
    corpus is not searched faster); below every measured size, the smallest measurement scaled down in
    proportion to the corpus size, which stays above 0; for a scan with a known read bandwidth, the time
    to read corpus_size codes at that bandwidth.

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
    line = float(values["intercept_ms"] + values["slope_ms"] * float(_x(form, corpus_size, values.get("probes"))))
    bytes_per_vector, read_bytes_per_s = values.get("bytes_per_vector"), values.get("read_bytes_per_s")
    bandwidth_floor = 0.0
    if form == "linear" and bytes_per_vector and read_bytes_per_s:
        bandwidth_floor = corpus_size * bytes_per_vector / read_bytes_per_s * 1000
    sizes, measured = values.get("corpus_sizes") or [], values.get("measured_ms") or []
    if not measured:
        return max(0.0, line, bandwidth_floor)
    at_or_below = [latency for size, latency in zip(sizes, measured) if size <= corpus_size]
    if at_or_below:
        floor = at_or_below[-1]
    else:
        floor = measured[0] * corpus_size / sizes[0]
    return max(line, floor, bandwidth_floor)
