"""What every page shares: cached loaders (store, datasets, uploads), progress bars, pickers, chart display.

Pages call these and mrl_core; nothing here computes a number the library does not.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st

from mrl_core.data import DatasetError, RetrievalDataset, load_dataset, load_uploaded
from mrl_core.paths import default_store_path
from mrl_core.store import ResultStore

BUILTIN_SOURCES = ("builtin:quick", "builtin")
"""Built-in datasets the pickers offer: the quick one first, because the first screen uses it."""

CORPUS_SIZES = (
    10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000, 300_000_000,
    1_000_000_000,
)
"""Corpus sizes the planner's slider offers: a log scale from ten thousand to a billion vectors."""

FIRST_START_SOURCE = "builtin:quick"
FIRST_START_MODEL = "base"
FIRST_START_WIDTHS = (384, 256, 128, 64, 32, 16, 8)
BENCH_CORPUS_SIZES = (10_000, 30_000, 100_000)
"""Sizes the app benchmarks at: three, so latency projected to larger corpora comes with a held-out error."""
BENCH_QUERY_COUNT = 50
BENCH_HNSW_MAX_CORPUS_SIZE = 30_000
"""HNSW builds dominate a benchmark; two sizes still give it a scaling fit."""

STANDARD_WIDTHS = (1024, 768, 512, 256, 128, 64, 32, 16, 8)

METRIC_LABELS = {
    "ndcg_at_10": "nDCG@10",
    "recall_at_10": "Recall@10",
    "recall_at_100": "Recall@100",
    "mrr_at_10": "MRR@10",
    "fidelity_at_10": "Fidelity@10 (overlap with full width)",
    "retention": "Retention (% of full-width nDCG@10)",
}


# -- cached resources --------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _store_at(path: str) -> ResultStore:
    return ResultStore(path)


def results_store() -> ResultStore:
    """The store the CLI shares ($MRL_STORE or the default), one object per file path."""
    # Keyed on the path so a changed $MRL_STORE (tests, a second store) gets its own object.
    return _store_at(str(default_store_path()))


@st.cache_resource(show_spinner=False)
def job_lock() -> threading.Lock:
    """One lock for the whole server: two browser tabs must not start the same long job twice."""
    return threading.Lock()


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=8)
def cached_dataset(source: str) -> RetrievalDataset:
    """``load_dataset(source)`` once per server process."""
    return load_dataset(source)


@st.cache_resource(
    show_spinner="Reading the upload…", max_entries=4, hash_funcs={bytes: lambda b: hashlib.sha256(b).hexdigest()}
)
def cached_upload(filename: str, content: bytes) -> RetrievalDataset:
    """``load_uploaded(filename, content)`` once per distinct file."""
    return load_uploaded(filename, content)


# -- first start -------------------------------------------------------------------------------------------------
def ensure_first_start(store: ResultStore) -> None:
    """On a store with no evaluation or no latency rows, measure the built-in data, with progress.

    Evaluates ``builtin:quick`` with the base model at every standard width and precision, then benchmarks
    latency at three corpus sizes. Later starts find both in the store and return at once.
    """
    if store.latest_run("evaluate") is not None and store.latest_run("bench") is not None:
        return
    with job_lock():
        # Another session may have finished the work while this one waited for the lock.
        needs_evaluation = store.latest_run("evaluate") is None
        needs_bench = store.latest_run("bench") is None
        if not (needs_evaluation or needs_bench):
            return
        from mrl_core.bench import run_bench
        from mrl_core.encode import embed_dataset
        from mrl_core.evaluate import run_evaluation
        from mrl_core.widths import METHODS, PRECISIONS

        title = "First start: measuring the built-in data (later starts read the store)"
        with st.status(title, expanded=True) as status:
            dataset = cached_dataset(FIRST_START_SOURCE)
            st.write(
                f"Built-in data: {dataset.corpus_size:,} documents, {len(dataset.query_ids):,} queries "
                "(API reference search over the installed Python packages)."
            )
            evaluated = store.latest_run("evaluate", model=FIRST_START_MODEL, dataset_fingerprint=dataset.fingerprint)
            if needs_evaluation and evaluated is None:
                run_evaluation(
                    dataset, FIRST_START_MODEL, widths=FIRST_START_WIDTHS, precisions=PRECISIONS, methods=METHODS,
                    store=store, progress=progress_bar("Encoding the built-in data"),
                )
                st.write("Quality measured at every width, precision and method.")
            if needs_bench:
                # Cached on disk by the evaluation; encoded here only when the store was evaluated elsewhere.
                embeddings = embed_dataset(dataset, FIRST_START_MODEL, progress_bar("Embedding the built-in data"))
                run_bench(
                    embeddings.corpus,
                    widths=FIRST_START_WIDTHS,
                    corpus_sizes=BENCH_CORPUS_SIZES,
                    query_embeddings=embeddings.queries,
                    query_count=BENCH_QUERY_COUNT,
                    hnsw_max_corpus_size=BENCH_HNSW_MAX_CORPUS_SIZE,
                    store=store,
                    run_fields={
                        "model": FIRST_START_MODEL,
                        "model_fingerprint": embeddings.model_fingerprint,
                        "dataset": dataset.name,
                        "dataset_fingerprint": dataset.fingerprint,
                    },
                    progress=progress_bar("Benchmarking search latency"),
                )
                st.write(f"Latency measured at {', '.join(format_count(n) for n in BENCH_CORPUS_SIZES)} vectors.")
            status.update(label="Built-in data measured and stored", state="complete", expanded=False)


