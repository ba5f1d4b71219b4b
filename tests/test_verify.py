"""Verifying a pick on this machine: rows at the planned size, predicted next to measured, stored, marked.

Everything runs on the generated Matryoshka-like vectors of ``conftest`` (2,000 rows of 64 dims, 80 queries),
verified at 3,000 rows: 2,000 real and 1,000 drawn from the mixture.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SYNTHETIC_BENCH_SIZES, matryoshka_like_vectors, synthetic_embeddings_zip
from mrl_core.cost import latency_at
from mrl_core.encode import DatasetEmbeddings
from mrl_core.planner import WidthPlanner, latency_rows_for
from mrl_core.store import ResultStore
from mrl_core.verify import (
    MEMORY_SAFETY,
    bytes_per_row,
    check_buildable,
    evaluated_source,
    verification_embeddings,
    verify_pick,
)

PLANNED_ROWS = 3000
QUERY_COUNT = 40


@pytest.fixture(scope="module")
def embeddings() -> DatasetEmbeddings:
    corpus, queries = matryoshka_like_vectors()
    return DatasetEmbeddings(corpus, queries, "precomputed", "precomputed")


def single(width: int, precision: str, index_type: str, method: str = "prefix", **fields) -> dict:
    """A single-stage pick shaped like a planner candidate."""
    return {
        "label": f"{method} {width} {precision}/{index_type}", "kind": "single", "method": method, "width": width,
        "precision": precision, "index_type": index_type,
        "stages": [{"width": width, "precision": precision, "index_type": index_type}],
        "p50_ms": 0.05, "p95_ms": 0.08, **fields,
    }


def context_of(dataset) -> dict:
    return {"dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint, "model": "precomputed"}


def test_exact_flat_fp32_recalls_everything_and_measures_real_latency(embeddings):
    verification = verify_pick(single(64, "fp32", "flat"), embeddings, PLANNED_ROWS, query_count=QUERY_COUNT)
    assert verification["corpus_size"] == PLANNED_ROWS and verification["capped_from"] is None
    assert (verification["rows"]["real_rows"], verification["rows"]["synthetic_rows"]) == (2000, 1000)
    # Exact full-width search of the same rows finds exactly what the pick finds.
    assert verification["measured_recall_at_10"] == 1.0 and verification["full_width_recall_at_10"] == 1.0
    assert verification["recall_reference"] == "exact full-width fp32 search"
    assert 0 < verification["measured_p50_ms"] <= verification["measured_p95_ms"]
    assert (verification["predicted_p50_ms"], verification["predicted_p95_ms"]) == (0.05, 0.08)
    assert verification["ratio_p50"] == pytest.approx(verification["measured_p50_ms"] / 0.05)
    assert verification["ratio_p95"] == pytest.approx(verification["measured_p95_ms"] / 0.08)
    assert verification["setup"]["threads"] == 1 and verification["setup"]["query_count"] == QUERY_COUNT
    assert verification["setup"]["faiss_version"] and len(verification["setup"]["load_average_1m"]) == 2
    check = verification["stand_in_check"]
    # Same pick on the 2,000 real rows and on 2,000 mixture rows: both exact, both timed against exact search.
    assert check["corpus_size"] == 2000
    assert check["real"]["full_width_recall_at_10"] == 1.0 and check["stand_in"]["full_width_recall_at_10"] == 1.0
    assert check["recall_difference"] == 0.0
    assert check["ratio_p50"] == pytest.approx(check["stand_in"]["p50_ms"] / check["real"]["p50_ms"])
    assert check["real"]["speedup"] == pytest.approx(check["real"]["exact_p50_ms"] / check["real"]["p50_ms"])


def test_binary_recall_is_partial_and_the_verification_is_stored(embeddings, seeded_store, synthetic_dataset):
    context = context_of(synthetic_dataset)
    progress = []
    verification = verify_pick(
        single(32, "binary", "binary"), embeddings, PLANNED_ROWS, context=context, store=seeded_store,
        query_count=QUERY_COUNT, progress=lambda done, total: progress.append((done, total)),
    )
    assert 0 < verification["measured_recall_at_10"] < 1
    # A binary scan's predicted recall@10 is the evaluation's fidelity@10 of binary 32 on this dataset.
    evaluated = seeded_store.results(method="prefix", precision="binary")
    fidelity = float(evaluated[evaluated["width"] == 32]["fidelity_at_10"].iloc[-1])
    assert verification["predicted_recall_at_10"] == pytest.approx(fidelity)
    assert progress[0] == (0, 4) and progress[-1] == (4, 4)

    run = seeded_store.get_run(verification["run_id"])
    assert (run["kind"], run["status"], run["dataset_fingerprint"], run["model"]) == (
        "verify", "finished", synthetic_dataset.fingerprint, "precomputed"
    )
    (row,) = seeded_store.rows("verifications", verification["run_id"]).to_dict("records")
    for key in ("planned_corpus_size", "corpus_size", "label", "kind", "predicted_p50_ms", "measured_p50_ms",
                "predicted_p95_ms", "measured_p95_ms", "predicted_recall_at_10", "measured_recall_at_10"):
        assert row[key] == pytest.approx(verification[key]) if isinstance(row[key], float) else row[key] == verification[key]
    assert row["stages"] == [{"width": 32, "precision": "binary", "index_type": "binary"}]
    assert row["details"]["stand_in_check"]["corpus_size"] == 2000


def test_a_small_memory_limit_caps_the_size_and_projects_the_prediction_there(embeddings, seeded_store, synthetic_dataset):
    pick = single(64, "fp32", "flat")
    limit = int(2500 * MEMORY_SAFETY * bytes_per_row(pick, 64))
    verification = verify_pick(
        pick, embeddings, PLANNED_ROWS, context=context_of(synthetic_dataset), store=seeded_store,
        query_count=QUERY_COUNT, memory_limit_bytes=limit,
    )
    assert (verification["corpus_size"], verification["capped_from"]) == (2500, PLANNED_ROWS)
    assert "would not fit" in verification["cap_reason"]
    # The prediction is the planner's latency for flat fp32 64, projected again at the 2,500 rows built.
    rows = latency_rows_for(pick, seeded_store.rows("latency"), seeded_store.rows("funnels"))
    assert sorted(rows["corpus_size"]) == list(SYNTHETIC_BENCH_SIZES)
    expected = latency_at(rows, 2500)
    assert verification["predicted_p95_ms"] == pytest.approx(expected.p95_ms)
    assert verification["predicted_p50_ms"] == pytest.approx(expected.p50_ms)


def test_memory_too_small_for_the_real_rows_is_refused(embeddings):
    with pytest.raises(ValueError, match=r"memory_limit_bytes=1,000: expected room for at least 2,000 rows"):
        verify_pick(single(64, "fp32", "flat"), embeddings, PLANNED_ROWS, memory_limit_bytes=1000)


@pytest.mark.parametrize(
    ("pick", "message"),
    [
        (single(12, "binary", "binary"), "width=12: expected a multiple of 8 for a binary index"),
        (single(64, "fp32", "annoy"), "index_type='annoy': expected one of ['flat', 'binary', 'hnsw', 'ivf']"),
        (single(64, "int8", "hnsw"), "index_type='hnsw' with precision='int8': expected one of ['fp32']"),
        (single(128, "fp32", "flat"), "width=128: expected 1..64"),
        (single(64, "fp32", "flat", method="umap"), "method='umap': expected one of ['prefix', 'pca']"),
        ({"label": "funnel x", "kind": "funnel", "stages": [{"width": 16}]}, "stages=[{'width': 16}]: expected a funnel"),
    ],
)
def test_a_pick_that_cannot_be_built_is_refused_with_the_field_named(embeddings, pick, message):
    with pytest.raises(ValueError) as error:
        verify_pick(pick, embeddings, PLANNED_ROWS)
    assert message in str(error.value)
    assert str(error.value).startswith(pick["label"])


def test_hnsw_recall_is_measured_against_exact_search_of_the_same_prefixes(embeddings):
    pick = single(32, "fp32", "hnsw", search_params={"hnsw_ef_search": 16}, index_recall_at_10=0.97)
    verification = verify_pick(pick, embeddings, PLANNED_ROWS, query_count=QUERY_COUNT)
    assert verification["recall_reference"] == "exact search over the same prefixes"
    assert verification["predicted_recall_at_10"] == 0.97
    assert 0 < verification["measured_recall_at_10"] <= 1
    # A 32-dim prefix loses to full width whatever the index: full-width recall is lower than the index's own.
    assert verification["full_width_recall_at_10"] < verification["measured_recall_at_10"]


def test_a_funnel_is_built_and_its_recall_measured_against_exact_full_width_search(embeddings):
    pick = {
        "label": "funnel binary 32 -> 200 | 64 -> 10", "kind": "funnel", "method": "prefix",
        "stages": [
            {"width": 32, "precision": "binary", "index_type": "binary", "shortlist_size": 200},
            {"width": 64, "precision": "fp32", "index_type": "flat", "shortlist_size": 10},
        ],
        "p50_ms": 0.1, "p95_ms": 0.2, "recall_at_10": 0.9,
    }
    verification = verify_pick(pick, embeddings, PLANNED_ROWS, query_count=QUERY_COUNT)
    assert verification["predicted_recall_at_10"] == 0.9
    assert verification["recall_reference"] == "exact full-width fp32 search"
    # The last stage rescores at full width, so whatever the shortlist holds comes back in exact order.
    assert 0.5 < verification["measured_recall_at_10"] <= 1
    assert verification["measured_recall_at_10"] == verification["full_width_recall_at_10"]


def test_a_pca_pick_rotates_with_axes_fitted_on_the_real_rows(embeddings, seeded_store, synthetic_dataset):
    verification = verify_pick(
        single(32, "fp32", "flat", method="pca"), embeddings, PLANNED_ROWS, context=context_of(synthetic_dataset),
        store=seeded_store, query_count=QUERY_COUNT,
    )
    evaluated = seeded_store.results(method="pca", precision="fp32")
    fidelity = float(evaluated[evaluated["width"] == 32]["fidelity_at_10"].iloc[-1])
    assert verification["method"] == "pca"
    assert verification["predicted_recall_at_10"] == pytest.approx(fidelity)
    assert 0 < verification["measured_recall_at_10"] < 1


def test_a_sharded_pick_verifies_one_shard(embeddings):
    pick = single(64, "fp32", "flat", shards=4, per_shard_corpus_size=2500)
    verification = verify_pick(pick, embeddings, 10_000, query_count=QUERY_COUNT)
    assert (verification["planned_corpus_size"], verification["corpus_size"], verification["shards"]) == (10_000, 2500, 4)
    assert verification["sharding"] == "one shard of 2,500 of 4 shards verified"
    assert verification["capped_from"] is None


def test_the_planner_marks_the_verified_pick_at_its_corpus_size(embeddings, seeded_store, synthetic_dataset):
    planner = WidthPlanner(PLANNED_ROWS, max_p95_ms=1000.0, min_retention=0.9).fit(seeded_store)
    chosen = planner.recommendation_
    assert chosen["verified"] is None
    verification = verify_pick(
        chosen, embeddings, PLANNED_ROWS, context=planner.context_, store=seeded_store, query_count=QUERY_COUNT
    )

    marked = WidthPlanner(PLANNED_ROWS, max_p95_ms=1000.0, min_retention=0.9).fit(seeded_store)
    verified = marked.recommendation_["verified"]
    assert verified["run_id"] == verification["run_id"] and verified["corpus_size"] == PLANNED_ROWS
    assert verified["measured_p95_ms"] == pytest.approx(verification["measured_p95_ms"])
    assert verified["ratio_p95"] == pytest.approx(verification["measured_p95_ms"] / chosen["p95_ms"])
    others = marked.candidates_[marked.candidates_["label"] != chosen["label"]]
    assert others["verified"].isna().all()
    # A plan for another corpus size was not verified.
    elsewhere = WidthPlanner(8000, max_p95_ms=1000.0, min_retention=0.9).fit(seeded_store)
    assert elsewhere.candidates_["verified"].isna().all()


# -- reloading the evaluated rows --------------------------------------------------------------------------------


def test_embeddings_are_reloaded_from_the_source_the_evaluation_recorded(tmp_path):
    from mrl_core.data import load_dataset
    from mrl_core.evaluate import run_evaluation

    archive = tmp_path / "vectors.zip"
    archive.write_bytes(synthetic_embeddings_zip())
    dataset = load_dataset(archive)
    store = ResultStore(tmp_path / "results.duckdb")
    run_evaluation(dataset, "precomputed", widths=[64, 32], precisions=["fp32"], methods=["prefix"], store=store)
    context = context_of(dataset)
    assert evaluated_source(store, dataset.fingerprint) == str(archive)
    reloaded = verification_embeddings(store, context)
    assert np.allclose(reloaded.corpus, dataset.corpus_embeddings, atol=1e-6)

    with pytest.raises(ValueError, match=r"data=None: the store does not record where dataset 'other'"):
        verification_embeddings(store, {"dataset": "other", "dataset_fingerprint": "fp-other", "model": "precomputed"})
    # Data that is not the evaluated dataset is refused, naming both.
    other = tmp_path / "other.zip"
    other.write_bytes(synthetic_embeddings_zip(seed=1))
    with pytest.raises(ValueError, match=r"holds dataset 'other' \(\w+\); expected the evaluated dataset 'vectors'"):
        verification_embeddings(store, context, data=str(other))


def test_a_dataset_built_in_memory_cannot_be_reloaded_and_the_message_says_so(seeded_store, synthetic_dataset):
    # The seeded store's evaluation recorded source 'synthetic', a name no loader knows.
    with pytest.raises(ValueError, match=r"data='synthetic': cannot reload the evaluated dataset 'synthetic'"):
        verification_embeddings(seeded_store, context_of(synthetic_dataset))


def test_a_builtin_evaluation_is_reloadable_by_its_name(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    with store.run("evaluate", model="base", dataset="builtin:quick", dataset_fingerprint="fp-quick"):
        pass
    assert evaluated_source(store, "fp-quick") == "builtin:quick"
    assert evaluated_source(store, "fp-unknown") is None


def test_check_buildable_accepts_what_the_planner_recommends(seeded_store):
    planner = WidthPlanner(PLANNED_ROWS, max_p95_ms=1000.0).fit(seeded_store)
    for candidate in planner.candidates_.to_dict("records"):
        if candidate["p95_ms"] is not None and not np.isnan(candidate["p95_ms"]):
            # Every candidate with measured latency was built by the bench, so it can be built again here.
            check_buildable(candidate, 64)
