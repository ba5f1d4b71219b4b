"""Builders for tiny on-disk datasets (BEIR folders, zips, tables) shared by tests."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

TINY_CORPUS = [
    {"_id": "d1", "title": "Alpha", "text": "first body"},
    {"_id": "d2", "text": "second body"},
    {"_id": "d3", "title": "Gamma ", "text": ""},
]
TINY_QUERIES = [
    {"_id": "q2", "text": "second question"},
    {"_id": "q1", "text": "first question"},
    {"_id": "q3", "text": "third question"},
    {"_id": "q4", "text": "unused question"},
]
TINY_TEST_QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d3", 0)]
TINY_TRAIN_QRELS = [("q3", "d1", 1), ("q3", "d2", 0)]


def jsonl(records: list) -> str:
    """One JSON value per line; strings are written as they are (for malformed lines)."""
    return "".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records)


def qrels_tsv(rows: list[tuple], header: str = "query-id\tcorpus-id\tscore") -> str:
    return header + "\n" + "".join("\t".join(str(part) for part in row) + "\n" for row in rows)


def write_beir(
    folder: Path,
    *,
    corpus: list | str | bytes = TINY_CORPUS,
    queries: list | str | bytes | None = TINY_QUERIES,
    test: list | str | None = TINY_TEST_QRELS,
    train: list | str | None = TINY_TRAIN_QRELS,
) -> Path:
    """Write a BEIR folder; lists become jsonl/tsv, str and bytes are written verbatim, None leaves a file out."""
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, value, render) -> None:
        if value is None:
            return
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value if isinstance(value, str) else render(value), encoding="utf-8")

    write("corpus.jsonl", corpus, jsonl)
    write("queries.jsonl", queries, jsonl)
    write("qrels/test.tsv", test, qrels_tsv)
    write("qrels/train.tsv", train, qrels_tsv)
    return folder


def zip_folder(folder: Path, zip_path: Path, *, inner: str = "") -> Path:
    """Zip every file under ``folder``, placed under ``inner/`` inside the archive ('' = top level)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                archive.write(path, f"{inner}/{relative}" if inner else relative)
    return zip_path
