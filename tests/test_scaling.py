import numpy as np
import pytest
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


def _scan_rows(sizes, p50, bytes_per_vector, cache_bytes=32 * 2**20, read_bytes_per_s=14e9):
    details = {"last_level_cache_bytes": cache_bytes, "read_bytes_per_s": read_bytes_per_s}
    return pd.DataFrame({
        "index_type": "flat", "precision": "fp32", "width": bytes_per_vector // 4, "corpus_size": sizes, "p50_ms": p50,
        "p95_ms": [value * 1.2 for value in p50], "formula_bytes_per_vector": float(bytes_per_vector),
        "details": [details] * len(sizes),
    })


def test_scans_are_fitted_past_the_cache_where_they_run_at_memory_speed():
    # 1536-byte codes: 10k rows (15 MB) sit in a 32 MB cache and scan faster per byte; 30k-1M (46 MB-1.5 GB) do not.
    # Past the cache: 0.2 ms + bytes / 10 GB/s. A line through all four sizes would bend towards the cached one.
    sizes = [10_000, 30_000, 100_000, 1_000_000]
    rate_bytes_per_ms = 10e9 / 1000
    p50 = [0.4] + [0.2 + size * 1536 / rate_bytes_per_ms for size in sizes[1:]]
    (fit,) = fit_latency(_scan_rows(sizes, p50, 1536), "p50_ms").values()
    assert fit.fitted_sizes == (30_000, 100_000, 1_000_000)
    assert fit.scan_bytes_per_s == pytest.approx(10e9)
    assert fit.intercept_ms == pytest.approx(0.2)
    # Held out: the line through 30k and 100k predicts 1M exactly.
    assert fit.holdout_relative_error == pytest.approx(0, abs=1e-9)
    assert project_latency_ms(fit, 4_000_000) == pytest.approx(0.2 + 4_000_000 * 1536 / rate_bytes_per_ms)


def test_no_scan_is_projected_faster_than_memory_can_be_read():
    # A flat line (e.g. every size served from cache) would project 0.3 ms at 1B rows of 48 bytes; reading
    # 48 GB at 14 GB/s takes 3.4 s.
    (fit,) = fit_latency(_scan_rows([10_000, 20_000, 40_000], [0.3, 0.3, 0.3], 48), "p50_ms").values()
    assert fit.slope_ms == 0
    assert project_latency_ms(fit, 1_000_000_000) == pytest.approx(1e9 * 48 / 14e9 * 1000)
    estimate = latency_at(_scan_rows([10_000, 20_000, 40_000], [0.3, 0.3, 0.3], 48), 1_000_000_000)
    assert estimate.p50_ms == pytest.approx(1e9 * 48 / 14e9 * 1000) and estimate.p95_ms >= estimate.p50_ms


def test_ivf_is_fitted_in_the_square_root_of_the_corpus_size():
    sizes = [10_000, 100_000, 1_000_000]
    rows = pd.DataFrame({
        "index_type": "ivf", "precision": "fp32", "width": 128, "corpus_size": sizes,
        "p50_ms": [0.1 + 0.002 * np.sqrt(size) for size in sizes], "p95_ms": [0.2 + 0.003 * np.sqrt(size) for size in sizes],
    })
    (fit,) = fit_latency(rows, "p50_ms").values()
    assert fit.form == "sqrt" and fit.slope_ms == pytest.approx(0.002) and fit.holdout_relative_error == pytest.approx(0, abs=1e-9)
    assert project_latency_ms(fit, 4_000_000) == pytest.approx(0.1 + 0.002 * 2000)


def test_ivf_lines_count_the_lists_probed():
    # The first start's IVF 128 rows on this machine: nprobe tuned to recall@10 0.99 grew with the corpus.
    sizes, probes, p50 = [10_000, 30_000, 100_000, 1_000_000], [48, 96, 128, 384], [0.091, 0.198, 0.5, 4.822]
    rows = pd.DataFrame({
        "index_type": "ivf", "precision": "fp32", "width": 128, "corpus_size": sizes, "p50_ms": p50,
        "p95_ms": [value * 1.2 for value in p50], "details": [{"ivf_nprobe": value} for value in probes],
    })
    (fit,) = fit_latency(rows, "p50_ms").values()
    assert fit.probes == 384
    # Scanned codes ~ nprobe * sqrt(n): 1M -> 4M at 384 lists doubles them. A plain sqrt(n) line, fitted
    # across sizes whose nprobe grew 8x, projected 7.0 ms at 4M; 12.75 ms was measured.
    projected = project_latency_ms(fit, 4_000_000)
    assert 9.0 < projected < 10.0
    assert project_latency_ms(fit, 4_000_000) == pytest.approx(fit.intercept_ms + fit.slope_ms * 384 * 2000)
    assert "nprobe 384 as tuned at the largest size" in latency_at(rows, 4_000_000).basis
