"""Long work as background jobs (``mrl_core.jobs``): a page submits the command and returns at once, then shows
the job in a box that refreshes on its own, and finds it again after a refresh or from another tab.

A job is a process of its own, so leaving the page, closing the tab or a rerun does not stop it; what it
stores lands in the results store the pages read.
"""

from __future__ import annotations

import contextlib
import io
from datetime import datetime

import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from app.state import results_store
from mrl_core.data import DatasetError
from mrl_core.cli import submit_job as submit_checked
from mrl_core.jobs import format_seconds, log_tail, progress_text
from mrl_core.store import ACTIVE_JOB_STATUSES, StoreError

JOBS_STARTED_KEY = "jobs_started"
"""Session state: the ids of the jobs this session submitted, oldest first (the sidebar's job list reruns the
page when one of them ends)."""
WATCH_EVERY_S = 2
"""Seconds between refreshes of a job's progress box: only the box reruns, not the page."""


def submitter() -> str:
    """Who submits from the app: the logged-in user's email, else 'app session <first 8 of its id>'."""
    try:
        if st.user.is_logged_in:
            return str(st.user.email)
    except Exception:
        # Without a login configured (or outside a session) st.user raises; the session id still names us.
        pass
    context = get_script_run_ctx()
    return f"app session {context.session_id[:8]}" if context is not None else "app"


def submit_job(argv: list[str], label: str, *, unique: bool = False) -> int | None:
    """Submit a command (as after ``python -m mrl_core``) as a job on the app's store; return its id at once.

    The command's arguments are checked as the command itself would check them; when it refuses (bad
    arguments, a missing data file or model, an output that exists) its own message is shown and None is
    returned. The id is kept in ``st.session_state["jobs_started"]``.

    Args:
        argv: the command and its arguments, without ``--store``.
        label: what the job does, in words (job lists show it).
        unique: reuse a queued or running job with the same command line instead of starting a second one.
    """
    refusal = io.StringIO()
    try:
        # argparse prints its usage message to stderr and exits: keep the message to show it here.
        with contextlib.redirect_stderr(refusal):
            job_id = submit_checked(
                [*argv, "--store", str(results_store().path)], submitted_by=submitter(), label=label, unique=unique
            )
    except SystemExit:
        lines = refusal.getvalue().strip().splitlines()
        message = next((line for line in reversed(lines) if "error:" in line), "invalid arguments")
        st.error(f"Could not start “{label}”: {message.split('error:', 1)[-1].strip()}")
        return None
    except (DatasetError, StoreError, ValueError, OSError) as error:
        st.error(f"Could not start “{label}”: {error}")
        return None
    started = st.session_state.setdefault(JOBS_STARTED_KEY, [])
    if job_id not in started:
        started.append(job_id)
    return job_id


def comma_list(values) -> str:
    """Values as a command-line list: [384, 128, 64] -> '384,128,64'."""
    return ",".join(map(str, values))


def _option(args: list[str], flag: str) -> str | None:
    """The value after ``flag`` in a command line, or None."""
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def _matches(job: dict, command: str, arguments: dict[str, str]) -> bool:
    args = list(job["args"])
    return job["command"] == command and all(_option(args, flag) == value for flag, value in arguments.items())


def active_job(command: str, arguments: dict[str, str]) -> dict | None:
    """The newest queued or running job of ``command`` whose command line has each ``flag value`` of ``arguments``."""
    jobs = results_store().jobs(statuses=ACTIVE_JOB_STATUSES)
    return next((job for job in jobs.to_dict("records") if _matches(job, command, arguments)), None)


def active_job_for(command: str, data_source: str, model: str | None = None) -> dict | None:
    """The newest queued or running job of ``command`` on this data (its ``--data``), and model when given:
    what a page shows after a refresh instead of offering its button again."""
    return active_job(command, {"--data": data_source, **({} if model is None else {"--model": model})})


