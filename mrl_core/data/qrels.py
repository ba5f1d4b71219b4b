"""Relevance judgements in the BEIR qrels layout: query-id, corpus-id and integer score per tab-separated line."""

from __future__ import annotations

from mrl_core.data.files import _Files
from mrl_core.data.records import _read_text
from mrl_core.dataset import DatasetError

_QRELS_HEADER = ["query-id", "corpus-id", "score"]


def _read_qrels(
    files: _Files, name: str, *, query_ids: set[str], corpus_ids: set[str], query_file: str, corpus_file: str
) -> dict[str, dict[str, int]]:
    display = files.display(name)
    qrels: dict[str, dict[str, int]] = {}
    seen_header = False
    for number, line in enumerate(_read_text(files, name).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        where = f"{display}: line {number}"
        fields = line.split("\t")
        if not seen_header:
            if [part.strip() for part in fields] != _QRELS_HEADER:
                raise DatasetError(f"{where}: header is {line!r}; expected 'query-id<TAB>corpus-id<TAB>score'")
            seen_header = True
            continue
        if len(fields) != 3:
            raise DatasetError(
                f"{where}: {len(fields)} tab-separated fields; expected 3 (query-id, corpus-id, score)"
            )
        query_id, doc_id, score_text = (part.strip() for part in fields)
        try:
            score = int(score_text)
        except ValueError:
            raise DatasetError(f"{where}: score {score_text!r} is not an integer; expected an integer grade") from None
        if query_id not in query_ids:
            raise DatasetError(f"{where}: query-id {query_id!r} is not in {query_file}")
        if doc_id not in corpus_ids:
            raise DatasetError(f"{where}: corpus-id {doc_id!r} is not in {corpus_file}")
        judged = qrels.setdefault(query_id, {})
        if judged.get(doc_id, score) != score:
            raise DatasetError(
                f"{where}: ({query_id!r}, {doc_id!r}) is judged again with score {score}, "
                f"earlier {judged[doc_id]}; expected one score per pair"
            )
        judged[doc_id] = score
    return qrels


def _require_positive(display: str, qrels: dict[str, dict[str, int]]) -> None:
    if not any(grade > 0 for judged in qrels.values() for grade in judged.values()):
        raise DatasetError(
            f"{display}: judges no query (no row with score > 0); expected at least one relevant document"
        )
