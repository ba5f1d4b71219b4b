"""Funnel: type a query and watch adaptive retrieval against exact full-width search.

A short prefix shortlists the corpus, wider prefixes of the same stored vectors rerank the shortlist.
The funnel is tuned automatically for a target recall (and stored), or its stages are edited by hand.
"""

import pandas as pd
import streamlit as st

from app.components import (
    dataset_source_picker,
    largest_ready_source,
    model_picker,
    show_figure,
    tuned_funnels_table,
)
from app.jobs import show_job, shown_job, submit_job
from app.labels import format_count, model_label
from app.state import dataset_embeddings, enlarged_searcher, funnel_searcher, results_store
from mrl_core import enlarge
from mrl_core.builtin.gcide import EXAMPLE_QUERIES
from mrl_core.cost import estimate_funnel_storage, estimate_storage
from mrl_core.data import DatasetError, RetrievalDataset
from mrl_core.encode import embeddings_cached, encode_query
from mrl_core.enlarge import check_enlargement_fits, stand_in_check_text
from mrl_core.figures import funnel_stage_times
from mrl_core.funnel import Funnel, live_query, load_tuned_funnel, tuned_comparison, tuned_funnels_by_model
from mrl_core.indexes import FIRST_STAGE_INDEX_TYPES, FIRST_STAGE_PRECISION_CHOICES

# The hand-edited stage table; the first four columns must be filled (probes: ivf only; efSearch: hnsw only).
STAGE_COLUMNS = ["width", "shortlist_size", "index_type", "precision", "probes", "ef_search"]
REQUIRED_STAGE_COLUMNS = STAGE_COLUMNS[:4]
# Above this many documents a corpus the model has not encoded yet is encoded by a background job.
IN_PAGE_ENCODE_LIMIT = 20_000


def example_queries(dataset: RetrievalDataset) -> list[str]:
    """Five queries to try with one click: the large built-in set's descriptions of a word, else five judged queries."""
    if dataset.name == "builtin:large":
        return list(EXAMPLE_QUERIES)
    texts = dict(zip(dataset.query_ids, dataset.query_texts or []))
    return [texts[query_id] for query_id in dataset.judged_query_ids()[:5]]


def comparison_frame(comparison: dict) -> pd.DataFrame:
    """The tuned pick, exact search and the fastest standard index at the target, one row each."""
    sides = [("Tuned funnel", comparison["funnel"]), ("Exact search", comparison["exact"])]
    if comparison["baseline"] is not None:
        sample = comparison["baseline"].get("measured_on_sample")
        name = "Fastest standard index" + (f" (on a {sample['sample_rows']:,}-row sample)" if sample else "")
        sides.append((name, comparison["baseline"]))
    return pd.DataFrame(
        [
            {
                "search": name,
                "configuration": side.get("label"),
                "p50_ms": side.get("p50_ms"),
                "recall_at_10": side.get("recall_at_10"),
                "ram_bytes_per_vector": side.get("ram_bytes_per_vector"),
                "disk_bytes_per_vector": side.get("disk_bytes_per_vector"),
            }
            for name, side in sides
        ]
    )


COMPARISON_COLUMNS = {
    "search": "Search",
    "configuration": "Configuration",
    "p50_ms": st.column_config.NumberColumn("p50 (ms)", format="%.3f"),
    "recall_at_10": st.column_config.NumberColumn("Recall@k", format="%.3f"),
    "ram_bytes_per_vector": st.column_config.NumberColumn("RAM / vector (B)", format="%.0f"),
    "disk_bytes_per_vector": st.column_config.NumberColumn("Disk / vector (B)", format="%.0f"),
}

st.title("Funnel: adaptive retrieval, live")
st.caption(
    "Stage 1 searches the whole corpus with a short prefix; each later stage rescores the shortlist with a "
    "wider prefix of the same stored vectors. Results are compared with exact full-width search."
)
store = results_store()

# A funnel only pays where exact search costs milliseconds: open on the largest corpus that is ready.
picked = dataset_source_picker("funnel", default=largest_ready_source())
if picked is None:
    st.stop()
dataset, source = picked
st.caption(
    f"**{dataset.name}**: {dataset.corpus_size:,} documents, {len(dataset.judged_query_ids()):,} judged test queries."
)
model = model_picker(store, dataset, key="funnel_model")
# Encoding a large corpus takes minutes to an hour on a few cores: a background job does it, never the page.
encoded = embeddings_cached(dataset, model) or dataset.corpus_size <= IN_PAGE_ENCODE_LIMIT

