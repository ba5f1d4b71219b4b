"""The jobs panel in the sidebar of every page: what runs and waits, and what ended a few minutes ago.

Each running or queued job shows its label, a progress bar with its phase and ETA, when it started and who started
it, and a Cancel button. The panel polls the results store every two seconds on its own, without rerunning the
page; when a job this browser session started ends, it reruns the page once so its results appear without a click.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import streamlit as st

from app.labels import JOB_STATUS_BADGES, job_label, markdown_text
from app.state import results_store
from mrl_core.jobs import cancel, format_seconds, progress_text
from mrl_core.store import ACTIVE_JOB_STATUSES, ResultStore, StoreError

POLL_EVERY_S = 2
RECENT_WINDOW_S = 600
"""Ended jobs stay in the panel this long; the Runs page keeps them all."""
RECENT_SHOWN = 3
CANCEL_GRACE_S = 3.0
"""Seconds a cancelled job gets to stop on its own before it is killed; the panel waits that long at most."""
PANEL_LOCK_WAIT_S = 3.0
"""How long one poll waits for a store another process writes to; it skips that tick rather than freeze the sidebar."""
ERROR_SHOWN_CHARACTERS = 300
STARTED_KEY = "jobs_started"
"""Session state: ids of the jobs this browser session submitted (the pages append to it)."""
HANDLED_KEY = "jobs_panel_rerun_for"
"""Session state: ids of this session's ended jobs the page has already been rerun for."""
NOTICE_KEY = "jobs_panel_notice"
"""Session state: what the last Cancel click did, as (text, icon), until the panel shows it."""


@st.cache_resource(show_spinner=False)
def _panel_store(path: str) -> ResultStore:
    return ResultStore(path, lock_timeout_s=PANEL_LOCK_WAIT_S)


@st.fragment(run_every=POLL_EVERY_S)
def jobs_panel() -> None:
    """Draw the panel (call it inside ``with st.sidebar:``); it redraws itself every ``POLL_EVERY_S`` seconds."""
    store = _panel_store(str(results_store().path))
    if NOTICE_KEY in st.session_state:
        text, icon = st.session_state.pop(NOTICE_KEY)
        st.toast(text, icon=icon)
    try:
        jobs = store.jobs()
    except StoreError as error:
        st.caption(":material/hourglass_empty: Jobs: the results store is busy; trying again.", help=str(error))
        return
    _rerun_when_mine_ended(jobs)

    now = datetime.now()
    active = jobs[jobs["status"].isin(ACTIVE_JOB_STATUSES)]
    ended = jobs[~jobs["status"].isin(ACTIVE_JOB_STATUSES) & jobs["finished_at"].notna()]
    recent = ended[ended["finished_at"] >= now - timedelta(seconds=RECENT_WINDOW_S)]
    recent = recent.sort_values("finished_at", ascending=False).head(RECENT_SHOWN)

    st.markdown("**Jobs**")
    if active.empty:
        st.caption("Nothing running. Long work started on a page runs here and keeps going when you change page.")
    # The oldest first: that is the order the queue starts them in.
    for ahead, job in enumerate(active.sort_values("job_id").to_dict("records")):
        _active_job(store, job, now, ahead)
    if not recent.empty:
        st.caption(f"Ended in the last {RECENT_WINDOW_S // 60} minutes")
        for job in recent.to_dict("records"):
            _ended_job(job, now)
    st.page_link("views/runs.py", label="All jobs and runs", icon=":material/history:")


def _rerun_when_mine_ended(jobs: pd.DataFrame) -> None:
    """Rerun the whole page once for each job of this session that has ended since the last poll."""
    started = {int(job_id) for job_id in st.session_state.get(STARTED_KEY, [])}
    if not started:
        return
    mine_ended = jobs[jobs["job_id"].isin(started) & ~jobs["status"].isin(ACTIVE_JOB_STATUSES)]
    handled = st.session_state.setdefault(HANDLED_KEY, set())
    fresh = {int(job_id) for job_id in mine_ended["job_id"]} - handled
    if fresh:
        handled.update(fresh)
        st.rerun(scope="app")


