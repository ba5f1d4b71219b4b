"""Background jobs (mrl_core.jobs) through the CLI: submit, jobs [--follow], cancel, and what a killed or
cancelled job leaves behind. Jobs are real processes over a small precomputed-embedding folder, so no model
is loaded except in the encoding-cancel test."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import matryoshka_like_folder
from mrl_core import jobs
from mrl_core.cli import main
from mrl_core.store import ResultStore, RunCancelled, process_alive

JOB_TIMEOUT_S = 180


@pytest.fixture
def vectors_folder(tmp_path) -> Path:
    folder = tmp_path / "vectors"
    matryoshka_like_folder(folder)
    return folder


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def submit_json(capsys, *argv: str) -> dict:
    code, out, err = run_cli(capsys, "submit", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def wait_for(store: ResultStore, job_id: int, condition, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if condition(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got there: {job['status']}, log:\n{jobs.log_tail(job, 40)}")


def ended(job: dict) -> bool:
    return job["status"] not in ("queued", "running")


def test_submit_returns_at_once_and_follow_reports_the_stored_run(vectors_folder, isolated_store, capsys):
    # A store deleted and made again numbers its jobs from 1 again: its job 1 must not show the old job 1's log.
    stale_log = jobs.job_log_path(isolated_store, 1)
    stale_log.parent.mkdir(parents=True, exist_ok=True)
    stale_log.write_text("error: a line from a job of a store deleted since\n")
    started = time.monotonic()
    job = submit_json(capsys, "evaluate", "--data", str(vectors_folder), "--model", "precomputed", "--widths", "64,16",
                      "--precisions", "fp32,binary", "--methods", "prefix")
    submit_s = time.monotonic() - started
    assert job["status"] == "queued" and job["command"] == "evaluate" and job["pid"] > 0
    assert job["args"] == ["--data", str(vectors_folder), "--model", "precomputed", "--widths", "64,16",
                           "--precisions", "fp32,binary", "--methods", "prefix"]
    assert submit_s < 10, "submit must not wait for the work"

    code, out, err = run_cli(capsys, "jobs", str(job["job_id"]), "--follow", "--json")
    followed = json.loads(out)
    assert code == 0, followed["log_tail"]
    assert followed["status"] == "finished" and followed["exit_code"] == 0
    assert job["job_id"] == 1 and "deleted since" not in followed["log_tail"] and followed["log_tail"]
    [run_id] = followed["run_ids"]
    # The job's result is the command's own JSON, and its run is in the store, tagged with the job.
    assert followed["result"]["run_id"] == run_id
    run = isolated_store.get_run(run_id)
    assert run["status"] == "finished" and run["job_id"] == job["job_id"] and run["kind"] == "evaluate"
    results = isolated_store.results(run_id)
    assert sorted(zip(results["width"], results["precision"])) == [
        (16, "binary"), (16, "fp32"), (64, "binary"), (64, "fp32")
    ]
    # Query i is a noisy copy of document i: full width finds nearly all of them.
    assert results.query("width == 64 and precision == 'fp32'")["ndcg_at_10"].item() > 0.9

    code, out, _ = run_cli(capsys, "jobs", "--json")
    listed = json.loads(out)["jobs"]
    assert [entry["job_id"] for entry in listed] == [job["job_id"]] and listed[0]["run_ids"] == [run_id]


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--data", "no/such/folder", "--model", "precomputed"],
        ["evaluate", "--data", "builtin:nope"],
        ["evaluate", "--data", "builtin:quick", "--model", "no/such/model"],
    ],
)
def test_bad_input_fails_before_queueing_with_the_commands_own_message(argv, isolated_store, capsys):
    direct_code, _, direct_err = run_cli(capsys, *argv)
    code, out, err = run_cli(capsys, "submit", *argv)
    assert (code, direct_code) == (2, 2)
    assert err.strip() == direct_err.strip() and err.startswith("error: ")
    assert out == ""
    assert isolated_store.jobs().empty


def test_bad_arguments_and_unknown_commands_fail_before_queueing(isolated_store, capsys):
    with pytest.raises(SystemExit) as direct:
        main(["evaluate", "--data", "builtin:quick", "--widths", "x"])
    direct_err = capsys.readouterr().err
    with pytest.raises(SystemExit) as submitted:
        main(["submit", "evaluate", "--data", "builtin:quick", "--widths", "x"])
    assert direct.value.code == submitted.value.code == 2
    assert capsys.readouterr().err == direct_err and "expected comma-separated integers, got 'x'" in direct_err

    code, _, err = run_cli(capsys, "submit", "runs")
    assert code == 2 and "not a command a job can run" in err
    code, _, err = run_cli(capsys, "submit", "recommend", "--corpus-size", "1000000")
    assert code == 2 and "only `recommend --verify`" in err
    assert isolated_store.jobs().empty


def test_jobs_wait_their_turn_in_the_order_they_were_submitted(vectors_folder, isolated_store, capsys, monkeypatch):
    monkeypatch.setenv(jobs.MAX_RUNNING_ENV, "1")
    argv = ["evaluate", "--data", str(vectors_folder), "--model", "precomputed", "--widths", "64", "--methods", "prefix"]
    ids = [submit_json(capsys, *argv, "--precisions", precision)["job_id"] for precision in ("fp32", "int8", "binary")]
    most_running = 0
    while not all(ended(job) for job in isolated_store.jobs(ids).to_dict("records")):
        most_running = max(most_running, int((isolated_store.jobs(ids)["status"] == "running").sum()))
        time.sleep(0.3)
    final = isolated_store.jobs(ids).sort_values("job_id")
    assert final["status"].tolist() == ["finished"] * 3
    assert most_running == 1
    # One at a time, first submitted first: each starts after the one before it ended.
    starts, ends = final["started_at"].tolist(), final["finished_at"].tolist()
    assert starts[0] < ends[0] <= starts[1] < ends[1] <= starts[2]
    assert [isolated_store.results(run_ids)["precision"].tolist() for run_ids in final["run_ids"]] == [
        ["fp32"], ["int8"], ["binary"]
    ]


def test_a_job_killed_with_sigkill_reads_unfinished_and_the_store_stays_readable(vectors_folder, isolated_store, capsys):
    job = submit_json(capsys, "bench", "--data", str(vectors_folder), "--model", "precomputed", "--corpus-sizes", "1000000")
    job = wait_for(isolated_store, job["job_id"], lambda job: job["status"] == "running" and job["progress_done"])
    os.kill(job["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    job = wait_for(isolated_store, job["job_id"], ended, timeout_s=10)
    assert job["status"] == "unfinished" and time.monotonic() - killed_at < 10
    assert "ended without reporting" in job["error"]
    assert isolated_store.list_runs().empty
    code, out, _ = run_cli(capsys, "jobs", "--json")
    assert code == 0 and json.loads(out)["jobs"][0]["status"] == "unfinished"


def test_cancel_during_training_leaves_no_model_and_marks_the_run_cancelled(vectors_folder, isolated_store, tmp_path, capsys):
    out = tmp_path / "models" / "adaptor.npz"
    job = submit_json(capsys, "train", "--data", str(vectors_folder), "--model", "precomputed", "--mode", "adaptor",
                      "--dims", "64,32,16,8", "--epochs", "2000", "--out", str(out))
    running = wait_for(isolated_store, job["job_id"], lambda job: job["phase"] == "training" and job["progress_done"] >= 2)
    assert running["eta_s"] > 0

    code, stdout, err = run_cli(capsys, "cancel", str(job["job_id"]), "--json")
    cancelled = json.loads(stdout)
    assert code == 0, err
    assert cancelled["status"] == "cancelled" and not process_alive(running["pid"], running["pid_started"])
    [run_id] = cancelled["run_ids"]
    assert isolated_store.get_run(run_id)["status"] == "cancelled"
    assert not out.exists() and list(out.parent.glob("*")) == []
    # Cancelling again changes nothing and says so.
    code, stdout, _ = run_cli(capsys, "cancel", str(job["job_id"]))
    assert code == 1 and "already ended: cancelled" in stdout


def test_cancel_of_a_queued_job_never_starts_it(vectors_folder, isolated_store, capsys, monkeypatch):
    monkeypatch.setenv(jobs.MAX_RUNNING_ENV, "1")
    first = submit_json(capsys, "bench", "--data", str(vectors_folder), "--model", "precomputed", "--corpus-sizes", "1000000")
    second = submit_json(capsys, "evaluate", "--data", str(vectors_folder), "--model", "precomputed", "--widths", "64")
    wait_for(isolated_store, first["job_id"], lambda job: job["status"] == "running")
    assert isolated_store.get_job(second["job_id"])["status"] == "queued"
    assert jobs.cancel(isolated_store, second["job_id"])["status"] == "cancelled"
    assert jobs.cancel(isolated_store, first["job_id"], grace_s=2)["status"] == "cancelled"
    second = isolated_store.get_job(second["job_id"])
    assert pd.isna(second["started_at"])
    assert isolated_store.list_runs().empty


def test_cancel_during_encoding_leaves_no_cache_file_half_written(isolated_store, tmp_path, capsys):
    cache = Path(os.environ["MRL_CACHE_DIR"])
    corpus = tmp_path / "notes.txt"
    corpus.write_text("".join(f"note {row}: the width planner measures prefix {row % 384} of a vector\n" for row in range(20_000)))
    job = submit_json(capsys, "evaluate", "--data", str(corpus), "--model", "base")
    wait_for(isolated_store, job["job_id"], lambda job: job["phase"] == "encoding" and job["progress_done"])
    cancelled = jobs.cancel(isolated_store, job["job_id"], grace_s=5)
    assert cancelled["status"] == "cancelled"
    assert list(cache.rglob("*.partial*")) == [] and list(cache.rglob("*.npy")) == []
    assert isolated_store.list_runs().empty


def test_a_cancelled_run_drops_its_rows_but_stays_in_the_history(isolated_store):
    with pytest.raises(RunCancelled):
        with isolated_store.run("bench", model="m", dataset="d") as run_id:
            isolated_store.add_rows("latency", run_id, [
                {"index_type": "flat", "width": 8, "precision": "fp32", "corpus_size": 10, "batch_size": 1, "p50_ms": 1.0}
            ])
            raise RunCancelled("cancelled")
    assert isolated_store.get_run(run_id)["status"] == "cancelled"
    assert isolated_store.rows("latency").empty


def test_max_running_reads_the_environment(monkeypatch):
    monkeypatch.setenv(jobs.MAX_RUNNING_ENV, "3")
    assert jobs.max_running() == 3
    monkeypatch.setenv(jobs.MAX_RUNNING_ENV, "0")
    with pytest.raises(ValueError, match="MRL_MAX_JOBS"):
        jobs.max_running()
    monkeypatch.delenv(jobs.MAX_RUNNING_ENV)
    assert jobs.max_running() == max(1, os.cpu_count() // 2)