left, middle, right = st.columns([2, 1, 1])
with left:
    mode = st.segmented_control(
        "Funnel", ["auto", "manual"], default="auto", required=True, key="funnel_mode", persist_state="session",
        format_func={"auto": "Auto-tuned for a target recall", "manual": "Stages edited by hand"}.get,
    )
with middle:
    target_recall = st.number_input(
        "Target recall@k", 0.5, 1.0, value=0.99, step=0.01, format="%.2f", key="funnel_target", persist_state="session"
    )
with right:
    k = int(st.number_input("Results (k)", 1, 100, value=10, step=1, key="funnel_k", persist_state="session"))

# Enlarging shows the funnel where it pays: at the sizes a user plans for, with synthetic rows beside the real ones.
sizes = [size for size in enlarge.ENLARGE_SIZES if size > dataset.corpus_size] if mode == "auto" else []
enlarge_to = None
if sizes:
    enlarge_to = st.segmented_control(
        "Corpus", [0, *sizes], default=0, required=True, key="funnel_enlarge", persist_state="session",
        format_func=lambda size: f"Real: {dataset.corpus_size:,} documents" if size == 0
        else f"Enlarged to {size:,} (synthetic distractors)",
    ) or None
tuned = load_tuned_funnel(
    store, model=model, dataset_fingerprint=dataset.fingerprint, target_recall=float(target_recall), k=k,
    enlarged_to=enlarge_to,
)
if (mode == "auto" and tuned is None) or not encoded:
    # Tuning (and the encoding before it) runs as a background job: leaving the page or closing the tab does
    # not stop it.
    tuning_title = f"Tuning the funnel on {dataset.name} with {model_label(model)}"
    tuning_job = shown_job("funnel_job", "funnel", {"--data": source, "--model": model})
    if show_job(tuning_job, tuning_title, "Encodes the corpus if needed, times every candidate funnel, stores the pick."):
        st.stop()
    if not encoded:
        st.info(
            f"{dataset.corpus_size:,} documents are not encoded by {model_label(model)} yet. The tuning job encodes "
            "them first (cached on disk afterwards) and shows its progress and ETA; on 2 cores the 105,377 "
            "definitions of the large built-in set take 25 to 45 minutes."
        )
    elif enlarge_to:
        try:
            check_enlargement_fits(enlarge_to, dataset_embeddings(dataset, model).width)
        except ValueError as error:
            st.warning(f"Not on this machine: {error}.")
            st.stop()
        st.info(
            f"No funnel tuned yet on {dataset.name} enlarged to {enlarge_to:,} rows. The job draws "
            f"{enlarge_to - dataset.corpus_size:,} synthetic rows from a mixture fitted to the corpus's embeddings, "
            "tunes on them with the real ones, and checks the synthetic rows against the real ones at the real "
            "size (same tuner, same queries)."
        )
    else:
        st.info(
            f"No funnel tuned yet for {dataset.name}, this model, recall {target_recall:.2f} and k={k}. Tuning times "
            "every candidate funnel on this machine."
        )
    if st.button("Tune the funnel", type="primary", key="funnel_tune", icon=":material/tune:"):
        job_id = submit_job(
            [
                "funnel", "--data", source, "--model", model, "--target-recall", repr(float(target_recall)),
                "--k", str(k), *(["--enlarge", str(enlarge_to)] if enlarge_to else []),
            ],
            tuning_title + (f", enlarged to {enlarge_to:,} rows" if enlarge_to else ""),
        )
        if job_id is not None:
            st.session_state["funnel_job"] = job_id
            st.rerun()
    st.stop()

try:
    searcher = enlarged_searcher(dataset, model, enlarge_to) if enlarge_to else funnel_searcher(dataset, model)
except (DatasetError, ValueError, OSError) as error:
    st.error(str(error))
    st.stop()
