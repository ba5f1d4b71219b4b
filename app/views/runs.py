"""Runs: the history of every job and every run in the store.

A job is a long command started from a page or the command line; runs are what it stored (an evaluation, a
benchmark, a training, a tuned funnel, a verification). Filter both by kind and status, open a run's results on
the page that draws them, overlay evaluations, and delete a run you no longer want.
"""

from datetime import datetime

import pandas as pd
import streamlit as st

from app.components import metric_picker, precision_picker, show_figure
from app.labels import METRIC_LABELS, markdown_text, run_label
from app.state import results_store
from mrl_core.figures import quality_vs_width
from mrl_core.jobs import format_seconds, log_tail
from mrl_core.store import ACTIVE_JOB_STATUSES, JOB_STATUSES

# The page that draws a run of each kind, as a URL relative to this one (the Planner is the app's root). Comments,
# not docstrings, in a page: Streamlit draws a bare string on the page.
RESULTS_PAGES = {"evaluate": "evaluate", "train": "train", "funnel": "funnel", "bench": "./", "verify": "./"}
RUN_STATUSES = ("running", "finished", "failed", "cancelled", "unfinished")
DATETIME_FORMAT = "YYYY-MM-DD HH:mm:ss"

JOB_COLUMNS = {
    "job_id": st.column_config.NumberColumn("Job", format="%d"),
    "label": "What",
    "status": "Status",
    "run_ids": st.column_config.ListColumn("Runs it stored"),
    "duration": "Duration",
    "submitted_by": "Submitted by",
    "submitted_at": st.column_config.DatetimeColumn("Submitted", format=DATETIME_FORMAT),
}
RUN_COLUMNS = {
    "run_id": st.column_config.NumberColumn("Run", format="%d"),
    "kind": "Kind",
    "status": "Status",
    "job_id": st.column_config.NumberColumn(
        "Job", format="%d", help="The job that stored it; empty for a command run in the foreground."
    ),
    "results": st.column_config.LinkColumn(
        "Results", display_text="Open ↗",
        help="The page that draws runs of this kind: evaluate → Evaluate, train → Train, funnel → Funnel, "
        "bench and verify → Planner.",
    ),
    "model": "Model",
    "dataset": "Dataset",
    "corpus_size": st.column_config.NumberColumn("Documents", format="localized"),
    "query_count": st.column_config.NumberColumn("Queries", format="localized"),
    "threads": "Threads",
    "started_at": st.column_config.DatetimeColumn("Started", format=DATETIME_FORMAT),
    "finished_at": st.column_config.DatetimeColumn("Finished", format=DATETIME_FORMAT),
    "error": "Error",
}


def kind_and_status_filters(kinds: list[str], statuses: list[str], key: str) -> tuple[list[str], list[str]]:
    """A kind multiselect and a status toggle row; nothing picked means everything."""
    left, right = st.columns([2, 3])
    with left:
        chosen_kinds = st.multiselect("Kind", kinds, key=f"{key}_kinds", placeholder="All kinds")
    with right:
        chosen_statuses = st.segmented_control("Status", statuses, selection_mode="multi", key=f"{key}_statuses")
    return chosen_kinds or kinds, chosen_statuses or statuses


def job_duration(job: dict, now: datetime) -> str:
    """How long a job ran (or has run so far); '—' while it waits."""
    if pd.isna(job["started_at"]):
        return "—"
    end = job["finished_at"] if pd.notna(job["finished_at"]) else now
    return format_seconds(max(0.0, (end - job["started_at"]).total_seconds()))


def results_link(run: dict) -> str | None:
    page = RESULTS_PAGES.get(run["kind"])
    return None if page is None or run["status"] != "finished" else f"{page}?run={int(run['run_id'])}"


def why_not_deletable(run: dict, running_jobs: set[int]) -> str | None:
    """Why a run must stay for now (its job still writes to it), or None."""
    if pd.notna(run["job_id"]) and int(run["job_id"]) in running_jobs:
        return (
            f"Run #{int(run['run_id'])} belongs to job #{int(run['job_id'])}, which is still going: "
            "cancel the job in the sidebar first, or wait for it to end."
        )
    if run["status"] == "running":
        return f"Run #{int(run['run_id'])} is still running; delete it when it has ended."
    return None


@st.dialog("Delete this run?")
def confirm_delete(run_id: int) -> None:
    store = results_store()
    run = store.get_run(run_id)
    st.markdown(
        f"**{markdown_text(run_label(run))}** ({run['status']}) and every row it stored leave "
        f"`{store.path.name}` for good."
    )
    left, right = st.columns(2)
    with left:
        delete = st.button(
            "Delete", type="primary", icon=":material/delete:", key="runs_delete_confirm", width="stretch"
        )
    with right:
        keep = st.button("Keep", key="runs_delete_keep", width="stretch")
    if delete:
        # The run's job may have started writing since the dialog opened.
        running_jobs = set(store.jobs(statuses=ACTIVE_JOB_STATUSES)["job_id"].astype(int))
        reason = why_not_deletable(run, running_jobs)
        if reason:
            st.error(reason)
            return
        store.delete_run(run_id)
        st.toast(f"Deleted run #{run_id} and its rows.")
        st.rerun()
    if keep:
        st.rerun()


