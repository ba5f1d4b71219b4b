import numpy as np
import pandas as pd
import pytest

from mrl_core.bench import enlarge_corpus, index_searcher, run_bench, sample_mixture_corpus
from mrl_core.indexes import build_index, measured_pairs
from mrl_core.scaling import fit_latency, project_latency_ms
from mrl_core.widths import PRECISIONS
from mrl_core.evaluate import RESCORE_MULTIPLIER, exact_search
from mrl_core.store import TABLE_COLUMNS, ResultStore


def unit_rows(rows: int, width: int, seed: int = 0) -> np.ndarray:
    matrix = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_measured_pairs_keep_supported_pairs_and_reject_unknown_names():
    assert measured_pairs(["flat", "binary", "hnsw", "ivf"], ["fp32", "binary"]) == [
        ("flat", "fp32"), ("binary", "binary"), ("hnsw", "fp32"), ("ivf", "fp32"),
    ]
    with pytest.raises(ValueError, match="'pq' is not one of"):
        measured_pairs(["pq"], ["fp32"])
    with pytest.raises(ValueError, match="'int4' is not one of"):
        measured_pairs(["flat"], ["int4"])


def test_bench_measures_binary_rescore_by_default():
    # run_bench's default precisions are PRECISIONS; the rescore runs on the binary index only.
    assert measured_pairs(["flat", "binary"], PRECISIONS) == [
        ("flat", "fp32"), ("flat", "fp16"), ("flat", "int8"), ("binary", "binary"), ("binary", "binary+rescore"),
    ]


@pytest.mark.parametrize("width", [32, 24])
def test_bench_rescore_returns_the_evaluations_binary_rescore_ids(width):
    corpus, queries = unit_rows(300, width, seed=1), unit_rows(7, width, seed=2)
    index = build_index(corpus, "binary", "binary+rescore")
    search = index_searcher(index, "binary", "binary+rescore", k=10)
    ids = search(np.packbits(queries > 0, axis=1), queries)
    expected, _ = exact_search(corpus, queries, "binary+rescore", k=10)
    np.testing.assert_array_equal(ids, expected)
    # The rescore changes the order the bits alone give (otherwise this would test plain binary search).
    plain = index_searcher(index, "binary", "binary", k=10)(np.packbits(queries > 0, axis=1), queries)
    assert not np.array_equal(ids, plain)
    with pytest.raises(ValueError, match="precision='binary\\+rescore'"):
        index_searcher(index, "flat", "binary+rescore")


def test_enlarge_corpus_keeps_real_rows_and_unit_norms():
    real = unit_rows(100, 16)
    enlarged, details = enlarge_corpus(real, 250, noise_scale=0.5, seed=3)
    assert enlarged.shape == (250, 16)
    assert np.array_equal(enlarged[:100], real)
    np.testing.assert_allclose(np.linalg.norm(enlarged, axis=1), 1.0, rtol=1e-5)
    assert details["enlarged"] and details["synthetic_rows"] == 150 and details["noise_scale"] == 0.5
    # A synthetic row stays close to one real row (its source) and far from the rest.
    best = (enlarged[100:] @ real.T).max(axis=1)
    assert np.median(best) > 0.8
    subset, details = enlarge_corpus(real, 40)
    assert subset.shape == (40, 16) and not details["enlarged"]


