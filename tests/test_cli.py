"""The command line, in process: ``--json`` output, exit codes, error messages, and the values behind them.

No model is loaded: evaluation runs on precomputed embeddings, and the planner on rows written to the store.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mrl_core.cli import main
from mrl_core.store import ResultStore

RESULT_KEYS = {"method", "width", "precision", "ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"}
EMBEDDING_WIDTH = 16
DOCUMENTS = 40
QUERIES = 8


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_json_object(out: str) -> dict:
    """stdout holds exactly one JSON object on one line, and nothing else."""
    assert out.endswith("\n") and out.count("\n") == 1, out[:500]
    payload = json.loads(out)
    assert isinstance(payload, dict)
    return payload


# -- evaluate on precomputed embeddings ---------------------------------------------------------------


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    """40 random unit documents, and 8 queries: documents 0..7 plus a little noise, renormalised.

    The noise is small enough that at full width each query's nearest document is its own (asserted in the
    test), and large enough that a 2-dimensional prefix confuses some of them.
    """
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((DOCUMENTS, EMBEDDING_WIDTH)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[:QUERIES] + 0.075 * rng.standard_normal((QUERIES, EMBEDDING_WIDTH)).astype(np.float32)
    return corpus, queries / np.linalg.norm(queries, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def embeddings_folder(tmp_path_factory, vectors):
    """A precomputed-embeddings folder (README "Input formats"): corpus.npy, queries.npy, qrels.tsv (query i -> i)."""
    folder = tmp_path_factory.mktemp("embeddings")
    np.save(folder / "corpus.npy", vectors[0])
    np.save(folder / "queries.npy", vectors[1])
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{row}\t{row}\t1\n" for row in range(QUERIES))
    )
    return folder


def positive_ranks(corpus: np.ndarray, queries: np.ndarray, width: int) -> np.ndarray:
    """Rank of each query's positive document under exact fp32 search of renormalised prefixes."""
    def prefix(matrix: np.ndarray) -> np.ndarray:
        return matrix[:, :width] / np.linalg.norm(matrix[:, :width], axis=1, keepdims=True)

    scores = prefix(queries) @ prefix(corpus).T
    return np.array([1 + int((scores[row] > scores[row, row]).sum()) for row in range(len(queries))])


def expected_metrics(ranks: np.ndarray) -> dict[str, float]:
    """By hand, for one relevant document (grade 1) per query at these ranks."""
    return {
        "ndcg_at_10": float(np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0.0))),
        "recall_at_10": float(np.mean(ranks <= 10)),
        "recall_at_100": float(np.mean(ranks <= 100)),
        "mrr_at_10": float(np.mean(np.where(ranks <= 10, 1 / ranks, 0.0))),
    }


def test_evaluate_json_returns_documented_rows_and_stores_them(embeddings_folder, vectors, isolated_store, capsys):
    code, out, _ = run_cli(
        capsys, "evaluate", "--data", embeddings_folder, "--model", "precomputed", "--widths", "16,2",
        "--precisions", "fp32,int8", "--methods", "prefix", "--store", isolated_store.path, "--json",
    )
    assert code == 0
    payload = one_json_object(out)
    assert payload["model"] == "precomputed"
    assert payload["dataset"]["corpus_size"] == DOCUMENTS and payload["dataset"]["judged_queries"] == QUERIES
    rows = {(row["method"], row["width"], row["precision"]): row for row in payload["results"]}
    assert set(rows) == {("prefix", width, precision) for width in (16, 2) for precision in ("fp32", "int8")}
    assert all(RESULT_KEYS <= set(row) for row in rows.values())

    # At full width every query's nearest document is its positive: perfect retrieval.
    assert positive_ranks(*vectors, 16).tolist() == [1] * QUERIES
    full = rows["prefix", 16, "fp32"]
    assert (full["ndcg_at_10"], full["recall_at_10"], full["recall_at_100"], full["mrr_at_10"]) == (1.0, 1.0, 1.0, 1.0)
    narrow_ranks = positive_ranks(*vectors, 2)
    assert narrow_ranks.max() > 10  # the 2-d prefix loses some positives beyond the top 10
    for metric, value in expected_metrics(narrow_ranks).items():
        assert rows["prefix", 2, "fp32"][metric] == pytest.approx(value), metric

    stored = ResultStore(isolated_store.path).results(payload["run_id"])
    assert len(stored) == 4
    stored_full = stored[(stored["width"] == 16) & (stored["precision"] == "fp32")].iloc[0]
    assert stored_full["ndcg_at_10"] == 1.0 and stored_full["model"] == "precomputed"


