"""Runs: the history of every evaluation, benchmark, training and funnel run in the store.

Pick several evaluations to overlay their quality-vs-width curves; delete a run you no longer want.
"""

import streamlit as st

from app.components import metric_picker, precision_picker, show_figure
from app.labels import METRIC_LABELS, run_label
from app.state import results_store
from mrl_core.figures import quality_vs_width

RUN_COLUMNS = {
    "run_id": st.column_config.NumberColumn("Run", format="%d"),
    "kind": "Kind",
    "status": "Status",
    "model": "Model",
    "dataset": "Dataset",
    "corpus_size": st.column_config.NumberColumn("Documents", format="localized"),
    "query_count": st.column_config.NumberColumn("Queries", format="localized"),
    "threads": "Threads",
    "started_at": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm:ss"),
    "finished_at": st.column_config.DatetimeColumn("Finished", format="YYYY-MM-DD HH:mm:ss"),
    "error": "Error",
}

st.title("Runs")
store = results_store()
runs = store.list_runs()
if runs.empty:
    st.info(f"No runs in {store.path} yet. The Planner evaluates the built-in data on its first start.")
    st.stop()

st.caption(f"{len(runs)} runs in `{store.path}`, newest first.")
st.dataframe(runs[list(RUN_COLUMNS)], column_config=RUN_COLUMNS, hide_index=True, key="runs_table")

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

st.subheader("Delete a run")
all_labels = {int(run["run_id"]): f"{run_label(run)} ({run['status']})" for run in runs.to_dict("records")}
left, right = st.columns([3, 1], vertical_alignment="bottom")
with left:
    doomed = st.selectbox("Run to delete", list(all_labels), format_func=all_labels.get, key="runs_delete_choice")
with right:
    if st.button("Delete run", type="secondary", key="runs_delete", icon=":material/delete:"):
        store.delete_run(int(doomed))
        st.toast(f"Deleted run #{doomed} and its rows.")
        st.rerun()
