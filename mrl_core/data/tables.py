"""Tables of (query, positive) pairs or of documents (.csv, .tsv, .jsonl, .parquet), and plain-text corpora (.txt)."""

from __future__ import annotations

import csv
import io

from mrl_core.data.files import _Files
from mrl_core.data.records import _ID_COLUMNS, _check_unique, _id_field, _jsonl_records, _read_text, _text_field
from mrl_core.dataset import DatasetError, RetrievalDataset

# Long abstracts overflow the csv module's default 128 KiB field limit.
_CSV_FIELD_LIMIT_CHARS = 2**31 - 1


def _text_table_records(files: _Files, name: str) -> tuple[list[str], list[tuple[str, dict]]]:
    display = files.display(name)
    if name.lower().endswith(".jsonl"):
        records = list(_jsonl_records(files, name))
        return (list(records[0][1]) if records else []), records
    text = _read_text(files, name)
    delimiter = "\t" if name.lower().endswith(".tsv") else ","
    previous_limit = csv.field_size_limit(_CSV_FIELD_LIMIT_CHARS)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows = []
        line_end = 0
        for row in reader:
            rows.append((line_end + 1, row))
            line_end = reader.line_num
    except csv.Error as error:
        raise DatasetError(
            f"{display}: line {reader.line_num}: {error}; expected {delimiter!r}-separated values"
        ) from None
    finally:
        csv.field_size_limit(previous_limit)
    rows = [(number, row) for number, row in rows if row]
    columns = [column.strip() for column in rows[0][1]]
    records = []
    for number, row in rows[1:]:
        where = f"{display}: line {number}"
        if len(row) != len(columns):
            raise DatasetError(
                f"{where}: {len(row)} fields; expected {len(columns)} like the header ({', '.join(columns)})"
            )
        records.append((where, dict(zip(columns, row))))
    return columns, records


def _parquet_records(files: _Files, name: str, table) -> tuple[list[str], list[tuple[str, dict]]]:
    display = files.display(name)
    rows = table.to_pylist()
    return table.column_names, [(f"{display}: row {number}", row) for number, row in enumerate(rows, start=1)]


def _load_table(
    files: _Files, name: str, *, stem: str, source: str, records: tuple[list[str], list[tuple[str, dict]]]
) -> RetrievalDataset:
    display = files.display(name)
    columns, rows = records
    query_column = next((column for column in ("query", "anchor") if column in columns), None)
    if query_column is None or "positive" not in columns:
        if "text" not in columns:
            raise DatasetError(
                f"{display}: columns {columns}; expected 'query' (or 'anchor') and 'positive' for (query, positive) "
                "pairs, or 'text' for a plain corpus"
            )
        if not rows:
            raise DatasetError(f"{display}: no rows after the header; expected one document per row")
        return _corpus_table(rows, columns, stem=stem, source=source)
    if not rows:
        raise DatasetError(f"{display}: no rows after the header; expected one (query, positive) pair per row")
    doc_ids: dict[str, str] = {}
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for where, record in rows:
        query = _text_field(where, record, query_column).strip()
        positive = _text_field(where, record, "positive").strip()
        for field_name, value in ((query_column, query), ("positive", positive)):
            if not value:
                raise DatasetError(f"{where}: field {field_name!r} is empty; expected text")
        doc_id = doc_ids.setdefault(positive, f"d{len(doc_ids)}")
        query_id = query_ids.setdefault(query, f"q{len(query_ids)}")
        qrels.setdefault(query_id, {})[doc_id] = 1
    return RetrievalDataset(
        name=stem,
        source=source,
        corpus_ids=list(doc_ids.values()),
        corpus_texts=list(doc_ids),
        query_ids=list(query_ids.values()),
        query_texts=list(query_ids),
        qrels=qrels,
    )


def _corpus_table(rows: list[tuple[str, dict]], columns: list[str], *, stem: str, source: str) -> RetrievalDataset:
    id_column = next((column for column in _ID_COLUMNS if column in columns), None)
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    seen: dict[str, str] = {}
    for index, (where, record) in enumerate(rows):
        doc_id = _id_field(where, record, id_column) if id_column else str(index)
        text = (_text_field(where, record, "title", required=False) + " " + _text_field(where, record, "text")).strip()
        if not text:
            raise DatasetError(f"{where}: field 'text' is empty; expected document text")
        _check_unique(where, seen, doc_id, "document")
        doc_ids.append(doc_id)
        doc_texts.append(text)
    return RetrievalDataset(name=stem, source=source, corpus_ids=doc_ids, corpus_texts=doc_texts)


def _load_lines(files: _Files, name: str, *, stem: str, source: str) -> RetrievalDataset:
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    for number, line in enumerate(_read_text(files, name).split("\n"), start=1):
        if line.strip():
            doc_ids.append(str(number))
            doc_texts.append(line.strip())
    return RetrievalDataset(name=stem, source=source, corpus_ids=doc_ids, corpus_texts=doc_texts)
