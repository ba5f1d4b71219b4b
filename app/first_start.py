"""The first screen's first start: ``mrl_core.first_start`` under a status box, once per store."""

from __future__ import annotations

import streamlit as st

from app.labels import format_count
from app.progress import progress_bar
from app.state import cached_dataset, job_lock
from mrl_core.bench import DATASET_BENCH_APPROXIMATE_WIDTHS, DATASET_BENCH_CORPUS_SIZES
from mrl_core.first_start import FIRST_START_SOURCE, measure_first_start, missing_measurements
from mrl_core.store import ResultStore

STEP_LABELS = {
    "evaluate": "Encoding the built-in data",
    "embed": "Embedding the built-in data",
    "bench": "Benchmarking search latency",
}
STEP_DONE = {
    "evaluate": "Quality measured at every width, precision and method.",
    "bench": (
        f"Latency measured at {', '.join(format_count(size) for size in DATASET_BENCH_CORPUS_SIZES)} vectors; "
        "HNSW and IVF with their recall at widths "
        + ", ".join(
            f"{width} (up to {format_count(limit)})" if limit else str(width)
            for width, limit in DATASET_BENCH_APPROXIMATE_WIDTHS.items()
        )
        + "."
    ),
}


def ensure_first_start(store: ResultStore) -> None:
    """On a store with no evaluation or no latency rows, measure the built-in data, with progress.

    Later starts find both in the store and return at once.
    """
    if not missing_measurements(store):
        return
    with job_lock():
        # Another session may have finished the work while this one waited for the lock.
        missing = missing_measurements(store)
        if not missing:
            return
        title = "First start: measuring the built-in data (later starts read the store)"
        with st.status(title, expanded=True) as status:
            dataset = cached_dataset(FIRST_START_SOURCE)
            st.write(
                f"Built-in data: {dataset.corpus_size:,} documents, {len(dataset.query_ids):,} queries "
                "(API reference search over the installed Python packages)."
            )
            measure_first_start(
                store, dataset, missing=missing,
                step_progress=lambda step: progress_bar(STEP_LABELS[step]),
                step_done=lambda step: st.write(STEP_DONE[step]),
            )
            status.update(label="Built-in data measured and stored", state="complete", expanded=False)