@pytest.mark.parametrize(
    ("arguments", "messages"),
    [
        (["--widths", "0"], ["widths", "0", "1..16"]),
        (["--widths", "16,32"], ["widths", "32", "1..16"]),
        (["--precisions", "fp8"], ["precisions", "'fp8'", "fp32", "binary+rescore"]),
        (["--methods", "svd"], ["methods", "'svd'", "prefix"]),
    ],
    ids=["width 0", "width above the embeddings' width", "unknown precision", "unknown method"],
)
def test_evaluate_refuses_bad_options_with_exit_2(embeddings_folder, isolated_store, capsys, arguments, messages):
    code, out, err = run_cli(
        capsys, "evaluate", "--data", embeddings_folder, "--model", "precomputed", "--store", isolated_store.path,
        "--json", *arguments,
    )
    assert code == 2 and out == ""
    assert err.startswith("error: ")
    for message in messages:
        assert message in err
    assert ResultStore(isolated_store.path).list_runs().empty


def test_evaluate_names_a_missing_data_path(tmp_path, isolated_store, capsys):
    missing = tmp_path / "no-such-folder"
    code, out, err = run_cli(capsys, "evaluate", "--data", missing, "--model", "precomputed", "--json")
    assert code == 2 and out == ""
    assert f"error: {missing}: no such file or folder" in err


def test_a_list_option_that_does_not_parse_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--data", "builtin", "--widths", "64,x"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "argument --widths: expected comma-separated integers, got '64,x'" in captured.err


# -- recommend on rows written by hand --------------------------------------------------------------------

QUALITY = {  # (width, precision) -> nDCG@10
    (64, "fp32"): 0.62, (32, "fp32"): 0.56,
    (64, "int8"): 0.60, (32, "int8"): 0.50,
    (64, "binary"): 0.47, (32, "binary"): 0.35,
}
P95_MS_AT_1M = {  # single-query flat/bit scans; measured at 100k as a tenth of this (linear in corpus size)
    (64, "fp32"): 4.5, (32, "fp32"): 2.5,
    (64, "int8"): 3.0, (32, "int8"): 1.5,
    (64, "binary"): 0.5, (32, "binary"): 0.3,
}


@pytest.fixture(scope="module")
def planner_store(tmp_path_factory) -> ResultStore:
    store = ResultStore(tmp_path_factory.mktemp("recommend") / "results.duckdb")
    fields = {"model": "m", "dataset": "tiny", "dataset_fingerprint": "fp-tiny"}
    with store.run("evaluate", corpus_size=5000, **fields) as run_id:
        store.add_rows("results", run_id, [
            {"method": "prefix", "width": width, "precision": precision, "ndcg_at_10": ndcg}
            for (width, precision), ndcg in QUALITY.items()
        ])
    with store.run("bench", **fields) as run_id:
        store.add_rows("latency", run_id, [
            {
                "index_type": "binary" if precision == "binary" else "flat", "width": width, "precision": precision,
                "corpus_size": corpus_size, "batch_size": 64, "threads": 1, "faiss_version": "1.15.1",
                "p50_ms": 0.8 * p95_ms * corpus_size / 1_000_000, "p95_ms": p95_ms * corpus_size / 1_000_000,
            }
            for (width, precision), p95_ms in P95_MS_AT_1M.items()
            for corpus_size in (100_000, 1_000_000)
        ])
    return store


def recommend(capsys, store: ResultStore, *targets: str) -> tuple[int, dict, str]:
    code, out, err = run_cli(capsys, "recommend", "--store", store.path, "--json", *targets)
    return code, one_json_object(out), err


