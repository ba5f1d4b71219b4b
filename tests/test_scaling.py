import numpy as np
import pandas as pd

from mrl_core.cost import latency_at
from mrl_core.scaling import fit_latency, project_latency_ms


def _rows(sizes, p50, p95, index_type="binary"):
    return pd.DataFrame({
        "index_type": index_type, "precision": "binary", "width": 384, "corpus_size": sizes, "p50_ms": p50, "p95_ms": p95,
    })


def test_one_spiking_size_does_not_tilt_the_line():
    # The first start's case: 0.2 / 3.6 (a spike) / 0.6 ms at 10k / 30k / 100k. Least squares projected 0 ms
    # at 1M; the robust line follows the two clean sizes: 0.2 + (0.6 - 0.2) / 90,000 per vector.
    rows = _rows([10_000, 30_000, 100_000], [0.2, 3.6, 0.6], [0.3, 4.0, 0.9])
    (fit,) = fit_latency(rows, "p50_ms").values()
    assert fit.slope_ms >= 0 and fit.intercept_ms >= 0
    # Pairwise slopes: 3.4/20k, 0.4/90k, -3.0/70k; their median is 0.4/90k; intercept median(y - slope x).
    slope = 0.4 / 90_000
    intercept = float(np.median([0.2 - slope * 10_000, 3.6 - slope * 30_000, 0.6 - slope * 100_000]))
    assert abs(project_latency_ms(fit, 1_000_000) - (intercept + slope * 1_000_000)) < 1e-9
    assert 4.0 < project_latency_ms(fit, 1_000_000) < 5.0


def test_projected_p95_is_never_below_p50_nor_zero():
    rng = np.random.default_rng(0)
    for _ in range(40):
        sizes = [10_000, 30_000, 100_000]
        p50 = rng.uniform(0.01, 5.0, 3)
        p95 = p50 * rng.uniform(0.5, 3.0, 3)  # noisy: a p95 below its p50 happens with few samples
        for index_type in ("flat", "binary", "hnsw"):
            for corpus_size in (1_000, 1_000_000, 10_000_000_000):
                estimate = latency_at(_rows(sizes, p50, p95, index_type), corpus_size)
                assert estimate.projected
                assert 0 < estimate.p50_ms <= estimate.p95_ms


def test_p95_is_p50_times_the_tail_measured_at_the_largest_size():
    rows = _rows([100_000, 1_000_000], [1.0, 10.0], [1.5, 12.0], index_type="flat")
    estimate = latency_at(rows, 2_000_000)
    assert abs(estimate.p50_ms - 20.0) < 1e-9
    assert abs(estimate.p95_ms - 20.0 * 1.2) < 1e-9
