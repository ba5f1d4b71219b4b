"""The widgets pages share: data and model pickers, metric pickers, tables, the recommendation card, charts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.labels import METRIC_LABELS, available_metrics, trained_model_label
from app.state import cached_dataset, cached_upload
from mrl_core.data import DatasetError, RetrievalDataset
from mrl_core.funnel import Funnel
from mrl_core.models import is_adaptor
from mrl_core.store import ResultStore

BUILTIN_SOURCES = ("builtin:quick", "builtin")
"""Built-in datasets the pickers offer: the quick one first, because the first screen uses it."""
SOURCE_LABELS = {"builtin:quick": "Built-in (quick)", "builtin": "Built-in (full)", "upload": "Upload a file"}


# -- data and models ---------------------------------------------------------------------------------------------
def dataset_source_picker(
    key: str, *, allow_upload: bool = True, help_upload: str | None = None
) -> RetrievalDataset | None:
    """Built-in data or an uploaded file, loaded; shows the library's message and returns None on a bad file."""
    choices = list(BUILTIN_SOURCES) + (["upload"] if allow_upload else [])
    source = st.segmented_control(
        "Data", choices, default=choices[0], format_func=SOURCE_LABELS.get, key=f"{key}_source", required=True
    )
    if source != "upload":
        try:
            return cached_dataset(source)
        except (DatasetError, ValueError, OSError) as error:
            st.error(f"Could not load {source}: {error}")
            return None
    uploaded = st.file_uploader(
        "Dataset file",
        key=f"{key}_upload",
        help=help_upload
        or "A BEIR folder as .zip, a table of (query, positive) pairs, a plain corpus, or precomputed embeddings.",
    )
    if uploaded is None:
        st.info("Choose a file to upload.")
        return None
    try:
        return cached_upload(uploaded.name, uploaded.getvalue())
    except (DatasetError, ValueError, OSError) as error:
        st.error(str(error))
        return None


def dataset_summary(dataset: RetrievalDataset) -> None:
    """What was loaded: name and kind on one line, then the counts."""
    summary = dataset.summary()
    if summary["precomputed"]:
        kind = f"precomputed embeddings, {dataset.corpus_embeddings.shape[1]} dims"
    else:
        kind = "texts"
    st.markdown(f"**{summary['name']}** ({kind})")
    columns = st.columns(4)
    columns[0].metric("Documents", f"{summary['corpus_size']:,}")
    columns[1].metric("Queries", f"{summary['queries']:,}")
    columns[2].metric("Judged queries", f"{summary['judged_queries']:,}")
    columns[3].metric("Training pairs", f"{summary['train_pairs']:,}")


def model_picker(store: ResultStore, dataset: RetrievalDataset, key: str, label: str = "Model") -> str:
    """A selectbox of the models that can embed this dataset: 'base' or 'precomputed', plus trained ones."""
    if dataset.is_precomputed:
        first = {"precomputed": "The uploaded embeddings"}
    else:
        first = {"base": "all-MiniLM-L6-v2 (base)"}
    trained = store.trained_models()
    if dataset.is_precomputed:
        # Only an adaptor can sit on top of embeddings that came without their encoder.
        trained = [model for model in trained if is_adaptor(model["model"])]
    options = {**first, **{model["model"]: trained_model_label(model) for model in trained}}
    return st.selectbox(label, list(options), format_func=options.get, key=key)


# -- results -----------------------------------------------------------------------------------------------------
def metric_picker(results: pd.DataFrame, key: str, label: str = "Metric") -> str:
    """A selectbox over the metrics the rows hold, nDCG@10 first when there is one."""
    return st.selectbox(label, available_metrics(results), format_func=METRIC_LABELS.get, key=key)


def precision_picker(results: pd.DataFrame, key: str, label: str = "Precision") -> str:
    """A selectbox over the precisions the rows hold, fp32 chosen when there is one."""
    precisions = sorted(results["precision"].unique())
    return st.selectbox(label, precisions, key=key, index=precisions.index("fp32") if "fp32" in precisions else 0)


def results_table(results: pd.DataFrame) -> None:
    """Evaluation rows as a sortable table, metrics to four places."""
    columns = ["method", "width", "precision"] + available_metrics(results) + ["search_ms"]
    config = {metric: st.column_config.NumberColumn(METRIC_LABELS[metric], format="%.4f") for metric in METRIC_LABELS}
    config["search_ms"] = st.column_config.NumberColumn("Search time (ms, all queries)", format="%.1f")
    st.dataframe(results[columns], column_config=config, hide_index=True)


def show_figure(figure, key: str | None = None) -> None:
    """Draw a Plotly figure at the page's width."""
    st.plotly_chart(figure, key=key, config={"displaylogo": False})


