"""Reliability of background jobs (mrl_core.jobs) under store contention, kills, cancels and bad input.

Everything runs in a temporary folder: each scenario has its own results store ($MRL_STORE) and cache
($MRL_CACHE_DIR), and every job is a real ``python -m mrl_core submit ...`` of the command line.

1. contention: three jobs submitted at once (evaluate, bench, evaluate) while a poller reads the store as the
   app's sidebar panel does (``jobs()`` and ``list_runs()`` every 0.5 s, the panel's 3 s lock wait) and a
   foreground ``python -m mrl_core evaluate`` writes to the same store. Goals: every job finished, the
   foreground evaluate succeeded, no row lost (rows in each command's JSON result == rows in the store),
   no lock error seen by the poller.
2. kill -9 of a job's process: seconds until ``jobs`` reads it 'unfinished' (goal < 10 s); the store still reads.
3. kill -9 of the Streamlit server (and of the process that submitted the job, in the server's process group):
   the job keeps running, finishes and stores its run; a restarted server is healthy and lists it finished.
4. cancel during encoding (no ``*.partial*`` / ``.npy`` left in the cache) and during training (no model, no
   partial output, the run reads 'cancelled'); seconds from cancel to the job reading 'cancelled'.
5. bad input to submit (unknown command, bad arguments, missing data): exit 2 before anything is queued, with
   the message the command itself prints.

    HF_HUB_OFFLINE=1 python experiments/jobs_reliability.py [--out experiments/out/jobs_reliability.json]
        [--max-jobs 2] [--only 1,2,3,4,5] [--keep-tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
PANEL_POLL_EVERY_S = 0.5
PANEL_LOCK_WAIT_S = 3.0
"""The sidebar panel's lock wait (app/jobs_panel.py PANEL_LOCK_WAIT_S): a poll that waits longer is an error."""
JOB_TIMEOUT_S = 600
KILL_DETECT_GOAL_S = 10.0
WIDTHS = "64,32,16,8"