def shown_job(session_key: str, command: str, arguments: dict[str, str]) -> dict | None:
    """The job a page shows: a queued or running one of ``command`` with these arguments, whoever submitted it,
    else the last one this session submitted under ``session_key`` while it matches (to show how it ended)."""
    active = active_job(command, arguments)
    if active is not None:
        return active
    job_id = st.session_state.get(session_key)
    if job_id is None:
        return None
    try:
        job = results_store().get_job(job_id)
    except KeyError:
        return None
    return job if _matches(job, command, arguments) else None


def finished_result(job: dict | None) -> dict | None:
    """A finished job's JSON result (the command's ``--json`` payload), else None."""
    if job is None or job["status"] != "finished" or not isinstance(job.get("result"), dict):
        return None
    return job["result"]


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def job_progress(job: dict) -> None:
    """One job's progress: a bar over its current phase, labelled 'phase: done/total (ETA ...)'."""
    done, total = _number(job.get("progress_done")), _number(job.get("progress_total"))
    fraction = min(max(done / total, 0.0), 1.0) if done is not None and total else 0.0
    # A job that has not reported yet reads NaN, not None, next to one that has (one DataFrame of jobs).
    if isinstance(job.get("phase"), str):
        text = progress_text(job)
    else:
        text = "waiting for a free slot" if job["status"] == "queued" else "starting (loading data and model)"
    st.progress(fraction, text=text)


def _elapsed_text(job: dict) -> str:
    started = job.get("started_at")
    if started is None or pd.isna(started):
        return ""
    return f", started {format_seconds((datetime.now() - pd.Timestamp(started).to_pydatetime()).total_seconds())} ago"


def _queue_text(job: dict) -> str:
    if job["status"] != "queued":
        return ""
    ahead = results_store().jobs(statuses=ACTIVE_JOB_STATUSES)
    ahead = ahead[ahead["job_id"] < job["job_id"]]
    return f", waiting for {len(ahead)} job{'s' if len(ahead) != 1 else ''} before it" if len(ahead) else ""


@st.fragment(run_every=WATCH_EVERY_S)
def job_box(job_id: int, title: str, note: str | None = None, runs_seen: int | None = None) -> None:
    """A queued or running job's box, refreshed every ``WATCH_EVERY_S`` seconds on its own; when the job ends
    (or, with ``runs_seen``, when it holds more runs than that: a run is recorded once measured, so one more has
    landed) the whole page reruns to show what it stored."""
    job = results_store().get_job(job_id)
    if job["status"] not in ACTIVE_JOB_STATUSES or (runs_seen is not None and len(job["run_ids"]) > runs_seen):
        st.rerun()
    with st.container(border=True):
        st.markdown(f"**{title}**: {job['status']} as job #{job_id}{_queue_text(job)}{_elapsed_text(job)}.")
        job_progress(job)
        if note:
            st.caption(note)


def job_failure(job: dict, title: str) -> None:
    """A job that ended without finishing: how it ended and the command's message, with its log's last lines."""
    error = job.get("error")
    st.error(f"{title} (job #{int(job['job_id'])}) {job['status']}: {error if isinstance(error, str) else 'no message'}")
    tail = log_tail(job)
    if tail:
        with st.expander(f"Last lines of job #{int(job['job_id'])}'s log"):
            st.code(tail, language=None)


def show_job(job: dict | None, title: str, note: str | None = None) -> bool:
    """Draw a page's job: its live box while queued or running, its error when it failed, nothing when it
    finished (the page shows what it stored). Returns whether it is still queued or running.

    The box is titled with the job's own label (another tab or the command line may have started it with other
    settings), ``title`` when it has none.
    """
    if job is None:
        return False
    label = job["label"] if isinstance(job.get("label"), str) and job["label"] else title
    if job["status"] in ACTIVE_JOB_STATUSES:
        job_box(int(job["job_id"]), label, note)
        return True
    if job["status"] != "finished":
        job_failure(job, label)
    return False
