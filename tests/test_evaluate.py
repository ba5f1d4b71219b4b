import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrl_core import encode
from mrl_core.data import DatasetError, RetrievalDataset
from mrl_core.evaluate import RESULT_KEYS, evaluate_grid, exact_search, pca_rotation, run_evaluation
from mrl_core.store import ResultStore
from mrl_core.widths import METHODS, PRECISIONS, quantize, unpack_signs

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def _normalise(matrix):
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def signal_in_the_tail():
    """30 documents whose identity lives in their last 4 of 16 dimensions; the first 12 are faint noise.

    Query i repeats document i's last 4 dimensions over fresh noise, so it is relevant to document i
    only: exact at full width, lost by a 4-dimension prefix (noise), found again by PCA to 4.
    """
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((30, 4))
    corpus = _normalise(np.hstack([0.01 * rng.standard_normal((30, 12)), signal]))
    queries = _normalise(np.hstack([0.01 * rng.standard_normal((6, 12)), signal[:6]]))
    relevance = [{row: 1} for row in range(6)]
    return corpus, queries, relevance


def test_grid_has_one_row_per_cell_in_order(signal_in_the_tail):
    corpus, queries, relevance = signal_in_the_tail
    rows = evaluate_grid(corpus, queries, relevance, widths=[4, 16, 8])
    assert len(rows) == 3 * len(PRECISIONS) * len(METHODS)
    assert all(set(row) == set(RESULT_KEYS) for row in rows)
    cells = [(row["method"], row["width"], row["precision"]) for row in rows]
    expected = [(method, width, precision) for method in METHODS for width in (16, 8, 4) for precision in PRECISIONS]
    assert cells == expected
    assert all(row["search_ms"] >= 0 for row in rows)


def test_grid_scores_known_answers(signal_in_the_tail):
    corpus, queries, relevance = signal_in_the_tail
    rows = {(r["method"], r["width"], r["precision"]): r for r in evaluate_grid(corpus, queries, relevance, [16, 4])}
    full = rows[("prefix", 16, "fp32")]
    assert full["ndcg_at_10"] == 1.0 and full["mrr_at_10"] == 1.0 and full["recall_at_10"] == 1.0
    assert full["fidelity_at_10"] == 1.0 and full["retention"] == 1.0
    # the first 4 dimensions are noise: a prefix of 4 cannot find the document
    assert rows[("prefix", 4, "fp32")]["ndcg_at_10"] < 0.5
    # PCA puts the 4 signal dimensions first, so 4 components find every document at rank 1
    pca = rows[("pca", 4, "fp32")]
    assert pca["ndcg_at_10"] == 1.0 and pca["retention"] == 1.0
    # retention is always ndcg over the full-width fp32 prefix ndcg (here 1.0)
    assert all(row["retention"] == pytest.approx(row["ndcg_at_10"]) for row in rows.values())


def test_label_free_grid_reports_fidelity_only(signal_in_the_tail):
    corpus, queries, _ = signal_in_the_tail
    rows = evaluate_grid(corpus, queries, None, [16, 4], precisions=["fp32"], methods=["prefix"])
    assert rows[0]["fidelity_at_10"] == 1.0 and rows[1]["fidelity_at_10"] < 1.0
    for key in ("ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10", "retention"):
        assert all(row[key] is None for row in rows)


def test_grid_rejects_bad_widths_and_names(signal_in_the_tail):
    corpus, queries, relevance = signal_in_the_tail
    with pytest.raises(ValueError, match=r"widths: 17 is outside 1..16"):
        evaluate_grid(corpus, queries, relevance, [17])
    with pytest.raises(ValueError, match=r"methods: 'svd' is not one of"):
        evaluate_grid(corpus, queries, relevance, [4], methods=["svd"])


