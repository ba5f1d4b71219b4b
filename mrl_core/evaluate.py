"""Quality at every width x precision x method: exact search over full-width embeddings cut down.

The dataset is encoded once at full width; every cell of the grid is a truncation (or PCA rotation
then truncation), a quantization and one exact FAISS search, so the whole grid costs little more
than the encoding. Labelled data gives nDCG/recall/MRR; every dataset gives fidelity to full width.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np

from mrl_core.dataset import DatasetError, RetrievalDataset
from mrl_core.metrics import Judgements, fidelity_at_k, mrr_at_k, ndcg_at_k, recall_at_k
from mrl_core.models import is_adaptor
from mrl_core.progress import Progress
from mrl_core.widths import (
    METHODS, PRECISIONS, Method, Precision, check_choices, check_widths, quantize, truncate, unpack_signs,
)

SEARCH_K = 100
"""Results kept per query: enough for recall@100."""
RESCORE_MULTIPLIER = 4
"""``binary+rescore`` reranks a Hamming shortlist of RESCORE_MULTIPLIER x SEARCH_K documents."""
SEARCH_BATCH_SIZE = 1024
"""Queries per FAISS call, which bounds the memory of distances and of the rescore step."""
RESCORE_BATCH_SIZE = 64
"""Queries per rescore step, which bounds its lookup tables and gathered codes to a few MB."""
LABEL_FREE_QUERY_COUNT = 200
"""At most this many corpus rows become queries when a dataset has no queries of its own."""
LABEL_FREE_SEED = 0
PCA_BLOCK_ROWS = 65536
RESULT_KEYS = (
    "method", "width", "precision", "ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10",
    "fidelity_at_10", "retention", "search_ms",
)


def exact_search(corpus: np.ndarray, queries: np.ndarray, precision: Precision, k: int = SEARCH_K) -> tuple[np.ndarray, float]:
    """Exact top-k corpus rows per query at a precision; embeddings already truncated and renormalised.

    fp32/fp16/int8 search inner products with ``IndexFlatIP`` (int8 codes as float32: their products sum
    to under 2**24 at width <= 1024, so float32 holds them exactly); binary searches Hamming distance with
    ``IndexBinaryFlat``; ``binary+rescore`` takes a Hamming shortlist of ``RESCORE_MULTIPLIER * k`` and
    reranks it by the float query's inner product with the shortlisted documents' +-1 bits.

    Args:
        corpus: (documents, width) float32 matrix.
        queries: (queries, width) float32 matrix.
        precision: one of ``PRECISIONS``.
        k: results per query.

    Returns:
        (ids, search_ms): a (queries x k) int64 matrix of corpus rows, best first, -1 in empty slots
        when the corpus holds fewer than k; and the wall time of the search alone (quantization excluded).
    """
    import faiss

    width = corpus.shape[1]
    corpus_codes, query_codes = quantize(corpus, queries, precision)
    if precision in ("binary", "binary+rescore"):
        index = faiss.IndexBinaryFlat(corpus_codes.shape[1] * 8)
        # FAISS opens one OpenMP region per 32 queries by default; on a busy machine each region's
        # barrier costs a scheduler slice (measured 700 ms vs 90 ms for 300 SciFact queries at load 10).
        index.query_batch_size = SEARCH_BATCH_SIZE
        index.add(corpus_codes)
    else:
        index = faiss.IndexFlatIP(width)
        index.add(np.ascontiguousarray(corpus_codes, dtype=np.float32))
        query_codes = np.ascontiguousarray(query_codes, dtype=np.float32)
    search_k = RESCORE_MULTIPLIER * k if precision == "binary+rescore" else k
    batches = []
    started = time.perf_counter()
    for start in range(0, len(queries), SEARCH_BATCH_SIZE):
        _, ids = index.search(query_codes[start : start + SEARCH_BATCH_SIZE], search_k)
        if precision == "binary+rescore":
            ids = rescore_shortlist(ids, corpus_codes, queries[start : start + SEARCH_BATCH_SIZE], k)
        batches.append(ids)
    search_ms = (time.perf_counter() - started) * 1000.0
    ids = np.concatenate(batches) if batches else np.zeros((0, k), dtype=np.int64)
    return ids.astype(np.int64, copy=False), search_ms


def rescore_shortlist(shortlist: np.ndarray, corpus_codes: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rerank Hamming shortlists by float query . +-1 document bits, read from the packed codes (no extra storage).

    The ``binary+rescore`` step, shared by the evaluation and the latency bench. Rather than unpack every
    shortlisted document to width floats, each query gets a table of its partial products for all 256
    values of each code byte; a document's score is then one table lookup per byte (8x less memory
    traffic, the same sums).

    Args:
        shortlist: (queries, shortlist_size) corpus rows from a Hamming search, -1 in empty slots.
        corpus_codes: (documents, width/8 rounded up) uint8 sign bits as ``np.packbits`` packs them.
        queries: (queries, width) float32 queries, truncated and renormalised like the corpus.
        k: results kept per query.

    Returns:
        (queries, k) corpus rows, best score first; equal scores keep their Hamming order.
    """
    code_bytes = corpus_codes.shape[1]
    byte_offsets = np.arange(code_bytes) * 256
    reranked = []
    for start in range(0, len(shortlist), RESCORE_BATCH_SIZE):
        ids = shortlist[start : start + RESCORE_BATCH_SIZE]
        batch = queries[start : start + RESCORE_BATCH_SIZE]
        # Zero query weights on the bits packbits added to fill the last byte, so they add nothing.
        padded = np.zeros((len(batch), code_bytes * 8), dtype=np.float32)
        padded[:, : batch.shape[1]] = batch
        tables = (padded.reshape(len(batch), code_bytes, 8) @ _BYTE_SIGNS.T).reshape(len(batch), code_bytes * 256)
        codes = corpus_codes[np.maximum(ids, 0)].astype(np.int64) + byte_offsets
        scores = tables[np.arange(len(batch))[:, None, None], codes].sum(axis=2)
        scores[ids < 0] = -np.inf
        # Stable, so equal scores keep their Hamming order.
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        reranked.append(np.take_along_axis(ids, order, axis=1))
    return np.concatenate(reranked) if reranked else np.zeros((0, k), dtype=np.int64)


