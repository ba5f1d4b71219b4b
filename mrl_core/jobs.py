"""Background jobs: one of the CLI's commands run in its own process, detached from whoever submitted it.

A browser tab, a page change or a closed terminal does not touch a job: ``submit`` records it in the results
store as 'queued' and starts ``python -m mrl_core.job_process JOB_ID STORE`` in a new session (``subprocess.Popen``
with ``start_new_session``; stdout and stderr go to the job's log file next to the store). That process waits
its turn (at most ``max_running()`` jobs run at once, the rest start in the order they were submitted), runs
the command in-process through ``mrl_core.cli.main`` with ``--json``, reports progress (phase, done, total,
ETA) to the job's record at most once a second, and records how it ended with the command's JSON result and
the runs it stored (``runs.job_id``).

``cancel`` sends SIGTERM to the job's process group, which raises ``store.RunCancelled`` in the job: the run
in progress drops its rows and reads 'cancelled', and partial outputs (a model folder being saved, a cache
file being written) are removed; after ``CANCEL_GRACE_S`` it sends SIGKILL and does the same clean-up
itself. A job whose process vanished (killed, machine restarted) reads 'unfinished' on the next read of the
store. The store keeps DuckDB's one-writer rule: every record update is one short transaction.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

from mrl_core.paths import cache_dir
from mrl_core.progress import Progress
from mrl_core.store import ACTIVE_JOB_STATUSES, ResultStore, RunCancelled, StoreError, process_alive

JOB_COMMANDS = ("evaluate", "train", "bench", "funnel", "recommend", "first-start")
"""The CLI commands a job can run (``recommend`` is a job when it verifies: ``--verify`` builds and times)."""
MAX_RUNNING_ENV = "MRL_MAX_JOBS"
CANCEL_GRACE_S = 10.0
"""Seconds ``cancel`` waits after SIGTERM before SIGKILL."""
KILL_WAIT_S = 10.0
QUEUE_POLL_S = (0.5, 2.0)
"""A queued job asks for a slot after 0.5 s, then less often, up to every 2 s (each ask opens the store)."""
PROGRESS_EVERY_S = 1.0
PROGRESS_LOCK_WAIT_S = 2.0
"""How long a progress write waits for the store before it is skipped (the work must not wait on it)."""
LOG_TAIL_LINES = 20


def max_running() -> int:
    """Jobs that may run at once: ``$MRL_MAX_JOBS``, else one per two cores (one on a 2-core machine)."""
    text = os.environ.get(MAX_RUNNING_ENV)
    if text is None:
        return max(1, (os.cpu_count() or 1) // 2)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${MAX_RUNNING_ENV}={text!r}: expected a whole number of jobs, at least 1")
    return value


def job_log_path(store: ResultStore, job_id: int) -> Path:
    """Where a job's stdout and stderr go: ``<store folder>/jobs/<store name>-<job id>.log``."""
    return store.path.parent / "jobs" / f"{store.path.stem}-{int(job_id)}.log"


def log_tail(job: dict, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a job's log (from its file while it exists, else as stored when the job ended)."""
    path = job.get("log_path")
    if path and Path(path).is_file():
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64_000))
            text = handle.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])
    return job.get("log_tail") or ""


def describe(command: str, args: list[str]) -> str:
    """A job's label: the command and the arguments that say what it works on."""
    wanted = ("--data", "--model", "--mode", "--corpus-size")
    parts = [command]
    for position, arg in enumerate(args[:-1]):
        if arg in wanted:
            value = args[position + 1]
            parts.append(Path(value).name if arg in ("--data", "--model") and os.sep in value else value)
    return " ".join(parts)


