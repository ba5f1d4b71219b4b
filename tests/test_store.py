import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mrl_core.store import ResultStore, StoreError

ROOT = Path(__file__).resolve().parents[1]


def _result_row(width: int, ndcg: float) -> dict:
    return {"method": "prefix", "width": width, "precision": "fp32", "ndcg_at_10": ndcg, "retention": ndcg / 0.5}


def test_run_lifecycle_and_reads(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    run_id = store.start_run("evaluate", model="base", dataset="tiny", dataset_fingerprint="abc", corpus_size=3,
                             params={"widths": [8, 4]}, threads=2)
    store.add_rows("results", run_id, [_result_row(8, 0.5), _result_row(4, 0.25)])
    store.finish_run(run_id, summary={"rows": 2})

    run = store.get_run(run_id)
    assert run["status"] == "finished"
    assert run["params"] == {"widths": [8, 4]}
    assert run["summary"] == {"rows": 2}
    assert "duckdb" in run["versions"]
    results = store.results(run_id)
    assert list(results["width"]) == [8, 4]
    assert list(results["retention"]) == [1.0, 0.5]
    assert results["dataset"].tolist() == ["tiny", "tiny"]
    assert store.latest_run("evaluate", model="base", dataset_fingerprint="abc")["run_id"] == run_id
    assert store.latest_run("evaluate", model="other") is None


def test_failed_block_marks_run_failed_and_keeps_earlier_rows(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    with pytest.raises(RuntimeError):
        with store.run("evaluate", model="base") as run_id:
            store.add_rows("results", run_id, [_result_row(8, 0.5)])
            raise RuntimeError("encoder crashed")
    run = store.get_run(run_id)
    assert run["status"] == "failed"
    assert "encoder crashed" in run["error"]
    assert len(store.results(run_id)) == 1


def test_rows_with_unknown_fields_are_refused_before_writing(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    run_id = store.start_run("evaluate")
    with pytest.raises(ValueError, match="ndcg_at_1000"):
        store.add_rows("results", run_id, [_result_row(8, 0.5), {"method": "prefix", "ndcg_at_1000": 1.0}])
    assert store.results(run_id).empty
    with pytest.raises(ValueError, match="expected one of"):
        store.add_rows("nonsense", run_id, [])


def test_delete_run_removes_its_rows_only(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    kept, deleted = store.start_run("evaluate"), store.start_run("evaluate")
    store.add_rows("results", kept, [_result_row(8, 0.5)])
    store.add_rows("results", deleted, [_result_row(8, 0.4)])
    store.delete_run(deleted)
    assert store.list_runs()["run_id"].tolist() == [kept]
    assert store.results()["run_id"].tolist() == [kept]


def test_json_columns_round_trip_in_funnels(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    run_id = store.start_run("funnel")
    stages = [{"width": 32, "precision": "binary", "index_type": "binary", "shortlist_size": 200}]
    store.add_rows("funnels", run_id, [{"corpus_size": 1000, "stages": stages, "recall_at_10": 0.99, "chosen": True}])
    assert store.rows("funnels", run_id).iloc[0]["stages"] == stages


WRITER = textwrap.dedent(
    """
    import sys
    from mrl_core.store import ResultStore
    store = ResultStore(sys.argv[1], lock_timeout_s=120)
    for index in range(int(sys.argv[3])):
        with store.run("evaluate", model=sys.argv[2]) as run_id:
            store.add_rows("results", run_id, [
                {"method": "prefix", "width": width, "precision": "fp32", "ndcg_at_10": index / 100}
                for width in (384, 64, 8)
            ])
    """
)


def test_concurrent_writer_processes_lose_no_row(tmp_path):
    path = tmp_path / "shared.duckdb"
    runs_per_writer = 15
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), f"writer{i}", str(runs_per_writer)],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )
        for i in range(3)
    ]
    reader = ResultStore(path, lock_timeout_s=120)
    reads = 0
    while any(writer.poll() is None for writer in writers):
        reader.list_runs()  # a reader in the middle of the writers must not crash either
        reads += 1
    errors = [writer.stderr.read() for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0, 0], errors
    runs = reader.list_runs()
    assert len(runs) == 3 * runs_per_writer
    assert set(runs["status"]) == {"finished"}
    assert runs.groupby("model").size().to_dict() == {f"writer{i}": runs_per_writer for i in range(3)}
    assert len(reader.results()) == 3 * runs_per_writer * 3
    assert reads > 0


def test_killed_job_leaves_file_readable_and_run_unfinished(tmp_path):
    path = tmp_path / "killed.duckdb"
    script = textwrap.dedent(
        """
        import sys, time
        from mrl_core.store import ResultStore
        store = ResultStore(sys.argv[1])
        run_id = store.start_run("train", model="base")
        store.add_rows("results", run_id, [{"method": "prefix", "width": 64, "precision": "fp32"}])
        print(run_id, flush=True)
        time.sleep(60)
        """
    )
    job = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    run_id = int(job.stdout.readline())
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    store = ResultStore(path)
    assert store.list_runs().set_index("run_id").loc[run_id, "status"] == "unfinished"
    assert len(store.results(run_id)) == 1


def test_lock_held_too_long_gives_a_clear_error(tmp_path):
    path = tmp_path / "locked.duckdb"
    ResultStore(path).list_runs()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(30)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(StoreError, match="another process has held the results store"):
            ResultStore(path, lock_timeout_s=1).list_runs()
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()


# -- named reads the pages use -------------------------------------------------------------------------------------
def _evaluation(store, *, dataset_fingerprint, model="base", dataset=None, rows=(), status="finished") -> int:
    run_id = store.start_run("evaluate", model=model, dataset=dataset or dataset_fingerprint,
                             dataset_fingerprint=dataset_fingerprint)
    store.add_rows("results", run_id, list(rows))
    store.finish_run(run_id, status=status)
    return run_id


def test_evaluated_pairs_names_each_dataset_and_model_once_newest_first(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    _evaluation(store, dataset_fingerprint="f1", dataset="scifact", rows=[_result_row(8, 0.5)])
    _evaluation(store, dataset_fingerprint="f2", dataset="nfcorpus", rows=[_result_row(8, 0.4)])
    _evaluation(store, dataset_fingerprint="f1", dataset="scifact-copy", model="mrl", rows=[_result_row(8, 0.6)])
    # The same content loaded under a new name: the newest name stands for it.
    _evaluation(store, dataset_fingerprint="f1", dataset="scifact-renamed", rows=[_result_row(8, 0.5)])
    _evaluation(store, dataset_fingerprint="f3", rows=[_result_row(8, 0.1)], status="failed")
    _evaluation(store, dataset_fingerprint="f4")  # finished, but stored no rows
    pairs = store.evaluated_pairs()
    assert pairs == [("f1", "scifact-renamed", "base"), ("f1", "scifact-copy", "mrl"), ("f2", "nfcorpus", "base")]
    assert (pairs[0].dataset_fingerprint, pairs[0].dataset, pairs[0].model) == ("f1", "scifact-renamed", "base")


def test_newest_results_keep_each_models_newest_row_per_method_and_width(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    int8 = {"method": "prefix", "width": 8, "precision": "int8", "ndcg_at_10": 0.45}
    _evaluation(store, dataset_fingerprint="f1", rows=[_result_row(8, 0.5), _result_row(4, 0.3), int8])
    _evaluation(store, dataset_fingerprint="f1", rows=[_result_row(8, 0.55)])
    _evaluation(store, dataset_fingerprint="f1", model="mrl", rows=[_result_row(8, 0.6)])
    _evaluation(store, dataset_fingerprint="f2", rows=[_result_row(8, 0.9)])
    _evaluation(store, dataset_fingerprint="f1", rows=[_result_row(8, 0.1)], status="failed")

    curves = store.newest_results("f1", precision="fp32")
    assert list(zip(curves["model"], curves["width"], curves["ndcg_at_10"])) == [
        ("base", 4, 0.3), ("base", 8, 0.55), ("mrl", 8, 0.6),
    ]
    every_precision = store.newest_results("f1")
    assert max(zip(every_precision["width"], every_precision["precision"], every_precision["ndcg_at_10"])) == (
        8, "int8", 0.45
    )


def test_results_narrow_to_a_method_and_precision(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    pca = {"method": "pca", "width": 8, "precision": "fp32", "ndcg_at_10": 0.52}
    binary = {"method": "prefix", "width": 8, "precision": "binary", "ndcg_at_10": 0.31}
    first = _evaluation(store, dataset_fingerprint="f1", rows=[_result_row(8, 0.5), pca, binary])
    second = _evaluation(store, dataset_fingerprint="f1", rows=[_result_row(8, 0.6), binary])
    prefix_fp32 = store.results([first, second], method="prefix", precision="fp32")
    assert list(zip(prefix_fp32["run_id"], prefix_fp32["ndcg_at_10"])) == [(first, 0.5), (second, 0.6)]
    assert list(store.results(first, precision="binary")["ndcg_at_10"]) == [0.31]
    assert list(store.results(method="pca")["ndcg_at_10"]) == [0.52]
    assert store.results([]).empty


def test_widths_without_latency_counts_finished_benchmarks_only(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    latency = {"index_type": "flat", "precision": "fp32", "corpus_size": 1000, "batch_size": 64, "p50_ms": 1.0}
    with store.run("bench") as run_id:
        store.add_rows("latency", run_id, [dict(latency, width=64), dict(latency, width=32, index_type="hnsw")])
    failed = store.start_run("bench")
    store.add_rows("latency", failed, [dict(latency, width=16)])
    store.finish_run(failed, status="failed")
    assert store.widths_without_latency([128, 64, 16, 64, 32]) == [128, 16]
    assert store.widths_without_latency([64, 32]) == []


def test_runs_with_results_leaves_out_runs_that_stored_none(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    evaluated = _evaluation(store, dataset_fingerprint="f1", rows=[_result_row(8, 0.5)])
    store.finish_run(store.start_run("bench"))
    failed = _evaluation(store, dataset_fingerprint="f1", rows=[_result_row(8, 0.4)], status="failed")
    runs = store.runs_with_results()
    assert list(zip(runs["run_id"], runs["status"])) == [(failed, "failed"), (evaluated, "finished")]


def test_trained_models_are_finished_runs_whose_output_is_still_on_disk(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    kept, gone, retrained = tmp_path / "adaptor.npz", tmp_path / "deleted.npz", tmp_path / "model"
    kept.write_bytes(b"weights")
    retrained.mkdir()

    def train(out, status="finished", model="base"):
        run_id = store.start_run("train", model=model, params={"mode": "adaptor", "out": str(out)})
        store.finish_run(run_id, status=status)
        return run_id

    first = train(kept, model="precomputed")
    train(gone)
    train(retrained, status="failed")
    older, newer = train(retrained), train(retrained, model="mrl-v1")
    assert store.trained_models() == [
        {"model": str(retrained), "run_id": newer, "base_model": "mrl-v1"},
        {"model": str(kept), "run_id": first, "base_model": "precomputed"},
    ]
    assert older < newer