def _active_job(store: ResultStore, job: dict, now: datetime, ahead: int) -> None:
    job_id = int(job["job_id"])
    with st.container(border=True):
        st.markdown(f"{JOB_STATUS_BADGES[job['status']]} **{markdown_text(job_label(job))}**")
        st.progress(_fraction(job), text=_progress_line(job, ahead))
        st.caption(_timing(job, now))
        st.button(
            f"Cancel job #{job_id}", key=f"jobs_panel_cancel_{job_id}", icon=":material/cancel:", width="stretch",
            help=f"Stop {job_label(job)}: what it stored so far is dropped and it reads 'cancelled'.",
            on_click=_cancel, args=(store, job_id),
        )


def _ended_job(job: dict, now: datetime) -> None:
    st.markdown(f"{JOB_STATUS_BADGES[job['status']]} {markdown_text(job_label(job))}")
    line = f"ended {_ago(job['finished_at'], now)}"
    error = job.get("error")
    if job["status"] in ("failed", "unfinished") and isinstance(error, str) and error:
        shown = error if len(error) <= ERROR_SHOWN_CHARACTERS else error[: ERROR_SHOWN_CHARACTERS - 1] + "…"
        line += f" · {shown}"
    st.caption(markdown_text(line))


def _fraction(job: dict) -> float:
    done, total = job.get("progress_done"), job.get("progress_total")
    if not _known(done) or not _known(total) or total <= 0:
        return 0.0
    return float(min(max(done / total, 0.0), 1.0))


def _progress_line(job: dict, ahead: int) -> str:
    """'training: 3/30 (ETA 40 s)', or what a job does before it reports progress."""
    if _known(job.get("phase")) and _known(job.get("progress_done")) and _known(job.get("progress_total")):
        return progress_text(job)
    if job["status"] == "queued":
        return f"waiting for {ahead} job{'s' if ahead != 1 else ''} before it" if ahead else "waiting for a free slot"
    return str(job["phase"]) if _known(job.get("phase")) else "starting"


def _known(value) -> bool:
    # A missing field reads as None, NaN or <NA> depending on the column's other values.
    return value is not None and not pd.isna(value)


def _timing(job: dict, now: datetime) -> str:
    """'started 2 min 05 s ago by alice@host (command line)', or when a queued job was submitted."""
    if job["status"] == "running" and pd.notna(job.get("started_at")):
        text = f"started {_ago(job['started_at'], now)}"
    else:
        text = f"submitted {_ago(job['submitted_at'], now)}"
    if _known(job.get("submitted_by")) and job["submitted_by"]:
        text += f" by {job['submitted_by']}"
    return markdown_text(text)


def _ago(moment: datetime, now: datetime) -> str:
    # A job recorded by another machine whose clock runs ahead must not read '-3 s ago'.
    return f"{format_seconds(max(0.0, (now - moment).total_seconds()))} ago"


def _cancel(store: ResultStore, job_id: int) -> None:
    # A callback inside a fragment must not draw; the panel shows the outcome as a toast on its next run.
    try:
        job = cancel(store, job_id, grace_s=CANCEL_GRACE_S)
    except (KeyError, ValueError, StoreError) as error:
        st.session_state[NOTICE_KEY] = (markdown_text(f"Job #{job_id} was not cancelled: {error}"), ":material/error:")
        return
    if job["status"] == "cancelled":
        notice = f"Cancelled {markdown_text(job_label(job))}; what it had stored was dropped.", ":material/cancel:"
    else:
        notice = f"{markdown_text(job_label(job))} had already ended: {job['status']}.", ":material/info:"
    st.session_state[NOTICE_KEY] = notice
