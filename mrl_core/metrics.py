"""Retrieval metrics over a (queries x k) matrix of retrieved corpus rows, as BEIR/pytrec_eval define them.

Retrieved ids are corpus row numbers, best first; -1 marks an empty slot (fewer results than k).
Labelled metrics average over the queries that have at least one relevant (grade > 0) judgement;
the others are skipped.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

_QUERY_STRIDE = 1 << 32  # corpus rows stay below 2**32, so query * stride + row is a unique int64 key


class Judgements:
    """Graded relevance per query row, packed for vectorised lookups.

    Args:
        per_query: one mapping per query row, corpus row -> grade. A judged document that is not in
            the searched corpus may be given any row number no search returns (e.g. past the corpus):
            like pytrec_eval, it still counts in recall's denominator and in the ideal DCG.

    Example:
        >>> judgements = Judgements([{4: 2, 7: 1}, {}])
        >>> judgements.judged.tolist()
        [True, False]
    """

    def __init__(self, per_query: Sequence[Mapping[int, int]]):
        self.query_count = len(per_query)
        keys, grades = [], []
        self.relevant_counts = np.zeros(self.query_count, dtype=np.int64)
        self._sorted_gains: list[np.ndarray] = []
        for query_row, judged in enumerate(per_query):
            rows = np.fromiter(judged.keys(), dtype=np.int64, count=len(judged))
            # Gain = grade, as pytrec_eval's ndcg; a negative grade gains nothing.
            gains = np.clip(np.fromiter(judged.values(), dtype=np.float64, count=len(judged)), 0, None)
            keys.append(query_row * _QUERY_STRIDE + rows)
            grades.append(gains)
            self.relevant_counts[query_row] = int(np.count_nonzero(gains > 0))
            self._sorted_gains.append(np.sort(gains)[::-1])
        self._keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
        self._grades = np.concatenate(grades) if grades else np.zeros(0, dtype=np.float64)
        order = np.argsort(self._keys, kind="stable")
        self._keys, self._grades = self._keys[order], self._grades[order]
        self.judged = self.relevant_counts > 0

    def grades_of(self, retrieved_ids: np.ndarray) -> np.ndarray:
        """Grade of each retrieved id, same shape; 0 for unjudged documents and empty slots."""
        retrieved_ids = np.asarray(retrieved_ids, dtype=np.int64)
        if retrieved_ids.shape[0] != self.query_count:
            raise ValueError(f"retrieved ids cover {retrieved_ids.shape[0]} queries; judgements cover {self.query_count}")
        query_rows = np.arange(self.query_count, dtype=np.int64)[:, None]
        keys = query_rows * _QUERY_STRIDE + retrieved_ids
        if self._keys.size == 0:
            return np.zeros(retrieved_ids.shape, dtype=np.float64)
        positions = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
        found = (self._keys[positions] == keys) & (retrieved_ids >= 0)
        return np.where(found, self._grades[positions], 0.0)

    def ideal_dcg(self, k: int) -> np.ndarray:
        """Best possible DCG@k per query, from its own judgements."""
        discounts = 1.0 / np.log2(np.arange(2, k + 2))
        return np.array([float(gains[:k] @ discounts[: len(gains[:k])]) for gains in self._sorted_gains])


def _as_judgements(judgements: Judgements | Sequence[Mapping[int, int]]) -> Judgements:
    return judgements if isinstance(judgements, Judgements) else Judgements(judgements)


def _top_k(retrieved_ids: np.ndarray, k: int) -> np.ndarray:
    retrieved_ids = np.asarray(retrieved_ids, dtype=np.int64)
    if retrieved_ids.ndim != 2:
        raise ValueError(f"retrieved ids must be a (queries x k) matrix, got shape {retrieved_ids.shape}")
    if k < 1:
        raise ValueError(f"k={k}: expected a positive cut-off")
    return retrieved_ids[:, :k]


def _mean_over_judged(values: np.ndarray, judgements: Judgements) -> float:
    if not judgements.judged.any():
        raise ValueError("no query has a relevant (grade > 0) judgement; labelled metrics are undefined")
    return float(values[judgements.judged].mean())


def ndcg_at_k(retrieved_ids: np.ndarray, judgements: Judgements | Sequence[Mapping[int, int]], k: int) -> float:
    """Mean nDCG@k: sum of grade / log2(rank + 1) over the top k, over the ideal DCG from the judgements.

    Args:
        retrieved_ids: (queries x >=k) corpus rows, best first; -1 for empty slots.
        judgements: ``Judgements`` or one {corpus row: grade} mapping per query.
        k: cut-off.

    Returns:
        The mean over queries with at least one relevant judgement.

    Example:
        >>> round(ndcg_at_k(np.array([[1, 0]]), [{0: 1}], 2), 4)  # 1/log2(3) over 1/log2(2)
        0.6309
    """
    judgements = _as_judgements(judgements)
    top = _top_k(retrieved_ids, k)
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = judgements.grades_of(top) @ discounts
    ideal = judgements.ideal_dcg(k)
    ndcg = np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)
    return _mean_over_judged(ndcg, judgements)


def recall_at_k(retrieved_ids: np.ndarray, judgements: Judgements | Sequence[Mapping[int, int]], k: int) -> float:
    """Mean recall@k: relevant (grade > 0) documents in the top k over all relevant documents (as BEIR)."""
    judgements = _as_judgements(judgements)
    hits = np.count_nonzero(judgements.grades_of(_top_k(retrieved_ids, k)) > 0, axis=1)
    recall = hits / np.maximum(judgements.relevant_counts, 1)
    return _mean_over_judged(recall, judgements)


def mrr_at_k(retrieved_ids: np.ndarray, judgements: Judgements | Sequence[Mapping[int, int]], k: int) -> float:
    """Mean reciprocal rank of the first relevant (grade > 0) document in the top k (0 when none)."""
    judgements = _as_judgements(judgements)
    relevant = judgements.grades_of(_top_k(retrieved_ids, k)) > 0
    first_rank = np.argmax(relevant, axis=1) + 1
    reciprocal = np.where(relevant.any(axis=1), 1.0 / first_rank, 0.0)
    return _mean_over_judged(reciprocal, judgements)


def fidelity_at_k(retrieved_ids: np.ndarray, reference_ids: np.ndarray, k: int) -> float:
    """Mean overlap of the top k with a reference top k, over k (label-free quality).

    Order inside the top k does not matter. When the corpus holds fewer than k documents, the
    denominator is the number of reference results, so identical result lists score 1.0.

    Example:
        >>> fidelity_at_k(np.array([[3, 1, 2]]), np.array([[1, 2, 9]]), 3)  # {1, 2} shared of 3
        0.6666666666666666
    """
    top = _top_k(retrieved_ids, k)
    reference = _top_k(reference_ids, k)
    if top.shape[0] != reference.shape[0]:
        raise ValueError(f"retrieved ids cover {top.shape[0]} queries; reference covers {reference.shape[0]}")
    if top.shape[0] == 0:
        raise ValueError("no queries to compare")
    # k is small (10), so a (queries x k x k) comparison is cheaper than any set machinery.
    shared = ((top[:, :, None] == reference[:, None, :]) & (reference[:, None, :] >= 0)).any(axis=2)
    reference_sizes = np.count_nonzero(reference >= 0, axis=1)
    overlap = np.divide(shared.sum(axis=1), reference_sizes, out=np.ones(len(top)), where=reference_sizes > 0)
    return float(overlap.mean())