_BYTE_SIGNS = unpack_signs(np.arange(256, dtype=np.uint8)[:, None], 8)
"""(256, 8): the +-1 value of each bit of each byte, most significant bit first as np.packbits packs."""


def pca_rotation(corpus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of the corpus, largest variance first: (mean, rotation) with rotation (width x width).

    Eigen-decomposition of the width x width covariance costs O(documents x width^2) and also works when
    the corpus has fewer documents than dimensions (the trailing axes then carry no variance).
    """
    width = corpus.shape[1]
    mean = corpus.mean(axis=0, dtype=np.float64)
    scatter = np.zeros((width, width), dtype=np.float64)
    # In float64 for accuracy, a block at a time so a large corpus is never copied whole.
    for start in range(0, len(corpus), PCA_BLOCK_ROWS):
        centred = np.asarray(corpus[start : start + PCA_BLOCK_ROWS], dtype=np.float64) - mean
        scatter += centred.T @ centred
    eigenvalues, eigenvectors = np.linalg.eigh(scatter)
    order = np.argsort(eigenvalues)[::-1]
    return mean.astype(np.float32), np.ascontiguousarray(eigenvectors[:, order], dtype=np.float32)


def evaluate_grid(
    corpus: np.ndarray,
    queries: np.ndarray,
    relevance: Judgements | Sequence[Mapping[int, int]] | None,
    widths: Sequence[int],
    precisions: Sequence[Precision] = PRECISIONS,
    methods: Sequence[Method] = METHODS,
) -> list[dict]:
    """Quality of every (method, width, precision) cell by exact search.

    Args:
        corpus: (documents, full_width) L2-normalised float32 embeddings.
        queries: (queries, full_width) embeddings from the same model.
        relevance: one {corpus row: grade} mapping per query (or ``Judgements``); None for label-free
            data, which gets fidelity only (as does relevance that judges no document relevant).
        widths: widths to evaluate, each in 1..full_width.
        precisions: names from ``PRECISIONS``.
        methods: names from ``METHODS``; ``pca`` rotates both sides onto the corpus's principal axes
            (fitted on the corpus, centred on its mean) before taking the prefix.

    Returns:
        One dict per cell with ``RESULT_KEYS``: labelled metrics at 10/100, ``fidelity_at_10`` against the
        full-width fp32 top 10, ``retention`` = ndcg_at_10 / full-width fp32 prefix ndcg_at_10 (None when
        label-free), ``search_ms`` of that cell. Sorted by method (``METHODS`` order), width descending,
        precision (``PRECISIONS`` order).

    Raises:
        ValueError: for unknown names, repeated or out-of-range widths, or mismatched shapes.
    """
    precisions = check_choices(precisions, PRECISIONS, "precisions")
    methods = check_choices(methods, METHODS, "methods")
    full_width = corpus.shape[1]
    widths = check_widths(widths, full_width)
    if queries.ndim != 2 or queries.shape[1] != full_width:
        raise ValueError(f"queries have shape {queries.shape}; expected (queries, {full_width}) like the corpus")
    if len(queries) == 0 or len(corpus) == 0:
        raise ValueError(f"nothing to search: {len(corpus)} documents, {len(queries)} queries")
    judgements = None
    if relevance is not None:
        judgements = relevance if isinstance(relevance, Judgements) else Judgements(relevance)
        if judgements.query_count != len(queries):
            raise ValueError(f"relevance covers {judgements.query_count} queries; {len(queries)} queries given")
        if not judgements.judged.any():
            judgements = None

    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    reference_ids, reference_ms = exact_search(truncate(corpus, full_width), truncate(queries, full_width), "fp32")
    reference_ndcg = ndcg_at_k(reference_ids, judgements, 10) if judgements is not None else None

    rows = []
    for method in methods:
        if method == "pca":
            mean, rotation = pca_rotation(corpus)
            method_corpus, method_queries = (corpus - mean) @ rotation, (queries - mean) @ rotation
        else:
            method_corpus, method_queries = corpus, queries
        for width in sorted(widths, reverse=True):
            corpus_at_width, queries_at_width = truncate(method_corpus, width), truncate(method_queries, width)
            for precision in precisions:
                if (method, width, precision) == ("prefix", full_width, "fp32"):
                    ids, search_ms = reference_ids, reference_ms
                else:
                    ids, search_ms = exact_search(corpus_at_width, queries_at_width, precision)
                cell = {"method": method, "width": width, "precision": precision, "search_ms": search_ms}
                cell.update(_cell_metrics(ids, judgements, reference_ids, reference_ndcg))
                rows.append({key: cell[key] for key in RESULT_KEYS})
    return rows


def _cell_metrics(ids: np.ndarray, judgements: Judgements | None, reference_ids: np.ndarray, reference_ndcg: float | None) -> dict:
    metrics = {"fidelity_at_10": fidelity_at_k(ids, reference_ids, 10)}
    if judgements is None:
        metrics.update(ndcg_at_10=None, recall_at_10=None, recall_at_100=None, mrr_at_10=None, retention=None)
        return metrics
    ndcg = ndcg_at_k(ids, judgements, 10)
    metrics.update(
        ndcg_at_10=ndcg,
        recall_at_10=recall_at_k(ids, judgements, 10),
        recall_at_100=recall_at_k(ids, judgements, 100),
        mrr_at_10=mrr_at_k(ids, judgements, 10),
        retention=ndcg / reference_ndcg if reference_ndcg else None,
    )
    return metrics


def run_evaluation(
    dataset: RetrievalDataset,
    model: str,
    *,
    widths: Sequence[int],
    precisions: Sequence[Precision] = PRECISIONS,
    methods: Sequence[Method] = METHODS,
    store,
    progress: Progress | None = None,
) -> tuple[int, list[dict]]:
    """Encode a dataset once at full width, evaluate the grid, and store one ``evaluate`` run.

    Every argument is checked before anything is encoded. Labelled datasets are scored against their
    qrels. A dataset without judgements is scored by fidelity only, on its own queries when it has
    some, else on up to ``LABEL_FREE_QUERY_COUNT`` corpus rows drawn with a fixed seed and left out of
    the searched corpus.

    Args:
        dataset: what to evaluate.
        model: model spec (``base``, a saved model folder, a saved adaptor, or ``precomputed``).
        widths: widths to evaluate, each in 1..the model's full width.
        precisions: names from ``PRECISIONS``.
        methods: names from ``METHODS``.
        store: a ``ResultStore`` that receives the run and one results row per cell.
        progress: called as progress(done, total) while encoding.

    Returns:
        (run_id, rows), rows as ``evaluate_grid`` returns them.

    Raises:
        ValueError: for unknown precision/method names, widths outside 1..full width or repeated.
        DatasetError: when the dataset has neither judged queries nor anything to draw queries from.

    Example:
        >>> import tempfile
        >>> from mrl_core.store import ResultStore
        >>> rng = np.random.default_rng(0)
        >>> corpus = rng.normal(size=(100, 16))
        >>> ids = [str(row) for row in range(100)]  # query i is a noisy copy of document i
        >>> dataset = RetrievalDataset("toy", "toy", corpus_ids=ids, corpus_texts=None, query_ids=ids[:10],
        ...                            qrels={i: {i: 1} for i in ids[:10]}, corpus_embeddings=corpus,
        ...                            query_embeddings=corpus[:10] + 0.5 * rng.normal(size=(10, 16)))
        >>> run_id, rows = run_evaluation(dataset, "precomputed", widths=[16, 4], precisions=["fp32"],
        ...                               methods=["prefix"], store=ResultStore(f"{tempfile.mkdtemp()}/results.duckdb"))
        >>> [(row["width"], round(row["ndcg_at_10"], 2)) for row in rows]
        [(16, 1.0), (4, 0.54)]
    """
    import faiss

    from mrl_core.encode import embed_dataset, model_width

    precisions = check_choices(precisions, PRECISIONS, "precisions")
    methods = check_choices(methods, METHODS, "methods")
    if dataset.is_precomputed and not is_adaptor(model):
        full_width = int(dataset.corpus_embeddings.shape[1])
    else:
        full_width = model_width(model)
    widths = check_widths(widths, full_width)
    query_source = _query_source(dataset)

    started = time.perf_counter()
    embeddings = embed_dataset(dataset, model, progress)
    encode_s = time.perf_counter() - started

    started = time.perf_counter()
    corpus, queries, relevance = _grid_inputs(dataset, embeddings.corpus, embeddings.queries, query_source)
    rows = evaluate_grid(corpus, queries, relevance, widths, precisions, methods)
    grid_s = time.perf_counter() - started

    params = {
        # Where the dataset came from, so a later step (e.g. verifying a plan) can load its rows again.
        "source": dataset.source,
        "widths": widths,
        "precisions": precisions,
        "methods": methods,
        "query_source": query_source,
        "search_k": SEARCH_K,
        "rescore_shortlist_size": RESCORE_MULTIPLIER * SEARCH_K,
        "search_batch_size": SEARCH_BATCH_SIZE,
        "faiss_version": faiss.__version__,
    }
    if query_source == "corpus_sample":
        params["label_free_seed"] = LABEL_FREE_SEED
    with store.run(
        "evaluate",
        model=model,
        model_fingerprint=embeddings.model_fingerprint,
        dataset=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        corpus_size=len(corpus),
        query_count=len(queries),
        params=params,
        threads=faiss.omp_get_max_threads(),
    ) as run_id:
        store.add_rows("results", run_id, rows)
        store.finish_run(run_id, summary={"encode_s": encode_s, "grid_s": grid_s, "cells": len(rows)})
    return run_id, rows


def _query_source(dataset: RetrievalDataset) -> str:
    """Which queries the evaluation will use: 'qrels', 'own_queries' (label-free) or 'corpus_sample'."""
    own_queries = dataset.query_embeddings if dataset.is_precomputed else dataset.query_texts
    has_own_queries = own_queries is not None and len(own_queries) > 0
    if dataset.has_labels:
        if not has_own_queries:
            raise DatasetError(
                f"{dataset.source}: qrels judge {len(dataset.judged_query_ids())} queries but the dataset holds no "
                "query texts or query embeddings to search with"
            )
        return "qrels"
    if has_own_queries:
        return "own_queries"
    has_corpus = dataset.corpus_embeddings is not None or dataset.corpus_texts is not None
    if not has_corpus or dataset.corpus_size < 2:
        raise DatasetError(
            f"{dataset.source}: no query has a relevant judgement, the dataset has no queries of its own, and "
            f"its corpus ({dataset.corpus_size} documents{'' if has_corpus else ', no texts or embeddings'}) "
            "has too little to draw queries from; give qrels, queries, or a corpus of at least 2 documents"
        )
    return "corpus_sample"


def _grid_inputs(
    dataset: RetrievalDataset, corpus: np.ndarray, queries: np.ndarray, query_source: str
) -> tuple[np.ndarray, np.ndarray, list[dict[int, int]] | None]:
    """The searched corpus, the query matrix and per-query relevance (None when label-free)."""
    if query_source == "own_queries":
        return corpus, queries, None
    if query_source == "corpus_sample":
        query_count = min(LABEL_FREE_QUERY_COUNT, len(corpus) // 2)
        rng = np.random.default_rng(LABEL_FREE_SEED)
        query_rows = np.sort(rng.choice(len(corpus), size=query_count, replace=False))
        searched = np.ones(len(corpus), dtype=bool)
        searched[query_rows] = False
        return corpus[searched], corpus[query_rows], None
    return corpus, queries, relevance_rows(dataset)


def relevance_rows(dataset: RetrievalDataset) -> list[dict[int, int]]:
    """Each query's judgements as {corpus row: grade}, in ``dataset.query_ids`` order."""
    row_of = {doc_id: row for row, doc_id in enumerate(dataset.corpus_ids)}
    relevance = []
    for query_id in dataset.query_ids:
        judged = {}
        missing = 0
        for doc_id, grade in dataset.qrels.get(query_id, {}).items():
            if doc_id in row_of:
                judged[row_of[doc_id]] = grade
            else:
                # Judged but absent from the corpus: as in BEIR it still counts against recall and the
                # ideal DCG, under a row number past the corpus that no search returns.
                judged[dataset.corpus_size + missing] = grade
                missing += 1
        relevance.append(judged)
    return relevance
