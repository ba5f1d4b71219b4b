"""Train: make an encoder Matryoshka, or fit a Matryoshka adaptor on frozen embeddings, then compare curves.

Pick training pairs (the built-in data or an upload), the mode, the widths to train for and the epochs.
When training ends the held-out queries are evaluated before and after, and both curves are drawn.
"""

from datetime import datetime

import streamlit as st

from app.components import dataset_source_picker, dataset_summary, metric_picker, model_picker, show_figure
from app.jobs import comma_list, finished_result, show_job, shown_job, submit_job
from app.labels import model_label
from app.state import results_store, shown_run
from mrl_core.data import DatasetError, split_pairs
from mrl_core.figures import quality_vs_width
from mrl_core.model_widths import full_width, width_choices
from mrl_core.paths import cache_dir

st.title("Train a Matryoshka model")
st.caption(
    "Full mode fine-tunes the encoder with sentence-transformers' MatryoshkaLoss (minutes per epoch on a CPU); "
    "adaptor mode learns a linear map of frozen embeddings whose prefixes keep their neighbours (seconds), "
    "for encoders you cannot fine-tune."
)
store = results_store()

picked = dataset_source_picker(
    "train",
    help_upload="A pairs table (query, positive), or a BEIR zip with qrels/train.tsv, or embeddings for an adaptor.",
)
if picked is None:
    st.stop()
dataset, source = picked
if not dataset.train_pairs and not dataset.is_precomputed:
    # A pairs table arrives as evaluation queries only; hold some out and train on the rest (the train command
    # splits it the same way).
    try:
        dataset = split_pairs(dataset)
    except (DatasetError, ValueError) as error:
        st.error(str(error))
        st.stop()
dataset_summary(dataset)

left, right = st.columns(2)
with left:
    base_model = model_picker(store, dataset, key="train_model", label="Start from")
with right:
    modes = ["adaptor"] if dataset.is_precomputed else ["full", "adaptor"]
    mode = st.segmented_control(
        "Mode", modes, default=modes[0], required=True, key="train_mode", persist_state="session",
        format_func={"full": "Full fine-tune", "adaptor": "Adaptor on frozen embeddings"}.get,
    )
try:
    with st.spinner("Loading the model…"):
        model_full_width = full_width(base_model, dataset)
except (ValueError, OSError) as error:
    st.error(str(error))
    st.stop()

left, right = st.columns([3, 1])
with left:
    options = width_choices(model_full_width)
    dims = st.multiselect(
        "Widths to train for", options, default=options, key="train_dims", persist_state="session"
    )
with right:
    epochs = int(st.number_input(
        "Epochs", 1, 50, value=1 if mode == "full" else 4, step=1, key=f"train_epochs_{mode}",
        persist_state="session",
    ))
# A full fine-tune saves a model folder, an adaptor a single .npz file.
default_name = f"{dataset.name.replace(':', '-')}-{mode}-{datetime.now():%Y%m%d-%H%M%S}"
if mode == "adaptor":
    default_name += ".npz"
out = st.text_input("Save to", value=str(cache_dir() / "models" / default_name), key=f"train_out_{mode}")

# Runs as a background job: leaving the page or closing the tab does not stop it, and a refresh finds it again.
training_title = f"Training ({mode}) on {len(dataset.train_pairs):,} pairs from {model_label(base_model)}"
training_job = shown_job("train_job", "train", {"--data": source, "--model": base_model})
training_running = show_job(
    training_job, training_title, "Trains, then evaluates the held-out queries before and after."
)
if not training_running and st.button(
    "Train", type="primary", key="train_run", icon=":material/model_training:", disabled=not dims,
    help="Choose at least one width to train for.",
):
    job_id = submit_job(
        [
            "train", "--data", source, "--model", base_model, "--mode", mode,
            "--dims", comma_list(sorted(dims, reverse=True)), "--epochs", str(epochs), "--out", out,
        ],
        training_title,
    )
    if job_id is not None:
        st.session_state["train_job"] = job_id
        st.rerun()
if (result := finished_result(training_job)) is not None and st.session_state.get("train_last_run") != result["run_id"]:
    st.session_state["train_last_run"] = result["run_id"]
    st.toast(f"Training run #{result['run_id']} stored; the trained model is now offered in every model picker.")

train_run = shown_run(store, "train_last_run", "train", dataset)
if train_run is None:
    st.info("No model trained on this data yet.")
    st.stop()

run = store.get_run(train_run)
summary = run["summary"]
before_run, after_run = summary["base_evaluation_run_id"], summary["trained_evaluation_run_id"]
# The base evaluation may hold more cells (PCA, other precisions); compare like with like.
results = store.results([before_run, after_run], method="prefix", precision="fp32")
names = {before_run: f"before: {model_label(run['model'])}", after_run: f"after: {model_label(run['params']['out'])}"}
results = results.assign(label=results["run_id"].map(names))
if results["run_id"].nunique() < 2:
    st.info(f"Training run #{train_run}'s evaluations #{before_run} and #{after_run} are no longer both in the store.")
    st.stop()
st.subheader(f"Held-out quality before and after training (run #{train_run}, {run['params']['mode']})")
metric = metric_picker(results, key="train_metric")
show_figure(quality_vs_width(results, metric), key="train_chart")
st.caption(
    f"Final training loss {summary.get('final_loss', float('nan')):.4f}; evaluation runs #{before_run} (before) "
    f"and #{after_run} (after), prefix method at fp32."
)