@st.cache_resource(show_spinner=False)
def _memo() -> dict:
    """Server-wide memo of embeddings and searchers, filled under a progress bar rather than a spinner."""
    return {}


def _remember(key: tuple, compute: Callable[[], object], keep: int = 4):
    memo = _memo()
    if key not in memo:
        memo[key] = compute()
        # Embeddings of a large corpus take hundreds of MB; keep only the latest few.
        while len(memo) > keep:
            memo.pop(next(iter(memo)))
    return memo[key]


def dataset_embeddings(dataset: RetrievalDataset, model: str):
    """Full-width embeddings of a dataset under a model (encoded with a progress bar the first time)."""
    from mrl_core.encode import embed_dataset

    def compute():
        with st.status(f"Embedding {dataset.name} with {model_label(model)}…", expanded=True) as status:
            embeddings = embed_dataset(dataset, model, progress_bar("Encoding (cached on disk afterwards)"))
            status.update(label="Embeddings ready", state="complete", expanded=False)
        return embeddings

    return _remember(("embeddings", dataset.fingerprint, model), compute)


def funnel_searcher(dataset: RetrievalDataset, model: str):
    """A FunnelSearcher over a dataset's embeddings; its indexes are built once and reused by every query."""
    from mrl_core.funnel import FunnelSearcher

    embeddings = dataset_embeddings(dataset, model)
    return _remember(("searcher", dataset.fingerprint, model), lambda: FunnelSearcher(embeddings.corpus))


# -- progress --------------------------------------------------------------------------------------------------
def progress_bar(label: str) -> Callable[[int, int], None]:
    """An st.progress bar and the ``progress(done, total)`` callback that mrl_core jobs report to."""
    bar = st.progress(0.0, text=label)

    def report(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"{label}: {done:,} / {total:,}")

    return report