def test_recommend_picks_the_cheapest_configuration_meeting_every_target(planner_store, capsys):
    code, payload, _ = recommend(
        capsys, planner_store, "--corpus-size", "1000000", "--max-storage-gb", "0.1", "--max-p95-ms", "5",
        "--min-ndcg", "0.55",
    )
    # By hand, at 1M vectors: 64 int8 flat is 64 B/vector = 0.064 GB, 3.0 ms, 0.60. Everything smaller misses
    # the quality floor (32 int8 0.50, binary 0.47/0.35); 32 fp32 (0.128 GB) and 64 fp32 (0.256 GB) are too big;
    # HNSW and IVF have no latency measured.
    assert code == 0
    chosen = payload["recommendation"]
    assert chosen["label"] == "prefix 64 int8/flat"
    assert chosen["storage_gb"] == pytest.approx(0.064)
    assert chosen["p95_ms"] == pytest.approx(3.0) and not chosen["latency_projected"]
    assert chosen["ndcg_at_10"] == pytest.approx(0.60)
    assert {name: margin["margin"] for name, margin in payload["margins"].items()} == {
        "max_storage_gb": pytest.approx(0.036), "max_p95_ms": pytest.approx(2.0), "min_ndcg": pytest.approx(0.05),
    }
    assert payload["targets"] == {"max_storage_gb": 0.1, "max_p95_ms": 5.0, "min_ndcg": 0.55}
    assert payload["context"]["dataset_fingerprint"] == "fp-tiny" and payload["context"]["full_width"] == 64
    assert payload["exports"]["faiss"]["factory_string"] == "SQ8"
    rejected = {item["label"]: item["reasons"] for item in payload["rejected"]}
    assert rejected["prefix 32 fp32/flat"] == ["storage 0.128 GB > max_storage_gb 0.1 GB (over by 0.028 GB)"]
    assert rejected["prefix 32 int8/flat"] == ["nDCG@10 0.5000 < min_ndcg 0.5500 (under by 0.0500)"]
    assert rejected["prefix 64 int8/ivf"] == ["no latency measured"]
    assert payload["closest"] is None


def test_recommend_best_quality_trades_storage_for_ndcg(planner_store, capsys):
    targets = ["--corpus-size", "1000000", "--max-storage-gb", "0.3", "--max-p95-ms", "5", "--min-ndcg", "0.55"]
    # Within 0.3 GB and 5 ms: 64 fp32 (0.256 GB, 4.5 ms, 0.62), 32 fp32 (0.128 GB, 2.5 ms, 0.56), 64 int8.
    _, best, _ = recommend(capsys, planner_store, *targets, "--objective", "best_quality")
    assert best["recommendation"]["label"] == "prefix 64 fp32/flat"
    _, cheapest, _ = recommend(capsys, planner_store, *targets)
    assert cheapest["recommendation"]["label"] == "prefix 64 int8/flat"


def test_recommend_projects_latency_beyond_the_measured_sizes(planner_store, capsys):
    code, payload, _ = recommend(
        capsys, planner_store, "--corpus-size", "2000000", "--max-storage-gb", "0.2", "--max-p95-ms", "7",
        "--min-ndcg", "0.55",
    )
    # 64 int8 scans take 0.3 ms at 100k and 3.0 ms at 1M: linear, so 6.0 ms at 2M, within 7; 0.128 GB.
    assert code == 0
    chosen = payload["recommendation"]
    assert chosen["label"] == "prefix 64 int8/flat"
    assert chosen["storage_gb"] == pytest.approx(0.128)
    assert chosen["latency_projected"] and chosen["p95_ms"] == pytest.approx(6.0, rel=1e-6)


