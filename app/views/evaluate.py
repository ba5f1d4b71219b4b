"""Evaluate: quality at every width x precision x method on your own data, stored and drawn.

Upload a BEIR zip, a pairs table, a plain corpus or precomputed embeddings (or use the built-in data),
pick a model, widths and precisions, and run. The results land in the store the Planner reads.
"""

import streamlit as st

from app.components import (
    dataset_source_picker,
    dataset_summary,
    metric_picker,
    model_picker,
    results_table,
    show_figure,
)
from app.jobs import comma_list, finished_result, show_job, shown_job, submit_job
from app.labels import METRIC_LABELS, format_count, model_label
from app.state import results_store, shown_run
from mrl_core.bench import DATASET_BENCH_CORPUS_SIZES, DATASET_BENCH_QUERY_COUNT
from mrl_core.figures import quality_vs_width
from mrl_core.model_widths import full_width, width_choices
from mrl_core.widths import METHODS, PRECISIONS

st.title("Evaluate widths on your data")
st.caption(
    "Each text is encoded once at full width; every width, precision and method is then cut from those "
    "vectors and searched exactly. Labelled data gives nDCG and recall; any data gives fidelity to full width."
)
store = results_store()

picked = dataset_source_picker("evaluate")
if picked is None:
    st.stop()
dataset, source = picked
dataset_summary(dataset)

model = model_picker(store, dataset, key="evaluate_model")
try:
    with st.spinner("Loading the model…"):
        model_full_width = full_width(model, dataset)
except (ValueError, OSError) as error:
    st.error(str(error))
    st.stop()

left, middle, right = st.columns([3, 3, 2])
with left:
    options = width_choices(model_full_width)
    widths = st.multiselect(
        "Widths", options, default=options, key="evaluate_widths", persist_state="session"
    )
with middle:
    precisions = st.multiselect(
        "Precisions", PRECISIONS, default=["fp32", "int8", "binary"], key="evaluate_precisions",
        persist_state="session",
    )
with right:
    methods = st.multiselect(
        "Methods", METHODS, default=list(METHODS), key="evaluate_methods", persist_state="session"
    )

# Runs as a background job: leaving the page or closing the tab does not stop it, and a refresh finds it again.
evaluation_title = f"Evaluating {dataset.name} with {model_label(model)}"
evaluation_job = shown_job("evaluate_job", "evaluate", {"--data": source, "--model": model})
evaluation_running = show_job(evaluation_job, evaluation_title, "Encoding is cached on disk after the first time.")
if not evaluation_running and st.button(
    "Run evaluation", type="primary", key="evaluate_run", icon=":material/play_arrow:",
    disabled=not (widths and precisions and methods), help="Choose at least one width, precision and method.",
):
    job_id = submit_job(
        [
            "evaluate", "--data", source, "--model", model, "--widths", comma_list(sorted(widths, reverse=True)),
            "--precisions", comma_list(precisions), "--methods", comma_list(methods),
        ],
        evaluation_title,
    )
    if job_id is not None:
        st.session_state["evaluate_job"] = job_id
        st.rerun()
if (result := finished_result(evaluation_job)) is not None:
    st.session_state["evaluate_run_id"] = result["run_id"]

run_id = shown_run(store, "evaluate_run_id", "evaluate", dataset)
if run_id is None:
    st.info("No evaluation of this dataset yet: choose widths and precisions, then run.")
    st.stop()

run = store.get_run(run_id)
results = store.results(run_id)
st.subheader(f"Run #{run_id} · {run['dataset']} · {model_label(run['model'])}")
metric = metric_picker(results, key="evaluate_metric")
show_figure(quality_vs_width(results, metric), key="evaluate_chart")
st.caption(
    f"{METRIC_LABELS[metric]} over {int(run['query_count']):,} queries and {int(run['corpus_size']):,} documents."
)
results_table(results)

# The planner needs latency at every evaluated width; offer to measure the widths no benchmark covers yet.
bench_title = f"Benchmarking search latency on {dataset.name}"
bench_job = shown_job("evaluate_bench_job", "bench", {"--data": source, "--model": run["model"]})
bench_running = show_job(bench_job, bench_title)
unmeasured_widths = store.widths_without_latency(results["width"])
if unmeasured_widths and not bench_running:
    st.warning(
        f"No search latency measured yet at widths {', '.join(map(str, unmeasured_widths))}; the Planner cannot "
        "judge them against a latency target until they are benchmarked on this machine."
    )
    if st.button(
        "Benchmark latency at these widths", key="evaluate_bench", icon=":material/speed:",
        help=f"Times every index at {', '.join(format_count(size) for size in DATASET_BENCH_CORPUS_SIZES)} vectors "
        "(rows drawn to match this data past its own size), as the first start does; minutes at 1M.",
    ):
        job_id = submit_job(
            [
                "bench", "--data", source, "--model", run["model"], "--widths", comma_list(unmeasured_widths),
                "--corpus-sizes", comma_list(DATASET_BENCH_CORPUS_SIZES),
                "--query-count", str(DATASET_BENCH_QUERY_COUNT),
            ],
            bench_title,
        )
        if job_id is not None:
            st.session_state["evaluate_bench_job"] = job_id
            st.rerun()
