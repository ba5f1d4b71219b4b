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


# -- recommend --verify ----------------------------------------------------------------------------------------

VERIFY_LATENCY_MS = {  # (index_type, width, precision) -> (p50, p95) at 2,000 rows; twice that at 4,000
    ("flat", 64, "fp32"): (0.05, 0.07),
    ("binary", 32, "binary"): (0.01, 0.02),
}
VERIFY_QUALITY = {(64, "fp32"): (0.9, 1.0), (32, "binary"): (0.5, 0.3)}  # -> (nDCG@10, fidelity@10)


def verify_store(tmp_path, *, params: dict | None = None, latency=VERIFY_LATENCY_MS, quality=VERIFY_QUALITY):
    """A folder of the conftest vectors (2,000 x 64, 40 queries), an evaluation of it and latency by hand."""
    from conftest import matryoshka_like_folder
    from mrl_core.data import load_dataset

    folder = tmp_path / "vectors"
    corpus, queries = matryoshka_like_folder(folder)
    dataset = load_dataset(folder)
    store = ResultStore(tmp_path / "results.duckdb")
    fields = {"model": "precomputed", "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint}
    with store.run("evaluate", params=params if params is not None else {"source": str(folder)}, **fields) as run_id:
        store.add_rows("results", run_id, [
            {"method": "prefix", "width": width, "precision": precision, "ndcg_at_10": ndcg, "fidelity_at_10": fidelity}
            for (width, precision), (ndcg, fidelity) in quality.items()
        ])
    with store.run("bench", **fields) as run_id:
        store.add_rows("latency", run_id, [
            {
                "index_type": index_type, "width": width, "precision": precision, "corpus_size": size,
                "batch_size": 64, "threads": 1, "faiss_version": "1.15.1",
                "p50_ms": p50_ms * size / 2000, "p95_ms": p95_ms * size / 2000,
            }
            for (index_type, width, precision), (p50_ms, p95_ms) in latency.items()
            for size in (2000, 4000)
        ])
    return store, folder


def test_recommend_verify_builds_the_pick_and_reports_predicted_next_to_measured(tmp_path, capsys):
    store, _ = verify_store(tmp_path)
    targets = ["--corpus-size", "4000", "--min-ndcg", "0.8", "--max-p95-ms", "50"]
    code, out, err = run_cli(capsys, "recommend", "--store", store.path, *targets, "--verify", "--json")
    assert code == 0, err
    payload = one_json_object(out)
    assert payload["recommendation"]["label"] == "prefix 64 fp32/flat"
    verification = payload["verification"]
    # The data came from the folder the evaluation recorded; 4,000 rows = 2,000 real + 2,000 drawn.
    assert verification["corpus_size"] == 4000 and verification["capped_from"] is None
    assert (verification["rows"]["real_rows"], verification["rows"]["synthetic_rows"]) == (2000, 2000)
    # Measured at 4,000 in the bench rows, so predicted as written: 2 x (0.05, 0.07).
    assert verification["predicted_p50_ms"] == pytest.approx(0.10)
    assert verification["predicted_p95_ms"] == pytest.approx(0.14)
    assert 0 < verification["measured_p50_ms"] <= verification["measured_p95_ms"]
    assert verification["ratio_p95"] == pytest.approx(verification["measured_p95_ms"] / 0.14)
    assert verification["predicted_recall_at_10"] == 1.0 and verification["measured_recall_at_10"] == 1.0
    assert verification["stand_in_check"]["corpus_size"] == 2000
    assert "verifying: 4/4" in err
    (row,) = store.rows("verifications").to_dict("records")
    assert row["run_id"] == verification["run_id"] and row["label"] == "prefix 64 fp32/flat"

    # The next recommendation at the same size carries the verification; the text output shows both.
    code, out, _ = run_cli(capsys, "recommend", "--store", store.path, *targets, "--verify")
    assert code == 0
    assert "verified prefix 64 fp32/flat at 4,000 vectors on this machine" in out
    assert "predicted (x" in out and "stand-in check at 2,000 rows" in out
    code, out, _ = run_cli(capsys, "recommend", "--store", store.path, *targets, "--json")
    verified = one_json_object(out)["recommendation"]["verified"]
    newest = store.rows("verifications").iloc[-1]
    assert verified["run_id"] == newest["run_id"] > verification["run_id"] and verified["corpus_size"] == 4000
    assert verified["measured_p95_ms"] == pytest.approx(newest["measured_p95_ms"])


def test_recommend_verify_without_a_recorded_source_asks_for_data(tmp_path, capsys):
    store, folder = verify_store(tmp_path, params={})
    targets = ["--corpus-size", "4000", "--min-ndcg", "0.8", "--max-p95-ms", "50", "--verify", "--json"]
    code, out, err = run_cli(capsys, "recommend", "--store", store.path, *targets)
    assert code == 2 and out == ""
    assert "error: data=None: the store does not record where dataset 'vectors'" in err and "--data SRC" in err
    assert "Traceback" not in err
    code, out, _ = run_cli(capsys, "recommend", "--store", store.path, *targets, "--data", folder)
    assert code == 0 and one_json_object(out)["verification"]["corpus_size"] == 4000


def test_recommend_verify_refuses_data_that_is_not_the_evaluated_dataset(tmp_path, capsys, embeddings_folder):
    store, _ = verify_store(tmp_path)
    code, out, err = run_cli(
        capsys, "recommend", "--store", store.path, "--corpus-size", "4000", "--min-ndcg", "0.8", "--verify",
        "--data", embeddings_folder, "--json",
    )
    assert code == 2 and out == ""
    assert f"error: data='{embeddings_folder}': holds dataset" in err and "expected the evaluated dataset 'vectors'" in err


def test_recommend_verify_of_a_pick_that_cannot_be_built_here_says_why(tmp_path, capsys):
    # HNSW over int8 codes is costed but not built here: give it the only latency, so it is the pick.
    store, _ = verify_store(tmp_path, latency={("hnsw", 64, "int8"): (0.05, 0.07)}, quality={(64, "int8"): (0.9, 0.95)})
    code, out, err = run_cli(
        capsys, "recommend", "--store", store.path, "--corpus-size", "4000", "--max-p95-ms", "50", "--verify", "--json",
    )
    assert code == 2 and out == ""
    assert "error: prefix 64 int8/hnsw: index_type='hnsw' with precision='int8': expected one of ['fp32']" in err
    assert "Traceback" not in err


# -- past one machine and bad input --------------------------------------------------------------------------


def test_recommend_splits_a_corpus_past_the_given_machine_into_shards(planner_store, capsys):
    from mrl_core.cost import merge_cost_ms

    code, payload, _ = recommend(
        capsys, planner_store, "--corpus-size", "2e6", "--max-storage-gb", "0.2", "--max-p95-ms", "7",
        "--min-ndcg", "0.55", "--machine-ram-gb", "0.1", "--machine-cores", "8",
    )
    # 2M x 64 int8 = 128 MB; 70% of 0.1 GB holds 1,093,750 of them: 2 shards of 1,000,000, a size the bench
    # measured (3.0 ms), so the latency is measured, plus the merge of 2 x 10 results.
    assert code == 0 and payload["corpus_size"] == 2_000_000
    assert payload["machine"] == {
        "ram_bytes": 100_000_000, "ram_gb": 0.1, "cores": 8, "usable_ram_fraction": 0.7,
        "usable_ram_bytes": pytest.approx(7e7), "source": "given",
    }
    chosen = payload["recommendation"]
    assert chosen["label"] == "prefix 64 int8/flat"
    assert (chosen["shards"], chosen["machines"], chosen["per_shard_corpus_size"]) == (2, 2, 1_000_000)
    assert chosen["merge_ms"] == merge_cost_ms(2)[1]
    assert chosen["p95_ms"] == pytest.approx(3.0 + chosen["merge_ms"]) and not chosen["latency_projected"]
    assert payload["exports"]["faiss"]["sharding"]["vectors_per_shard"] == 1_000_000
    assert payload["exports"]["qdrant"]["create_collection"]["body"]["shard_number"] == 2


def test_recommend_plans_for_this_machine_by_default(planner_store, capsys):
    from mrl_core.deployment import this_machine_cores, this_machine_ram_bytes

    code, payload, _ = recommend(capsys, planner_store, "--corpus-size", "1000000", "--min-ndcg", "0.55")
    assert code == 0
    machine = payload["machine"]
    assert (machine["ram_bytes"], machine["cores"], machine["source"]) == (
        this_machine_ram_bytes(), this_machine_cores(), "this machine"
    )
    assert payload["recommendation"]["shards"] == 1 and payload["recommendation"]["merge_ms"] == 0.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--corpus-size", "1e13"], "corpus_size=10000000000000: expected at most 1,000,000,000,000 vectors (10**12)"),
        (["--corpus-size", "1000", "--machine-ram-gb", "0"], "machine_ram_gb=0.0: expected a number of GB > 0"),
        (["--corpus-size", "1000", "--machine-ram-gb", "-64"], "machine_ram_gb=-64.0: expected a number of GB > 0"),
        (["--corpus-size", "1000", "--machine-cores", "0"], "machine_cores=0: expected a whole number >= 1"),
        # 1e-9 GB is one byte: not even a 32-bit code (4 B) fits.
        (["--corpus-size", "1000", "--machine-ram-gb", "1e-9"], "machine_ram_gb=1e-09: smaller than one shard"),
    ],
)
def test_recommend_refuses_absurd_sizes_and_machines_with_exit_2(planner_store, capsys, arguments, message):
    code, out, err = run_cli(capsys, "recommend", "--store", planner_store.path, "--json", *arguments)
    assert code == 2 and out == ""
    assert f"error: {message}" in err


