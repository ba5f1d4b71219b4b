"""The widgets pages share: data and model pickers, metric pickers, tables, the recommendation card, charts."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import streamlit as st

from app.jobs import show_job, shown_job, submit_job
from app.labels import METRIC_LABELS, available_metrics, format_count, trained_model_label
from app.state import cached_dataset, cached_local_dataset, cached_upload, saved_upload
from mrl_core.data import DatasetError, RetrievalDataset, allowed_data_roots, builtin_is_built, check_local_path
from mrl_core.encode import embeddings_cached
from mrl_core.funnel import Funnel
from mrl_core.models import is_adaptor
from mrl_core.store import ResultStore

BUILTIN_SOURCES = ("builtin:quick", "builtin", "builtin:large")
"""Built-in datasets the pickers offer, smallest first: the quick one is the default, the first screen uses it."""
SOURCE_LABELS = {
    "builtin:quick": "Built-in (quick)",
    "builtin": "Built-in (full)",
    "builtin:large": "Built-in (large: dictionary)",
    "upload": "Upload a file",
    "path": "A file on this machine",
}


# -- data and models ---------------------------------------------------------------------------------------------
class PickedData(NamedTuple):
    """The data a page works on: loaded here, and named as a background job's ``--data`` names it."""

    dataset: RetrievalDataset
    source: str
    """A built-in name ('builtin:quick', ...), the path an upload was saved to (``app.state.saved_upload``), or the
    checked path of a file on this machine."""


def dataset_source_picker(
    key: str, *, allow_upload: bool = True, help_upload: str | None = None, default: str = BUILTIN_SOURCES[0]
) -> PickedData | None:
    """Built-in data, an uploaded file or a file on this machine, loaded; shows the library's message and returns
    None on a bad file or path."""
    choices = list(BUILTIN_SOURCES) + (["upload", "path"] if allow_upload else [])
    source = st.segmented_control(
        "Data", choices, default=default, format_func=SOURCE_LABELS.get, key=f"{key}_source", required=True,
        persist_state="session",
    )
    if source == "path":
        return _local_file_picker(key)
    if source != "upload":
        try:
            return PickedData(cached_dataset(source), source)
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
    content = uploaded.getvalue()
    try:
        dataset = cached_upload(uploaded.name, content)
        # On disk too: a background job runs in a process of its own and loads the file by its path.
        return PickedData(dataset, str(saved_upload(uploaded.name, content)))
    except (DatasetError, ValueError, OSError) as error:
        st.error(str(error))
        return None


def _local_file_picker(key: str) -> PickedData | None:
    """A dataset named by its path on this machine: for corpora past the upload limit, read where they lie."""
    roots = allowed_data_roots()
    path_text = st.text_input(
        "Path on this machine",
        key=f"{key}_path",
        placeholder=str(roots[0] / "data" / "scifact") if roots else "",
        help="A BEIR folder or .zip, a pairs or corpus table, a .txt, or embeddings (.npy, .parquet or a folder), "
        f"inside {', '.join(str(root) for root in roots)} (set MRL_DATA_ROOTS to change).",
    )
    if not path_text.strip():
        st.info(f"Type the path of a dataset inside {', '.join(str(root) for root in roots)}.")
        return None
    try:
        path = check_local_path(path_text, roots)
        return PickedData(cached_local_dataset(str(path), path.stat().st_mtime_ns), str(path))
    except (DatasetError, ValueError, OSError) as error:
        st.error(str(error))
        return None


def largest_ready_source(model: str = "base") -> str:
    """The largest built-in dataset already built and encoded by ``model``: nothing to wait for on a page."""
    for source in reversed(BUILTIN_SOURCES):
        if builtin_is_built(source) and embeddings_cached(cached_dataset(source), model):
            return source
    return BUILTIN_SOURCES[0]


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
    return st.selectbox(label, list(options), format_func=options.get, key=key, persist_state="session")


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
    "machines": st.column_config.NumberColumn(
        "Machines", format="%d", help="shards x replicas; empty: fits no machine of this size"
    ),
    "latency_basis": "Latency basis",
    "verified_text": "Verified here",
}


