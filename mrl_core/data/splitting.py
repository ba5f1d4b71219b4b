"""Holding out judged queries for evaluation and training on the rest."""

from __future__ import annotations

import hashlib

from mrl_core.dataset import DatasetError, RetrievalDataset


def split_pairs(dataset: RetrievalDataset, *, test_fraction: float = 0.2) -> RetrievalDataset:
    """Hold out judged queries for evaluation and turn the others into training pairs.

    The split is deterministic and depends only on the query texts: judged queries are ranked
    by the sha256 of their text, and the first ``round(test_fraction * judged)`` (at least one,
    and at least one left to train on) are held out. A query stays on its side when other rows
    are added or reordered. Every remaining judged query contributes one pair (query text,
    document text) per document with grade > 0, appended to any training pairs the dataset
    already has. The corpus is unchanged, so held-out queries are still searched against every
    document, and unjudged queries stay with the evaluation queries.

    Args:
        dataset: A text dataset with judged queries (for example a pairs table).
        test_fraction: Share of judged queries to hold out, strictly between 0 and 1.

    Returns:
        A new dataset whose queries and qrels are the held-out ones and whose ``train_pairs``
        never mention a held-out query.

    Raises:
        ValueError: ``test_fraction`` is not strictly between 0 and 1.
        DatasetError: The dataset holds embeddings instead of texts, or fewer than two judged queries.

    Example:
        >>> ids = [str(row) for row in range(10)]  # like a pairs table: query i's positive is document i
        >>> dataset = RetrievalDataset("pairs", "pairs.csv", ids, [f"answer {i}" for i in ids], query_ids=ids,
        ...                            query_texts=[f"question {i}" for i in ids], qrels={i: {i: 1} for i in ids})
        >>> split = split_pairs(dataset, test_fraction=0.2)
        >>> len(split.query_ids), len(split.train_pairs), split.corpus_size
        (2, 8, 10)
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    if dataset.corpus_texts is None or dataset.query_texts is None:
        raise DatasetError(
            f"{dataset.source}: holds embeddings, not texts; split_pairs needs query and document texts"
        )
    judged = dataset.judged_query_ids()
    if len(judged) < 2:
        raise DatasetError(
            f"{dataset.source}: {len(judged)} judged queries; split_pairs needs at least 2 "
            "(one to train on, one to evaluate)"
        )
    query_text = dict(zip(dataset.query_ids, dataset.query_texts))
    doc_text = dict(zip(dataset.corpus_ids, dataset.corpus_texts))
    test_size = min(len(judged) - 1, max(1, int(len(judged) * test_fraction + 0.5)))
    ranked = sorted(judged, key=lambda query_id: (hashlib.sha256(query_text[query_id].encode()).digest(), query_id))
    train_ids = set(ranked[test_size:])
    train_pairs = list(dataset.train_pairs) + [
        (query_text[query_id], doc_text[doc_id])
        for query_id in dataset.query_ids
        if query_id in train_ids
        for doc_id, grade in dataset.qrels[query_id].items()
        if grade > 0
    ]
    query_ids = [query_id for query_id in dataset.query_ids if query_id not in train_ids]
    return RetrievalDataset(
        name=dataset.name,
        source=dataset.source,
        corpus_ids=list(dataset.corpus_ids),
        corpus_texts=list(dataset.corpus_texts),
        query_ids=query_ids,
        query_texts=[query_text[query_id] for query_id in query_ids],
        qrels={query_id: dict(dataset.qrels[query_id]) for query_id in query_ids if query_id in dataset.qrels},
        train_pairs=train_pairs,
    )
