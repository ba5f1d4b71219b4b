"""Encoders and the embedding cache: each text is encoded once, at full width, per model.

Models are named by MODEL specs (``base``, a saved sentence-transformers folder, a saved Matryoshka
adaptor, or ``precomputed``); ``mrl_core.models`` says what each means and fingerprints it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mrl_core.adaptor import load_adaptor
from mrl_core.dataset import RetrievalDataset
from mrl_core.models import base_model_path, is_adaptor, model_fingerprint
from mrl_core.paths import cache_dir
from mrl_core.progress import Progress
from mrl_core.widths import normalise_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ENCODE_CHUNK_SIZE = 2048


_models: dict[str, object] = {}


def load_sentence_transformer(spec: str):
    """Load (once per process) a sentence-transformers model on the CPU, offline."""
    if spec not in _models:
        from sentence_transformers import SentenceTransformer

        path = base_model_path() if spec == "base" else Path(spec)
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ValueError(f"model {spec!r}: {path} is not a saved sentence-transformers folder")
        _models[spec] = SentenceTransformer(str(path), device="cpu")
    return _models[spec]


def encode_texts(spec: str, texts: list[str], progress: Progress | None = None, batch_size: int = 32) -> np.ndarray:
    """Encode texts at full width, L2-normalised float32, reporting progress per chunk."""
    model = load_sentence_transformer(spec)
    chunks = []
    for start in range(0, len(texts), ENCODE_CHUNK_SIZE):
        chunk = texts[start : start + ENCODE_CHUNK_SIZE]
        chunks.append(
            model.encode(chunk, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        )
        if progress is not None:
            progress(min(start + ENCODE_CHUNK_SIZE, len(texts)), len(texts))
    if not chunks:
        return np.zeros((0, model_width(spec)), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def model_width(spec: str) -> int:
    """The full embedding width of a model spec."""
    if is_adaptor(spec):
        return load_adaptor(spec).width
    model = load_sentence_transformer(spec)
    return int(model.get_embedding_dimension())


@dataclass
class DatasetEmbeddings:
    """Full-width, L2-normalised float32 embeddings of a dataset's corpus and queries."""

    corpus: np.ndarray
    queries: np.ndarray
    model: str
    model_fingerprint: str

    @property
    def width(self) -> int:
        return int(self.corpus.shape[1])


def cached_matrix(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The matrix saved at ``path``, else ``compute()`` saved there under a partial name and renamed when whole."""
    if path.exists():
        return np.load(path, allow_pickle=False)
    matrix = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial.npy")
    try:
        np.save(partial, matrix)
        partial.replace(path)
    finally:
        # A cancelled or failed write leaves no partial file behind.
        partial.unlink(missing_ok=True)
    return matrix


def embed_dataset(dataset: RetrievalDataset, spec: str, progress: Progress | None = None) -> DatasetEmbeddings:
    """Full-width embeddings of a dataset under a model spec, from the disk cache when there.

    Precomputed datasets use their own vectors (``spec`` must be ``precomputed`` or an adaptor,
    which is applied on top). Corpus and query texts are each cached under the model's fingerprint and
    a hash of the texts, so a text list already encoded by this model, in any dataset, is not encoded again.
    """
    if is_adaptor(spec):
        adaptor = load_adaptor(spec)
        inner = embed_dataset(dataset, adaptor.base_model, progress)
        return DatasetEmbeddings(
            corpus=adaptor.transform(inner.corpus),
            queries=adaptor.transform(inner.queries),
            model=spec,
            model_fingerprint=model_fingerprint(spec),
        )
    if dataset.is_precomputed:
        if spec != "precomputed":
            raise ValueError(
                f"{dataset.source}: this dataset holds precomputed embeddings; use model 'precomputed' "
                f"or an adaptor trained on them, not {spec!r}"
            )
        corpus = dataset.corpus_embeddings
        queries = dataset.query_embeddings
        if queries is None:
            queries = np.zeros((0, corpus.shape[1]), dtype=np.float32)
        return DatasetEmbeddings(normalise_rows(corpus), normalise_rows(queries), spec, "precomputed")
    if spec == "precomputed":
        raise ValueError(f"{dataset.source}: holds texts, not embeddings; choose a model such as 'base'")
    fingerprint = model_fingerprint(spec)
    corpus_path, query_path = _cache_paths(dataset, spec)
    total = dataset.corpus_size + len(dataset.query_texts or [])

    def corpus_progress(done: int, _: int) -> None:
        if progress is not None:
            progress(done, total)

    def query_progress(done: int, _: int) -> None:
        if progress is not None:
            progress(dataset.corpus_size + done, total)

    query_texts = list(dataset.query_texts or [])
    corpus = cached_matrix(corpus_path, lambda: encode_texts(spec, dataset.corpus_texts, corpus_progress))
    queries = cached_matrix(query_path, lambda: encode_texts(spec, query_texts, query_progress))
    return DatasetEmbeddings(corpus, queries, spec, fingerprint)


def embeddings_cached(dataset: RetrievalDataset, spec: str) -> bool:
    """Whether ``embed_dataset(dataset, spec)`` would read the disk cache only, encoding nothing."""
    if is_adaptor(spec):
        return embeddings_cached(dataset, load_adaptor(spec).base_model)
    if dataset.is_precomputed or spec == "precomputed":
        return True
    return all(path.exists() for path in _cache_paths(dataset, spec))


def _cache_paths(dataset: RetrievalDataset, spec: str) -> tuple[Path, Path]:
    """Where a text dataset's corpus and query embeddings under a model are cached."""
    folder = cache_dir() / "embeddings" / model_fingerprint(spec)
    return (
        folder / f"{_texts_key(dataset.corpus_texts)}.npy",
        folder / f"{_texts_key(list(dataset.query_texts or []))}.npy",
    )


def _texts_key(texts: list[str]) -> str:
    """Cache key of a list of texts: the same texts in the same order share one encode."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def encode_query(spec: str, text: str) -> np.ndarray:
    """Full-width unit-norm embedding of one query text under a model spec (adaptors applied on top).

    Raises:
        ValueError: for ``precomputed``, which has no encoder for new text.
    """
    if spec == "precomputed":
        raise ValueError("model 'precomputed' cannot encode a new query text; choose 'base', a model folder or an adaptor")
    if is_adaptor(spec):
        adaptor = load_adaptor(spec)
        return np.asarray(adaptor.transform(encode_query(adaptor.base_model, text)[None, :]), dtype=np.float32)[0]
    return encode_texts(spec, [text])[0]