# -- helpers --------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("duckdb", "streamlit", "numpy", "psutil", "mrl-width-planner", "torch", "faiss-cpu"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def write_vectors(folder: Path, documents: int = 2000, queries: int = 40, width: int = 64, seed: int = 0) -> Path:
    """A precomputed-embeddings folder (corpus.npy, queries.npy, qrels.tsv: query i -> document i) whose
    leading coordinates carry the most variance, as the tests' ``matryoshka_like_folder`` writes it."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, width + 1))).astype(np.float32)
    corpus = rng.standard_normal((documents, width)).astype(np.float32) * scale
    # The tests draw noise for 80 queries and keep the first 40: same draws here, same vectors.
    noise = rng.standard_normal((80, width)).astype(np.float32) * scale
    query_matrix = corpus[:80] + 0.6 * noise
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    query_matrix /= np.linalg.norm(query_matrix, axis=1, keepdims=True)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "corpus.npy", corpus)
    np.save(folder / "queries.npy", query_matrix[:queries])
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{row}\t{row}\t1\n" for row in range(queries))
    )
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoadSampler(threading.Thread):
    """1-minute load average and CPU use every few seconds while the checks run."""

    def __init__(self, every_s: float = 2.0):
        super().__init__(daemon=True, name="load-sampler")
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()
        psutil.cpu_percent(None)

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            self.samples.append((os.getloadavg()[0], psutil.cpu_percent(None)))

    def stop(self) -> dict:
        self._stop_event.set()
        self.join(timeout=5)
        if not self.samples:
            return {}
        loads = [load for load, _ in self.samples]
        cpus = [cpu for _, cpu in self.samples]
        return {
            "samples": len(self.samples),
            "load_1min_min": round(min(loads), 2), "load_1min_mean": round(sum(loads) / len(loads), 2),
            "load_1min_max": round(max(loads), 2),
            "cpu_percent_mean": round(sum(cpus) / len(cpus), 1), "cpu_percent_max": round(max(cpus), 1),
        }


class Harness:
    """Starts the processes of the checks and ends every one of them (and every job under ``root``) at the end."""

    def __init__(self, root: Path, max_jobs: int | None):
        self.root = root
        self.max_jobs = max_jobs
        self.processes: list[tuple[subprocess.Popen, bool]] = []

    def scenario_dir(self, name: str) -> Path:
        folder = self.root / name
        (folder / "cache").mkdir(parents=True, exist_ok=True)
        return folder

    def env(self, folder: Path) -> dict[str, str]:
        environment = dict(os.environ, HF_HUB_OFFLINE="1", MRL_STORE=str(folder / "results.duckdb"),
                           MRL_CACHE_DIR=str(folder / "cache"), PYTHONUNBUFFERED="1")
        if self.max_jobs is not None:
            environment["MRL_MAX_JOBS"] = str(self.max_jobs)
        return environment

    def popen(self, argv: list[str], env: dict, *, own_group: bool = False, **kwargs) -> subprocess.Popen:
        # A group of its own inside this session (not a new session): another process of this session can then
        # join it, as the submitting process of scenario 3 joins the server's.
        if own_group:
            kwargs["process_group"] = 0
        process = subprocess.Popen(argv, cwd=REPO, env=env, **kwargs)
        self.processes.append((process, own_group))
        return process

    def cli(self, args: list[str], env: dict, timeout_s: float = 300) -> dict:
        """``python -m mrl_core ARGS``: its exit status, stdout, stderr and wall time."""
        started = time.monotonic()
        process = self.popen([sys.executable, "-m", "mrl_core", *args], env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            return {"rc": None, "out": out, "err": err + f"\n(timed out after {timeout_s} s)",
                    "seconds": time.monotonic() - started}
        return {"rc": process.returncode, "out": out, "err": err, "seconds": round(time.monotonic() - started, 2)}

    def submit(self, args: list[str], env: dict) -> dict:
        result = self.cli(["submit", *args, "--json"], env, timeout_s=180)
        if result["rc"] != 0:
            raise RuntimeError(f"submit {args[0]} exited {result['rc']}: {result['err'][-2000:]}")
        record = json.loads(result["out"])
        record["submit_seconds"] = result["seconds"]
        return record

    def end_everything(self) -> list[str]:
        """Kill what was started and is still alive: tracked processes (their groups when they lead one) and any
        process whose command line names the temporary folder (job processes, the submitting wrapper)."""
        ended = []
        for process, own_group in self.processes:
            if process.poll() is None:
                try:
                    if own_group:
                        os.killpg(process.pid, signal.SIGKILL)
                    else:
                        process.kill()
                    ended.append(f"{process.pid} {' '.join(map(str, process.args))[:80]}")
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        mine = str(self.root)
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmdline = " ".join(process.info["cmdline"] or [])
                if process.pid != os.getpid() and mine in cmdline:
                    process.kill()
                    ended.append(f"{process.pid} {cmdline[:80]}")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return ended


def store_at(folder: Path, lock_timeout_s: float = 60.0):
    from mrl_core.store import ResultStore

    return ResultStore(folder / "results.duckdb", lock_timeout_s=lock_timeout_s)


def wait_job(store, job_id: int, condition, timeout_s: float, every_s: float = 0.2) -> tuple[dict, float]:
    """Poll a job until ``condition(job)``; returns it and the seconds waited. Raises TimeoutError."""
    started = time.monotonic()
    job = None
    while time.monotonic() - started < timeout_s:
        job = store.get_job(job_id)
        if condition(job):
            return job, time.monotonic() - started
        time.sleep(every_s)
    from mrl_core.jobs import log_tail

    raise TimeoutError(f"job {job_id} did not get there in {timeout_s:.0f} s: status {job and job['status']}, "
                       f"phase {job and job['phase']}; log:\n{log_tail(job, 30) if job else ''}")


def ended(job: dict) -> bool:
    return job["status"] not in ("queued", "running")


def running_with_progress(job: dict) -> bool:
    return job["status"] == "running" and bool(job.get("phase")) and (job.get("progress_done") or 0) > 0


def rows_check(store, run_id: int, table: str, expected: int) -> dict:
    found = len(store.rows(table, int(run_id)))
    return {"run_id": int(run_id), "table": table, "rows_expected": int(expected), "rows_found": found,
            "status": store.get_run(int(run_id))["status"]}


def job_rows_check(store, job: dict) -> list[dict]:
    """Rows each run of a finished job should hold (from the command's JSON result) against rows in the store."""
    result = job.get("result") or {}
    checks = []
    if job["command"] == "evaluate":
        checks.append(rows_check(store, result["run_id"], "results", len(result["results"])))
    elif job["command"] == "bench":
        checks.append(rows_check(store, result["run_id"], "latency", len(result["rows"])))
    listed = sorted(int(run_id) for run_id in job["run_ids"])
    if sorted(check["run_id"] for check in checks) != listed:
        checks.append({"run_ids_of_job": listed, "run_ids_in_result": [check["run_id"] for check in checks],
                       "mismatch": True})
    return checks


def process_state(pid: int | None) -> str:
    if not pid:
        return "no pid"
    try:
        process = psutil.Process(int(pid))
        return f"{process.status()} (parent {process.ppid()})"
    except psutil.NoSuchProcess:
        return "gone"


# -- the panel-like poller (runs in its own process) --------------------------------------------------------
def lock_holder(message: str) -> str:
    """Which of the processes of the checks holds the lock DuckDB's error names ('... held in ... (PID 123)')."""
    found = re.search(r"\(PID (\d+)\)", message)
    if not found:
        return "unknown"
    if int(found.group(1)) == os.getppid():
        return "the checks' own wait loop (a job read every 1 s, like `jobs --follow`)"
    try:
        cmdline = psutil.Process(int(found.group(1))).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "a process that has ended since"
    text = " ".join(cmdline)
    if "mrl_core.job_process" in text:
        return "a job's process"
    for command in ("submit", "evaluate", "cancel", "jobs", "runs"):
        if "mrl_core" in text and command in cmdline:
            return f"python -m mrl_core {command}"
    return Path(cmdline[0]).name if cmdline else "unknown"


def poll_store(path: str, stop_file: str, ready_file: str, report_file: str, every_s: float, lock_wait_s: float) -> None:
    """Read the store as the sidebar panel does until ``stop_file`` exists; write what it saw to ``report_file``."""
    import duckdb

    from mrl_core.store import LOCK_MESSAGES, ResultStore, StoreError

    conflicts = {"lock_conflicts_retried": 0}
    holders: dict[str, int] = {}
    real_connect = duckdb.connect

    def counting_connect(*args, **kwargs):
        try:
            return real_connect(*args, **kwargs)
        except duckdb.Error as error:
            if any(message in str(error) for message in LOCK_MESSAGES):
                conflicts["lock_conflicts_retried"] += 1
                holder = lock_holder(str(error))
                holders[holder] = holders.get(holder, 0) + 1
            raise

    duckdb.connect = counting_connect
    store = ResultStore(path, lock_timeout_s=lock_wait_s)
    reads = {"jobs": [], "list_runs": []}
    errors: list[str] = []
    other_errors: list[str] = []
    polls = 0
    Path(ready_file).write_text("ready")
    while not Path(stop_file).exists():
        tick = time.monotonic()
        for name, read in (("jobs", store.jobs), ("list_runs", store.list_runs)):
            started = time.perf_counter()
            try:
                read()
            except StoreError as error:
                errors.append(f"{name}: held by {lock_holder(str(error))}: {error}")
            except Exception as error:  # noqa: BLE001 - anything else a read raised is a finding too
                other_errors.append(f"{name}: {type(error).__name__}: {error}")
            reads[name].append((time.perf_counter() - started) * 1000)
        polls += 1
        time.sleep(max(0.0, every_s - (time.monotonic() - tick)))
    every = reads["jobs"] + reads["list_runs"]
    report = {
        "polls": polls,
        "store_errors": len(errors),
        "other_errors": len(other_errors),
        "error_messages": (errors + other_errors)[:10],
        **conflicts,
        "lock_held_by": dict(sorted(holders.items(), key=lambda item: -item[1])),
        "reads_over_1s": sum(ms > 1000 for ms in every),
        "slowest_read_ms": round(max(every), 1) if every else None,
        "slowest_jobs_ms": round(max(reads["jobs"]), 1) if reads["jobs"] else None,
        "slowest_list_runs_ms": round(max(reads["list_runs"]), 1) if reads["list_runs"] else None,
        "median_read_ms": round(float(np.median(every)), 1) if every else None,
        "p95_read_ms": round(float(np.percentile(every, 95)), 1) if every else None,
    }
    partial = Path(report_file).with_suffix(".partial")
    partial.write_text(json.dumps(report))
    partial.replace(report_file)


# -- the scenarios ------------------------------------------------------------------------------------------
def contention(harness: Harness, vectors: Path) -> dict:
    folder = harness.scenario_dir("1-contention")
    env = harness.env(folder)
    store_path = folder / "results.duckdb"
    stop, ready, report = folder / "poller.stop", folder / "poller.ready", folder / "poller.json"
    with open(folder / "poller.log", "w") as poller_log:
        poller = harness.popen(
            [sys.executable, str(Path(__file__).resolve()), "--poll", str(store_path), "--poll-stop", str(stop),
             "--poll-ready", str(ready), "--poll-report", str(report)],
            env, stdout=subprocess.DEVNULL, stderr=poller_log,
        )
    deadline = time.monotonic() + 120
    while not ready.exists():
        if poller.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the poller did not start: {(folder / 'poller.log').read_text()[-2000:]}")
        time.sleep(0.2)

    # The same reads on the idle store first: what the machine alone costs, without contention.
    idle_store = store_at(folder, lock_timeout_s=PANEL_LOCK_WAIT_S)
    idle_ms = []
    for _ in range(5):
        for read in (idle_store.jobs, idle_store.list_runs):
            read_started = time.perf_counter()
            read()
            idle_ms.append((time.perf_counter() - read_started) * 1000)

    common = ["--data", str(vectors), "--model", "precomputed", "--store", str(store_path)]
    job_argvs = [
        ["evaluate", *common, "--widths", WIDTHS],
        ["bench", *common, "--corpus-sizes", "10000,30000"],
        ["evaluate", *common, "--widths", WIDTHS, "--precisions", "fp32,int8"],
    ]
    started = time.monotonic()
    # All three submits and the foreground evaluate start at the same moment: four writers from the first second.
    submits = [
        harness.popen([sys.executable, "-m", "mrl_core", "submit", *argv, "--json"], env,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in job_argvs
    ]
    with open(folder / "foreground.out", "w") as fg_out, open(folder / "foreground.err", "w") as fg_err:
        foreground = harness.popen(
            [sys.executable, "-m", "mrl_core", "evaluate", *common, "--widths", WIDTHS, "--json"], env,
            stdout=fg_out, stderr=fg_err,
        )
    job_ids, submit_failures = [], []
    for process, argv in zip(submits, job_argvs):
        out, err = process.communicate(timeout=300)
        if process.returncode == 0:
            job_ids.append(int(json.loads(out)["job_id"]))
        else:
            submit_failures.append({"command": argv[0], "rc": process.returncode, "stderr": err[-1500:]})

    # Follow the jobs (every second, as `jobs --follow` does), their processes and the foreground command.
    from mrl_core.store import process_alive

    store = store_at(folder)
    jobs: dict[int, dict] = {}
    ended_at: dict[int, float] = {}
    gone_at: dict[int, float] = {}
    foreground_seconds = None
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        now = time.monotonic()
        if foreground_seconds is None and foreground.poll() is not None:
            foreground_seconds = now - started
        open_ids = [job_id for job_id in job_ids if job_id not in ended_at]
        if open_ids:
            # One read for all of them, like one `jobs --follow`.
            for job in store.jobs(open_ids).to_dict("records"):
                jobs[int(job["job_id"])] = job
                if ended(job):
                    ended_at[int(job["job_id"])] = time.monotonic()
        for job_id in job_ids:
            job = jobs.get(job_id)
            if job_id not in gone_at and job is not None and job["pid"] and not process_alive(job["pid"], job["pid_started"]):
                gone_at[job_id] = time.monotonic()
        if foreground_seconds is not None and len(gone_at) == len(ended_at) == len(job_ids):
            break
        time.sleep(1.0)
    if foreground_seconds is None:
        foreground.kill()
        foreground.wait()
    foreground_out = (folder / "foreground.out").read_text()
    foreground_err = (folder / "foreground.err").read_text()
    unended = [job_id for job_id in job_ids if job_id not in ended_at]
    if unended:
        raise TimeoutError(f"jobs {unended} did not end in {JOB_TIMEOUT_S} s")
    all_done_s = max(ended_at.values()) - started
    lived_after_end = {job_id: round(gone_at[job_id] - ended_at[job_id], 1) if job_id in gone_at else None
                       for job_id in job_ids}
    stop.write_text("stop")
    try:
        poller.wait(timeout=60)
    except subprocess.TimeoutExpired:
        poller.kill()
    poller_report = json.loads(report.read_text()) if report.exists() else {"error": "the poller wrote no report"}

    row_checks = []
    job_summaries = []
    for job_id, job in sorted(jobs.items()):
        job_summaries.append({
            "job_id": job_id, "command": job["command"], "status": job["status"], "run_ids": job["run_ids"],
            "error": job["error"], "queued_to_end_s": round((job["finished_at"] - job["submitted_at"]).total_seconds(), 1),
            "ran_s": round((job["finished_at"] - job["started_at"]).total_seconds(), 1)
            if job["started_at"] == job["started_at"] and job["started_at"] is not None else None,
        })
        if job["status"] == "finished":
            row_checks += job_rows_check(store, job)
    foreground_result = None
    if foreground.returncode == 0:
        foreground_result = json.loads(foreground_out)
        row_checks.append({**rows_check(store, foreground_result["run_id"], "results",
                                        len(foreground_result["results"])), "foreground": True})
    runs = store.list_runs()
    overlapping = max_overlap(list(jobs.values()))
    result = {
        "max_jobs": harness.max_jobs,
        "jobs": job_summaries,
        "submit_failures": submit_failures,
        "all_jobs_finished": len(jobs) == 3 and all(job["status"] == "finished" for job in jobs.values()),
        "most_jobs_running_at_once": overlapping,
        "foreground_evaluate": {
            "rc": foreground.returncode, "seconds": foreground_seconds and round(foreground_seconds, 1),
            "run_id": foreground_result and foreground_result["run_id"],
            "stderr_tail": foreground_err[-800:] if foreground.returncode else "",
        },
        "rows": row_checks,
        "no_row_lost": bool(row_checks) and all(check.get("rows_expected") == check.get("rows_found")
                                                 and not check.get("mismatch") for check in row_checks),
        "runs_not_finished": runs[runs["status"] != "finished"][["run_id", "status"]].to_dict("records"),
        "poller": poller_report,
        "idle_store_read_ms": {"median": round(float(np.median(idle_ms)), 1), "max": round(max(idle_ms), 1)},
        "seconds_until_all_jobs_ended": round(all_done_s, 1),
        "job_process_lived_after_its_end_s": lived_after_end,
    }
    result["ok"] = (result["all_jobs_finished"] and foreground.returncode == 0 and result["no_row_lost"]
                    and not submit_failures and poller_report.get("store_errors") == 0
                    and poller_report.get("other_errors") == 0)
    return result


def max_overlap(jobs: list[dict]) -> int:
    """Most jobs whose [started_at, finished_at] intervals overlap."""
    events = []
    for job in jobs:
        if job["started_at"] is not None and job["started_at"] == job["started_at"]:
            events += [(job["started_at"], 1), (job["finished_at"], -1)]
    running = most = 0
    for _, step in sorted(events, key=lambda event: (event[0], event[1])):
        running += step
        most = max(most, running)
    return most


def kill_job(harness: Harness, vectors: Path) -> dict:
    folder = harness.scenario_dir("2-kill-job")
    env = harness.env(folder)
    store = store_at(folder)
    record = harness.submit(
        ["bench", "--data", str(vectors), "--model", "precomputed", "--corpus-sizes", "1000000",
         "--store", str(store.path)], env,
    )
    job_id = int(record["job_id"])
    job, waited_s = wait_job(store, job_id, running_with_progress, 300)
    pid = int(job["pid"])
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    job, detect_s = wait_job(store, job_id, ended, 60, every_s=0.1)
    detect_s = time.monotonic() - killed_at
    cli_jobs = harness.cli(["jobs", "--json"], env, timeout_s=120)
    cli_runs = harness.cli(["runs", "--json"], env, timeout_s=120)
    reads_ok = True
    try:
        runs = store.list_runs()
        store.jobs()
    except Exception as error:  # noqa: BLE001
        reads_ok = False
        runs = None
        read_error = f"{type(error).__name__}: {error}"
    cli_status = json.loads(cli_jobs["out"])["jobs"][0]["status"] if cli_jobs["rc"] == 0 else None
    result = {
        "job_id": job_id, "pid": pid, "phase_when_killed": f"{job['phase']}",
        "seconds_to_running_with_progress": round(waited_s, 1),
        "status_after_kill": job["status"], "error": job["error"],
        "seconds_kill_to_unfinished": round(detect_s, 2), "goal_s": KILL_DETECT_GOAL_S,
        "killed_process_now": process_state(pid),
        "store_reads_after": reads_ok and cli_jobs["rc"] == 0 and cli_runs["rc"] == 0,
        "cli_jobs_status": cli_status,
        "runs_after": None if runs is None else runs[["run_id", "status"]].to_dict("records"),
    }
    if not reads_ok:
        result["read_error"] = read_error
    result["ok"] = (job["status"] == "unfinished" and detect_s < KILL_DETECT_GOAL_S and result["store_reads_after"]
                    and cli_status == "unfinished")
    return result


def start_server(harness: Harness, env: dict, port: int, log: Path, timeout_s: float = 180) -> tuple[subprocess.Popen, float]:
    started = time.monotonic()
    with open(log, "a") as server_log:
        server = harness.popen(
            [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py", "--server.port", str(port),
             "--server.headless", "true"],
            env, own_group=True, stdout=server_log, stderr=subprocess.STDOUT,
        )
    while time.monotonic() - started < timeout_s:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}: {log.read_text()[-2000:]}")
        if health(port) == "ok":
            return server, time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"no /_stcore/health on port {port} after {timeout_s} s: {log.read_text()[-2000:]}")