def verified_text(verified: dict | None) -> str:
    """A candidate's verification on this machine in a few words: measured p95 against predicted, and where."""
    if not verified:
        return ""
    ratio = f"p95 x{verified['ratio_p95']:.2f} of predicted" if verified.get("ratio_p95") else "p95 not predicted"
    return f"{ratio} at {verified['corpus_size']:,} vectors"


def candidates_table(candidates: pd.DataFrame, key: str) -> None:
    """Planner candidates with storage, latency, quality, the targets each misses and any verification here."""
    frame = candidates.assign(why=candidates["reasons"].map(lambda reasons: "; ".join(reasons) or "meets every target"))
    verified = frame["verified"] if "verified" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    frame = frame.assign(verified_text=verified.map(verified_text))
    st.dataframe(frame[list(CANDIDATE_COLUMNS)], column_config=CANDIDATE_COLUMNS, hide_index=True, key=key, height=300)


def _margin_text(margin: dict | None, unit: str, *, upper: bool) -> str | None:
    if not margin or margin["margin"] is None:
        return None
    amount = margin["margin"]
    value = f"{amount:.3g} {unit}".strip() if unit else f"{amount:.4f}"
    return f"{value} {'under' if upper else 'above'} target"


def latency_label(candidate: dict) -> str:
    """'p95 latency', marked as projected with the projection's held-out error when it was not measured."""
    if not candidate.get("latency_projected"):
        return "p95 latency"
    error = candidate.get("latency_error")
    return f"p95 latency (projected, error {'unknown' if error is None else f'{error:.0%}'})"


def shard_text(candidate: dict, replicas: int, machine_ram_gb: float) -> str:
    """How a candidate that does not fit one machine is split: shards, replicas, machines and the merge."""
    merge_ms = candidate.get("merge_ms")
    merge = "" if merge_ms is None else f" + a {merge_ms:.3g} ms merge of every shard's top 10"
    return (
        f":material/dns: **Sharded**: {candidate['shards']:,} shards × {replicas} "
        f"{'replica' if replicas == 1 else 'replicas'} = **{candidate['machines']:,} machines** of "
        f"{machine_ram_gb:.3g} GB, {candidate['per_shard_corpus_size']:,} vectors and "
        f"{candidate['ram_bytes_per_shard'] / 1e9:.3g} GB of RAM a shard. p95 = one shard's search{merge}; "
        "network time between machines is not included."
    )


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
            latency_label(chosen), "not measured" if chosen["p95_ms"] is None else f"{chosen['p95_ms']:.3g} ms",
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
        details = [
            f"Decided by: {chosen['decided_by']['text']}", f"Latency: {chosen['latency_basis']}.",
            f"Quality: {chosen['quality_source']}.",
        ]
        if chosen["retention"] is not None:
            details.insert(0, f"Keeps {chosen['retention']:.1%} of full-width nDCG@10.")
        st.caption(" ".join(details))
        if (chosen.get("shards") or 1) > 1:
            st.markdown(shard_text(chosen, planner.deployment.replicas, planner.machine_.ram_gb))
        verified = chosen.get("verified")
        if verified:
            st.markdown(
                f":material/verified: **Verified on this machine**: {verified_text(verified)} "
                f"(measured {verified['measured_p95_ms']:.3g} ms)."
            )