def this_submitter() -> str:
    """Who submits from a terminal: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} (command line)"


def submit(
    argv: list[str], store: ResultStore, *, submitted_by: str | None = None, label: str | None = None,
    unique: bool = False,
) -> int:
    """Queue a checked command line as a job and start its process; return the job id at once.

    Check the command line first: ``mrl_core.cli.submit_job`` does, so bad input never reaches the queue.

    Args:
        argv: the command and its arguments, as after ``python -m mrl_core`` (``--json`` is added when it runs:
            a job stores its command's JSON result).
        store: the store that records the job (the command's ``--store``).
        submitted_by: who started it (an app session, or user@host for the command line).
        label: a human description (default: ``describe``).
        unique: return the id of a queued or running job with the same command line instead of queueing a
            second one (the app's first start, opened in two tabs at once).
    """
    command, command_args = argv[0], list(argv[1:])
    if unique:
        for job in store.jobs(statuses=ACTIVE_JOB_STATUSES).to_dict("records"):
            if job["command"] == command and list(job["args"]) == command_args:
                return int(job["job_id"])
    job_id = store.add_job(
        command, command_args, label=label or describe(command, command_args), submitted_by=submitted_by or this_submitter()
    )
    log_path = job_log_path(store, job_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Written afresh: a store deleted and made again in this folder numbers its jobs from 1 again.
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mrl_core.job_process", str(job_id), str(store.path.resolve())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=os.getcwd(),
        )
    # Reap the child when it ends while this process lives (a long-lived app server), so a killed job is not
    # left a zombie that looks alive; a CLI submit exits first and init reaps it.
    threading.Thread(target=process.wait, daemon=True, name=f"job-{job_id}-reaper").start()
    try:
        started = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess:
        started = None
    store.update_job(job_id, pid=process.pid, pid_started=started, log_path=str(log_path))
    return job_id


class JobProgress:
    """The ``progress(done, total)`` callbacks of a job: each prints 'label: done/total' to the log and writes
    phase, done, total and the phase's ETA to the job's record at most once a second."""

    def __init__(self, store: ResultStore, job_id: int):
        # Its own store object with a short lock wait: a progress write that meets a busy store is skipped.
        self.store = ResultStore(store.path, lock_timeout_s=PROGRESS_LOCK_WAIT_S, job_id=job_id)
        self.job_id = job_id
        self._last_write = 0.0
        self._last_print = 0.0

    def __call__(self, label: str) -> Progress:
        # The phase's clock starts at its first report (a model may load between creating this and working).
        first: list[tuple[float, int]] = []

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if not first:
                first.append((now, done))
            ended = done >= total
            if ended or now - self._last_print > 0.5:
                self._last_print = now
                print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)
            if ended or now - self._last_write >= PROGRESS_EVERY_S:
                self._last_write = now
                started, first_done = first[0]
                eta_s = (now - started) * (total - done) / (done - first_done) if first_done < done < total else None
                try:
                    self.store.update_job(
                        self.job_id, phase=label, progress_done=int(done), progress_total=int(total), eta_s=eta_s
                    )
                except StoreError as error:
                    # Progress is advisory: a store held by another writer for a minute must not stop the work.
                    print(f"progress not recorded: {error}", file=sys.stderr, flush=True)

        return report


def _raise_cancelled(signum, frame) -> None:
    raise RunCancelled(f"cancelled (signal {signum})")


def run_job(job_id: int, store_path: str | os.PathLike, run_command) -> int:
    """The job's process: wait for a slot, run the command, record how it ended. Returns its exit status.

    ``run_command(argv, progress=..., job_id=...)`` runs one CLI command and returns its exit status
    (``mrl_core.cli.main``; ``mrl_core.job_process`` passes it, so this module does not import the CLI).
    """
    signal.signal(signal.SIGTERM, _raise_cancelled)
    store = ResultStore(store_path, job_id=job_id)

    try:
        slots = max_running()
        pid, pid_started = os.getpid(), psutil.Process().create_time()
        wait_s = QUEUE_POLL_S[0]
        while (status := store.claim_job(job_id, slots, pid=pid, pid_started=pid_started)) == "queued":
            time.sleep(wait_s)
            wait_s = min(wait_s * 1.5, QUEUE_POLL_S[1])
        if status != "running":
            return 0
        job = store.get_job(job_id)
        argv = [job["command"], *job["args"]]
        if "--store" not in argv:
            argv += ["--store", str(store.path)]
        if "--json" not in argv:
            argv.append("--json")
        print(f"job {job_id}: python -m mrl_core {shlex.join(argv)}", file=sys.stderr, flush=True)
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exit_code = run_command(argv, progress=JobProgress(store, job_id), job_id=job_id)
        printed = output.getvalue()
        try:
            result = json.loads(printed) if printed.strip() else None
        except json.JSONDecodeError:
            result = None
        print(f"job {job_id}: exit status {exit_code}; its JSON result is in the job's record "
              f"(python -m mrl_core jobs {job_id} --json)", file=sys.stderr, flush=True)
        error = None if exit_code == 0 else _last_error(store.get_job(job_id)) or f"exit status {exit_code}"
        store.finish_job(
            job_id, "finished" if exit_code == 0 else "failed", exit_code=exit_code, error=error, result=result,
            log_tail=log_tail(store.get_job(job_id)),
        )
        return exit_code
    except RunCancelled:
        print(f"job {job_id}: cancelled", file=sys.stderr, flush=True)
        clean_up(store, store.get_job(job_id))
        store.finish_job(job_id, "cancelled", error="cancelled", log_tail=log_tail(store.get_job(job_id)))
        return 128 + signal.SIGTERM
    except BaseException as error:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        store.finish_job(
            job_id, "failed", exit_code=1, error=f"{type(error).__name__}: {error}",
            log_tail=log_tail(store.get_job(job_id)),
        )
        return 1


def _last_error(job: dict) -> str | None:
    """The command's 'error: ...' line from the log, the message the command printed for a bad input."""
    lines = [line for line in log_tail(job, 200).splitlines() if line.startswith("error: ")]
    return lines[-1].removeprefix("error: ") if lines else None


def clean_up(store: ResultStore, job: dict) -> None:
    """What a cancelled job leaves: its unfinished runs (their rows dropped, marked 'cancelled') and its
    partial outputs (``<out>.partial-<pid>`` of a training, ``*.<pid>.partial.npy`` cache files)."""
    runs = store.list_runs()
    mine = runs[runs["run_id"].isin(job["run_ids"]) & runs["status"].isin(["running", "unfinished"])]
    store.cancel_runs(mine["run_id"].tolist())
    pid = job.get("pid")
    if not pid:
        return
    args = list(job["args"])
    if "--out" in args[:-1]:
        out = Path(args[args.index("--out") + 1])
        for partial in out.parent.glob(f"{out.name}.partial-{pid}"):
            _remove(partial)
    for partial in cache_dir().rglob(f"*.{pid}.partial.npy"):
        _remove(partial)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def cancel(store: ResultStore, job_id: int, *, grace_s: float = CANCEL_GRACE_S) -> dict:
    """Stop a queued or running job: SIGTERM to its process group, SIGKILL after ``grace_s``; its unfinished
    runs and partial outputs are removed and it reads 'cancelled'. Returns the job's record afterwards.

    Raises:
        KeyError: no such job.
        ValueError: the job runs on another host (its process cannot be signalled from here).
    """
    job = store.get_job(job_id)
    if job["status"] not in ACTIVE_JOB_STATUSES:
        return job
    if job["host"] != socket.gethostname():
        raise ValueError(f"job {job_id} runs on {job['host']}; cancel it there")
    pid, started = job["pid"], job["pid_started"]
    started = None if started is None or started != started else started
    if job["status"] == "queued":
        # A waiting process sees 'cancelled' at its next turn and exits; SIGTERM makes it exit now.
        store.finish_job(job_id, "cancelled", error="cancelled while queued")
    if pid and process_alive(pid, started):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        # Done when the process is gone, or has recorded its own cancellation (what is left is its exit).
        while process_alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.5)
            if store.get_job(job_id)["status"] == "cancelled":
                break
        if process_alive(pid, started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + KILL_WAIT_S
            while process_alive(pid, started) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process_alive(pid, started):
                raise ValueError(f"job {job_id}: process {pid} survived SIGKILL for {KILL_WAIT_S:.0f} s (stuck in the kernel?)")
    job = store.get_job(job_id)
    clean_up(store, job)
    if job["status"] in ACTIVE_JOB_STATUSES or job["status"] == "unfinished":
        # Killed before it could record its own end.
        store.update_job(job_id, status="cancelled", error="cancelled (killed after the grace period)",
                         finished_at=datetime.now(), log_tail=log_tail(job))
    return store.get_job(job_id)


def progress_text(job: dict) -> str:
    """'phase: done/total (ETA 1 min 20 s)', or the job's status when it reports no progress."""
    if not isinstance(job.get("phase"), str) or not job["phase"]:
        return str(job["status"])
    if job.get("progress_done") is None or job.get("progress_total") is None:
        return job["phase"]
    text = f"{job['phase']}: {int(job['progress_done']):,}/{int(job['progress_total']):,}"
    eta = job.get("eta_s")
    if eta is not None and eta == eta and job["status"] == "running":
        text += f" (ETA {format_seconds(eta)})"
    return text


def format_seconds(seconds: float) -> str:
    """'45 s', '3 min 05 s', '1 h 02 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