st.title("Runs")
store = results_store()
jobs = store.jobs()
runs = store.list_runs()
if jobs.empty and runs.empty:
    st.info(f"No runs in {store.path} yet. The Planner evaluates the built-in data on its first start.")
    st.stop()
now = datetime.now()
running_jobs = set(jobs.loc[jobs["status"].isin(ACTIVE_JOB_STATUSES), "job_id"].astype(int))

st.subheader("Jobs")
if jobs.empty:
    st.caption("No jobs yet: long work started from a page, or with `python -m mrl_core submit`, is listed here.")
else:
    present = set(jobs["status"])
    kinds, statuses = kind_and_status_filters(
        sorted(jobs["command"].unique()), [status for status in JOB_STATUSES if status in present], "runs_jobs"
    )
    shown_jobs = jobs[jobs["command"].isin(kinds) & jobs["status"].isin(statuses)]
    table = shown_jobs.assign(duration=[job_duration(job, now) for job in shown_jobs.to_dict("records")])
    picked = st.dataframe(
        table[list(JOB_COLUMNS)], column_config=JOB_COLUMNS, hide_index=True, key="runs_jobs_table",
        on_select="rerun", selection_mode="single-row",
    )
    st.caption(f"{len(shown_jobs)} of {len(jobs)} jobs, newest first. Pick a row to read its log.")
    if picked.selection.rows:
        job = shown_jobs.iloc[picked.selection.rows[0]].to_dict()
        with st.container(border=True):
            st.markdown(f"**Job #{int(job['job_id'])}**: `python -m mrl_core {job['command']} {' '.join(job['args'])}`")
            if isinstance(job.get("error"), str) and job["error"]:
                st.error(job["error"])
            tail = log_tail(job)
            if tail:
                st.code(tail, language=None)
            else:
                st.caption("Its log is empty.")

st.subheader("Runs")
if runs.empty:
    st.caption("No runs stored yet.")
else:
    present = set(runs["status"])
    kinds, statuses = kind_and_status_filters(
        sorted(runs["kind"].unique()), [status for status in RUN_STATUSES if status in present], "runs_runs"
    )
    shown_runs = runs[runs["kind"].isin(kinds) & runs["status"].isin(statuses)]
    table = shown_runs.assign(
        results=[results_link(run) for run in shown_runs.to_dict("records")],
        # Nullable integers: a run made outside a job shows an empty cell, not 'None'.
        job_id=shown_runs["job_id"].astype("Int64"),
    )
    st.dataframe(table[list(RUN_COLUMNS)], column_config=RUN_COLUMNS, hide_index=True, key="runs_table")
    st.caption(f"{len(shown_runs)} of {len(runs)} runs in `{store.path}`, newest first.")

st.subheader("Compare evaluations")
evaluated = store.runs_with_results()
if evaluated.empty:
    st.info("No evaluation has stored results yet; run one on the Evaluate page.")
else:
    labels = {int(run["run_id"]): run_label(run) for run in evaluated.to_dict("records")}
    chosen_runs = st.multiselect(
        "Runs to overlay", list(labels), default=list(labels)[:2], format_func=labels.get, key="runs_overlay"
    )
    chosen_results = store.results(chosen_runs)
    if chosen_results.empty:
        st.info("Pick one or more runs to draw their curves.")
    else:
        left, right = st.columns(2)
        with left:
            metric = metric_picker(chosen_results, key="runs_metric")
        with right:
            precision = precision_picker(chosen_results, key="runs_precision")
        overlay = store.results(chosen_runs, precision=precision)
        overlay = overlay.assign(label=overlay["run_id"].map(labels))
        show_figure(quality_vs_width(overlay, metric), key="runs_overlay_chart")
        st.caption(f"{METRIC_LABELS[metric]} per width at {precision}; one marker per run, one dash per method.")

if not runs.empty:
    st.subheader("Delete a run")
    all_labels = {int(run["run_id"]): f"{run_label(run)} ({run['status']})" for run in runs.to_dict("records")}
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    with left:
        doomed = st.selectbox("Run to delete", list(all_labels), format_func=all_labels.get, key="runs_delete_choice")
    reason = why_not_deletable(runs[runs["run_id"] == doomed].iloc[0].to_dict(), running_jobs)
    with right:
        if st.button(
            "Delete run…", key="runs_delete", icon=":material/delete:", disabled=reason is not None, help=reason
        ):
            confirm_delete(int(doomed))
    if reason:
        st.caption(reason)