def health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.read().decode().strip() if response.status == 200 else None
    except OSError:
        return None


def kill_server(harness: Harness, vectors: Path) -> dict:
    folder = harness.scenario_dir("3-kill-server")
    env = harness.env(folder)
    store = store_at(folder)
    log = folder / "server.log"
    port = free_port()
    server, first_health_s = start_server(harness, env, port, log)
    argv = ["bench", "--data", str(vectors), "--model", "precomputed", "--corpus-sizes", "10000,30000,100000",
            "--store", str(store.path)]
    # The submitting process shares the server's process group, as the server's own thread would: a kill of the
    # group takes both. It stays alive after submitting, holding the job's reaper thread as the server does.
    code = (
        "import sys, time\n"
        "from mrl_core.cli import submit_job as submit\n"
        f"print(submit({argv!r}, submitted_by='app session (reliability check)'), flush=True)\n"
        "time.sleep(3600)\n"
    )
    with open(folder / "wrapper.log", "w") as wrapper_log:
        wrapper = harness.popen([sys.executable, "-c", code], env, process_group=server.pid,
                                stdout=subprocess.PIPE, stderr=wrapper_log, text=True)
    line = read_line(wrapper, 120)
    job_id = int(line)
    same_group = os.getpgid(wrapper.pid) == os.getpgid(server.pid) == server.pid
    job, waited_s = wait_job(store, job_id, running_with_progress, 300)
    job_pid, job_started = int(job["pid"]), job["pid_started"]
    job_group, job_session = os.getpgid(job_pid), os.getsid(job_pid)
    os.killpg(server.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    server.wait(timeout=30)
    wrapper.wait(timeout=30)
    from mrl_core.store import process_alive

    time.sleep(1.0)
    alive_after_kill = process_alive(job_pid, job_started)
    job_status_after_kill = store.get_job(job_id)["status"]
    job, _ = wait_job(store, job_id, ended, JOB_TIMEOUT_S, every_s=1.0)
    finished_after_kill_s = time.monotonic() - killed_at
    row_checks = job_rows_check(store, job) if job["status"] == "finished" else []
    second_port = free_port()
    server2, second_health_s = start_server(harness, env, second_port, log)
    second_health = health(second_port)
    listed = harness.cli(["jobs", str(job_id), "--json"], env, timeout_s=120)
    listed_status = json.loads(listed["out"])["status"] if listed["rc"] == 0 else f"rc {listed['rc']}: {listed['err'][-300:]}"
    os.killpg(server2.pid, signal.SIGTERM)
    try:
        server2.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server2.pid, signal.SIGKILL)
    other_jobs = [int(other) for other in store.jobs()["job_id"] if int(other) != job_id]
    result = {
        "port": port, "first_health_s": round(first_health_s, 1),
        "job_id": job_id, "job_pid": job_pid,
        "wrapper_in_server_group": same_group,
        "job_in_own_session": job_group == job_pid and job_session == job_pid,
        "phase_when_killed": f"{job['phase']}", "seconds_to_running_with_progress": round(waited_s, 1),
        "server_exit": server.returncode, "wrapper_exit": wrapper.returncode,
        "job_alive_1s_after_kill": alive_after_kill, "job_status_1s_after_kill": job_status_after_kill,
        "final_status": job["status"], "error": job["error"], "run_ids": job["run_ids"],
        "seconds_kill_to_job_end": round(finished_after_kill_s, 1),
        "rows": row_checks,
        "restart": {"port": second_port, "health": second_health, "health_s": round(second_health_s, 1),
                    "cli_jobs_status": listed_status},
        "other_jobs_in_store": other_jobs,
    }
    result["ok"] = (same_group and alive_after_kill and job["status"] == "finished" and bool(job["run_ids"])
                    and all(check.get("rows_expected") == check.get("rows_found") for check in row_checks)
                    and second_health == "ok" and listed_status == "finished")
    return result


