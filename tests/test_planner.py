import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from mrl_core.cli import main
from mrl_core.cost import GB, merge_cost_ms
from mrl_core.deployment import Deployment, Machine
from mrl_core.bench import run_bench
from mrl_core.planner import NO_BENCH_NOTE, WidthPlanner, funnel_label, latency_rows_for, pareto_mask, rank
from mrl_core.store import ResultStore

# Shaped like all-MiniLM-L6-v2 on SciFact (DESIGN.md: 0.6451 full, 0.602 at 128, 0.484 at 64, 0.337 at 32).
QUALITY = {
    ("fp32", 384): 0.6451, ("fp32", 128): 0.602, ("fp32", 64): 0.484, ("fp32", 32): 0.337,
    ("int8", 384): 0.641, ("int8", 128): 0.596, ("int8", 64): 0.478,
    ("binary", 384): 0.585, ("binary", 128): 0.47,
    ("binary+rescore", 384): 0.63, ("binary+rescore", 128): 0.57,
}


def _latency_row(index_type, width, precision, corpus_size, p95_ms):
    return {
        "index_type": index_type, "width": width, "precision": precision, "corpus_size": corpus_size,
        "batch_size": 64, "threads": 1, "faiss_version": "1.15.1", "p50_ms": p95_ms * 0.8, "p95_ms": p95_ms,
    }


def _flat_p95_ms(width, precision, corpus_size):
    # Memory-bandwidth bound scan: ~130 ms for 1M x 384 fp32 on this machine (DESIGN.md).
    bytes_per_dim = {"fp32": 4, "int8": 1}[precision]
    return 130.0 * (width * bytes_per_dim / 1536) * (corpus_size / 1_000_000) + 0.05


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("planner") / "s.duckdb")
    with store.run("evaluate", model="base", dataset="scifact", dataset_fingerprint="fp-scifact", corpus_size=5183) as run_id:
        store.add_rows("results", run_id, [
            {"method": "prefix", "width": width, "precision": precision, "ndcg_at_10": ndcg,
             "recall_at_10": ndcg + 0.15, "retention": ndcg / 0.6451}
            for (precision, width), ndcg in QUALITY.items()
        ])
    with store.run("bench", model="base", dataset="scifact", dataset_fingerprint="fp-scifact") as run_id:
        rows = []
        for (precision, width) in QUALITY:
            for corpus_size in (100_000, 1_000_000):
                if precision in ("fp32", "int8"):
                    rows.append(_latency_row("flat", width, precision, corpus_size, _flat_p95_ms(width, precision, corpus_size)))
                else:
                    rescore_ms = 1.0 if precision == "binary+rescore" else 0.0
                    rows.append(_latency_row("binary", width, precision, corpus_size, 4.0 * width / 384 * corpus_size / 1e6 + rescore_ms))
        rows.append(_latency_row("flat", 384, "fp32", 10_000, 1.2))
        rows += [_latency_row("hnsw", 384, "fp32", n, p95) for n, p95 in ((100_000, 1.1), (1_000_000, 1.6))]
        store.add_rows("latency", run_id, rows)
    funnel = [
        {"width": 32, "precision": "binary", "index_type": "binary", "shortlist_size": 200},
        {"width": 384, "precision": "fp32", "index_type": "flat", "shortlist_size": 10},
    ]
    unmeasured_ndcg_funnel = [
        {"width": 64, "precision": "int8", "index_type": "flat", "shortlist_size": 100},
        {"width": 384, "precision": "fp32", "index_type": "flat", "shortlist_size": 10},
    ]
    with store.run("funnel", model="base", dataset="scifact", dataset_fingerprint="fp-scifact") as run_id:
        store.add_rows("funnels", run_id, [
            {"corpus_size": 5183, "stages": funnel, "recall_at_10": 0.97, "ndcg_at_10": 0.638, "p50_ms": 0.2, "p95_ms": 0.3},
            {"corpus_size": 1_000_000, "stages": funnel, "recall_at_10": 0.95, "ndcg_at_10": None, "p50_ms": 4.5, "p95_ms": 6.0},
            {"corpus_size": 1_000_000, "stages": unmeasured_ndcg_funnel, "recall_at_10": 0.9, "p50_ms": 20.0, "p95_ms": 25.0},
        ])
    # A second dataset evaluated later: the planner must not mix its quality into SciFact's.
    with store.run("evaluate", model="base", dataset="cisi", dataset_fingerprint="fp-cisi", corpus_size=1460) as run_id:
        store.add_rows("results", run_id, [
            {"method": "prefix", "width": 384, "precision": "fp32", "ndcg_at_10": 0.25, "retention": 1.0},
            {"method": "prefix", "width": 64, "precision": "fp32", "ndcg_at_10": 0.2, "retention": 0.8},
        ])
    return store