if mode == "auto":
    funnel, tuned_run = tuned
    summary = store.get_run(tuned_run)["summary"] or {}
    st.markdown(
        f"**Tuned funnel** (run #{tuned_run}): `{funnel.describe()}` — measured recall@{k} "
        f"{summary.get('recall_at_10', float('nan')):.3f}, p50 {summary.get('p50_ms', float('nan')):.3f} ms against "
        f"{summary.get('exact_p50_ms', float('nan')):.3f} ms exact."
    )
    comparison = tuned_comparison(store, tuned_run)
    heldout = comparison["heldout"]
    if heldout:
        columns = st.columns(3)
        columns[0].metric(
            f"Recall@{k} on unseen queries", f"{heldout['recall_at_10']:.3f}",
            help=f"Against exact search, on {heldout['query_count']} queries the tuner did not see.",
        )
        columns[1].metric(
            "Speedup on unseen queries", f"{heldout['speedup']:.1f}×",
            help=f"Exact p50 {heldout['exact_p50_ms']:.3f} ms / funnel p50 {heldout['p50_ms']:.3f} ms, one query at a "
            "time, one thread.",
        )
        columns[2].metric("Funnel p95 on unseen queries", f"{heldout['p95_ms']:.3f} ms")
    enlargement = comparison["enlargement"]
    if enlargement:
        st.warning(
            f"{enlargement['synthetic_rows']:,} of these {enlargement['corpus_size']:,} rows are synthetic: drawn from "
            f"a {enlargement['cluster_count']}-component Gaussian mixture fitted to the corpus's embeddings, marked in "
            "the results. How far such rows are from real ones, same tuner and queries: "
            + stand_in_check_text(enlargement["check"]) + ".",
            icon=":material/science:",
        )
    st.dataframe(comparison_frame(comparison), hide_index=True, column_config=COMPARISON_COLUMNS, key="funnel_vs_standard")
    location = comparison["rescore_location"]
    st.caption(
        comparison["verdict"]
        + (f" Faster: {comparison['faster']}; smaller in RAM: {comparison['smaller_in_ram']}." if comparison["faster"] else "")
        + (f" A funnel's rescoring vectors are counted in {location.upper() if location == 'ram' else location}; "
           "latency was measured with them in RAM." if location else "")
    )
    # The Planner's corpus size slider keeps its value across pages (persist_state="session").
    planned = int(st.session_state.get("planner_corpus_size", 1_000_000))
    at_plan = estimate_funnel_storage(planned, funnel.to_dicts())
    exact_at_plan = estimate_storage(planned, searcher.width, "fp32", "flat")
    st.caption(
        f"At the Planner's {format_count(planned)} vectors this funnel keeps {at_plan.ram_gb:.3g} GB in RAM"
        + (f" and {at_plan.disk_bytes / 1e9:.3g} GB on disk" if at_plan.disk_bytes else "")
        + f"; exact full-width fp32 search keeps {exact_at_plan.ram_gb:.3g} GB (FAISS, one replica). "
        "Its latency at that size is the Planner's to project."
    )
    with st.expander("Every funnel the tuner measured"):
        tuned_funnels_table(store.rows("funnels", tuned_run))
    by_model = tuned_funnels_by_model(
        store, dataset_fingerprint=dataset.fingerprint, target_recall=float(target_recall), k=k
    )
    if len(by_model) > 1 and not enlarge_to:
        st.markdown("**Every model tuned on this corpus** (pick one under Model to search with it)")
        st.dataframe(
            pd.DataFrame(by_model).assign(model=lambda frame: frame["model"].map(model_label)).drop(columns="run_id"),
            hide_index=True, key="funnel_by_model",
            column_config={
                "model": "Model",
                "pick": "Tuned funnel",
                "p50_ms": st.column_config.NumberColumn("p50 (ms)", format="%.3f"),
                "exact_p50_ms": st.column_config.NumberColumn("Exact p50 (ms)", format="%.3f"),
                "heldout_recall_at_10": st.column_config.NumberColumn("Recall@k, unseen queries", format="%.3f"),
                "heldout_speedup": st.column_config.NumberColumn("Speedup, unseen queries", format="%.1f×"),
            },
        )
