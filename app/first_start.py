"""The Planner's first start: ``python -m mrl_core first-start`` as a background job, once per store.

The job measures what the store lacks (``mrl_core.first_start``): an evaluation of the built-in data, then
one benchmark per corpus size, smallest first. Each run lands in the store as it ends, so the planner works
from the first sizes while the larger ones are measured; the job's progress stays on top of the page until
it ends, and closing the tab does not stop it.
"""

from __future__ import annotations

import streamlit as st

from app.jobs import job_box, job_failure, submit_job
from app.labels import format_count
from mrl_core.bench import DATASET_BENCH_CORPUS_SIZES
from mrl_core.first_start import missing_bench_sizes, missing_measurements
from mrl_core.store import ACTIVE_JOB_STATUSES, ResultStore

FIRST_START_TITLE = "First start: measuring the built-in data"
STEP_TEXT = {
    "evaluate": "encoding the built-in data and measuring quality at every width, precision and method",
    "embed": "reading the built-in data's embeddings for the benchmark",
    "bench": "timing search at the next corpus size",
}


def first_start_job(store: ResultStore) -> dict | None:
    """The newest first-start job in the store, whatever its status."""
    jobs = store.jobs()
    jobs = jobs[jobs["command"] == "first-start"]
    return None if jobs.empty else jobs.iloc[0].to_dict()


def _progress_note(store: ResultStore, job: dict) -> str:
    lacking = set(missing_bench_sizes(store))
    sizes = sorted(DATASET_BENCH_CORPUS_SIZES)
    measured = [format_count(size) for size in sizes if size not in lacking]
    to_go = [format_count(size) for size in sizes if size in lacking]
    phase = STEP_TEXT.get(job["phase"], "") if isinstance(job.get("phase"), str) else ""
    if not measured:
        latency = f"Latency is measured at {', '.join(to_go)} vectors, smallest first."
    else:
        latency = f"Latency measured at {', '.join(measured)} vectors; {', '.join(to_go) or 'nothing'} to go."
    return (
        (f"Now {phase}. " if phase and job["status"] == "running" else "")
        + latency
        + " About ten minutes on 2 cores, most of it the 1M-row benchmark; the planner below works from what has "
        "landed, and later starts read the store."
    )


def ensure_first_start(store: ResultStore) -> None:
    """Start the first start on a store that lacks an evaluation or latency rows, and show its progress.

    Submitted as a job when the store has never run one (a job already queued or running is shown, not
    started again). While no evaluation is stored the page stops under the progress box; once one is, the
    page goes on with the latency rows that exist and reruns as each run lands and when the job ends. A
    first start that ended without filling the store shows how it ended and a button to try again, rather
    than starting again on every visit.
    """
    missing = missing_measurements(store)
    if not missing:
        # Every later start: two small queries, no job.
        return
    job = first_start_job(store)
    if job is None or job["status"] not in ACTIVE_JOB_STATUSES:
        if job is None:
            job_id = submit_job(["first-start"], FIRST_START_TITLE, unique=True)
            if job_id is None:
                st.stop()
            job = store.get_job(job_id)
        else:
            _ended_without_filling(store, job, missing)
            return
    job_box(int(job["job_id"]), FIRST_START_TITLE, _progress_note(store, job), runs_seen=len(job["run_ids"]))
    if "evaluate" in missing:
        st.stop()


def _ended_without_filling(store: ResultStore, job: dict, missing: list[str]) -> None:
    if job["status"] == "finished":
        lacking = ["an evaluation"] if "evaluate" in missing else []
        if "bench" in missing:
            lacking.append(f"latency at {', '.join(format_count(size) for size in missing_bench_sizes(store))} vectors")
        st.info(
            f"The store lacks {' and '.join(lacking)} although the first start (job #{int(job['job_id'])}) "
            "measured it: deleted on the Runs page, or skipped on this machine.",
            icon=":material/info:",
        )
    else:
        job_failure(job, FIRST_START_TITLE)
    again = st.button("Try again", key="first_start_again", icon=":material/refresh:")
    if again and submit_job(["first-start"], FIRST_START_TITLE, unique=True) is not None:
        st.rerun()
    if "evaluate" in missing:
        st.stop()