# -- pickers ---------------------------------------------------------------------------------------------------
def dataset_source_picker(
    key: str, *, allow_upload: bool = True, help_upload: str | None = None
) -> RetrievalDataset | None:
    """Built-in data or an uploaded file, loaded; shows the library's message and returns None on a bad file."""
    choices = list(BUILTIN_SOURCES) + (["upload"] if allow_upload else [])
    labels = {
        "builtin:quick": "Built-in (quick)",
        "builtin": "Built-in (full)",
        "upload": "Upload a file",
    }
    source = st.segmented_control(
        "Data", choices, default=choices[0], format_func=labels.get, key=f"{key}_source", required=True
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


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _model_width(model: str) -> int:
    from mrl_core.encode import model_width

    return model_width(model)


def full_width_of(dataset: RetrievalDataset, model: str) -> int:
    """The widest width a model gives on a dataset: the stored vectors' width, or the encoder's."""
    from mrl_core.encode import is_adaptor

    if dataset.is_precomputed and not is_adaptor(model):
        return int(dataset.corpus_embeddings.shape[1])
    return _model_width(model)


def width_choices(full_width: int) -> list[int]:
    """The full width and the usual Matryoshka widths below it, widest first."""
    return [full_width] + [width for width in STANDARD_WIDTHS if width < full_width]


def trained_models(store: ResultStore) -> dict[str, str]:
    """Models saved by finished train runs that are still on disk: {model spec: label}."""
    models = {}
    for run in store.list_runs("train").to_dict("records"):
        if run["status"] != "finished":
            continue
        spec = (run["params"] or {}).get("out")
        if spec and Path(spec).exists():
            models[spec] = f"{Path(spec).name} (run #{int(run['run_id'])}, trained from {model_label(run['model'])})"
    return models


def model_picker(store: ResultStore, dataset: RetrievalDataset, key: str, label: str = "Model") -> str:
    """A selectbox of the models that can embed this dataset: 'base' or 'precomputed', plus trained ones."""
    from mrl_core.encode import is_adaptor

    if dataset.is_precomputed:
        first = {"precomputed": "The uploaded embeddings"}
    else:
        first = {"base": "all-MiniLM-L6-v2 (base)"}
    trained = trained_models(store)
    if dataset.is_precomputed:
        # Only an adaptor can sit on top of embeddings that came without their encoder.
        trained = {spec: text for spec, text in trained.items() if is_adaptor(spec)}
    options = {**first, **trained}
    return st.selectbox(label, list(options), format_func=options.get, key=key)


def results_table(results: pd.DataFrame) -> None:
    """Evaluation rows as a sortable table, metrics to four places."""
    columns = ["method", "width", "precision"] + available_metrics(results) + ["search_ms"]
    config = {metric: st.column_config.NumberColumn(METRIC_LABELS[metric], format="%.4f") for metric in METRIC_LABELS}
    config["search_ms"] = st.column_config.NumberColumn("Search time (ms, all queries)", format="%.1f")
    st.dataframe(results[columns], column_config=config, hide_index=True)


def shown_run(store: ResultStore, session_key: str, kind: str, dataset: RetrievalDataset) -> int | None:
    """The run a page shows: this session's last run of ``kind`` on the dataset while it still exists,
    else the newest finished one in the store, else None."""
    run_id = st.session_state.get(session_key)
    if run_id is not None:
        try:
            if store.get_run(run_id)["dataset_fingerprint"] == dataset.fingerprint:
                return int(run_id)
        except KeyError:
            # Deleted on the Runs page since.
            pass
    latest = store.latest_run(kind, dataset_fingerprint=dataset.fingerprint)
    return None if latest is None else int(latest["run_id"])


def format_count(count: int) -> str:
    """10_000 -> '10k', 3_000_000 -> '3M', 1_000_000_000 -> '1B'."""
    for divisor, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if count >= divisor:
            return f"{count / divisor:g}{suffix}"
    return f"{count:,}"


def evaluated_pairs(store: ResultStore) -> list[tuple[str, str, str]]:
    """(dataset fingerprint, dataset name, model) of every finished evaluation, newest first."""
    results = store.results()
    results = results[results["status"] == "finished"].sort_values("run_id", ascending=False)
    pairs = results[["dataset_fingerprint", "dataset", "model"]].drop_duplicates(["dataset_fingerprint", "model"])
    return [tuple(str(value) for value in pair) for pair in pairs.itertuples(index=False)]


def model_full_width(model: str, store: ResultStore, dataset_fingerprint: str) -> int:
    """A model's full width: the encoder's, or for 'precomputed' the widest width evaluated on that dataset."""
    if model != "precomputed":
        return _model_width(model)
    results = store.results()
    rows = results[(results["model"] == model) & (results["dataset_fingerprint"] == dataset_fingerprint)]
    return int(rows["width"].max())


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
        if chosen["kind"] == "funnel":
            stages = " → ".join(
                f"{stage['width']} {stage.get('precision', 'fp32')} (keep {stage.get('shortlist_size')})"
                for stage in chosen["stages"]
            )
            details.append(f"Funnel stages: {stages}.")
        st.caption(" ".join(details))


def model_label(model: str | None) -> str:
    """A model spec as people read it: 'base', 'precomputed', or a saved model's folder or file name."""
    if not model:
        return "—"
    return model if model in ("base", "precomputed") else Path(str(model)).name


def run_label(run: dict | pd.Series) -> str:
    """How a run is named in pickers: '#12 evaluate · base · scifact'."""
    return f"#{int(run['run_id'])} {run['kind']} · {model_label(run.get('model'))} · {run.get('dataset') or '—'}"


def available_metrics(results: pd.DataFrame) -> list[str]:
    """The quality columns that hold at least one value (label-free runs have fidelity only)."""
    return [metric for metric in METRIC_LABELS if metric in results and results[metric].notna().any()]


def metric_picker(results: pd.DataFrame, key: str, label: str = "Metric") -> str:
    """A selectbox over the metrics the rows hold, nDCG@10 first when there is one."""
    return st.selectbox(label, available_metrics(results), format_func=METRIC_LABELS.get, key=key)


def show_figure(figure, key: str | None = None) -> None:
    """Draw a Plotly figure at the page's width."""
    st.plotly_chart(figure, key=key, config={"displaylogo": False})