else:
    start = tuned[0] if tuned else Funnel.reference(searcher.width, k)
    st.caption(
        "Stage 1 may be flat (fp32, fp16 or int8 codes), binary, hnsw (fp32, keeping efSearch candidates) or ivf "
        "(fp32, probing the given number of lists); later stages rescore in fp32 and must be flat fp32. Add or "
        "delete rows."
    )
    edited = st.data_editor(
        pd.DataFrame(start.to_dicts()).reindex(columns=STAGE_COLUMNS),
        num_rows="dynamic",
        key="funnel_stages",
        column_config={
            "width": st.column_config.NumberColumn(
                "Width", min_value=1, max_value=searcher.width, step=1, required=True
            ),
            "shortlist_size": st.column_config.NumberColumn("Keep (shortlist)", min_value=1, step=1, required=True),
            "index_type": st.column_config.SelectboxColumn(
                "Index", options=list(FIRST_STAGE_INDEX_TYPES), required=True, default="flat"
            ),
            "precision": st.column_config.SelectboxColumn(
                "Precision", options=list(FIRST_STAGE_PRECISION_CHOICES), required=True, default="fp32"
            ),
            "probes": st.column_config.NumberColumn("Lists probed (ivf)", min_value=1, step=1),
            "ef_search": st.column_config.NumberColumn("efSearch (hnsw)", min_value=1, step=1),
        },
    )
    complete = edited.dropna(subset=REQUIRED_STAGE_COLUMNS).astype(object)
    try:
        funnel = Funnel.from_dicts(complete.where(complete.notna(), None).to_dict("records"))
        if funnel.k < k:
            raise ValueError(f"the last stage keeps {funnel.k} rows; it must keep at least k={k}")
    except (ValueError, KeyError, TypeError) as error:
        st.error(f"These stages do not make a funnel: {error}")
        st.stop()

if dataset.is_precomputed:
    embeddings = dataset_embeddings(dataset, model)
    if len(embeddings.queries) == 0:
        st.warning("This dataset has document vectors only; upload query vectors to search with.")
        st.stop()
    row = st.selectbox(
        "Query (from the dataset's query vectors)", range(len(embeddings.queries)),
        format_func=lambda position: dataset.query_ids[position], key="funnel_query_row",
    )
    query_vector = embeddings.queries[row]
else:
    examples = example_queries(dataset)
    st.session_state.setdefault("funnel_query", examples[0] if examples else "")
    st.pills(
        "Examples", examples, key="funnel_example",
        on_change=lambda: st.session_state.update(funnel_query=st.session_state["funnel_example"] or ""),
    )
    query_text = st.text_input("Query", key="funnel_query")
    if not query_text.strip():
        st.info("Type a query.")
        st.stop()
    try:
        query_vector = encode_query(model, query_text)
    except ValueError as error:
        st.error(str(error))
        st.stop()

try:
    result = live_query(searcher, query_vector, funnel, k=k)
except ValueError as error:
    st.error(str(error))
    st.stop()

columns = st.columns(4)
columns[0].metric("Funnel", f"{result['funnel_ms']:.3f} ms")
columns[1].metric("Exact full width", f"{result['exact_ms']:.3f} ms")
columns[2].metric("Speedup", "—" if result["speedup"] is None else f"{result['speedup']:.2f}×")
columns[3].metric(f"Overlap@{k}", f"{result['overlap_at_k']:.0%}")
show_figure(funnel_stage_times(result), key="funnel_times")
synthetic_rows = searcher.corpus_size - dataset.corpus_size
st.caption(
    f"Median of 5 runs each, one query, {searcher.corpus_size:,} rows"
    + (f" ({synthetic_rows:,} of them synthetic)" if synthetic_rows else "")
    + f" at full width {searcher.width}."
)


def result_frame(ids: list[int], scores: list[float], other_ids: list[int]) -> pd.DataFrame:
    """One ranked list as a table: document, score, whether the other list has it too, and its text."""
    real = dataset.corpus_size
    frame = pd.DataFrame(
        {
            "rank": range(1, len(ids) + 1),
            "document": [
                "—" if i < 0 else dataset.corpus_ids[i] if i < real else f"synthetic distractor #{i - real + 1:,}"
                for i in ids
            ],
            "score": scores,
            "in both": [i in other_ids for i in ids],
        }
    )
    if dataset.corpus_texts:
        frame["text"] = [dataset.corpus_texts[i][:160] if 0 <= i < real else "" for i in ids]
    return frame


funnel_column, exact_column = st.columns(2)
score_format = {"score": st.column_config.NumberColumn("score", format="%.4f")}
with funnel_column:
    st.markdown(f"**Funnel** `{funnel.describe()}`")
    st.dataframe(result_frame(result["funnel_ids"], result["funnel_scores"], result["exact_ids"]), hide_index=True,
                 column_config=score_format, key="funnel_results")
with exact_column:
    st.markdown(f"**Exact search** at {searcher.width} dims")
    st.dataframe(result_frame(result["exact_ids"], result["exact_scores"], result["funnel_ids"]), hide_index=True,
                 column_config=score_format, key="exact_results")