def two_cluster_base(rows_per_cluster: int = 200, seed: int = 0) -> np.ndarray:
    """Unit rows in 8-d around e0 (30 %) and e1 (70 %); within a cluster the spread is 0.1 along e2 and
    0.01 along the other axes, so the pooled covariance is strongly anisotropic."""
    rng = np.random.default_rng(seed)
    sizes = (int(0.6 * rows_per_cluster), int(1.4 * rows_per_cluster))
    parts = []
    for axis, size in zip((0, 1), sizes):
        block = rng.normal(size=(size, 8)) * 0.01
        block[:, 2] = rng.normal(size=size) * 0.1
        block[:, axis] += 1.0
        parts.append(block)
    matrix = np.concatenate(parts).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_sample_mixture_corpus_keeps_clusters_and_covariance_and_applies_the_transform():
    base = two_cluster_base()
    reverse = lambda matrix: np.ascontiguousarray(matrix[:, ::-1])  # noqa: E731 - an orthogonal "adaptor"
    corpus, details = sample_mixture_corpus(base, 4400, transform=reverse, cluster_count=2, seed=5)
    assert corpus.shape == (4400, 8) and corpus.dtype == np.float32
    assert np.array_equal(corpus[:400], reverse(base))
    np.testing.assert_allclose(np.linalg.norm(corpus, axis=1), 1.0, rtol=1e-5)
    assert details["enlarged"] and details["real_rows"] == 400 and details["synthetic_rows"] == 4000
    synthetic = reverse(corpus[400:])  # back in the base space
    # Every synthetic row lies by one of the two clusters (e0 at 30 %, e1 at 70 %), none between them.
    nearest_axis = np.argmax(synthetic[:, :2], axis=1)
    assert np.all(synthetic[np.arange(4000), nearest_axis] > 0.9)
    assert np.mean(nearest_axis == 0) == pytest.approx(0.3, abs=0.03)
    # The within-cluster spread keeps its shape: 0.1 along e2, 0.01 elsewhere.
    spread = synthetic[nearest_axis == 1].std(axis=0)
    assert spread[2] == pytest.approx(0.1, rel=0.1) and spread[5] == pytest.approx(0.01, rel=0.2)
    # New draws from the same distribution: a synthetic row is about as far from its nearest real row as
    # real rows are from each other (a copy of a real row would give 0, too wide a spread well above 1).
    real_gaps = np.sqrt(np.maximum(2 - 2 * (base @ base.T - 2 * np.eye(400)).max(axis=1), 0))
    synthetic_gaps = np.sqrt(np.maximum(2 - 2 * (synthetic @ base.T).max(axis=1), 0))
    assert 0.8 < np.median(synthetic_gaps) / np.median(real_gaps) < 1.25


def test_sample_mixture_corpus_subsets_and_rejects_bad_arguments():
    base = two_cluster_base(50)
    subset, details = sample_mixture_corpus(base, 30, cluster_count=2)
    assert subset.shape == (30, 8) and not details["enlarged"] and details["real_rows"] == 30
    assert {tuple(row) for row in subset} <= {tuple(row) for row in base}
    with pytest.raises(ValueError, match="cluster_count=101: expected 1..100"):
        sample_mixture_corpus(base, 500, cluster_count=101)
    with pytest.raises(ValueError, match="corpus_size=0"):
        sample_mixture_corpus(base, 0)


