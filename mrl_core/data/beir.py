"""BEIR folders: corpus.jsonl, queries.jsonl and qrels/{test,train}.tsv."""

from __future__ import annotations

from mrl_core.data.files import _Files
from mrl_core.data.qrels import _read_qrels, _require_positive
from mrl_core.data.records import _check_unique, _id_field, _jsonl_records, _text_field
from mrl_core.dataset import DatasetError, RetrievalDataset


def _load_beir(files: _Files, *, name: str, source: str) -> RetrievalDataset:
    doc_text: dict[str, str] = {}
    doc_where: dict[str, str] = {}
    for where, record in _jsonl_records(files, "corpus.jsonl"):
        doc_id = _id_field(where, record, "_id")
        text = (_text_field(where, record, "title", required=False) + " " + _text_field(where, record, "text")).strip()
        if not text:
            raise DatasetError(f"{where}: 'title' and 'text' are both empty; expected document text")
        _check_unique(where, doc_where, doc_id, "document")
        doc_text[doc_id] = text
    if not files.has("queries.jsonl"):
        raise DatasetError(f"{files.label}: queries.jsonl is missing; expected it next to corpus.jsonl")
    query_text: dict[str, str] = {}
    query_where: dict[str, str] = {}
    for where, record in _jsonl_records(files, "queries.jsonl"):
        query_id = _id_field(where, record, "_id")
        text = _text_field(where, record, "text").strip()
        if not text:
            raise DatasetError(f"{where}: field 'text' is empty; expected the query text")
        _check_unique(where, query_where, query_id, "query")
        query_text[query_id] = text

    def qrels_of(split: str) -> dict[str, dict[str, int]] | None:
        qrels_name = f"qrels/{split}.tsv"
        if not files.has(qrels_name):
            return None
        return _read_qrels(
            files,
            qrels_name,
            query_ids=set(query_text),
            corpus_ids=set(doc_text),
            query_file=files.display("queries.jsonl"),
            corpus_file=files.display("corpus.jsonl"),
        )

    test_qrels = qrels_of("test")
    train_qrels = qrels_of("train") or {}
    if test_qrels is not None:
        _require_positive(files.display("qrels/test.tsv"), test_qrels)
        query_ids = [query_id for query_id in query_text if query_id in test_qrels]
    else:
        query_ids = [query_id for query_id in query_text if query_id not in train_qrels]
    held_out = test_qrels or {}
    train_pairs = [
        (query_text[query_id], doc_text[doc_id])
        for query_id, judged in train_qrels.items()
        if query_id not in held_out
        for doc_id, grade in judged.items()
        if grade > 0
    ]
    return RetrievalDataset(
        name=name,
        source=source,
        corpus_ids=list(doc_text),
        corpus_texts=list(doc_text.values()),
        query_ids=query_ids,
        query_texts=[query_text[query_id] for query_id in query_ids],
        qrels={query_id: held_out[query_id] for query_id in query_ids if query_id in held_out},
        train_pairs=train_pairs,
    )
