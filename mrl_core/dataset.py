"""The one in-memory shape of a retrieval dataset, its content fingerprint, and the error loaders raise."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A dataset could not be loaded. The message names the file, and the row or field where known."""


@dataclass
class RetrievalDataset:
    """A corpus, queries, relevance judgements and optional training pairs.

    Texts are None for precomputed-embedding datasets, which carry ``corpus_embeddings``
    (and optionally ``query_embeddings``) instead. ``qrels`` maps query id -> {doc id: grade};
    queries without judgements are kept but skipped by labelled metrics.
    """

    name: str
    source: str
    corpus_ids: list[str]
    corpus_texts: list[str] | None
    query_ids: list[str] = field(default_factory=list)
    query_texts: list[str] | None = None
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    train_pairs: list[tuple[str, str]] = field(default_factory=list)
    corpus_embeddings: np.ndarray | None = None
    query_embeddings: np.ndarray | None = None
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = content_fingerprint(self)

    @property
    def has_labels(self) -> bool:
        return any(self.qrels.get(query_id) for query_id in self.query_ids)

    @property
    def is_precomputed(self) -> bool:
        return self.corpus_embeddings is not None

    @property
    def corpus_size(self) -> int:
        return len(self.corpus_ids)

    def judged_query_ids(self) -> list[str]:
        return [query_id for query_id in self.query_ids if any(g > 0 for g in self.qrels.get(query_id, {}).values())]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "corpus_size": self.corpus_size,
            "queries": len(self.query_ids),
            "judged_queries": len(self.judged_query_ids()),
            "train_pairs": len(self.train_pairs),
            "precomputed": self.is_precomputed,
        }


def content_fingerprint(dataset: RetrievalDataset) -> str:
    """A short sha256 over everything that changes retrieval results (not the name or source)."""
    digest = hashlib.sha256()

    def add(value) -> None:
        digest.update(json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        digest.update(b"\0")

    add(dataset.corpus_ids)
    add(dataset.corpus_texts)
    add(dataset.query_ids)
    add(dataset.query_texts)
    add(dataset.qrels)
    add([list(pair) for pair in dataset.train_pairs])
    for matrix in (dataset.corpus_embeddings, dataset.query_embeddings):
        if matrix is None:
            add(None)
        else:
            array = np.ascontiguousarray(matrix, dtype=np.float32)
            add(list(array.shape))
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]