def test_int8_search_ranks_by_code_inner_product():
    rng = np.random.default_rng(1)
    corpus, queries = _normalise(rng.standard_normal((50, 8))), _normalise(rng.standard_normal((3, 8)))
    ids, _ = exact_search(corpus, queries, "int8", k=5)
    corpus_codes, query_codes = quantize(corpus, queries, "int8")
    scores = query_codes.astype(np.int64) @ corpus_codes.astype(np.int64).T
    np.testing.assert_array_equal(np.take_along_axis(scores, ids, axis=1), -np.sort(-scores, axis=1)[:, :5])


def test_binary_rescore_reranks_by_float_query_against_sign_bits():
    rng = np.random.default_rng(2)
    width = 12
    corpus, queries = _normalise(rng.standard_normal((60, width))), _normalise(rng.standard_normal((4, width)))
    # 60 documents fit in the 4 x k shortlist, so the rescore sees all of them
    ids, _ = exact_search(corpus, queries, "binary+rescore", k=15)
    signs = unpack_signs(quantize(corpus, queries, "binary")[0], width)
    expected = np.argsort(-(queries @ signs.T), axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(expected, axis=1))
    scores = queries @ signs.T
    np.testing.assert_allclose(np.take_along_axis(scores, ids, axis=1), np.take_along_axis(scores, expected, axis=1))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_search_pads_when_the_corpus_is_smaller_than_k(precision):
    rng = np.random.default_rng(3)
    corpus, queries = _normalise(rng.standard_normal((5, 8))), _normalise(rng.standard_normal((2, 8)))
    ids, _ = exact_search(corpus, queries, precision, k=100)
    assert ids.shape == (2, 100)
    assert sorted(ids[0, :5].tolist()) == [0, 1, 2, 3, 4]
    assert (ids[:, 5:] == -1).all()


def test_pca_rotation_orders_axes_by_variance():
    rng = np.random.default_rng(4)
    corpus = rng.standard_normal((200, 3)) * np.array([0.1, 3.0, 1.0])
    mean, rotation = pca_rotation(corpus)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-5)
    # the widest axis (1) comes first, then axis 2, then axis 0
    np.testing.assert_allclose(np.abs(rotation[:, 0]), [0, 1, 0], atol=0.05)
    np.testing.assert_allclose(np.abs(rotation[:, 1]), [0, 0, 1], atol=0.05)
    np.testing.assert_allclose(mean, corpus.mean(axis=0), atol=1e-6)


@pytest.fixture
def precomputed_dataset(signal_in_the_tail):
    corpus, queries, _ = signal_in_the_tail
    return RetrievalDataset(
        name="tail-signal",
        source="test",
        corpus_ids=[f"d{row}" for row in range(len(corpus))],
        corpus_texts=None,
        # q6 has no judgement and is skipped by labelled metrics
        query_ids=[f"q{row}" for row in range(len(queries) + 1)],
        qrels={f"q{row}": {f"d{row}": 1} for row in range(len(queries))},
        corpus_embeddings=corpus,
        query_embeddings=np.vstack([queries, corpus[7:8]]),
    )


@pytest.fixture
def refuse_encoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("embed_dataset was called before the arguments were validated")

    monkeypatch.setattr(encode, "embed_dataset", refuse)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"widths": [17]}, r"widths: 17 is outside 1..16 \(the model's full width is 16\)"),
        ({"widths": [0]}, r"widths: 0 is outside 1..16"),
        ({"widths": [-8]}, r"widths: -8 is outside 1..16"),
        ({"widths": [8, 4, 8]}, r"widths: \[8\] given more than once"),
        ({"widths": []}, r"widths: give at least one"),
        ({"precisions": ["fp32", "int4"]}, r"precisions: 'int4' is not one of \['fp32', 'fp16', 'int8', 'binary'"),
        ({"methods": ["random"]}, r"methods: 'random' is not one of \['prefix', 'pca'\]"),
    ],
)
def test_run_evaluation_validates_before_encoding(precomputed_dataset, refuse_encoding, tmp_path, arguments, message):
    options = {"widths": [16, 4], "precisions": ["fp32"], "methods": ["prefix"]} | arguments
    store = ResultStore(tmp_path / "results.duckdb")
    with pytest.raises(ValueError, match=message):
        run_evaluation(precomputed_dataset, "precomputed", store=store, **options)
    assert not (tmp_path / "results.duckdb").exists()