def _scifact(**targets):
    return WidthPlanner(1_000_000, **targets)


def test_cheapest_feasible_is_binary_with_rescore(store):
    planner = _scifact(max_storage_gb=1, max_p95_ms=20, min_ndcg=0.6).fit(store, dataset_fingerprint="scifact")
    chosen = planner.recommendation_
    assert chosen["label"] == "prefix 384 binary+rescore/binary"
    assert chosen["storage_bytes"] == 1_000_000 * 48
    assert chosen["p95_ms"] == pytest.approx(5.0)
    assert not chosen["latency_projected"]
    margins = chosen["margins"]
    assert margins["max_storage_gb"]["margin"] == pytest.approx(1 - 0.048)
    assert margins["max_p95_ms"]["margin"] == pytest.approx(15.0)
    assert margins["min_ndcg"]["margin"] == pytest.approx(0.03)
    assert planner.context_["dataset"] == "scifact" and planner.context_["full_width"] == 384


def test_binary_rescore_gets_bench_latency_and_is_recommended_under_a_latency_target(tmp_path):
    store = ResultStore(tmp_path / "s.duckdb")
    corpus = np.random.default_rng(0).normal(size=(600, 32)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    fields = {"model": "m", "dataset": "d", "dataset_fingerprint": "fp-d"}
    run_bench(corpus, widths=(32,), index_types=("flat", "binary"), corpus_sizes=[300, 600], query_count=8,
              batch_size=4, store=store, run_fields=fields)
    quality = {"fp32": 0.6, "fp16": 0.6, "int8": 0.59, "binary": 0.4, "binary+rescore": 0.55}
    with store.run("evaluate", corpus_size=600, **fields) as run_id:
        store.add_rows("results", run_id, [
            {"method": "prefix", "width": 32, "precision": precision, "ndcg_at_10": ndcg} for precision, ndcg in quality.items()
        ])
    latency = store.rows("latency")
    measured = latency[(latency["precision"] == "binary+rescore") & (latency["corpus_size"] == 600)].iloc[0]
    label = "prefix 32 binary+rescore/binary"

    # Plain binary costs the same 4 bytes but misses the quality floor, so the rescore is the cheapest fit.
    planner = WidthPlanner(600, max_p95_ms=float(measured["p95_ms"]), min_ndcg=0.5, index_types=("flat", "binary")).fit(store)
    candidate = planner.candidates_.set_index("label").loc[label]
    assert candidate["p95_ms"] == measured["p95_ms"] and candidate["p50_ms"] == measured["p50_ms"]
    assert not candidate["latency_projected"] and candidate["latency_sizes"] == [300, 600]
    assert planner.recommendation_["label"] == label and planner.recommendation_["storage_bytes"] == 600 * 4

    tighter = WidthPlanner(600, max_p95_ms=float(measured["p95_ms"]) * 0.99, min_ndcg=0.5, index_types=("flat", "binary"))
    reasons = tighter.fit(store).candidates_.set_index("label").loc[label, "reasons"]
    assert len(reasons) == 1 and reasons[0].startswith("p95 latency")


def _bench_row(run_id, index_type, width, precision, corpus_size, p95_ms, status="finished"):
    return {"run_id": run_id, "index_type": index_type, "width": width, "precision": precision,
            "corpus_size": corpus_size, "p50_ms": p95_ms / 2, "p95_ms": p95_ms, "status": status}


def test_latency_rows_for_a_single_stage_config_keeps_the_newest_finished_row_per_size():
    latency = pd.DataFrame([
        _bench_row(1, "binary", 64, "binary+rescore", 1000, 1.0),
        _bench_row(2, "binary", 64, "binary+rescore", 1000, 2.0),
        _bench_row(3, "binary", 64, "binary+rescore", 1000, 9.0, status="failed"),
        _bench_row(1, "binary", 64, "binary+rescore", 100, 0.5),
        _bench_row(2, "binary", 64, "binary", 1000, 0.7),
        _bench_row(2, "binary", 32, "binary+rescore", 1000, 0.6),
    ])
    config = {"kind": "single", "index_type": "binary", "width": 64, "precision": "binary+rescore"}
    rows = latency_rows_for(config, latency, pd.DataFrame())
    assert rows[["run_id", "corpus_size", "p95_ms"]].values.tolist() == [[1, 100, 0.5], [2, 1000, 2.0]]
    assert latency_rows_for(dict(config, width=16), latency, pd.DataFrame()).empty
    with pytest.raises(ValueError, match="kind='pipeline'"):
        latency_rows_for(dict(config, kind="pipeline"), latency, pd.DataFrame())


def test_latency_rows_for_a_funnel_match_its_stages_data_and_first_stage():
    stages = [
        {"width": 32, "precision": "binary", "index_type": "binary", "shortlist_size": 200},
        {"width": 384, "precision": "fp32", "index_type": "flat", "shortlist_size": 10},
    ]
    other = [dict(stages[0], shortlist_size=100), stages[1]]
    funnels = pd.DataFrame([
        {"run_id": 1, "stages": json.dumps(stages), "corpus_size": 1000, "p95_ms": 1.0, "dataset_fingerprint": "a", "model": "m", "status": "finished"},
        {"run_id": 2, "stages": stages, "corpus_size": 1000, "p95_ms": 3.0, "dataset_fingerprint": "b", "model": "m", "status": "finished"},
        {"run_id": 1, "stages": other, "corpus_size": 1000, "p95_ms": 5.0, "dataset_fingerprint": "a", "model": "m", "status": "finished"},
    ])
    config = {"kind": "funnel", "stages": stages}
    assert latency_rows_for(config, pd.DataFrame(), funnels)["p95_ms"].tolist() == [3.0]
    rows = latency_rows_for(config, pd.DataFrame(), funnels, dataset_fingerprint="a", model="m")
    assert rows["p95_ms"].tolist() == [1.0]
    # The first stage's index decides the scaling fit, so its fields come with the rows.
    assert rows[["index_type", "width", "precision"]].values.tolist() == [["binary", 32, "binary"]]


def test_ivf_funnels_that_differ_only_in_lists_probed_are_different_funnels():
    def ivf_funnel(probes):
        return [
            {"width": 128, "precision": "fp32", "index_type": "ivf", "shortlist_size": 300, "probes": probes},
            {"width": 384, "precision": "fp32", "index_type": "flat", "shortlist_size": 10},
        ]

    funnels = pd.DataFrame([
        {"run_id": 1, "stages": ivf_funnel(probes), "corpus_size": 1000, "p95_ms": p95_ms, "dataset_fingerprint": "a",
         "model": "m", "status": "finished"}
        for probes, p95_ms in ((8, 1.0), (64, 2.0))
    ])
    rows = latency_rows_for({"kind": "funnel", "stages": ivf_funnel(64)}, pd.DataFrame(), funnels)
    assert rows["p95_ms"].tolist() == [2.0]
    assert funnel_label(ivf_funnel(8)) == "funnel ivf 128 (probe 8) -> 300 | 384 -> 10"


def test_recommendation_agrees_with_a_brute_force_scan(store):
    targets = {"max_storage_gb": 0.6, "max_p95_ms": 50, "min_ndcg": 0.59}
    planner = _scifact(**targets).fit(store, dataset_fingerprint="fp-scifact")
    best = None
    for candidate in planner.candidates_.to_dict("records"):
        ok = (
            candidate["storage_bytes"] <= targets["max_storage_gb"] * GB
            and candidate["p95_ms"] is not None and not math.isnan(candidate["p95_ms"])
            and candidate["p95_ms"] <= targets["max_p95_ms"]
            and candidate["ndcg_at_10"] is not None and candidate["ndcg_at_10"] >= targets["min_ndcg"]
        )
        key = (candidate["storage_bytes"], candidate["p95_ms"], -candidate["ndcg_at_10"], candidate["label"]) if ok else None
        if ok and (best is None or key < best[0]):
            best = (key, candidate["label"])
        assert candidate["feasible"] == ok, candidate["label"]
    assert planner.recommendation_["label"] == best[1]


def test_defaults_to_the_newest_dataset_and_never_mixes_datasets(store):
    planner = _scifact().fit(store)
    assert planner.context_["dataset"] == "cisi"
    assert set(planner.candidates_["width"]) == {384, 64}
    # No funnel was measured on CISI.
    assert (planner.candidates_["kind"] == "single").all()


def test_unknown_dataset_or_model_names_what_exists(store):
    with pytest.raises(ValueError, match=r"dataset='msmarco'.*scifact \(fp-scifact\)"):
        _scifact().fit(store, dataset_fingerprint="msmarco")
    with pytest.raises(ValueError, match=r"model='mrl-64'.*\['base'\]"):
        _scifact().fit(store, dataset_fingerprint="scifact", model="mrl-64")


def test_empty_store_says_to_evaluate_first(tmp_path):
    with pytest.raises(ValueError, match="mrl_core evaluate"):
        _scifact().fit(ResultStore(tmp_path / "empty.duckdb"))


def test_infeasible_names_the_missed_target_and_by_how_much(store):
    planner = _scifact(max_storage_gb=1, max_p95_ms=20, min_ndcg=0.7).fit(store, dataset_fingerprint="scifact")
    assert planner.recommendation_ is None
    relax = planner.closest_["relax"]
    assert [item["target"] for item in relax] == ["min_ndcg"]
    # The best quality within storage and latency is 384 binary+rescore at 0.63 (the funnel needs 1.54 GB).
    assert relax[0]["needed"] == pytest.approx(0.63)
    assert relax[0]["by"] == pytest.approx(0.07)
    nearest = planner.closest_["candidates"].iloc[0]
    assert nearest["label"] == "prefix 384 binary+rescore/binary"
    assert nearest["misses"] == {"min_ndcg": pytest.approx(0.07)}
    assert nearest["reasons"] == ["nDCG@10 0.6300 < min_ndcg 0.7000 (under by 0.0700)"]


def test_storage_miss_is_reported_in_gb(store):
    planner = _scifact(max_storage_gb=1).fit(store, dataset_fingerprint="scifact")
    full = planner.candidates_.set_index("label").loc["prefix 384 fp32/flat"]
    assert full["misses"] == {"max_storage_gb": pytest.approx(0.536)}
    assert full["reasons"] == ["storage 1.54 GB > max_storage_gb 1 GB (over by 0.536 GB)"]


def test_candidates_without_latency_only_fail_a_latency_target(store):
    free = _scifact(min_ndcg=0.6).fit(store, dataset_fingerprint="scifact").candidates_.set_index("label")
    bounded = _scifact(min_ndcg=0.6, max_p95_ms=1000).fit(store, dataset_fingerprint="scifact").candidates_.set_index("label")
    unmeasured = "prefix 128 fp32/hnsw"
    assert free.loc[unmeasured, "feasible"]
    assert math.isnan(free.loc[unmeasured, "p95_ms"])
    assert not bounded.loc[unmeasured, "feasible"]
    assert bounded.loc[unmeasured, "reasons"] == ["no latency measured"]
    assert bounded.loc[unmeasured, "misses"] == {"max_p95_ms": None}


def test_latency_beyond_measured_sizes_is_a_projection_with_its_error(store):
    planner = WidthPlanner(4_000_000).fit(store, dataset_fingerprint="scifact")
    candidates = planner.candidates_.set_index("label")
    flat = candidates.loc["prefix 384 fp32/flat"]
    assert flat["latency_projected"]
    assert flat["latency_error"] > 0  # three sizes measured: 10k, 100k, 1M
    assert "projected to 4,000,000" in flat["latency_basis"]
    int8 = candidates.loc["prefix 128 int8/flat"]
    assert int8["latency_projected"] and pd.isna(int8["latency_error"])  # two sizes: error unknown
    # A scan is fitted linearly in corpus size, so the bench's linear cost model is recovered exactly.
    assert int8["p95_ms"] == pytest.approx(_flat_p95_ms(128, "int8", 4_000_000))
    measured = WidthPlanner(1_000_000).fit(store, dataset_fingerprint="scifact").candidates_.set_index("label")
    assert not measured.loc["prefix 384 fp32/flat", "latency_projected"]


def test_funnel_quality_prefers_measured_and_labels_estimates(store):
    candidates = _scifact().fit(store, dataset_fingerprint="scifact").candidates_.set_index("label")
    measured = candidates.loc["funnel binary 32 -> 200 | 384 -> 10"]
    assert measured["ndcg_at_10"] == pytest.approx(0.638)
    assert measured["quality_source"] == "measured at 5,183 vectors"
    # Recall from the measured size nearest the target corpus (1M), not the small one.
    assert measured["recall_at_10"] == pytest.approx(0.95)
    assert measured["storage_bytes"] == 1_000_000 * (4 + 1536)
    assert measured["p95_ms"] == pytest.approx(6.0)
    estimated = candidates.loc["funnel flat int8 64 -> 100 | 384 -> 10"]
    assert estimated["ndcg_at_10"] == pytest.approx(0.6451 * 0.9)
    assert estimated["quality_source"].startswith("estimated: full-width nDCG@10 0.6451 x funnel recall@10 0.900")


def test_funnel_rescore_vectors_on_disk_move_storage_out_of_ram(store):
    planner = WidthPlanner(1_000_000, max_ram_gb=0.01, deployment=Deployment(rescore_location="disk")).fit(
        store, dataset_fingerprint="scifact"
    )
    funnel = planner.candidates_.set_index("label").loc["funnel binary 32 -> 200 | 384 -> 10"]
    assert funnel["ram_bytes"] == 4_000_000 and funnel["disk_bytes"] == 1_536_000_000
    assert funnel["rescore_location"] == "disk" and funnel["feasible"]


def test_frontier_is_exactly_the_non_dominated_candidates(store):
    planner = _scifact().fit(store, dataset_fingerprint="scifact")
    points = [
        (c["storage_bytes"], math.inf if math.isnan(c["p95_ms"]) else c["p95_ms"], c["ndcg_at_10"], c["label"])
        for c in planner.candidates_.to_dict("records")
    ]

    def dominated(point):
        return any(
            o[0] <= point[0] and o[1] <= point[1] and o[2] >= point[2] and (o[0] < point[0] or o[1] < point[1] or o[2] > point[2])
            for o in points
        )

    expected = sorted(p[3] for p in points if not dominated(p))
    assert sorted(planner.frontier_["label"]) == expected
    assert "prefix 384 fp32/hnsw" in expected  # fastest at full quality
    assert "prefix 128 binary/binary" in expected  # smallest


def test_bad_parameters_are_refused_at_fit(store):
    with pytest.raises(ValueError, match="vendor='pinecone'"):
        WidthPlanner(1000, deployment=Deployment(vendor="pinecone")).fit(store)
    with pytest.raises(ValueError, match="deployment='qdrant': expected a mrl_core.deployment.Deployment"):
        WidthPlanner(1000, deployment="qdrant").fit(store)
    with pytest.raises(ValueError, match="objective='fastest'"):
        WidthPlanner(1000, objective="fastest").fit(store)
    with pytest.raises(ValueError, match="max_p95_ms=-1"):
        WidthPlanner(1000, max_p95_ms=-1).fit(store)
    with pytest.raises(ValueError, match="corpus_size=0"):
        WidthPlanner(0).fit(store)
    with pytest.raises(ValueError, match="index_types=\\['tree'\\]"):
        WidthPlanner(1000, index_types=("tree",)).fit(store)
    with pytest.raises(ValueError, match="hold none of the evaluated precisions"):
        WidthPlanner(1000, index_types=("binary",)).fit(store, dataset_fingerprint="cisi")


# -- monotonicity over a synthetic grid -------------------------------------------------------------

SYNTHETIC_WIDTHS = (16, 32, 64, 96, 128, 192, 256, 384)
SYNTHETIC_PRECISIONS = ("fp32", "fp16", "int8", "binary")
SYNTHETIC_CORPUS = 200_000


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    rng = np.random.default_rng(7)
    store = ResultStore(tmp_path_factory.mktemp("grid") / "s.duckdb")
    penalty = {"fp32": 0.0, "fp16": 0.001, "int8": 0.01, "binary": 0.08}
    with store.run("evaluate", model="m", dataset="synthetic", dataset_fingerprint="fp-syn") as run_id:
        store.add_rows("results", run_id, [
            {"method": method, "width": width, "precision": precision,
             "ndcg_at_10": 0.65 * (1 - math.exp(-width / 60)) - penalty[precision] + rng.normal(0, 0.01)}
            for method, width, precision in itertools.product(("prefix", "pca"), SYNTHETIC_WIDTHS, SYNTHETIC_PRECISIONS)
        ])
    scan_ms_per_byte = 130.0 / (1536 * 1_000_000)
    with store.run("bench", model="m", dataset="synthetic", dataset_fingerprint="fp-syn") as run_id:
        rows = []
        for width, precision in itertools.product(SYNTHETIC_WIDTHS, SYNTHETIC_PRECISIONS):
            bytes_per_vector = {"fp32": 4 * width, "fp16": 2 * width, "int8": width, "binary": width / 8}[precision]
            flat_index = "binary" if precision == "binary" else "flat"
            flat_ms = scan_ms_per_byte * bytes_per_vector * SYNTHETIC_CORPUS * rng.uniform(0.8, 1.6)
            rows.append(_latency_row(flat_index, width, precision, SYNTHETIC_CORPUS, flat_ms))
            rows.append(_latency_row("hnsw", width, precision, SYNTHETIC_CORPUS, rng.uniform(0.3, 2.0)))
        store.add_rows("latency", run_id, rows)
    return store


STORAGE_GRID = (0.005, 0.03, 0.2)
LATENCY_GRID = (0.5, 2.0, 10.0)
NDCG_GRID = (0.3, 0.5, 0.6)


@pytest.fixture(scope="module")
def grid_picks(synthetic_store):
    picks = {}
    for objective in ("cheapest", "best_quality"):
        for storage, latency, ndcg in itertools.product(STORAGE_GRID, LATENCY_GRID, NDCG_GRID):
            planner = WidthPlanner(
                SYNTHETIC_CORPUS, max_storage_gb=storage, max_p95_ms=latency, min_ndcg=ndcg, objective=objective
            ).fit(synthetic_store)
            picks[objective, storage, latency, ndcg] = planner.recommendation_
    return picks


def _relaxations():
    """Pairs (tight, relaxed) of grid points where relaxed loosens one target one step."""
    for storage, latency, ndcg in itertools.product(STORAGE_GRID, LATENCY_GRID, NDCG_GRID):
        if storage != STORAGE_GRID[-1]:
            yield (storage, latency, ndcg), (STORAGE_GRID[STORAGE_GRID.index(storage) + 1], latency, ndcg)
        if latency != LATENCY_GRID[-1]:
            yield (storage, latency, ndcg), (storage, LATENCY_GRID[LATENCY_GRID.index(latency) + 1], ndcg)
        if ndcg != NDCG_GRID[0]:
            yield (storage, latency, ndcg), (storage, latency, NDCG_GRID[NDCG_GRID.index(ndcg) - 1])


def test_grid_has_both_feasible_and_infeasible_points(grid_picks):
    outcomes = {pick is None for pick in grid_picks.values()}
    assert outcomes == {True, False}


def test_relaxing_a_target_never_loses_a_recommendation(grid_picks):
    for objective in ("cheapest", "best_quality"):
        for tight, relaxed in _relaxations():
            if grid_picks[(objective, *tight)] is not None:
                assert grid_picks[(objective, *relaxed)] is not None, (objective, tight, relaxed)


def test_relaxing_a_target_never_gives_a_lower_quality_pick_when_optimising_quality(grid_picks):
    for tight, relaxed in _relaxations():
        before, after = grid_picks[("best_quality", *tight)], grid_picks[("best_quality", *relaxed)]
        if before is not None:
            assert after["ndcg_at_10"] >= before["ndcg_at_10"], (tight, relaxed)


def test_relaxing_a_target_never_gives_a_costlier_pick_when_optimising_cost(grid_picks):
    for tight, relaxed in _relaxations():
        before, after = grid_picks[("cheapest", *tight)], grid_picks[("cheapest", *relaxed)]
        if before is not None:
            assert after["storage_bytes"] <= before["storage_bytes"], (tight, relaxed)
            if relaxed[0] != tight[0]:
                # A larger storage budget only admits costlier candidates: the pick stays.
                assert after["label"] == before["label"]


def test_rank_orders_unknown_latency_last():
    frame = pd.DataFrame({
        "label": ["a", "b", "c"], "storage_bytes": [10.0, 10.0, 5.0], "p95_ms": [np.nan, 3.0, np.nan],
        "ndcg_at_10": [0.9, 0.5, 0.1],
    })
    assert list(rank(frame, "cheapest")["label"]) == ["c", "b", "a"]
    assert list(rank(frame, "best_quality")["label"]) == ["a", "b", "c"]
    assert pareto_mask(frame) == [True, True, True]


# -- command line ------------------------------------------------------------------------------------


def test_cli_recommend_prints_one_json_object(store, capsys):
    code = main([
        "recommend", "--store", str(store.path), "--corpus-size", "1000000", "--max-storage-gb", "1",
        "--max-p95-ms", "20", "--min-ndcg", "0.6", "--dataset", "scifact", "--json",
    ])
    out = capsys.readouterr().out
    payload = json.loads(out)
    assert code == 0
    assert payload["recommendation"]["label"] == "prefix 384 binary+rescore/binary"
    assert set(payload["margins"]) == {"max_storage_gb", "max_p95_ms", "min_ndcg"}
    assert payload["exports"]["faiss"]["factory_string"] == "BFlat"
    assert payload["exports"]["qdrant"]["create_collection"]["body"]["vectors"]["full"]["size"] == 384
    rejected = {item["label"]: item["reasons"] for item in payload["rejected"]}
    assert rejected["prefix 384 fp32/flat"][0].startswith("storage 1.54 GB > max_storage_gb 1 GB")
    assert payload["frontier"] and payload["closest"] is None


def test_cli_recommend_exits_1_and_explains_when_nothing_fits(store, capsys):
    code = main([
        "recommend", "--store", str(store.path), "--corpus-size", "1000000", "--max-storage-gb", "1",
        "--max-p95-ms", "20", "--min-ndcg", "0.7", "--dataset", "scifact",
    ])
    out = capsys.readouterr().out
    assert code == 1
    assert "relax min_ndcg from 0.7000 to 0.6300" in out


def test_hnsw_and_ivf_candidates_carry_the_recall_measured_at_the_nearest_size(tmp_path):
    store = ResultStore(tmp_path / "s.duckdb")
    with store.run("evaluate", model="base", dataset="toy", dataset_fingerprint="fp-toy") as run_id:
        store.add_rows("results", run_id, [{"method": "prefix", "width": 128, "precision": "fp32", "ndcg_at_10": 0.6}])
    with store.run("bench", model="base", dataset="toy", dataset_fingerprint="fp-toy") as run_id:
        rows = []
        for corpus_size, ef_search, recall in ((10_000, 32, 0.995), (1_000_000, 128, 0.991)):
            rows.append({**_latency_row("hnsw", 128, "fp32", corpus_size, 0.5), "recall_at_10": recall,
                         "details": {"hnsw_ef_search": ef_search}})
        rows.append({**_latency_row("ivf", 128, "fp32", 10_000, 0.4), "recall_at_10": 0.993,
                     "details": {"ivf_nprobe": 6, "ivf_lists": 400}})
        store.add_rows("latency", run_id, rows)
    candidates = WidthPlanner(2_000_000, index_types=("hnsw", "ivf")).fit(store).candidates_.set_index("index_type")
    hnsw, ivf = candidates.loc["hnsw"], candidates.loc["ivf"]
    assert (hnsw["index_recall_at_10"], hnsw["search_params"], hnsw["index_recall_size"]) == (0.991, {"hnsw_ef_search": 128}, 1_000_000)
    assert hnsw["quality_source"] == (
        "estimated: nDCG@10 measured with exact search x hnsw recall@10 0.991 against exact search "
        "(hnsw_ef_search 128) measured at 1,000,000 vectors"
    )
    assert hnsw["ndcg_at_10"] == pytest.approx(0.6 * 0.991) and ivf["ndcg_at_10"] == pytest.approx(0.6 * 0.993)
    assert (ivf["index_recall_at_10"], ivf["search_params"]) == (0.993, {"ivf_nprobe": 6, "ivf_lists": 400})
    # Measured at one size only: no latency can be projected, but the recall is known.
    assert ivf["p95_ms"] is None or math.isnan(ivf["p95_ms"])


# -- past one machine --------------------------------------------------------------------------------------------

# Holds exactly 1M 384-d fp32 vectors (1.536 GB, all of it usable).
MILLION_FP32_MACHINE = Machine(ram_bytes=1_536_000_000, cores=4, usable_ram_fraction=1.0)


def test_a_corpus_past_one_machine_is_split_and_each_shard_searched_at_its_own_size(store):
    planner = WidthPlanner(4_000_000, deployment=Deployment(replicas=2), machine=MILLION_FP32_MACHINE).fit(
        store, dataset_fingerprint="scifact"
    )
    candidates = planner.candidates_.set_index("label")
    flat = candidates.loc["prefix 384 fp32/flat"]
    assert (flat["shards"], flat["machines"], flat["per_shard_corpus_size"]) == (4, 8, 1_000_000)
    assert flat["storage_bytes"] == 4_000_000 * 1536 * 2  # sharding moves bytes, it does not add them
    # Each shard holds 1M vectors, a measured size: its latency is measured, plus the merge of 4 x 10 results.
    assert flat["merge_ms"] == merge_cost_ms(4)[1] > 0
    assert flat["p95_ms"] == pytest.approx(_flat_p95_ms(384, "fp32", 1_000_000) + flat["merge_ms"])
    assert not flat["latency_projected"]
    assert "4 shards of 1,000,000 vectors" in flat["latency_basis"]
    assert "network time not included" in flat["latency_basis"]
    # HNSW adds 2 x 32 links x 4 B a vector: 1792 B, so 857,142 a machine -> 5 shards of 800,000, projected.
    hnsw = candidates.loc["prefix 384 fp32/hnsw"]
    assert (hnsw["shards"], hnsw["per_shard_corpus_size"]) == (5, 800_000)
    assert hnsw["latency_projected"] and "projected to 800,000" in hnsw["latency_basis"]
    # 128 int8 is 512 MB: one machine, no merge, latency projected to the whole 4M as before.
    small = candidates.loc["prefix 128 int8/flat"]
    assert (small["shards"], small["machines"], small["merge_ms"]) == (1, 2, 0.0)
    assert small["p95_ms"] == pytest.approx(_flat_p95_ms(128, "int8", 4_000_000))
    assert planner.context_["machine"] == MILLION_FP32_MACHINE.to_dict() and planner.machine_ is MILLION_FP32_MACHINE


def test_a_configuration_that_fits_no_machine_says_so_and_the_others_are_still_planned(store):
    # 1M IVF lists of 384 floats are 1.536 GB of centroids on every shard: more than 2 GB x 0.7 = 1.4 GB.
    planner = WidthPlanner(
        1_000_000, max_p95_ms=1000, min_ndcg=0.6, deployment=Deployment(ivf_nlist=1_000_000),
        machine=Machine.from_gb(2, cores=2),
    ).fit(store, dataset_fingerprint="scifact")
    candidates = planner.candidates_.set_index("label")
    unfit = candidates.loc["prefix 384 fp32/ivf"]
    assert unfit["shards"] is None and pd.isna(unfit["p95_ms"]) and not unfit["feasible"]
    assert unfit["reasons"] == [(
        "does not fit the machine: machine_ram_gb=2: smaller than one shard: 1.4 GB usable (70% of its RAM), but "
        "one vector and the index's fixed part (IVF centroids) need 1.54 GB; expected a machine of at least 2.19 GB"
    )]
    assert candidates.loc["prefix 128 fp32/ivf", "shards"] == 1  # 0.512 GB of centroids fit
    assert candidates.loc["prefix 384 fp32/flat", "shards"] == 2  # 1.536 GB > 1.4 GB
    chosen = planner.recommendation_
    assert type(chosen["shards"]) is int and type(chosen["machines"]) is int
    assert json.loads(json.dumps(chosen))["shards"] == chosen["shards"]


def test_a_machine_smaller_than_every_shard_is_refused_at_fit(store):
    # 7 usable bytes: not even one 128-bit code (16 B) fits.
    with pytest.raises(ValueError, match=r"^machine_ram_gb=1e-08: smaller than one shard: 7e-09 GB usable"):
        WidthPlanner(1_000_000, machine=Machine(ram_bytes=10)).fit(store, dataset_fingerprint="scifact")


def test_absurd_corpus_sizes_and_bad_machines_are_refused_at_fit(store):
    with pytest.raises(ValueError, match=r"corpus_size=10000000000000: expected at most 1,000,000,000,000 vectors"):
        WidthPlanner(10**13).fit(store)
    with pytest.raises(ValueError, match="corpus_size=2.5: expected a positive whole number of vectors"):
        WidthPlanner(2.5).fit(store)
    with pytest.raises(ValueError, match="machine='64GB': expected a mrl_core.deployment.Machine"):
        WidthPlanner(1000, machine="64GB").fit(store)


def test_a_store_without_bench_rows_says_to_run_bench(tmp_path, store):
    bare = ResultStore(tmp_path / "no_bench.duckdb")
    with bare.run("evaluate", model="base", dataset="scifact", dataset_fingerprint="fp-scifact") as run_id:
        bare.add_rows("results", run_id, [
            {"method": "prefix", "width": 384, "precision": "fp32", "ndcg_at_10": 0.6451},
            {"method": "prefix", "width": 64, "precision": "fp32", "ndcg_at_10": 0.484},
        ])
    planner = WidthPlanner(1_000_000, max_p95_ms=20).fit(bare)
    assert planner.notes_ == [NO_BENCH_NOTE] and "python -m mrl_core bench" in NO_BENCH_NOTE
    assert planner.recommendation_ is None
    assert all(reasons == ["no latency measured"] for reasons in planner.candidates_["reasons"])
    assert WidthPlanner(1_000_000).fit(store, dataset_fingerprint="scifact").notes_ == []


def test_the_recommendation_says_which_constraint_decided(tmp_path):
    # Cheapest first: binary 384 as a flat scan (48 B) and in HNSW (304 B, no latency measured) miss the quality
    # floor, so the pick is int8 384 (384 B); HNSW fp32 384 is the fastest that meets every target, at 1,792 B.
    store = ResultStore(tmp_path / "s.duckdb")
    with store.run("evaluate", model="base", dataset="toy", dataset_fingerprint="fp-toy") as run_id:
        store.add_rows("results", run_id, [
            {"method": "prefix", "width": 384, "precision": precision, "ndcg_at_10": ndcg}
            for precision, ndcg in (("fp32", 0.65), ("int8", 0.64), ("binary", 0.55))
        ])
    with store.run("bench", model="base", dataset="toy", dataset_fingerprint="fp-toy") as run_id:
        store.add_rows("latency", run_id, [
            _latency_row(index_type, 384, precision, size, p95 * size / 1_000_000)
            for index_type, precision, p95 in (("flat", "fp32", 130.0), ("flat", "int8", 40.0), ("binary", "binary", 4.0))
            for size in (100_000, 1_000_000)
        ] + [_latency_row("hnsw", 384, "fp32", size, p95) for size, p95 in ((100_000, 1.0), (1_000_000, 1.5))])
    planner = WidthPlanner(1_000_000, max_p95_ms=50, min_ndcg=0.6, index_types=("flat", "binary", "hnsw")).fit(store)
    decided = planner.recommendation_["decided_by"]
    assert planner.recommendation_["label"] == "prefix 384 int8/flat"
    assert decided["ahead"] == 2 and decided["missed"] == {"min_ndcg": 2, "max_p95_ms": 1}
    assert decided["fastest"]["label"] == "prefix 384 fp32/hnsw" and decided["fastest"]["p95_ms"] == 1.5
    assert decided["text"].startswith("Cheapest that meets every target; the 2 ranked ahead of it miss: nDCG@10 (2), "
                                      "p95 latency (1). "
                                      "Fastest that meets every target: prefix 384 fp32/hnsw (p95 1.5 ms")