def test_run_bench_rows_have_every_field_and_measured_bytes(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    result = run_bench(
        unit_rows(500, 32), widths=(32, 12), corpus_sizes=[300, 1000], query_count=6, batch_size=4,
        approximate_widths={32: 500}, store=store, run_fields={"model": "synthetic"},
    )
    rows = {(r["index_type"], r["precision"], r["width"], r["corpus_size"]): r for r in result.rows}
    # binary at width 12 is not a whole number of bytes; HNSW/IVF only at width 32 and up to 500 rows.
    assert ("binary", "binary", 12, 300) not in rows and ("hnsw", "fp32", 32, 1000) not in rows
    assert ("hnsw", "fp32", 32, 300) in rows and ("ivf", "fp32", 32, 300) in rows and ("flat", "int8", 12, 1000) in rows
    assert ("hnsw", "fp32", 12, 300) not in rows
    assert any("hnsw 32 at 1000: built up to 500 rows at this width" in reason for reason in result.skipped)
    assert any("hnsw 12: not among the approximate-index widths [32]" in reason for reason in result.skipped)
    for row in result.rows:
        assert set(row) == set(TABLE_COLUMNS["latency"])
        assert row["p95_ms"] >= row["p50_ms"] > 0 and row["queries_per_s"] > 0
        assert row["threads"] == 1 and row["batch_size"] == 4 and row["faiss_version"]
        assert row["details"]["enlarged"] == (row["corpus_size"] > 500)
        assert row["details"]["read_bytes_per_s"] > 1e8 and "last_level_cache_bytes" in row["details"]
        # Only approximate indexes carry a recall: exact scans find the exact top-10 by definition.
        assert (row["recall_at_10"] is not None) == (row["index_type"] in ("hnsw", "ivf"))
    for index_type, parameter in (("hnsw", "hnsw_ef_search"), ("ivf", "ivf_nprobe")):
        row = rows[(index_type, "fp32", 32, 300)]
        assert row["recall_at_10"] >= 0.99 and row["details"]["recall_met"] and row["details"][parameter] >= 1
    flat = rows[("flat", "fp32", 32, 1000)]
    assert flat["formula_bytes_per_vector"] == 128
    assert flat["bytes_per_vector"] == pytest.approx(128, rel=0.01)
    assert rows[("binary", "binary", 32, 1000)]["bytes_per_vector"] == pytest.approx(4, rel=0.05)
    assert rows[("flat", "int8", 12, 1000)]["bytes_per_vector"] == pytest.approx(12, rel=0.05)
    hnsw = rows[("hnsw", "fp32", 32, 300)]
    assert hnsw["formula_bytes_per_vector"] == 128 + 256 and hnsw["bytes_per_vector"] > 128
    # binary+rescore keeps only the bit codes: 32 bits = 4 bytes, like plain binary.
    assert ("binary", "binary+rescore", 12, 300) not in rows
    for corpus_size in (300, 1000):
        rescored = rows[("binary", "binary+rescore", 32, corpus_size)]
        assert rescored["formula_bytes_per_vector"] == 4
        assert rescored["bytes_per_vector"] == pytest.approx(4, rel=0.05)
        assert rescored["details"]["rescore_shortlist_size"] == RESCORE_MULTIPLIER * 10
    assert "rescore_shortlist_size" not in rows[("binary", "binary", 32, 1000)]["details"]
    stored = store.rows("latency", result.run_id)
    assert len(stored) == len(result.rows) and set(stored["kind"]) == {"bench"}
    summary = store.get_run(result.run_id)["summary"]
    assert {fit["metric"] for fit in summary["fits"]} == {"p50_ms", "p95_ms"}


def test_fit_latency_recovers_known_lines_and_reports_holdout_error():
    sizes = [1_000, 10_000, 100_000, 1_000_000]
    rows = [
        {"index_type": "flat", "precision": "fp32", "width": 64, "corpus_size": n, "p50_ms": 0.5 + 2e-5 * n, "p95_ms": 1.0 + 4e-5 * n}
        for n in sizes
    ] + [
        {"index_type": "hnsw", "precision": "fp32", "width": 64, "corpus_size": n, "p50_ms": 0.1 + 0.05 * np.log(n), "p95_ms": 1.0}
        for n in sizes
    ]
    fits = fit_latency(pd.DataFrame(rows))
    flat = fits[("flat", "fp32", 64)]
    assert flat.form == "linear" and flat.intercept_ms == pytest.approx(0.5) and flat.slope_ms == pytest.approx(2e-5)
    assert flat.holdout_corpus_size == 1_000_000 and flat.holdout_relative_error == pytest.approx(0, abs=1e-9)
    hnsw = fits[("hnsw", "fp32", 64)]
    assert hnsw.form == "log" and hnsw.intercept_ms == pytest.approx(0.1) and hnsw.slope_ms == pytest.approx(0.05)
    assert project_latency_ms(flat, 2_000_000) == pytest.approx(40.5)
    assert project_latency_ms(hnsw.to_dict(), 10_000_000) == pytest.approx(0.1 + 0.05 * np.log(1e7))
    assert fit_latency(rows, "p95_ms")[("flat", "fp32", 64)].slope_ms == pytest.approx(4e-5)


def test_fit_latency_holdout_error_is_measured_on_the_largest_size():
    rows = [
        {"index_type": "flat", "precision": "fp32", "width": 8, "corpus_size": n, "p50_ms": ms}
        for n, ms in [(100, 1.0), (200, 2.0), (400, 8.0)]
    ]
    fit = fit_latency(rows)[("flat", "fp32", 8)]
    # Fitted on 100 and 200 only: 1 ms per 100 rows predicts 4 ms at 400, measured 8 ms -> 50 % off.
    assert fit.holdout_relative_error == pytest.approx(0.5)
    assert fit_latency(rows[:1]) == {}
    with pytest.raises(ValueError, match="metric='p99_ms'"):
        fit_latency(rows, "p99_ms")


def test_bench_and_funnel_commands_on_precomputed_embeddings(tmp_path, capsys):
    import json

    from mrl_core.cli import main

    np.save(tmp_path / "vectors.npy", unit_rows(300, 16))
    store_path = tmp_path / "results.duckdb"
    code = main([
        "bench", "--data", str(tmp_path / "vectors.npy"), "--model", "precomputed", "--store", str(store_path),
        "--corpus-sizes", "300,600", "--widths", "16,8", "--index-types", "flat,binary", "--precisions", "fp32,binary",
        "--query-count", "3", "--batch-size", "2", "--json",
    ])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {(r["index_type"], r["width"], r["corpus_size"]) for r in payload["rows"]} == {
        (index_type, width, size) for index_type in ("flat", "binary") for width in (16, 8) for size in (300, 600)
    }
    assert len(ResultStore(store_path).rows("latency", payload["run_id"])) == 8
    assert {fit["form"] for fit in payload["fits"]} == {"linear"}

    code = main(["funnel", "--data", str(tmp_path / "vectors.npy"), "--model", "precomputed", "--query", "x",
                 "--store", str(store_path), "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "cannot encode a new query text" in captured.err


def test_approximate_indexes_are_timed_at_the_smallest_parameter_meeting_the_recall_floor():
    """The search parameter the bench picks is the smallest of its grid whose recall meets the floor."""
    from mrl_core.bench import HNSW_EF_SEARCH_GRID, IVF_NPROBE_GRID, _exact_neighbours
    from mrl_core.metrics import fidelity_at_k

    corpus, queries = unit_rows(4000, 24, seed=5), unit_rows(40, 24, seed=6)
    result = run_bench(
        corpus, widths=[24], index_types=["hnsw", "ivf"], precisions=["fp32"], query_embeddings=queries,
        query_count=40, batch_size=8, recall_floor=0.95,
    )
    exact = _exact_neighbours(corpus, queries, 10)
    for row in result.rows:
        index = build_index(corpus, row["index_type"], "fp32")
        if row["index_type"] == "hnsw":
            chosen, grid, name = row["details"]["hnsw_ef_search"], HNSW_EF_SEARCH_GRID, "hnsw_ef_search"
        else:
            chosen, grid, name = row["details"]["ivf_nprobe"], IVF_NPROBE_GRID, "ivf_nprobe"
            assert row["details"]["ivf_lists"] == index.nlist == 253
        recall = fidelity_at_k(index_searcher(index, row["index_type"], "fp32", **{name: chosen})(queries, queries), exact, 10)
        assert recall == pytest.approx(row["recall_at_10"]) and recall >= 0.95
        smaller = [value for value in grid if 10 <= value < chosen] if name == "hnsw_ef_search" else [
            value for value in grid if value < chosen]
        if smaller:
            below = index_searcher(index, row["index_type"], "fp32", **{name: smaller[-1]})(queries, queries)
            assert fidelity_at_k(below, exact, 10) < 0.95
