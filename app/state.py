"""What the server keeps between reruns and sessions: the store, loaded datasets and uploads (in memory, and on
disk for the jobs that read them), embeddings and searchers, and which run a page shows."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import streamlit as st

from app.labels import model_label
from app.progress import progress_bar
from mrl_core.data import RetrievalDataset, load_dataset, load_uploaded
from mrl_core.encode import DatasetEmbeddings, embed_dataset
from mrl_core.enlarge import enlarged_corpus
from mrl_core.funnel import FunnelSearcher
from mrl_core.paths import cache_dir, default_store_path
from mrl_core.store import ResultStore


@st.cache_resource(show_spinner=False)
def _store_at(path: str) -> ResultStore:
    return ResultStore(path)


def results_store() -> ResultStore:
    """The store the CLI shares ($MRL_STORE or the default), one object per file path."""
    # Keyed on the path so a changed $MRL_STORE (tests, a second store) gets its own object.
    return _store_at(str(default_store_path()))


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=8)
def cached_dataset(source: str) -> RetrievalDataset:
    """``load_dataset(source)`` once per server process."""
    return load_dataset(source)


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=4)
def cached_local_dataset(path: str, modified_ns: int) -> RetrievalDataset:
    """``load_dataset(path)`` once per path and modification time (a changed file is read again)."""
    return load_dataset(path)


@st.cache_resource(
    show_spinner="Reading the upload…", max_entries=4, hash_funcs={bytes: lambda b: hashlib.sha256(b).hexdigest()}
)
def cached_upload(filename: str, content: bytes) -> RetrievalDataset:
    """``load_uploaded(filename, content)`` once per distinct file."""
    return load_uploaded(filename, content)


def saved_upload(filename: str, content: bytes) -> Path:
    """An upload as a file a background job can load: ``<cache>/uploads/<content hash>/<file name>``.

    Written once per distinct content (a partial file, then renamed, so a job never reads half of it); the
    same bytes under the same name always give the same path, so a page can find the jobs that read it.
    """
    name = Path(filename.replace("\\", "/")).name or "upload"
    folder = cache_dir() / "uploads" / hashlib.sha256(content).hexdigest()[:16]
    path = folder / name
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        # A partial file of its own per writer: two sessions may save the same upload at once.
        handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.replace(partial, path)
    return path


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


def dataset_embeddings(dataset: RetrievalDataset, model: str) -> DatasetEmbeddings:
    """Full-width embeddings of a dataset under a model (encoded with a progress bar the first time)."""

    def compute():
        with st.status(f"Embedding {dataset.name} with {model_label(model)}…", expanded=True) as status:
            embeddings = embed_dataset(dataset, model, progress_bar("Encoding (cached on disk afterwards)"))
            status.update(label="Embeddings ready", state="complete", expanded=False)
        return embeddings

    return _remember(("embeddings", dataset.fingerprint, model), compute)


def enlarged_searcher(dataset: RetrievalDataset, model: str, corpus_size: int) -> FunnelSearcher:
    """A FunnelSearcher over the dataset's embeddings enlarged to ``corpus_size`` rows, as the tuning job made them."""
    embeddings = dataset_embeddings(dataset, model)

    def compute():
        with st.spinner(f"Loading {corpus_size:,} rows…"):
            return FunnelSearcher(enlarged_corpus(embeddings.corpus, corpus_size)[0])

    return _remember(("searcher", dataset.fingerprint, model, corpus_size), compute)


def funnel_searcher(dataset: RetrievalDataset, model: str) -> FunnelSearcher:
    """A FunnelSearcher over a dataset's embeddings; its indexes are built once and reused by every query."""
    embeddings = dataset_embeddings(dataset, model)
    return _remember(("searcher", dataset.fingerprint, model), lambda: FunnelSearcher(embeddings.corpus))


def shown_run(store: ResultStore, session_key: str, kind: str, dataset: RetrievalDataset) -> int | None:
    """The run a page shows: this session's last run of ``kind`` on the dataset while it still exists, else the
    run a results link from the Runs page names (``?run=N``), else the newest finished one in the store, else None."""
    linked = st.query_params.get("run")
    for run_id in (st.session_state.get(session_key), int(linked) if linked and linked.isdigit() else None):
        if run_id is None:
            continue
        try:
            run = store.get_run(run_id)
        except KeyError:
            # Deleted on the Runs page since.
            continue
        if run["kind"] == kind and run["dataset_fingerprint"] == dataset.fingerprint:
            return int(run_id)
    latest = store.latest_run(kind, dataset_fingerprint=dataset.fingerprint)
    return None if latest is None else int(latest["run_id"])