def test_a_corpus_size_that_is_not_a_whole_number_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--corpus-size", "1.5", "--json"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "argument --corpus-size: corpus_size='1.5': expected a whole number of vectors" in captured.err


def test_recommend_on_a_store_without_bench_rows_says_to_run_bench(tmp_path, capsys):
    store = ResultStore(tmp_path / "results.duckdb")
    with store.run("evaluate", corpus_size=5000, model="m", dataset="tiny", dataset_fingerprint="fp-tiny") as run_id:
        store.add_rows("results", run_id, [{"method": "prefix", "width": 64, "precision": "fp32", "ndcg_at_10": 0.6}])
    code, payload, err = recommend(capsys, store, "--corpus-size", "1000000", "--max-p95-ms", "5")
    assert code == 1
    assert "note: the store has no bench rows" in err and "python -m mrl_core bench" in err
    assert payload["notes"] and "python -m mrl_core bench" in payload["notes"][0]
    assert {tuple(item["reasons"]) for item in payload["closest"]["candidates"]} == {("no latency measured",)}


def test_bad_recommend_input_prints_no_traceback(planner_store):
    completed = subprocess.run(
        [sys.executable, "-m", "mrl_core", "recommend", "--store", str(planner_store.path), "--corpus-size", "-3",
         "--machine-ram-gb", "64"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr == "error: corpus_size=-3: expected a positive whole number of vectors\n"