def read_line(process: subprocess.Popen, timeout_s: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not box or not box[0].strip():
        raise RuntimeError(f"no job id from the submitting process in {timeout_s} s (exit {process.poll()})")
    return box[0].strip()


def cancel_and_time(harness: Harness, env: dict, store, job_id: int) -> dict:
    """``python -m mrl_core cancel ID``, while the job's record is read every 0.1 s: seconds until it reads
    'cancelled', and how the cancel command ended."""
    from mrl_core.store import process_alive

    before = store.get_job(job_id)
    started = time.monotonic()
    process = harness.popen([sys.executable, "-m", "mrl_core", "cancel", str(job_id), "--json"], env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    gone_s = None
    deadline = started + 120
    while True:
        if gone_s is None and not process_alive(before["pid"], before["pid_started"]):
            gone_s = time.monotonic() - started
        job = store.get_job(job_id)
        if ended(job) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    to_cancelled_s = time.monotonic() - started
    # The job records 'cancelled' itself before it exits: follow its process until it is gone.
    while gone_s is None and time.monotonic() < deadline:
        if not process_alive(before["pid"], before["pid_started"]):
            gone_s = time.monotonic() - started
        time.sleep(0.1)
    out, err = process.communicate(timeout=120)
    return {
        "seconds_cancel_to_cancelled": round(to_cancelled_s, 2),
        "seconds_cancel_to_process_gone": None if gone_s is None else round(gone_s, 2),
        "cancel_cli_rc": process.returncode, "cancel_cli_seconds": round(time.monotonic() - started, 2),
        "status": job["status"], "error": job["error"],
        "stopped_on_sigterm": job["error"] == "cancelled",
        "cancel_cli_stderr": err[-500:] if process.returncode else "",
        "cancel_cli_status": json.loads(out)["status"] if process.returncode == 0 and out.strip() else None,
        "job": job,
    }


def cancel_encoding(harness: Harness) -> dict:
    folder = harness.scenario_dir("4a-cancel-encoding")
    env = harness.env(folder)
    store = store_at(folder)
    corpus = folder / "notes.txt"
    corpus.write_text("".join(f"note {row}: the width planner measures prefix {row % 384} of a vector\n"
                              for row in range(20_000)))
    record = harness.submit(["evaluate", "--data", str(corpus), "--model", "base", "--store", str(store.path)], env)
    job_id = int(record["job_id"])
    job, waited_s = wait_job(store, job_id, lambda job: job["status"] == "running" and job["phase"] == "encoding"
                             and (job["progress_done"] or 0) > 0, 400)
    progress_at_cancel = f"{int(job['progress_done'])}/{int(job['progress_total'])}"
    cancelled = cancel_and_time(harness, env, store, job_id)
    job = cancelled.pop("job")
    from mrl_core.store import process_alive

    cache = folder / "cache"
    leftovers = sorted(str(path.relative_to(cache)) for path in cache.rglob("*")
                       if ".partial" in path.name or path.suffix == ".npy")
    runs = store.list_runs()
    result = {
        "job_id": job_id, "seconds_to_encoding_progress": round(waited_s, 1), "progress_at_cancel": progress_at_cancel,
        **cancelled,
        "process_alive_after": process_alive(job["pid"], job["pid_started"]),
        "cache_partial_or_npy_files": leftovers,
        "runs": runs[["run_id", "status"]].to_dict("records"),
    }
    result["ok"] = (job["status"] == "cancelled" and not leftovers and not result["process_alive_after"]
                    and all(run["status"] == "cancelled" for run in result["runs"]))
    return result


def cancel_training(harness: Harness, vectors: Path) -> dict:
    folder = harness.scenario_dir("4b-cancel-training")
    env = harness.env(folder)
    store = store_at(folder)
    out = folder / "models" / "a.npz"
    record = harness.submit(
        ["train", "--data", str(vectors), "--model", "precomputed", "--mode", "adaptor", "--dims", WIDTHS,
         "--epochs", "2000", "--out", str(out), "--store", str(store.path)], env,
    )
    job_id = int(record["job_id"])
    job, waited_s = wait_job(store, job_id, lambda job: job["status"] == "running" and job["phase"] == "training"
                             and (job["progress_done"] or 0) >= 2, 300)
    progress_at_cancel = f"{int(job['progress_done'])}/{int(job['progress_total'])}"
    cancelled = cancel_and_time(harness, env, store, job_id)
    job = cancelled.pop("job")
    from mrl_core.store import process_alive

    next_to_out = sorted(path.name for path in out.parent.glob("*")) if out.parent.exists() else []
    run_statuses = {int(run_id): store.get_run(int(run_id))["status"] for run_id in job["run_ids"]}
    result = {
        "job_id": job_id, "seconds_to_training_progress": round(waited_s, 1), "progress_at_cancel": progress_at_cancel,
        **cancelled,
        "process_alive_after": process_alive(job["pid"], job["pid_started"]),
        "out_exists": out.exists(), "files_next_to_out": next_to_out,
        "train_runs": run_statuses,
    }
    result["ok"] = (job["status"] == "cancelled" and not out.exists() and not next_to_out
                    and bool(run_statuses) and all(status == "cancelled" for status in run_statuses.values())
                    and not result["process_alive_after"])
    return result


def bad_input(harness: Harness, vectors: Path) -> dict:
    folder = harness.scenario_dir("5-bad-input")
    env = harness.env(folder)
    store = store_at(folder)
    cases = {
        "unknown command": ["frobnicate", "--data", str(vectors)],
        "bad arguments": ["evaluate", "--data", str(vectors), "--model", "precomputed", "--widths", "x"],
        "missing data path": ["evaluate", "--data", str(folder / "no" / "such" / "folder"), "--model", "precomputed"],
    }
    results = {}
    for name, argv in cases.items():
        argv = [*argv, "--store", str(store.path)]
        direct = harness.cli(argv, env, timeout_s=120)
        submitted = harness.cli(["submit", *argv], env, timeout_s=120)
        queued = len(store.jobs())
        logs = sorted(path.name for path in (folder / "jobs").glob("*")) if (folder / "jobs").exists() else []
        results[name] = {
            "direct_rc": direct["rc"], "submit_rc": submitted["rc"],
            "direct_stderr": direct["err"].strip(), "submit_stderr": submitted["err"].strip(),
            "submit_stdout": submitted["out"].strip(),
            "same_stderr": direct["err"].strip() == submitted["err"].strip(),
            "jobs_in_store": queued, "job_logs": logs,
        }
    ok = True
    for name, case in results.items():
        case["ok"] = (case["submit_rc"] == 2 and case["jobs_in_store"] == 0 and not case["job_logs"]
                      and not case["submit_stdout"])
        # An unknown command has no message of its own to match: the CLI's parser refuses it directly.
        if name != "unknown command":
            case["ok"] = case["ok"] and case["same_stderr"] and case["direct_rc"] == 2
        ok = ok and case["ok"]
    return {"cases": results, "ok": ok}


SCENARIOS = {
    "1": ("contention", lambda harness, vectors: contention(harness, vectors)),
    "2": ("kill -9 of a job", lambda harness, vectors: kill_job(harness, vectors)),
    "3": ("kill -9 of the Streamlit server", lambda harness, vectors: kill_server(harness, vectors)),
    "4a": ("cancel during encoding", lambda harness, vectors: cancel_encoding(harness)),
    "4b": ("cancel during training", lambda harness, vectors: cancel_training(harness, vectors)),
    "5": ("bad input to submit", lambda harness, vectors: bad_input(harness, vectors)),
}


# -- report -------------------------------------------------------------------------------------------------
def yes(flag) -> str:
    return "yes" if flag else "NO"


def report_text(report: dict) -> str:
    setup = report["setup"]
    lines = [
        "Background jobs: reliability",
        (f"host {setup['host']}, {setup['cores']} cores, load average before {setup['load_before']}, "
         f"after {setup['load_after']}"),
        f"during: {setup.get('load_during')}",
        "versions: " + ", ".join(f"{name} {version}" for name, version in setup["versions"].items()),
        (f"MRL_MAX_JOBS {setup['max_jobs']} (library default here: {setup['default_max_running']}); poller every "
         f"{PANEL_POLL_EVERY_S} s with the panel's {PANEL_LOCK_WAIT_S:.0f} s lock wait; total {report['seconds']:.0f} s"),
        "",
    ]
    results = report["scenarios"]
    for key, (title, _) in SCENARIOS.items():
        if key not in results:
            continue
        result = results[key]
        lines.append(f"{key}. {title}: {'PASS' if result.get('ok') else 'FAIL'} ({result.get('seconds')} s)")
        if result.get("left_running_killed"):
            lines.append(f"   still running at its end, killed: {result['left_running_killed']}")
        if "exception" in result:
            lines.append("   " + result["exception"].strip().replace("\n", "\n   "))
            lines.append("")
            continue
        if key == "1":
            for job in result["jobs"]:
                lines.append(f"   job {job['job_id']} {job['command']}: {job['status']}, runs {job['run_ids']}, "
                             f"ran {job['ran_s']} s, submit->end {job['queued_to_end_s']} s"
                             + (f", error {job['error']}" if job["error"] else ""))
            for failure in result["submit_failures"]:
                lines.append(f"   submit {failure['command']} FAILED rc {failure['rc']}: {failure['stderr'][-300:]}")
            fg = result["foreground_evaluate"]
            lines.append(f"   every job finished: {yes(result['all_jobs_finished'])}; most running at once "
                         f"{result['most_jobs_running_at_once']}")
            lines.append(f"   foreground evaluate: rc {fg['rc']}, run {fg['run_id']}, {fg['seconds']} s"
                         + (f"\n     {fg['stderr_tail']}" if fg["stderr_tail"] else ""))
            for check in result["rows"]:
                if check.get("mismatch"):
                    lines.append(f"   runs of a job {check['run_ids_of_job']} != runs in its result "
                                 f"{check['run_ids_in_result']}")
                    continue
                lines.append(f"   run {check['run_id']} ({check['table']}{', foreground' if check.get('foreground') else ''}): "
                             f"{check['rows_expected']} rows expected, {check['rows_found']} found, {check['status']}")
            lines.append(f"   no row lost: {yes(result['no_row_lost'])}; runs not finished: {result['runs_not_finished']}")
            poller = result["poller"]
            lines.append(f"   poller: {poller.get('polls')} polls, lock errors {poller.get('store_errors')} (goal 0), "
                         f"other errors {poller.get('other_errors')}, lock conflicts retried "
                         f"{poller.get('lock_conflicts_retried')} (held by {poller.get('lock_held_by')})")
            lines.append(f"   poller reads: slowest {poller.get('slowest_read_ms')} ms (jobs {poller.get('slowest_jobs_ms')}, "
                         f"list_runs {poller.get('slowest_list_runs_ms')}), median {poller.get('median_read_ms')} ms, "
                         f"p95 {poller.get('p95_read_ms')} ms, {poller.get('reads_over_1s')} reads over 1 s "
                         f"(same reads on the idle store, before: median {result['idle_store_read_ms']['median']} ms, "
                         f"max {result['idle_store_read_ms']['max']} ms)")
            for message in poller.get("error_messages", []):
                lines.append(f"     {message[:300]}")
            lines.append(f"   all jobs ended after {result['seconds_until_all_jobs_ended']} s; each job's process lived on after "
                         f"its record ended (s, by job): {result['job_process_lived_after_its_end_s']}")
        elif key == "2":
            lines.append(f"   job {result['job_id']} (pid {result['pid']}) running, phase {result['phase_when_killed']}, "
                         f"after {result['seconds_to_running_with_progress']} s; SIGKILL")
            lines.append(f"   reads '{result['status_after_kill']}' {result['seconds_kill_to_unfinished']} s after the kill "
                         f"(goal < {result['goal_s']:.0f} s); error: {result['error']}")
            lines.append(f"   killed process now: {result['killed_process_now']}")
            lines.append(f"   store reads afterwards (list_runs, jobs, CLI jobs/runs): {yes(result['store_reads_after'])}; "
                         f"CLI jobs says {result['cli_jobs_status']}; runs {result['runs_after']}")
        elif key == "3":
            lines.append(f"   server on port {result['port']} healthy after {result['first_health_s']} s; submitting "
                         f"process in the server's group: {yes(result['wrapper_in_server_group'])}; job in its own "
                         f"session: {yes(result['job_in_own_session'])}")
            lines.append(f"   job {result['job_id']} running ({result['phase_when_killed']}) after "
                         f"{result['seconds_to_running_with_progress']} s; killpg SIGKILL: server exit "
                         f"{result['server_exit']}, submitter exit {result['wrapper_exit']}")
            lines.append(f"   1 s later the job is alive: {yes(result['job_alive_1s_after_kill'])}, reads "
                         f"{result['job_status_1s_after_kill']}")
            lines.append(f"   final status {result['final_status']} {result['seconds_kill_to_job_end']} s after the kill, "
                         f"runs {result['run_ids']}" + (f", error {result['error']}" if result["error"] else ""))
            for check in result["rows"]:
                if "rows_expected" in check:
                    lines.append(f"   run {check['run_id']}: {check['rows_expected']} rows expected, "
                                 f"{check['rows_found']} found, {check['status']}")
            restart = result["restart"]
            lines.append(f"   restarted server (port {restart['port']}): health '{restart['health']}' after "
                         f"{restart['health_s']} s; CLI jobs says {restart['cli_jobs_status']}; other jobs in the store: "
                         f"{result['other_jobs_in_store'] or 'none'}")
        elif key in ("4a", "4b"):
            progress_key = "seconds_to_encoding_progress" if key == "4a" else "seconds_to_training_progress"
            lines.append(f"   job {result['job_id']} at {result['progress_at_cancel']} after {result[progress_key]} s; "
                         f"cancel -> '{result['status']}' in {result['seconds_cancel_to_cancelled']} s (cancel command "
                         f"rc {result['cancel_cli_rc']}, {result['cancel_cli_seconds']} s; the job's process gone "
                         f"after {result['seconds_cancel_to_process_gone']} s)")
            lines.append(f"   stopped on SIGTERM: {yes(result['stopped_on_sigterm'])} (error: {result['error']}); "
                         f"process alive after: {result['process_alive_after']}")
            if key == "4a":
                lines.append(f"   cache *.partial* / .npy files left: {result['cache_partial_or_npy_files'] or 'none'}; "
                             f"runs {result['runs'] or 'none'}")
            else:
                lines.append(f"   output exists: {result['out_exists']}; files next to it: "
                             f"{result['files_next_to_out'] or 'none'}; train runs {result['train_runs']}")
        elif key == "5":
            for name, case in result["cases"].items():
                lines.append(f"   {name}: submit rc {case['submit_rc']}, direct rc {case['direct_rc']}, same stderr "
                             f"{yes(case['same_stderr'])}, jobs queued {case['jobs_in_store']}, logs "
                             f"{case['job_logs'] or 'none'}")
                lines.append("     submit: " + case["submit_stderr"].replace("\n", "\n             "))
                if not case["same_stderr"]:
                    lines.append("     direct: " + case["direct_stderr"].replace("\n", "\n             "))
        lines.append("")
    if report.get("ended_at_exit"):
        lines.append(f"processes still alive at the end, killed: {report['ended_at_exit']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="experiments/out/jobs_reliability.json")
    parser.add_argument("--max-jobs", type=int, default=2,
                        help="$MRL_MAX_JOBS for the jobs (0: the library's default, one per two cores)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. 1,2,4b")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (stores, logs)")
    # The panel-like poller of scenario 1 runs this file again in its own process.
    parser.add_argument("--poll", help=argparse.SUPPRESS)
    parser.add_argument("--poll-stop", help=argparse.SUPPRESS)
    parser.add_argument("--poll-ready", help=argparse.SUPPRESS)
    parser.add_argument("--poll-report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poll:
        poll_store(args.poll, args.poll_stop, args.poll_ready, args.poll_report, PANEL_POLL_EVERY_S, PANEL_LOCK_WAIT_S)
        return

    from mrl_core import jobs as jobs_module

    wanted = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        parser.error(f"--only: unknown scenarios {sorted(unknown)}; expected some of {list(SCENARIOS)}")
    root = Path(tempfile.mkdtemp(prefix="jobs_reliability-"))
    harness = Harness(root, args.max_jobs or None)
    os.environ.pop("MRL_MAX_JOBS", None)
    setup = {
        "host": socket.gethostname(), "cores": os.cpu_count(), "platform": platform.platform(),
        "load_before": [round(load, 2) for load in os.getloadavg()], "versions": versions(),
        "max_jobs": harness.max_jobs, "default_max_running": jobs_module.max_running(), "tmp": str(root),
    }
    sampler = LoadSampler()
    sampler.start()
    started = time.monotonic()
    report = {"setup": setup, "scenarios": {}}
    try:
        vectors = write_vectors(root / "vectors")
        for key in wanted:
            title = SCENARIOS[key][0]
            print(f"[{time.monotonic() - started:6.0f} s] {key}. {title} ...", file=sys.stderr, flush=True)
            scenario_started = time.monotonic()
            try:
                report["scenarios"][key] = SCENARIOS[key][1](harness, vectors)
            except Exception:  # noqa: BLE001 - a failed scenario is reported, the others still run
                report["scenarios"][key] = {"ok": False, "exception": traceback.format_exc()}
            report["scenarios"][key]["seconds"] = round(time.monotonic() - scenario_started, 1)
            # Nothing of one scenario may run on into the next.
            left = harness.end_everything()
            if left:
                report["scenarios"][key]["left_running_killed"] = left
    finally:
        report["ended_at_exit"] = harness.end_everything()
        setup["load_during"] = sampler.stop()
        setup["load_after"] = [round(load, 2) for load in os.getloadavg()]
        report["seconds"] = time.monotonic() - started
        report["ok"] = all(result.get("ok") for result in report["scenarios"].values())
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
        print(report_text(report))
        print(f"\nwritten {out}")
        if args.keep_tmp:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
