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
from app.labels import METRIC_LABELS, model_label
from app.progress import progress_bar
from app.state import results_store, shown_run
from mrl_core.bench import bench_dataset
from mrl_core.data import DatasetError
from mrl_core.encode import embed_dataset
from mrl_core.evaluate import run_evaluation
from mrl_core.figures import quality_vs_width
from mrl_core.model_widths import full_width, width_choices
from mrl_core.store import StoreError
from mrl_core.widths import METHODS, PRECISIONS

st.title("Evaluate widths on your data")
st.caption(
    "Each text is encoded once at full width; every width, precision and method is then cut from those "
    "vectors and searched exactly. Labelled data gives nDCG and recall; any data gives fidelity to full width."
)
store = results_store()

dataset = dataset_source_picker("evaluate")
if dataset is None:
    st.stop()
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
    widths = st.multiselect("Widths", options, default=options, key="evaluate_widths")
with middle:
    precisions = st.multiselect("Precisions", PRECISIONS, default=["fp32", "int8", "binary"], key="evaluate_precisions")
with right:
    methods = st.multiselect("Methods", METHODS, default=list(METHODS), key="evaluate_methods")

if st.button("Run evaluation", type="primary", key="evaluate_run", icon=":material/play_arrow:"):
    with st.status(f"Evaluating {dataset.name} with {model}…", expanded=True) as status:
        try:
            run_id, _ = run_evaluation(
                dataset,
                model,
                widths=sorted(widths, reverse=True),
                precisions=precisions,
                methods=methods,
                store=store,
                progress=progress_bar("Encoding (cached after the first time)"),
            )
        except (DatasetError, ValueError, StoreError, OSError) as error:
            status.update(label="Evaluation failed", state="error")
            st.error(str(error))
        else:
            st.session_state["evaluate_run_id"] = run_id
            status.update(label=f"Stored as run #{run_id}", state="complete", expanded=False)

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
unmeasured_widths = store.widths_without_latency(results["width"])
if unmeasured_widths:
    st.warning(
        f"No search latency measured yet at widths {', '.join(map(str, unmeasured_widths))}; the Planner cannot "
        "judge them against a latency target until they are benchmarked on this machine."
    )
    if st.button("Benchmark latency at these widths", key="evaluate_bench", icon=":material/speed:"):
        with st.status("Benchmarking search latency…", expanded=True) as status:
            bench = bench_dataset(
                dataset, embed_dataset(dataset, run["model"]), widths=unmeasured_widths, store=store,
                progress=progress_bar("Timing each index"),
            )
            status.update(label=f"Latency stored as run #{bench.run_id}", state="complete", expanded=False)
        st.rerun()