def test_run_evaluation_checks_widths_against_the_model_width(refuse_encoding, monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(encode, "model_width", lambda spec: asked.append(spec) or 384)
    dataset = RetrievalDataset(name="texts", source="test", corpus_ids=["a", "b"], corpus_texts=["x", "y"])
    with pytest.raises(ValueError, match=r"widths: 512 is outside 1..384"):
        run_evaluation(dataset, "base", widths=[512], store=ResultStore(tmp_path / "r.duckdb"))
    assert asked == ["base"]


def test_run_evaluation_needs_something_to_query(refuse_encoding, monkeypatch, tmp_path):
    monkeypatch.setattr(encode, "model_width", lambda spec: 384)
    no_texts = RetrievalDataset(name="ids-only", source="ids.txt", corpus_ids=["a", "b", "c"], corpus_texts=None)
    with pytest.raises(DatasetError, match=r"ids.txt: no query has a relevant judgement.*no texts or embeddings"):
        run_evaluation(no_texts, "base", widths=[64], store=ResultStore(tmp_path / "r.duckdb"))
    one_document = RetrievalDataset(name="one", source="one.jsonl", corpus_ids=["a"], corpus_texts=["x"])
    with pytest.raises(DatasetError, match=r"one.jsonl: .*\(1 documents\)"):
        run_evaluation(one_document, "base", widths=[64], store=ResultStore(tmp_path / "r.duckdb"))


def test_run_evaluation_stores_one_run_with_its_rows(precomputed_dataset, tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    run_id, rows = run_evaluation(
        precomputed_dataset, "precomputed", widths=[16, 4], precisions=["fp32", "int8"], methods=["prefix", "pca"],
        store=store,
    )
    assert len(rows) == 2 * 2 * 2
    run = store.get_run(run_id)
    assert run["kind"] == "evaluate" and run["status"] == "finished"
    assert run["model"] == "precomputed" and run["model_fingerprint"] == "precomputed"
    assert run["dataset"] == "tail-signal" and run["dataset_fingerprint"] == precomputed_dataset.fingerprint
    assert run["corpus_size"] == 30 and run["query_count"] == 7
    assert run["params"]["widths"] == [16, 4] and run["params"]["query_source"] == "qrels"
    assert run["threads"] >= 1 and run["summary"]["cells"] == 8
    stored = store.results(run_id)
    assert len(stored) == 8
    first = stored[(stored["method"] == "prefix") & (stored["width"] == 16) & (stored["precision"] == "fp32")].iloc[0]
    # 6 judged queries, each finding its own document first; the unjudged 7th is skipped
    assert first["ndcg_at_10"] == 1.0 and first["fidelity_at_10"] == 1.0 and first["retention"] == 1.0
    by_cell = {(r["method"], r["width"], r["precision"]): r for r in rows}
    for record in stored.to_dict("records"):
        assert record["ndcg_at_10"] == pytest.approx(by_cell[(record["method"], record["width"], record["precision"])]["ndcg_at_10"])


def test_run_evaluation_samples_queries_from_an_unlabelled_corpus(signal_in_the_tail, tmp_path):
    corpus, _, _ = signal_in_the_tail
    dataset = RetrievalDataset(
        name="corpus-only", source="test", corpus_ids=[f"d{i}" for i in range(30)], corpus_texts=None,
        corpus_embeddings=corpus,
    )
    store = ResultStore(tmp_path / "results.duckdb")
    run_id, rows = run_evaluation(dataset, "precomputed", widths=[16, 4], precisions=["fp32"], methods=["prefix"], store=store)
    run = store.get_run(run_id)
    # half the corpus (15 of 30) becomes queries and is left out of the searched set
    assert run["query_count"] == 15 and run["corpus_size"] == 15
    assert run["params"]["query_source"] == "corpus_sample" and run["params"]["label_free_seed"] == 0
    assert rows[0]["fidelity_at_10"] == 1.0 and rows[0]["ndcg_at_10"] is None
    # the same seed draws the same queries, so a rerun measures the same fidelity
    _, again = run_evaluation(dataset, "precomputed", widths=[16, 4], precisions=["fp32"], methods=["prefix"], store=store)
    assert again[1]["fidelity_at_10"] == rows[1]["fidelity_at_10"]


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.exists(), reason="needs ../shared/data/scifact")
def test_scifact_base_matches_published_ndcg(tmp_path):
    """all-MiniLM-L6-v2 on SciFact: MTEB publishes nDCG@10 0.6451 at full width."""
    command = [
        sys.executable, "-m", "mrl_core", "evaluate", "--data", str(SCIFACT), "--model", "base",
        "--widths", "384,128,64,32", "--precisions", "fp32", "--methods", "prefix,pca",
        "--store", str(tmp_path / "results.duckdb"), "--json",
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    results = {(row["method"], row["width"]): row["ndcg_at_10"] for row in json.loads(completed.stdout)["results"]}
    assert results[("prefix", 384)] == pytest.approx(0.6451, abs=0.002)
    assert results[("prefix", 128)] == pytest.approx(0.602, abs=0.002)
    assert results[("prefix", 64)] == pytest.approx(0.484, abs=0.002)
    assert results[("prefix", 32)] == pytest.approx(0.337, abs=0.002)
    assert results[("pca", 64)] == pytest.approx(0.540, abs=0.002)


# quality_vs_width draws what evaluate stores; its tests live beside the evaluation they plot.
def test_quality_vs_width_draws_one_line_per_method_and_precision(signal_in_the_tail):
    import pandas as pd

    from mrl_core.figures import quality_vs_width

    corpus, queries, relevance = signal_in_the_tail
    results = pd.DataFrame(evaluate_grid(corpus, queries, relevance, [16, 8, 4], precisions=["fp32", "binary"]))
    figure = quality_vs_width(results)
    assert [trace.name for trace in figure.data] == ["prefix fp32", "prefix binary", "pca fp32", "pca binary"]
    prefix_fp32, pca_fp32 = figure.data[0], figure.data[2]
    assert list(prefix_fp32.x) == [4, 8, 16] and prefix_fp32.line.dash == "solid" and pca_fp32.line.dash == "dash"
    assert prefix_fp32.y[-1] == 1.0
    assert figure.layout.xaxis.type == "log" and list(figure.layout.xaxis.tickvals) == [4, 8, 16]


def test_quality_vs_width_separates_labels_and_refuses_ambiguous_rows(signal_in_the_tail):
    import pandas as pd

    from mrl_core.figures import quality_vs_width

    corpus, queries, relevance = signal_in_the_tail
    rows = pd.DataFrame(evaluate_grid(corpus, queries, relevance, [16, 4], precisions=["fp32"], methods=["prefix"]))
    both = pd.concat([rows.assign(label="base"), rows.assign(label="mrl")])
    figure = quality_vs_width(both, metric="retention")
    assert [trace.name for trace in figure.data] == ["base: prefix fp32", "mrl: prefix fp32"]
    assert figure.data[0].marker.symbol != figure.data[1].marker.symbol
    with pytest.raises(ValueError, match=r"prefix width 16 fp32 appears more than once"):
        quality_vs_width(pd.concat([rows, rows]))
    with pytest.raises(ValueError, match=r"no ndcg_at_10 values to plot"):
        quality_vs_width(rows.assign(ndcg_at_10=None))
    with pytest.raises(ValueError, match=r"metric='speed': expected one of"):
        quality_vs_width(rows, metric="speed")
