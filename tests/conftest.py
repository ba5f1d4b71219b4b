"""Shared fixtures: an isolated results store and cache, and a small precomputed-embedding dataset.

The dataset is generated, not encoded, so tests that need measured rows in the store get them in
seconds: ``seeded_store`` runs the real evaluation and benchmark on it.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mrl_core.data import RetrievalDataset

SYNTHETIC_WIDTH = 64
SYNTHETIC_DOCUMENTS = 2000
SYNTHETIC_QUERIES = 80
SYNTHETIC_WIDTHS = (64, 32, 16, 8)
SYNTHETIC_PRECISIONS = ("fp32", "int8", "binary")
SYNTHETIC_BENCH_SIZES = (2000, 4000, 8000)


def matryoshka_like_vectors(
    documents: int = SYNTHETIC_DOCUMENTS, queries: int = SYNTHETIC_QUERIES, width: int = SYNTHETIC_WIDTH, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm documents and queries whose leading coordinates carry the most variance, like an MRL model's.

    Query i is a noisy copy of document i, so a wider prefix separates it from the others better.
    """
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, width + 1))).astype(np.float32)
    corpus = rng.standard_normal((documents, width)).astype(np.float32) * scale
    noise = rng.standard_normal((queries, width)).astype(np.float32) * scale
    query_matrix = corpus[:queries] + 0.6 * noise
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    query_matrix /= np.linalg.norm(query_matrix, axis=1, keepdims=True)
    return corpus, query_matrix


def matryoshka_like_folder(folder: Path, queries: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """``matryoshka_like_vectors`` saved as a precomputed-embeddings folder (corpus.npy, queries.npy, qrels.tsv:
    query i -> document i) that ``load_dataset`` reads and a verification can reload; returns the vectors."""
    corpus, query_matrix = matryoshka_like_vectors(queries=queries)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "corpus.npy", corpus)
    np.save(folder / "queries.npy", query_matrix)
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{row}\t{row}\t1\n" for row in range(queries)))
    return corpus, query_matrix


def synthetic_embeddings_zip(seed: int = 0, width: int = SYNTHETIC_WIDTH) -> bytes:
    """The synthetic vectors as an uploadable embeddings bundle: corpus.npy, queries.npy, qrels.tsv."""
    corpus, queries = matryoshka_like_vectors(seed=seed, width=width)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, matrix in (("corpus.npy", corpus), ("queries.npy", queries)):
            array_bytes = io.BytesIO()
            np.save(array_bytes, matrix)
            archive.writestr(name, array_bytes.getvalue())
        qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{row}\t{row}\t1\n" for row in range(len(queries)))
        archive.writestr("qrels.tsv", qrels)
    return buffer.getvalue()


@pytest.fixture
def isolated_store(tmp_path, monkeypatch):
    """A fresh ResultStore at $MRL_STORE, with $MRL_CACHE_DIR in the same temporary folder."""
    from mrl_core.store import ResultStore

    monkeypatch.setenv("MRL_STORE", str(tmp_path / "results.duckdb"))
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
    return ResultStore(tmp_path / "results.duckdb")


@pytest.fixture(scope="session")
def synthetic_dataset() -> RetrievalDataset:
    """2,000 precomputed 64-d documents and 80 judged queries (query i -> document i)."""
    corpus, queries = matryoshka_like_vectors()
    return RetrievalDataset(
        name="synthetic",
        source="synthetic",
        corpus_ids=[str(row) for row in range(len(corpus))],
        corpus_texts=None,
        query_ids=[f"q{row}" for row in range(len(queries))],
        query_texts=None,
        qrels={f"q{row}": {str(row): 1} for row in range(len(queries))},
        corpus_embeddings=corpus,
        query_embeddings=queries,
    )


@pytest.fixture(scope="session")
def seeded_store_file(tmp_path_factory, synthetic_dataset):
    """A store file holding one real evaluation and one real latency benchmark of ``synthetic_dataset``.

    Built once per session (the first evaluation imports sentence-transformers); tests get copies.
    """
    from mrl_core.bench import run_bench
    from mrl_core.evaluate import run_evaluation
    from mrl_core.store import ResultStore

    path = tmp_path_factory.mktemp("seeded") / "results.duckdb"
    store = ResultStore(path)
    run_evaluation(
        synthetic_dataset, "precomputed", widths=SYNTHETIC_WIDTHS, precisions=SYNTHETIC_PRECISIONS,
        methods=("prefix", "pca"), store=store,
    )
    run_bench(
        synthetic_dataset.corpus_embeddings, widths=SYNTHETIC_WIDTHS, corpus_sizes=SYNTHETIC_BENCH_SIZES,
        query_embeddings=synthetic_dataset.query_embeddings, query_count=30, store=store,
        run_fields={
            "model": "precomputed", "dataset": "synthetic", "dataset_fingerprint": synthetic_dataset.fingerprint
        },
    )
    return path


@pytest.fixture
def seeded_store(isolated_store, seeded_store_file):
    """The isolated store, starting as a copy of ``seeded_store_file``."""
    shutil.copyfile(seeded_store_file, isolated_store.path)
    return isolated_store
