import numpy as np
import pytest

from mrl_core.funnel import (
    Funnel,
    FunnelSearcher,
    FunnelStage,
    FunnelTuner,
    live_query,
    load_tuned_funnel,
    pick_fastest,
    save_tuning,
    shortlist_grid,
    time_funnel,
    tuned_comparison,
)
from mrl_core.funnel.tuner import HNSW_EF_SEARCHES, IVF_PROBES, _smallest_meeting
from mrl_core.metrics import fidelity_at_k
from mrl_core.store import ResultStore
from mrl_core.widths import renormalised_prefix


def mrl_like(rows: int, width: int = 64, clusters: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors whose variance falls with the coordinate, as a Matryoshka model's does,
    so that short prefixes already separate clusters. Returns (corpus, queries)."""
    rng = np.random.default_rng(seed)
    scales = 1 / np.sqrt(np.arange(1, width + 1))
    centres = rng.normal(size=(clusters, width)) * scales

    def draw(count: int) -> np.ndarray:
        matrix = centres[rng.integers(0, clusters, count)] + 0.5 * rng.normal(size=(count, width)) * scales
        return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)

    return draw(rows), draw(60)


@pytest.fixture(scope="module")
def data():
    return mrl_like(2000)


@pytest.fixture(scope="module")
def searcher(data):
    return FunnelSearcher(data[0])


def test_rescoring_with_prefix_norms_equals_explicit_renormalisation(searcher, data):
    corpus, queries = data
    candidates = np.arange(300)[None, :].repeat(2, axis=0)
    ids, scores = searcher.rescore(queries[:2], candidates, FunnelStage(24, 300))
    explicit = renormalised_prefix(queries[:2], 24) @ renormalised_prefix(corpus[:300], 24).T
    for row in range(2):
        np.testing.assert_allclose(scores[row], explicit[row][ids[row]], rtol=1e-5, atol=1e-6)
        assert ids[row].tolist() == np.argsort(-explicit[row], kind="stable").tolist()


def test_recall_against_exact_search_on_a_hand_made_case():
    """The funnel's recall@k is the overlap with exact search's top k (``metrics.fidelity_at_k``)."""
    found = np.array([[1, 2, 3], [4, 5, 6]])
    exact = np.array([[3, 2, 9], [4, 5, 6]])
    assert fidelity_at_k(found, exact, 3) == pytest.approx(5 / 6)
    assert fidelity_at_k(found, exact, 2) == pytest.approx(3 / 4)
    funnel = Funnel((FunnelStage(2, 3), FunnelStage(4, 2)))
    corpus = np.array([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0.6, 0, 0.8, 0], [0, 1, 0, 0]], dtype=np.float32)
    query = np.array([[0.6, 0, 0.8, 0]], dtype=np.float32)
    searcher = FunnelSearcher(corpus)
    # Stage 1 at 2 dims scores rows 0 and 2 at 1.0 (both (1, 0) there), row 1 at 0.8 and cuts row 3 (0.0);
    # the full width then ranks row 2 (1.0) over row 0 (0.6) and row 1 (0.48): the exact top 2.
    assert searcher.search(query, funnel).ids.tolist() == [[2, 0]]
    assert fidelity_at_k(searcher.search(query, funnel).ids, searcher.exact_search(query, 2).ids, 2) == 1.0


@pytest.mark.parametrize(
    "index_type, precision", [("flat", "fp32"), ("flat", "fp16"), ("flat", "int8"), ("binary", "binary")]
)
def test_full_width_last_stage_over_the_whole_corpus_equals_exact_search(searcher, data, index_type, precision):
    corpus, queries = data
    whole = Funnel((FunnelStage(8, len(corpus), index_type, precision), FunnelStage(64, 10)))
    exact = searcher.exact_search(queries, 10)
    result = searcher.search(queries, whole)
    assert np.array_equal(result.ids, exact.ids)
    np.testing.assert_allclose(result.scores, exact.scores, atol=1e-5)
    assert len(result.stage_ms) == 2


def test_short_prefix_shortlist_alone_misses_neighbours_that_rescoring_recovers(searcher, data):
    _, queries = data
    exact = searcher.exact_search(queries, 10).ids
    alone = fidelity_at_k(searcher.search(queries, Funnel((FunnelStage(8, 10),))).ids, exact, 10)
    reranked = fidelity_at_k(searcher.search(queries, Funnel((FunnelStage(8, 400), FunnelStage(64, 10)))).ids, exact, 10)
    assert alone < 0.9
    assert reranked > alone


def test_funnel_validation_and_round_trip():
    with pytest.raises(ValueError, match="must be 'flat'"):
        Funnel((FunnelStage(16, 100), FunnelStage(64, 10, "hnsw")))
    with pytest.raises(ValueError, match="exceeds the 10 rows"):
        Funnel((FunnelStage(16, 10), FunnelStage(64, 20)))
    with pytest.raises(ValueError, match="multiple of 8"):
        FunnelStage(12, 10, "binary")
    with pytest.raises(ValueError, match="index_type='pq'"):
        FunnelStage(12, 10, "pq")
    with pytest.raises(ValueError, match="a binary stage stores one of \\['binary'\\]"):
        FunnelStage(64, 10, "binary", "fp16")
    with pytest.raises(ValueError, match="precision='int8'; only stage 1"):
        Funnel((FunnelStage(16, 100), FunnelStage(64, 10, "flat", "int8")))
    quantised = Funnel((FunnelStage(64, 2000, "flat", "int8"), FunnelStage(128, 200), FunnelStage(384, 10)))
    assert quantised.describe() == "flat int8 64 -> 2000 | 128 -> 200 | 384 -> 10"
    assert Funnel.from_dicts(quantised.to_dicts()) == quantised
    assert quantised.to_dicts()[0]["precision"] == "int8" and quantised.stages[1].precision == "fp32"
    funnel = Funnel((FunnelStage(128, 400, "binary"), FunnelStage(384, 10)))
    assert Funnel.from_dicts(funnel.to_dicts()) == funnel
    assert funnel.to_dicts()[0] == {"width": 128, "precision": "binary", "index_type": "binary", "shortlist_size": 400}
    assert funnel.describe() == "binary 128 -> 400 | 384 -> 10"
    reference = Funnel.reference(384)
    assert [(s.width, s.shortlist_size) for s in reference.stages] == [(16, 200), (32, 100), (64, 50), (128, 25), (384, 10)]


def test_shortlist_grid_and_binary_search():
    assert shortlist_grid(10, 120) == [10, 15, 20, 30, 50, 75, 100, 120]
    grid = shortlist_grid(10, 4000)
    calls = []

    def recall_of(size):
        calls.append(size)
        return min(1.0, size / 300)

    assert _smallest_meeting(grid, recall_of, 0.99)[0] == 300
    assert len(calls) < len(grid)
    assert _smallest_meeting(grid, lambda size: 0.5, 0.99) == (None, 0.5)


def test_tuner_pick_meets_its_target(searcher, data):
    corpus, queries = data
    tuner = FunnelTuner(
        target_recall=0.95, k=10, first_stage_widths=(8, 16, 32), index_types=("flat", "binary"),
        latency_query_count=10, finalist_rounds=1,
    ).fit(searcher, queries)
    exact = searcher.exact_search(queries, 10).ids
    # 60 sample queries: candidates must reach the target plus the sampling margin, 0.95 + 1.645 x 0.0089.
    assert tuner.tuning_target_ == pytest.approx(0.95 + 1.645 * (0.95 * 0.05 / 600) ** 0.5)
    assert fidelity_at_k(searcher.search(queries, tuner.best_).ids, exact, 10) >= tuner.tuning_target_
    assert len(tuner.best_.stages) <= 4
    assert sum(row["chosen"] for row in tuner.frontier_) == 1
    assert any(row["reference"] for row in tuner.frontier_) and any(row["exact"] for row in tuner.frontier_)
    assert any(row["on_frontier"] for row in tuner.frontier_)
    chosen = next(row for row in tuner.frontier_ if row["chosen"])
    assert chosen["meets_target"] and chosen["p50_ms"] == tuner.best_timing_["p50_ms"]
    # Every explored non-reference candidate was found to meet the target by its binary-searched shortlist.
    two_stage = [row for row in tuner.frontier_ if len(row["stages"]) == 2 and row["stages"][0]["index_type"] == "flat"]
    assert {row["stages"][0]["width"] for row in two_stage} == {8, 16, 32}
    assert all(row["stages"][-1] == {"width": 64, "precision": "fp32", "index_type": "flat", "shortlist_size": 10} for row in two_stage)


def test_quantised_stage_one_scores_approximate_the_float_prefix(searcher, data):
    _, queries = data
    float_ids, float_scores = searcher.first_stage(queries, FunnelStage(16, 50))
    for precision, tolerance in (("fp16", 1e-3), ("int8", 0.05)):
        ids, scores = searcher.first_stage(queries, FunnelStage(16, 50, "flat", precision))
        assert fidelity_at_k(ids, float_ids, 50) > 0.8
        np.testing.assert_allclose(scores[:, 0], float_scores[:, 0], atol=tolerance)


def test_binary_stage_one_selects_by_counting_for_long_shortlists(searcher, data):
    """Above BINARY_HEAP_MAX_SHORTLIST the scan selects without a heap; the best distances are the same."""
    _, queries = data
    _, short_scores = searcher.first_stage(queries, FunnelStage(64, 10, "binary"))
    long_ids, long_scores = searcher.first_stage(queries, FunnelStage(64, 500, "binary"))
    np.testing.assert_array_equal(long_scores[:, :10], short_scores)
    assert np.all(np.diff(long_scores, axis=1) <= 0) and (long_ids >= 0).all()
    assert all(len(set(row.tolist())) == 500 for row in long_ids)


def test_tuner_searches_only_the_precisions_asked_for(searcher, data):
    corpus, queries = data
    tuner = FunnelTuner(
        target_recall=0.9, k=10, first_stage_widths=(8, 16), index_types=("flat",), precisions=("int8",),
        latency_query_count=5, finalist_rounds=1, include_reference=False,
    ).fit(searcher, queries[:20])
    searched = [row for row in tuner.frontier_ if not row["exact"] and not row["standard_index"]]
    assert searched and {row["stages"][0]["precision"] for row in searched} == {"int8"}
    assert all(row["description"].startswith("flat int8 ") for row in searched)


def test_tuner_tries_hnsw_only_at_its_own_widths(searcher, data):
    _, queries = data
    tuner = FunnelTuner(
        target_recall=0.9, k=10, first_stage_widths=(16, 32), index_types=("flat", "hnsw"), precisions=("fp32",),
        hnsw_widths=(32,), latency_query_count=5, finalist_rounds=1, include_reference=False,
    ).fit(searcher, queries[:20])
    first_stages = {
        (row["stages"][0]["index_type"], row["stages"][0]["width"])
        for row in tuner.frontier_ if not row["exact"] and not row["standard_index"]
    }
    assert {width for index_type, width in first_stages if index_type == "hnsw"} == {32}
    assert {width for index_type, width in first_stages if index_type == "flat"} == {16, 32}


def test_ivf_stage_probing_every_list_equals_exact_search(searcher, data):
    corpus, queries = data
    every_list = Funnel((FunnelStage(16, len(corpus), "ivf", probes=searcher.ivf_lists), FunnelStage(64, 10)))
    assert np.array_equal(searcher.search(queries, every_list).ids, searcher.exact_search(queries, 10).ids)
    one_list = Funnel((FunnelStage(16, 200, "ivf", probes=1), FunnelStage(64, 10)))
    assert fidelity_at_k(searcher.search(queries, one_list).ids, searcher.exact_search(queries, 10).ids, 10) < 1.0
    assert searcher.ivf_lists == round(4 * np.sqrt(len(corpus)))
    assert one_list.describe() == "ivf 16 (probe 1) -> 200 | 64 -> 10"
    assert Funnel.from_dicts(one_list.to_dicts()) == one_list and one_list.to_dicts()[0]["probes"] == 1
    with pytest.raises(ValueError, match="an ivf stage needs a positive number of lists"):
        FunnelStage(16, 10, "ivf")
    with pytest.raises(ValueError, match="only an ivf stage probes lists"):
        FunnelStage(16, 10, "flat", probes=4)


def test_tuner_finds_ivf_funnels_that_meet_the_target(searcher, data):
    _, queries = data
    tuner = FunnelTuner(
        target_recall=0.95, k=10, first_stage_widths=(16, 32), index_types=("ivf",), latency_query_count=5,
        finalist_rounds=1, include_reference=False,
    ).fit(searcher, queries)
    ivf_rows = [row for row in tuner.frontier_ if not row["exact"] and not row["standard_index"]]
    assert ivf_rows and all(row["stages"][0]["index_type"] == "ivf" and row["meets_target"] for row in ivf_rows)
    # From the fewest probes up, stopping after two probe counts that meet the target, per width.
    for width in (16, 32):
        probes = {row["stages"][0]["probes"] for row in ivf_rows if row["stages"][0]["width"] == width}
        assert 1 <= len(probes) <= 2
    exact = searcher.exact_search(queries, 10).ids
    for row in ivf_rows:
        recall = fidelity_at_k(searcher.search(queries, Funnel.from_dicts(row["stages"])).ids, exact, 10)
        assert recall == pytest.approx(row["recall_at_10"]) and recall >= 0.95


def test_a_funnel_replaces_exact_search_only_when_clearly_faster():
    exact, funnel = Funnel.exact(64), Funnel((FunnelStage(16, 100), FunnelStage(64, 10)))
    assert pick_fastest({funnel: {"p50_ms": 0.5}, exact: {"p50_ms": 1.0}}, exact) == funnel
    assert pick_fastest({funnel: {"p50_ms": 0.95}, exact: {"p50_ms": 1.0}}, exact) == exact
    assert pick_fastest({funnel: {"p50_ms": 2.0}, exact: {"p50_ms": 1.0}}, exact) == exact


def test_tuner_rejects_bad_parameters(searcher, data):
    with pytest.raises(ValueError, match="target_recall=1.5"):
        FunnelTuner(target_recall=1.5).fit(searcher, data[1])
    with pytest.raises(ValueError, match="'pq' is not one of"):
        FunnelTuner(index_types=("pq",)).fit(searcher, data[1])
    with pytest.raises(ValueError, match="'fp8' is not one of"):
        FunnelTuner(precisions=("fp8",)).fit(searcher, data[1])
    with pytest.raises(ValueError, match="leave no stage 1"):
        FunnelTuner(index_types=("binary",), precisions=("int8",)).fit(searcher, data[1])


def test_live_query_and_timing(searcher, data):
    _, queries = data
    exact = Funnel.exact(64, 10)
    answer = live_query(searcher, queries[0], exact, k=5, repeats=2)
    assert answer["funnel_ids"] == answer["exact_ids"] and answer["overlap_at_k"] == 1.0
    assert len(answer["funnel_ids"]) == 5 and answer["threads"] == 1
    wide = Funnel((FunnelStage(8, 200), FunnelStage(64, 10)))
    answer = live_query(searcher, queries[1], wide)
    assert len(answer["stage_ms"]) == 2 and answer["speedup"] > 0
    with pytest.raises(ValueError, match="returns only 10"):
        live_query(searcher, queries[0], wide, k=20)
    timing = time_funnel(searcher, queries[:5], wide)
    assert timing["query_count"] == 5 and timing["p95_ms"] >= timing["p50_ms"] > 0
    assert len(timing["stage_p50_ms"]) == 2


def test_searcher_rejects_unnormalised_corpus_and_wide_stages(searcher):
    with pytest.raises(ValueError, match="L2-normalised"):
        FunnelSearcher(np.full((3, 4), 2.0, dtype=np.float32))
    with pytest.raises(ValueError, match="exceeds the corpus width 64"):
        searcher.prepare(Funnel((FunnelStage(128, 10),)))


def test_save_and_load_tuned_funnel(tmp_path, searcher, data):
    tuner = FunnelTuner(
        target_recall=0.9, first_stage_widths=(16,), index_types=("flat",), max_stages=2,
        latency_query_count=5, finalist_rounds=1, include_reference=False,
    ).fit(searcher, data[1])
    store = ResultStore(tmp_path / "results.duckdb")
    run_id = save_tuning(store, tuner, model="synthetic", dataset_fingerprint="abc")
    rows = store.rows("funnels", run_id)
    assert len(rows) == len(tuner.frontier_) and rows["chosen"].sum() == 1
    assert store.get_run(run_id)["kind"] == "funnel"
    loaded = load_tuned_funnel(store, model="synthetic", dataset_fingerprint="abc", target_recall=0.9, k=10)
    assert loaded == (tuner.best_, run_id)
    assert load_tuned_funnel(store, model="synthetic", dataset_fingerprint="abc", target_recall=0.99, k=10) is None


# -- the standard single indexes the tuner always measures beside the funnels ---------------------------
@pytest.fixture(scope="module")
def larger():
    corpus, queries = mrl_like(4000, seed=1)
    return FunnelSearcher(corpus), queries


def test_hnsw_ef_search_is_its_own_field_and_old_rows_still_load(searcher, data):
    stage = FunnelStage(64, 10, "hnsw", ef_search=128)
    funnel = Funnel((stage,))
    assert funnel.describe() == "hnsw 64 (efSearch 128) -> 10" and funnel.index_label() == "hnsw 64 (efSearch 128)"
    assert funnel.to_dicts() == [{"width": 64, "precision": "fp32", "index_type": "hnsw", "shortlist_size": 10, "ef_search": 128}]
    assert Funnel.from_dicts(funnel.to_dicts()) == funnel
    # A row stored before efSearch had its own field: HNSW keeps max(shortlist, 16) candidates, as it did then.
    old = Funnel.from_dicts([{"width": 64, "precision": "fp32", "index_type": "hnsw", "shortlist_size": 10}])
    assert old.stages[0].ef_search is None and old.stages[0].hnsw_ef_search == 16 and "efSearch" not in old.describe()
    assert FunnelStage(64, 200, "hnsw", ef_search=32).hnsw_ef_search == 200  # a list shorter than the shortlist cannot fill it
    with pytest.raises(ValueError, match="only an hnsw stage"):
        FunnelStage(64, 10, "flat", ef_search=32)
    with pytest.raises(ValueError, match="ef_search=0"):
        FunnelStage(64, 10, "hnsw", ef_search=0)
    _, queries = data
    exact = searcher.exact_search(queries, 10).ids
    narrow = fidelity_at_k(searcher.first_stage(queries, FunnelStage(64, 10, "hnsw", ef_search=10))[0], exact, 10)
    wide = fidelity_at_k(searcher.first_stage(queries, FunnelStage(64, 10, "hnsw", ef_search=512))[0], exact, 10)
    assert wide >= narrow and wide > 0.99


def test_tuner_always_measures_the_standard_indexes_at_full_width(larger):
    searcher, queries = larger
    tuner = FunnelTuner(
        target_recall=0.97, k=10, first_stage_widths=(16,), index_types=("flat",), precisions=("fp32",),
        latency_query_count=10, finalist_rounds=1, include_reference=False,
    ).fit(searcher, queries)
    standard = {row["stages"][0]["index_type"]: row for row in tuner.frontier_ if row["standard_index"]}
    assert set(standard) == {"hnsw", "ivf"}
    exact = searcher.exact_search(queries, 10).ids
    hnsw, ivf = standard["hnsw"]["stages"][0], standard["ivf"]["stages"][0]
    assert hnsw["width"] == ivf["width"] == 64 and hnsw["shortlist_size"] == ivf["shortlist_size"] == 10
    # Each at the smallest setting that meets the target: the measured recall is real, the next smaller falls short.
    for stage, field, grid in ((hnsw, "ef_search", HNSW_EF_SEARCHES), (ivf, "probes", IVF_PROBES)):
        recall = fidelity_at_k(searcher.search(queries, Funnel.from_dicts([stage])).ids, exact, 10)
        row = standard[stage["index_type"]]
        assert recall == pytest.approx(row["recall_at_10"]) and recall >= 0.97 and row["meets_target"]
        smaller = [value for value in grid if value < stage[field] and value >= (10 if field == "ef_search" else 1)]
        if smaller:
            below = Funnel.from_dicts([dict(stage, **{field: smaller[-1]})])
            assert fidelity_at_k(searcher.search(queries, below).ids, exact, 10) < 0.97
    assert standard["hnsw"]["description"] == f"hnsw 64 (efSearch {hnsw['ef_search']}) -> 10"
    # Bytes per vector from the cost formulas: HNSW32 = 4*64 + 32*2*4; IVF = 4*64 + 8 + its centroids spread out.
    assert standard["hnsw"]["ram_bytes_per_vector"] == 512.0 and standard["hnsw"]["disk_bytes_per_vector"] == 0.0
    assert standard["ivf"]["ram_bytes_per_vector"] == pytest.approx(264 + searcher.ivf_lists * 64 * 4 / 4000)
    comparison = tuner.comparison_
    baseline = min((standard["hnsw"], standard["ivf"]), key=lambda row: row["p50_ms"])
    assert comparison["baseline"]["stages"] == baseline["stages"]
    assert comparison["baseline"]["label"] == Funnel.from_dicts(baseline["stages"]).index_label()
    pick = comparison["funnel"]
    assert pick["stages"] == tuner.best_.to_dicts() and pick["p50_ms"] == tuner.best_timing_["p50_ms"]
    assert comparison["speedup_vs_baseline"] == pytest.approx(baseline["p50_ms"] / pick["p50_ms"])
    assert comparison["speedup_vs_exact"] == pytest.approx(tuner.exact_timing_["p50_ms"] / pick["p50_ms"])
    assert comparison["smaller_in_ram"] in ("funnel", "baseline", "same") and comparison["verdict"]


def test_a_standard_index_is_on_record_even_when_it_misses_the_target(larger):
    searcher, queries = larger
    tuner = FunnelTuner(
        target_recall=1.0, k=10, first_stage_widths=(16,), index_types=("flat",), precisions=("fp32",),
        standard_index_types=("hnsw",), hnsw_max_shortlist_size=16, latency_query_count=5, finalist_rounds=1,
        include_reference=False,
    ).fit(searcher, queries[:30])
    (row,) = [row for row in tuner.frontier_ if row["standard_index"]]
    exact = searcher.exact_search(queries[:30], 10).ids
    recall = fidelity_at_k(searcher.search(queries[:30], Funnel.from_dicts(row["stages"])).ids, exact, 10)
    assert row["stages"][0]["ef_search"] == 16 and recall == pytest.approx(row["recall_at_10"]) and recall < 1.0
    assert not row["meets_target"] and tuner.comparison_["baseline"] is None and not row["chosen"]
    assert tuner.comparison_["verdict"].startswith("No standard index met recall@10 1.0 (hnsw 64 (efSearch 16) 0.")
    assert any(reason.startswith("hnsw 64 (efSearch 16): the standard index reaches") for reason in tuner.skipped_)


def test_stored_rows_carry_the_baseline_comparison(tmp_path, larger):
    searcher, queries = larger
    tuner = FunnelTuner(
        target_recall=0.95, k=10, first_stage_widths=(16,), index_types=("flat", "binary"), max_stages=2,
        latency_query_count=5, finalist_rounds=1, include_reference=False,
    ).fit(searcher, queries)
    store = ResultStore(tmp_path / "results.duckdb")
    run_id = save_tuning(store, tuner, model="synthetic", dataset_fingerprint="abc")
    rows = store.rows("funnels", run_id)
    baseline = tuner.comparison_["baseline"]
    assert baseline is not None
    for row in rows.to_dict("records"):
        details = row["details"]
        assert details["baseline"]["label"] == baseline["label"] and details["baseline"]["p50_ms"] == pytest.approx(baseline["p50_ms"])
        assert details["speedup_vs_baseline"] == pytest.approx(baseline["p50_ms"] / row["p50_ms"])
        assert details["ram_bytes_per_vector"] > 0 and details["disk_bytes_per_vector"] == 0.0
    standard = rows[rows["details"].map(lambda details: details["standard_index"])]
    assert sorted(stage[0]["index_type"] for stage in standard["stages"]) == ["hnsw", "ivf"]
    binary = rows[rows["stages"].map(lambda stages: stages[0]["index_type"] == "binary")].iloc[0]
    assert binary["details"]["ram_bytes_per_vector"] == 2.0 + 64 * 4  # 16 bits + the full-width vectors in RAM
    summary = store.get_run(run_id)["summary"]
    assert summary["baseline"]["label"] == baseline["label"] and summary["verdict"] == tuner.comparison_["verdict"]
    assert summary["speedup_vs_baseline"] == pytest.approx(tuner.comparison_["speedup_vs_baseline"])
    # What the CLI's --json and the Funnel page show, read back from the store.
    shown = tuned_comparison(store, run_id)
    assert shown["baseline"]["label"] == baseline["label"] and shown["funnel"]["label"] == tuner.best_.describe()
    assert shown["exact"]["ram_bytes_per_vector"] == 64 * 4 and shown["verdict"] == tuner.comparison_["verdict"]
    with store.run("funnel", params={"target_recall": 0.95, "k": 10}) as old_run:
        store.finish_run(old_run, summary={"chosen": "flat 16 -> 20 | 64 -> 10", "p50_ms": 0.1, "exact_p50_ms": 0.3})
    old = tuned_comparison(store, old_run)
    assert old["baseline"] is None and "tune again" in old["verdict"] and old["exact"]["p50_ms"] == 0.3
    # Counted on disk, a two-stage funnel keeps only its stage-1 codes in RAM.
    on_disk = FunnelTuner(
        target_recall=0.95, k=10, first_stage_widths=(16,), index_types=("binary",), max_stages=2, standard_index_types=(),
        latency_query_count=5, finalist_rounds=1, include_reference=False, rescore_location="disk",
    ).fit(searcher, queries[:20])
    row = next(row for row in on_disk.frontier_ if len(row["stages"]) == 2)
    assert (row["ram_bytes_per_vector"], row["disk_bytes_per_vector"]) == (2.0, 256.0)
    assert on_disk.comparison_["baseline"] is None


def test_standard_indexes_above_the_build_limit_are_measured_on_a_sample(tmp_path, larger):
    searcher, queries = larger
    tuner = FunnelTuner(
        target_recall=0.95, k=10, first_stage_widths=(16,), index_types=("flat", "hnsw"), precisions=("fp32",),
        hnsw_widths=(32,), max_build_rows=1000, latency_query_count=5, finalist_rounds=1, include_reference=False,
    ).fit(FunnelSearcher(searcher.corpus), queries)
    sampled = [row for row in tuner.frontier_ if row["standard_index"]]
    assert sorted(row["stages"][0]["index_type"] for row in sampled) == ["hnsw", "ivf"]
    for row in sampled:
        assert row["measured_on_sample"]["sample_rows"] == 1000 and row["measured_on_sample"]["corpus_size"] == 4000
        assert row["corpus_size"] == 1000 and not row["chosen"] and not row["on_frontier"]
    # Recall is against exact search over the same sample.
    rows = np.sort(np.random.default_rng(0).choice(4000, 1000, replace=False))
    sample = FunnelSearcher(searcher.corpus[rows])
    exact = sample.exact_search(queries, 10).ids
    for row in sampled:
        assert fidelity_at_k(sample.search(queries, Funnel.from_dicts(row["stages"])).ids, exact, 10) == pytest.approx(row["recall_at_10"])
    # The HNSW graph on a prefix is not built above the limit either.
    assert any(reason.startswith("hnsw 32: corpus of 4,000 rows is above max_build_rows=1,000") for reason in tuner.skipped_)
    assert not any(row["stages"][0]["index_type"] == "hnsw" and not row["standard_index"] for row in tuner.frontier_)
    store = ResultStore(tmp_path / "results.duckdb")
    stored = store.rows("funnels", save_tuning(store, tuner, model="synthetic", dataset_fingerprint="abc"))
    on_sample = stored[stored["details"].map(lambda details: details["measured_on_sample"] is not None)]
    assert len(on_sample) == 2 and set(on_sample["corpus_size"]) == {1000}
    assert set(stored["corpus_size"]) == {1000, 4000}
    if tuner.comparison_["baseline"] is not None:
        assert "sample of 1,000 rows" in tuner.comparison_["verdict"] or tuner.comparison_["faster"] == "same"


def test_planner_names_a_one_stage_standard_index_by_its_index():
    from mrl_core.planner import funnel_label

    assert funnel_label([{"width": 384, "precision": "fp32", "index_type": "hnsw", "shortlist_size": 10, "ef_search": 128}]) == (
        "hnsw 384 (efSearch 128)"
    )
    assert funnel_label([{"width": 384, "precision": "fp32", "index_type": "ivf", "shortlist_size": 10, "probes": 16}]) == (
        "ivf 384 (probe 16)"
    )
    assert funnel_label([{"width": 64, "index_type": "binary", "precision": "binary", "shortlist_size": 400},
                         {"width": 384, "shortlist_size": 10}]) == "funnel binary 64 -> 400 | 384 -> 10"


# -- the pick measured on queries the tuner did not see ------------------------------------------------------------
def test_heldout_measurement_repeats_recall_and_timing_on_other_queries(searcher, data):
    queries = data[1]
    tuner = FunnelTuner(
        target_recall=0.9, first_stage_widths=(16,), index_types=("flat",), max_stages=2,
        latency_query_count=5, finalist_rounds=1, include_reference=False,
    ).fit(searcher, queries[:30])
    assert tuner.heldout_ is None
    heldout = tuner.measure_heldout(queries[30:])
    expected_recall = fidelity_at_k(
        searcher.search(queries[30:], tuner.best_).ids, searcher.exact_search(queries[30:], 10).ids, 10
    )
    assert heldout["query_count"] == 30 and heldout["recall_at_10"] == pytest.approx(expected_recall)
    assert heldout["p95_ms"] >= heldout["p50_ms"] > 0 and heldout["exact_p95_ms"] >= heldout["exact_p50_ms"] > 0
    assert heldout["speedup"] == pytest.approx(heldout["exact_p50_ms"] / heldout["p50_ms"])
    assert tuner.measure_heldout(queries[:0]) is None and tuner.heldout_ is None


def test_funnel_json_reports_the_pick_measured_on_queries_the_tuner_did_not_see(tmp_path, capsys, data):
    import json

    from mrl_core.cli import main

    corpus, queries = data
    np.save(tmp_path / "vectors.npy", corpus)
    np.save(tmp_path / "vectors.queries.npy", queries)
    store_path = tmp_path / "results.duckdb"
    code = main(["funnel", "--data", str(tmp_path / "vectors.npy"), "--model", "precomputed", "--store", str(store_path),
                 "--target-recall", "0.9", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    heldout = ResultStore(store_path).get_run(payload["funnel_run_id"])["summary"]["heldout"]
    # 60 queries: the tuner sees 30 of them, the pick is measured on the other 30.
    assert heldout["query_count"] == 30 and payload["comparison"]["heldout"] == heldout
    assert payload["measured_recall_at_10"] == heldout["recall_at_10"] and 0 < heldout["recall_at_10"] <= 1
    assert payload["measured_speedup"] == pytest.approx(heldout["exact_p50_ms"] / heldout["p50_ms"])


# -- a corpus enlarged with synthetic distractors, checked against real rows -----------------------------------------
def test_enlarged_corpus_keeps_the_real_rows_first_and_is_the_same_matrix_every_time(isolated_store, data):
    from mrl_core.enlarge import enlarged_corpus

    corpus = data[0]
    matrix, details = enlarged_corpus(corpus, 5000)
    assert matrix.shape == (5000, corpus.shape[1]) and np.array_equal(matrix[:2000], corpus)
    assert details["real_rows"] == 2000 and details["synthetic_rows"] == 3000
    assert np.allclose(np.linalg.norm(matrix[2000:], axis=1), 1, atol=1e-5)
    again, _ = enlarged_corpus(corpus, 5000)
    assert np.array_equal(again, matrix)
    with pytest.raises(ValueError, match="more rows than the 2,000 real ones"):
        enlarged_corpus(corpus, 2000)


def test_funnel_enlarge_tunes_on_distractors_and_checks_them_against_real_rows(isolated_store, tmp_path, capsys, data):
    import json

    from mrl_core.cli import main

    corpus, queries = data
    np.save(tmp_path / "vectors.npy", corpus)
    np.save(tmp_path / "vectors.queries.npy", queries)
    args = ["funnel", "--data", str(tmp_path / "vectors.npy"), "--model", "precomputed", "--target-recall", "0.9"]
    assert main(args + ["--enlarge", "1000", "--json"]) == 2
    assert "must be above the 2,000 documents" in capsys.readouterr().err
    assert main(args + ["--enlarge", "6e3", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    enlargement = payload["enlargement"]
    assert payload["corpus_size"] == enlargement["corpus_size"] == 6000 and enlargement["synthetic_rows"] == 4000
    real = load_tuned_funnel(isolated_store, model="precomputed", dataset_fingerprint=payload["dataset"]["fingerprint"],
                             target_recall=0.9, k=10)
    enlarged = load_tuned_funnel(isolated_store, model="precomputed", dataset_fingerprint=payload["dataset"]["fingerprint"],
                                 target_recall=0.9, k=10, enlarged_to=6000)
    assert enlarged[1] == payload["funnel_run_id"] != real[1]
    assert isolated_store.get_run(enlarged[1])["corpus_size"] == 6000
    check = enlargement["check"]
    real_heldout = isolated_store.get_run(real[1])["summary"]["heldout"]
    assert check["corpus_size"] == 2000 and check["real"]["run_id"] == real[1]
    assert check["real"]["pick"] == real[0].describe() and check["real"]["speedup"] == real_heldout["speedup"]
    assert 0 < check["synthetic"]["recall_at_10"] <= 1 and check["same_pick"] == (check["synthetic"]["pick"] == check["real"]["pick"])
    assert check["speedup_ratio"] == pytest.approx(check["synthetic"]["speedup"] / check["real"]["speedup"])
    assert payload["measured_speedup"] == isolated_store.get_run(enlarged[1])["summary"]["heldout"]["speedup"]


def test_each_models_newest_real_corpus_tuning_is_listed_side_by_side(tmp_path, searcher, data):
    from mrl_core.funnel import tuned_funnels_by_model

    store = ResultStore(tmp_path / "results.duckdb")

    def tuned(model: str, target: float = 0.9, **params) -> int:
        tuner = FunnelTuner(
            target_recall=target, first_stage_widths=(16,), index_types=("flat",), max_stages=2,
            latency_query_count=5, finalist_rounds=1, include_reference=False,
        ).fit(searcher, data[1][:30])
        tuner.measure_heldout(data[1][30:])
        return save_tuning(store, tuner, model=model, dataset_fingerprint="abc", params=params)

    older_base, adaptor, base = tuned("base"), tuned("adaptor.npz"), tuned("base")
    tuned("base", enlarged_to=9000)  # an enlarged corpus is not the real one
    tuned("base", target=0.95)  # another target
    listed = tuned_funnels_by_model(store, dataset_fingerprint="abc", target_recall=0.9, k=10)
    assert [(entry["model"], entry["run_id"]) for entry in listed] == [("base", base), ("adaptor.npz", adaptor)]
    stored = store.get_run(adaptor)["summary"]
    assert listed[1]["pick"] == stored["chosen"] and listed[1]["heldout_speedup"] == stored["heldout"]["speedup"]
    assert older_base not in [entry["run_id"] for entry in listed]


def test_full_width_rescoring_keeps_the_best_candidates_by_their_inner_product(searcher, data):
    """The last stage at full width (FAISS reads the candidate rows in place) scores as a plain dot product;
    a candidate list padded with -1 keeps only its real candidates."""
    corpus, queries = data
    rng = np.random.default_rng(3)
    candidates = np.stack([rng.choice(len(corpus), 300, replace=False) for _ in range(3)])
    candidates[2, 250:] = -1
    ids, scores = searcher.rescore(queries[:3], candidates, FunnelStage(64, 20))
    for row in range(3):
        real = candidates[row][candidates[row] >= 0]
        dots = corpus[real] @ queries[row]
        order = np.argsort(-dots)[:20]
        assert ids[row].tolist() == real[order].tolist()
        np.testing.assert_allclose(scores[row], dots[order], rtol=1e-5, atol=1e-6)
    short_ids, short_scores = searcher.rescore(queries[:1], np.array([[5, 7, -1, -1]]), FunnelStage(64, 3))
    assert short_ids[0].tolist()[2] == -1 and short_scores[0][2] == -np.inf
    assert sorted(short_ids[0].tolist()[:2]) == [5, 7]