def test_recommend_exits_1_with_the_closest_candidates_when_nothing_fits(planner_store, capsys):
    code, payload, _ = recommend(
        capsys, planner_store, "--corpus-size", "1000000", "--max-storage-gb", "0.1", "--max-p95-ms", "5",
        "--min-ndcg", "0.7",
    )
    assert code == 1
    assert payload["recommendation"] is None and payload["margins"] is None and payload["exports"] is None
    # Within 0.1 GB and 5 ms the best nDCG@10 is 64 int8's 0.60: the quality floor must come down by 0.1.
    relax = payload["closest"]["relax"]
    assert [item["target"] for item in relax] == ["min_ndcg"]
    assert relax[0]["needed"] == pytest.approx(0.60) and relax[0]["by"] == pytest.approx(0.10)
    assert payload["closest"]["candidates"][0]["label"] == "prefix 64 int8/flat"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--corpus-size", "0"], "corpus_size=0: expected a positive whole number of vectors"),
        (["--corpus-size", "-5"], "corpus_size=-5: expected a positive whole number of vectors"),
        (["--corpus-size", "1000", "--max-p95-ms", "-1"], "max_p95_ms=-1.0: expected a finite number >= 0"),
        (["--corpus-size", "1000", "--replicas", "0"], "replicas=0: expected a whole number >= 1"),
        (["--corpus-size", "1000", "--dataset", "msmarco"], "dataset='msmarco': no evaluation of it in the store"),
    ],
)
def test_recommend_refuses_bad_targets_with_exit_2(planner_store, capsys, arguments, message):
    code, out, err = run_cli(capsys, "recommend", "--store", planner_store.path, "--json", *arguments)
    assert code == 2 and out == ""
    assert f"error: {message}" in err


def test_recommend_on_an_empty_store_says_to_evaluate_first(tmp_path, capsys):
    empty = tmp_path / "empty.duckdb"
    code, out, err = run_cli(capsys, "recommend", "--store", empty, "--corpus-size", "1000", "--json")
    assert code == 2 and out == ""
    assert "no finished evaluation" in err and "python -m mrl_core evaluate" in err


# -- runs ------------------------------------------------------------------------------------------------


def test_runs_lists_a_stored_run_and_filters_by_kind(tmp_path, capsys):
    store = ResultStore(tmp_path / "results.duckdb")
    code, out, _ = run_cli(capsys, "runs", "--store", store.path)
    assert (code, out) == (0, "no runs\n")

    with store.run("evaluate", model="m", dataset="tiny", dataset_fingerprint="fp-tiny", corpus_size=40) as run_id:
        pass
    code, out, _ = run_cli(capsys, "runs", "--store", store.path, "--json")
    assert code == 0
    (run,) = one_json_object(out)["runs"]
    assert run["run_id"] == run_id
    assert (run["kind"], run["status"], run["model"], run["dataset"], run["corpus_size"]) == (
        "evaluate", "finished", "m", "tiny", 40
    )
    assert run["started_at"] and run["finished_at"]

    _, out, _ = run_cli(capsys, "runs", "--store", store.path, "--kind", "bench", "--json")
    assert one_json_object(out) == {"runs": []}


def test_module_help_exits_0():
    completed = subprocess.run(
        [sys.executable, "-m", "mrl_core", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    for command in ("evaluate", "train", "bench", "funnel", "recommend", "runs"):
        assert command in completed.stdout


def test_recommend_after_a_label_free_evaluation_reports_nDCG_as_not_measured(tmp_path, capsys):
    # A plain corpus is evaluated by fidelity to full width only: no nDCG, and the text summary must say so.
    store = ResultStore(tmp_path / "results.duckdb")
    fields = {"model": "m", "dataset": "plain", "dataset_fingerprint": "fp-plain"}
    with store.run("evaluate", corpus_size=1000, **fields) as run_id:
        store.add_rows("results", run_id, [{"method": "prefix", "width": 64, "precision": "fp32", "fidelity_at_10": 1.0}])
    with store.run("bench", **fields) as run_id:
        store.add_rows("latency", run_id, [{
            "index_type": "flat", "width": 64, "precision": "fp32", "corpus_size": 1000, "batch_size": 64,
            "threads": 1, "faiss_version": "1.15.1", "p50_ms": 0.05, "p95_ms": 0.08,
        }])
    code, out, _ = run_cli(capsys, "recommend", "--store", store.path, "--corpus-size", "1000", "--max-p95-ms", "1")
    assert code == 0
    assert "recommend: prefix 64 fp32/flat" in out and "nDCG@10 not measured" in out
    code, out, _ = run_cli(capsys, "recommend", "--store", store.path, "--corpus-size", "1000", "--max-p95-ms", "1", "--json")
    assert code == 0 and one_json_object(out)["recommendation"]["ndcg_at_10"] is None