# -- the planner's answer ----------------------------------------------------------------------------------------
CANDIDATE_COLUMNS = {
    "label": "Configuration",
    "why": st.column_config.TextColumn("Why it fails", width="large"),
    "storage_gb": st.column_config.NumberColumn("Storage (GB)", format="%.3g"),
    "p95_ms": st.column_config.NumberColumn("p95 (ms)", format="%.3g"),
    "ndcg_at_10": st.column_config.NumberColumn("nDCG@10", format="%.4f"),
    "retention": st.column_config.NumberColumn("% of full", format="percent"),
    "ram_gb": st.column_config.NumberColumn("RAM (GB)", format="%.3g"),
    "latency_basis": "Latency basis",
}


def candidates_table(candidates: pd.DataFrame, key: str) -> None:
    """Planner candidates with storage, latency, quality and the targets each misses."""
    frame = candidates.assign(why=candidates["reasons"].map(lambda reasons: "; ".join(reasons) or "meets every target"))
    st.dataframe(frame[list(CANDIDATE_COLUMNS)], column_config=CANDIDATE_COLUMNS, hide_index=True, key=key, height=300)


def _margin_text(margin: dict | None, unit: str, *, upper: bool) -> str | None:
    if not margin or margin["margin"] is None:
        return None
    amount = margin["margin"]
    value = f"{amount:.3g} {unit}".strip() if unit else f"{amount:.4f}"
    return f"{value} {'under' if upper else 'above'} target"


def recommendation_card(planner) -> None:
    """The chosen configuration with its margins, or the closest misses and what to relax."""
    chosen = planner.recommendation_
    if chosen is None:
        st.error("No configuration meets every target.", icon=":material/block:")
        closest = planner.closest_ or {}
        for relax in closest.get("relax", []):
            st.markdown(f"- {relax['text']}")
        if closest.get("candidates") is not None and len(closest["candidates"]):
            st.markdown("**Closest candidates**")
            candidates_table(closest["candidates"], key="closest_candidates")
        return
    margins = chosen["margins"]
    if chosen["kind"] == "funnel":
        # The planner's label, "funnel " + ``Funnel.describe()``: every stage's width, index and shortlist.
        headline = chosen["label"]
    else:
        headline = (
            f"{chosen['width']} dims · {chosen['precision']} · {chosen['index_type']} index ({chosen['method']})"
        )
    with st.container(border=True, key="recommendation"):
        st.markdown(f"#### Recommended: {headline}")
        columns = st.columns(4)
        columns[0].metric("Width", f"{chosen['width']} dims", help=f"Method: {chosen['method']}")
        columns[1].metric(
            "Storage", f"{chosen['storage_gb']:.3g} GB", _margin_text(margins.get("max_storage_gb"), "GB", upper=True),
            help=f"RAM {chosen['ram_gb']:.3g} GB; {chosen['rescore_location'] or 'no'} rescoring vectors",
        )
        columns[2].metric(
            "p95 latency", "not measured" if chosen["p95_ms"] is None else f"{chosen['p95_ms']:.3g} ms",
            _margin_text(margins.get("max_p95_ms"), "ms", upper=True), help=chosen["latency_basis"],
        )
        if margins.get("min_retention") and margins["min_retention"]["margin"] is not None:
            quality_margin = f"{100 * margins['min_retention']['margin']:.1f} points above the floor"
        else:
            quality_margin = _margin_text(margins.get("min_ndcg"), "", upper=False)
        columns[3].metric(
            "nDCG@10", "not measured" if chosen["ndcg_at_10"] is None else f"{chosen['ndcg_at_10']:.4f}",
            quality_margin,
            help=chosen["quality_source"],
        )
        details = [f"Latency: {chosen['latency_basis']}.", f"Quality: {chosen['quality_source']}."]
        if chosen["retention"] is not None:
            details.insert(0, f"Keeps {chosen['retention']:.1%} of full-width nDCG@10.")
        st.caption(" ".join(details))


# -- funnels -----------------------------------------------------------------------------------------------------
TUNED_FUNNEL_COLUMNS = {
    "funnel": "funnel",
    "recall_at_10": st.column_config.NumberColumn("recall@k", format="%.3f"),
    "p50_ms": st.column_config.NumberColumn("p50 (ms)", format="%.3f"),
    "p95_ms": st.column_config.NumberColumn("p95 (ms)", format="%.3f"),
    "speedup": st.column_config.NumberColumn("speedup", format="%.2f×"),
    "meets_target": "meets_target",
    "on_frontier": "on_frontier",
    "chosen": "chosen",
}


def tuned_funnels_table(funnel_rows: pd.DataFrame) -> None:
    """A tuning run's ``funnels`` rows, fastest first: each funnel as ``Funnel.describe()`` names it."""
    frame = funnel_rows.assign(
        funnel=funnel_rows["stages"].map(lambda stages: Funnel.from_dicts(stages).describe()),
        meets_target=funnel_rows["details"].map(lambda details: details["meets_target"]),
    )
    st.dataframe(
        frame[list(TUNED_FUNNEL_COLUMNS)].sort_values("p50_ms"), hide_index=True, column_config=TUNED_FUNNEL_COLUMNS
    )