def verify_command(planner) -> list[str]:
    """``recommend ... --verify`` with the planner's corpus size, targets, deployment, machine and evaluated data:
    the command that picks the same recommendation and builds it on this machine."""
    context = planner.context_
    argv = ["recommend", "--corpus-size", str(planner.corpus_size)]
    for flag, value in (
        ("--max-storage-gb", planner.max_storage_gb), ("--max-ram-gb", planner.max_ram_gb),
        ("--max-p95-ms", planner.max_p95_ms), ("--min-ndcg", planner.min_ndcg),
        ("--min-retention", planner.min_retention),
    ):
        if value is not None:
            argv += [flag, repr(float(value))]
    deployment, machine = planner.deployment, planner.machine_
    return argv + [
        "--replicas", str(deployment.replicas), "--vendor", deployment.vendor,
        "--rescore-location", deployment.rescore_location, "--objective", planner.objective,
        "--machine-ram-gb", repr(machine.ram_gb), "--machine-cores", str(machine.cores),
        "--dataset", context["dataset_fingerprint"], "--model", context["model"], "--verify",
    ]


def stored_verification(store: ResultStore, run_id: int) -> dict | None:
    """A stored verification as ``verify_pick`` returned it: its row with the details stored beside it."""
    rows = store.rows("verifications", int(run_id))
    if rows.empty:
        return None
    row = rows.iloc[0].to_dict()
    details = row.pop("details") or {}
    return {**row, **details, "run_id": int(run_id)}


def verification_panel(store: ResultStore, planner) -> None:
    """The 'Verify on this machine' button under the recommendation (a background job), its progress, and the
    stored verification of the pick: predicted next to measured."""
    chosen = planner.recommendation_
    context = planner.context_
    title = f"Verifying {chosen['label']} at {format_count(planner.corpus_size)} vectors on this machine"
    job = shown_job(
        "planner_verify_job", "recommend", {"--dataset": context["dataset_fingerprint"], "--model": context["model"]}
    )
    verifying = show_job(job, title)
    if not verifying and st.button(
        "Verify on this machine", key="planner_verify", icon=":material/speed:",
        help="Build the recommendation at the planned corpus size (or the largest that fits in memory) from rows "
        "matched to the evaluated data, time single queries and measure recall against exact search. Runs as a "
        "background job: the page stays usable.",
    ):
        job_id = submit_job(verify_command(planner), title)
        if job_id is not None:
            st.session_state["planner_verify_job"] = job_id
            st.rerun()
    verified = chosen.get("verified")
    verification = stored_verification(store, verified["run_id"]) if verified else None
    if verification is not None:
        verification_result(verification)


def verification_result(verification: dict) -> None:
    """Predicted next to measured (p50, p95, recall), whether the size was capped, and the stand-in check."""
    if verification["capped_from"]:
        st.info(f"Capped: {verification['cap_reason']}.", icon=":material/memory:")
    if verification["sharding"]:
        st.caption(f"Sharded: {verification['sharding']}.")
    rows = [
        ("p50 latency (ms)", verification["predicted_p50_ms"], verification["measured_p50_ms"], verification["ratio_p50"]),
        ("p95 latency (ms)", verification["predicted_p95_ms"], verification["measured_p95_ms"], verification["ratio_p95"]),
        ("recall@10", verification["predicted_recall_at_10"], verification["measured_recall_at_10"], None),
    ]
    st.dataframe(
        pd.DataFrame(rows, columns=["measure", "predicted", "measured", "measured / predicted"]),
        hide_index=True, key="planner_verification_table",
        column_config={
            "predicted": st.column_config.NumberColumn(format="%.4g"),
            "measured": st.column_config.NumberColumn(format="%.4g"),
            "measured / predicted": st.column_config.NumberColumn(format="%.2f×"),
        },
    )
    setup = verification["setup"]
    notes = [
        f"Built at {verification['corpus_size']:,} vectors; predictions at {verification['predicted_at']}.",
        f"Recall against {verification['recall_reference']}"
        + (f"; predicted from {verification['predicted_recall_source']}." if verification["predicted_recall_source"] else "."),
        (
            f"FAISS {setup['faiss_version']}, {setup['threads']} thread(s), one query per call, "
            f"{setup['query_count']} queries; load average {setup['load_average_1m'][0]:.2f}."
        ),
    ]
    check = verification["stand_in_check"]
    notes.append(f"Stand-in check {check['text']}." if check else "Every row was a real row.")
    st.caption(" ".join(notes))


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
