"""Retrieval datasets: one in-memory shape for every input a user may bring."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

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


DEFAULT_MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
_BUILTIN_VARIANTS = {"builtin": "full", "builtin:quick": "quick"}
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
_KNOWN_SUFFIXES = ".zip, .csv, .tsv, .jsonl, .parquet, .txt or .npy"
_QRELS_HEADER = ["query-id", "corpus-id", "score"]
_ID_COLUMNS = ("_id", "id")
_VECTOR_COLUMNS = ("embedding", "vector")
_CORPUS_MARKERS = ("corpus.jsonl", "corpus.npy", "corpus.parquet")
# Long abstracts overflow the csv module's default 128 KiB field limit.
_CSV_FIELD_LIMIT_CHARS = 2**31 - 1


def load_dataset(
    source: str | os.PathLike, *, max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES
) -> RetrievalDataset:
    """Load any supported input as a RetrievalDataset, validating it on the way.

    Accepted sources, chosen by what the path is:

    * ``builtin`` / ``builtin:quick``: the embedded default dataset (``mrl_core.builtin``).
    * A BEIR folder, or a ``.zip`` holding one at its top level or inside one folder::

          corpus.jsonl      {"_id", "title" (optional), "text"} per line
          queries.jsonl     {"_id", "text"} per line
          qrels/test.tsv    header "query-id<TAB>corpus-id<TAB>score", integer scores (optional)
          qrels/train.tsv   same layout (optional)

      Document text is ``(title + " " + text).strip()`` (the MTEB convention). The queries are
      those named in ``qrels/test.tsv``, in ``queries.jsonl`` order. Each ``qrels/train.tsv`` row
      with score > 0 becomes a training pair (query text, document text), except for queries
      that ``qrels/test.tsv`` also judges, so training and evaluation never share a query.
      Without ``qrels/test.tsv`` the queries are all queries not used for training, unlabelled.
    * A pairs table (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``) with columns ``query`` (or
      ``anchor``) and ``positive``: every distinct positive becomes one document (ids ``d0``,
      ``d1``, ... in order of first appearance), every distinct query one query (``q0``, ...)
      judged relevant (grade 1) to each of its positives. All pairs are evaluation queries and
      there are no training pairs; call :func:`split_pairs` to hold out a test set and train
      on the rest.
    * A plain corpus: the same table formats with a ``text`` column (optional ``id`` or
      ``_id``, else ids are 0-based row numbers; optional ``title``, joined as in BEIR), or a
      ``.txt`` file with one document per non-blank line, whose id is its 1-based line number.
      No queries, no labels.
    * Precomputed embeddings, as one file plus optional companions next to it::

          vectors.npy | vectors.parquet                 documents (required)
          vectors.queries.npy | vectors.queries.parquet query embeddings (optional)
          vectors.qrels.tsv                             judgements, BEIR qrels layout (optional)

      or as a folder (or ``.zip``) holding ``corpus.npy`` | ``corpus.parquet``, optional
      ``queries.npy`` | ``queries.parquet`` and optional ``qrels.tsv``. A ``.npy`` is a 2-D
      float array, one row per vector, whose ids are its 0-based row numbers as strings
      ("0", "1", ...); it is read with ``allow_pickle=False``. A ``.parquet`` holds an id column
      (``id`` or ``_id``) and a vector column (``embedding`` or ``vector``, a list of floats
      of one length). Query and document vectors must have the same width. Text fields are
      None and the vectors are in ``corpus_embeddings`` / ``query_embeddings`` (float32).

    Text files must be UTF-8 (a byte-order mark is allowed); blank lines in ``.jsonl`` and
    ``.tsv`` files are skipped.

    Args:
        source: A path as described above, or ``builtin`` / ``builtin:quick``.
        max_uncompressed_bytes: Refuse a ``.zip`` whose members add up to more than this.

    Returns:
        The dataset; its ``fingerprint`` depends only on its content.

    Raises:
        DatasetError: The input is missing or malformed. The message names the file and the line,
            row or field, and says what was expected.

    Example:
        >>> dataset = load_dataset("../shared/data/scifact")
        >>> dataset.corpus_size, len(dataset.query_ids), len(dataset.train_pairs)
        (5183, 300, 919)
    """
    source_text = os.fspath(source)
    if source_text == "builtin" or source_text.startswith("builtin:"):
        return _load_builtin(source_text)
    path = Path(source_text)
    if path.is_dir():
        return _load_bundle(_FolderFiles(path, source_text), name=path.resolve().name, source=source_text)
    if not path.is_file():
        raise DatasetError(
            f"{source_text}: no such file or folder; expected a BEIR folder or .zip, a pairs, corpus or "
            "embeddings file, or 'builtin'"
        )
    return _load_file(
        _FolderFiles(path.parent, os.path.dirname(source_text)),
        path.name,
        source=source_text,
        max_uncompressed_bytes=max_uncompressed_bytes,
    )


def load_uploaded(
    filename: str, content: bytes, *, max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES
) -> RetrievalDataset:
    """Load an uploaded file (its name and bytes) exactly as :func:`load_dataset` loads a path.

    The content is parsed in memory; no temporary file is written. A single upload has no
    companion files, so precomputed query embeddings and qrels come in a ``.zip`` laid out as an
    embeddings folder (``corpus.npy``, ``queries.npy``, ``qrels.tsv``).

    Args:
        filename: The name the user's file had; only its last component is used. Its extension
            chooses the format, and error messages name it.
        content: The file's bytes.
        max_uncompressed_bytes: Refuse a ``.zip`` whose members add up to more than this.

    Returns:
        The dataset, with ``source`` set to the file name.

    Raises:
        DatasetError: As for :func:`load_dataset`.

    Example:
        >>> load_uploaded("docs.txt", b"first document\\nsecond document\\n").corpus_ids
        ['1', '2']
    """
    name = Path(filename.replace("\\", "/")).name
    if not name:
        raise DatasetError(f"uploaded file {filename!r} has no name; expected a name with an extension such as .zip")
    return _load_file(
        _MemoryFiles({name: content}), name, source=name, max_uncompressed_bytes=max_uncompressed_bytes
    )


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
        >>> dataset = load_dataset("pairs.csv")  # 10 rows, 10 distinct queries and positives
        >>> split = split_pairs(dataset, test_fraction=0.2)
        >>> len(split.query_ids), len(split.train_pairs)
        (2, 8)
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


# --- files: a folder, an archive folder or an upload, with the names messages should show ---


class _FolderFiles:
    def __init__(self, folder: Path, display_folder: str):
        self.folder = folder
        self.label = display_folder or "."
        self._display_folder = display_folder

    def has(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def size(self, name: str) -> int:
        return (self.folder / name).stat().st_size

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def open(self, name: str) -> BinaryIO:
        return open(self.folder / name, "rb")

    def display(self, name: str) -> str:
        return os.path.join(self._display_folder, name) if self._display_folder else name


class _MemoryFiles:
    def __init__(self, contents: dict[str, bytes]):
        self._contents = contents
        self.label = "upload"

    def has(self, name: str) -> bool:
        return name in self._contents

    def size(self, name: str) -> int:
        return len(self._contents[name])

    def read(self, name: str) -> bytes:
        return self._contents[name]

    def open(self, name: str) -> BinaryIO:
        return io.BytesIO(self._contents[name])

    def display(self, name: str) -> str:
        return name


class _ZipFiles:
    def __init__(self, archive: zipfile.ZipFile, prefix: str, display_archive: str):
        self._archive = archive
        self._prefix = prefix
        self._display_archive = display_archive
        self._sizes = {info.filename: info.file_size for info in archive.infolist() if not info.is_dir()}
        self.label = f"{display_archive}:{prefix}" if prefix else display_archive

    def has(self, name: str) -> bool:
        return self._prefix + name in self._sizes

    def size(self, name: str) -> int:
        return self._sizes[self._prefix + name]

    def read(self, name: str) -> bytes:
        try:
            return self._archive.read(self._prefix + name)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError) as error:
            raise DatasetError(f"{self.display(name)}: cannot be read from the archive ({error})") from None

    def open(self, name: str) -> BinaryIO:
        return io.BytesIO(self.read(name))

    def display(self, name: str) -> str:
        return f"{self._display_archive}:{self._prefix}{name}"


_Files = _FolderFiles | _MemoryFiles | _ZipFiles


# --- dispatch ---


def _load_builtin(source: str) -> RetrievalDataset:
    if source not in _BUILTIN_VARIANTS:
        raise DatasetError(f"{source}: unknown built-in dataset; expected one of {', '.join(_BUILTIN_VARIANTS)}")
    from mrl_core.builtin import build_builtin

    return build_builtin(_BUILTIN_VARIANTS[source])


def _load_file(files: _Files, name: str, *, source: str, max_uncompressed_bytes: int) -> RetrievalDataset:
    suffix = Path(name).suffix.lower()
    stem = Path(name).stem
    if suffix == ".zip":
        return _load_zip(files, name, source=source, max_uncompressed_bytes=max_uncompressed_bytes)
    if suffix == ".npy":
        return _load_embeddings(files, name, stem=stem, source=source, **_companions(stem))
    if suffix == ".parquet":
        table = _read_parquet(files, name)
        if any(column in table.column_names for column in _VECTOR_COLUMNS):
            return _load_embeddings(files, name, stem=stem, source=source, corpus_table=table, **_companions(stem))
        return _load_table(files, name, stem=stem, source=source, records=_parquet_records(files, name, table))
    if suffix in _TABLE_SUFFIXES:
        return _load_table(files, name, stem=stem, source=source, records=_text_table_records(files, name))
    if suffix == ".txt":
        return _load_lines(files, name, stem=stem, source=source)
    raise DatasetError(
        f"{files.display(name)}: unknown file type {suffix or '(no extension)'!r}; expected a folder, {_KNOWN_SUFFIXES}"
    )


def _companions(stem: str) -> dict:
    return {
        "query_names": (f"{stem}.queries.npy", f"{stem}.queries.parquet"),
        "qrels_name": f"{stem}.qrels.tsv",
    }


def _load_bundle(files: _Files, *, name: str, source: str) -> RetrievalDataset:
    if files.has("corpus.jsonl"):
        return _load_beir(files, name=name, source=source)
    corpus_names = [marker for marker in ("corpus.npy", "corpus.parquet") if files.has(marker)]
    if len(corpus_names) > 1:
        raise DatasetError(f"{files.label}: holds both corpus.npy and corpus.parquet; expected exactly one")
    if corpus_names:
        return _load_embeddings(
            files,
            corpus_names[0],
            stem=name,
            source=source,
            query_names=("queries.npy", "queries.parquet"),
            qrels_name="qrels.tsv",
        )
    raise DatasetError(
        f"{files.label}: no corpus.jsonl (BEIR layout) and no corpus.npy or corpus.parquet (precomputed "
        "embeddings); expected one of them"
    )


def _load_zip(files: _Files, name: str, *, source: str, max_uncompressed_bytes: int) -> RetrievalDataset:
    display = files.display(name)
    if files.size(name) == 0:
        raise DatasetError(f"{display}: file is empty; expected a zip archive")
    with files.open(name) as handle:
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile:
            raise DatasetError(
                f"{display}: not a zip archive; expected a .zip of a BEIR or embeddings folder"
            ) from None
        with archive:
            infos = archive.infolist()
            for info in infos:
                _check_zip_entry(display, info.filename)
            total_bytes = sum(info.file_size for info in infos)
            if total_bytes > max_uncompressed_bytes:
                raise DatasetError(
                    f"{display}: members uncompress to {total_bytes} bytes, over the limit of "
                    f"{max_uncompressed_bytes} bytes; refusing to read it"
                )
            prefix = _zip_root(display, [info.filename for info in infos if not info.is_dir()])
            return _load_bundle(_ZipFiles(archive, prefix, display), name=Path(name).stem, source=source)


def _check_zip_entry(display: str, entry: str) -> None:
    parts = re.split(r"[/\\]", entry)
    if entry.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", entry) or ".." in parts:
        raise DatasetError(
            f"{display}: entry {entry!r} points outside the archive's folder (absolute path or '..'); "
            "refusing to read the archive"
        )


def _zip_root(display: str, names: list[str]) -> str:
    """The folder inside the archive that holds the dataset: '' (top level) or 'name/'."""
    roots = set()
    for entry in names:
        parts = entry.split("/")
        # macOS archivers add resource-fork copies of every file under __MACOSX/.
        if parts[0] == "__MACOSX" or parts[-1] not in _CORPUS_MARKERS or len(parts) > 2:
            continue
        roots.add(parts[0] + "/" if len(parts) == 2 else "")
    if not roots:
        raise DatasetError(
            f"{display}: no corpus.jsonl (BEIR layout) or corpus.npy / corpus.parquet (precomputed embeddings) "
            "at the top level or inside one folder"
        )
    if len(roots) > 1:
        folders = ", ".join(sorted(root or "(top level)" for root in roots))
        raise DatasetError(f"{display}: holds datasets in several folders ({folders}); expected one")
    return roots.pop()


# --- text files ---


def _read_text(files: _Files, name: str) -> str:
    display = files.display(name)
    data = files.read(name)
    if not data.strip():
        raise DatasetError(f"{display}: file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DatasetError(
            f"{display}: line {line}: not valid UTF-8 (byte 0x{data[error.start]:02x}); expected UTF-8 text"
        ) from None


def _jsonl_records(files: _Files, name: str) -> Iterator[tuple[str, dict]]:
    display = files.display(name)
    for number, line in enumerate(_read_text(files, name).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{display}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{where}: invalid JSON ({error.msg} at column {error.colno}); expected one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, record


def _id_field(where: str, record: dict, field_name: str) -> str:
    value = record.get(field_name)
    if value is None:
        raise DatasetError(f"{where}: field {field_name!r} is missing; expected an id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError(
            f"{where}: field {field_name!r} has type {type(value).__name__}; expected a string or integer id"
        )
    value = str(value).strip()
    if not value:
        raise DatasetError(f"{where}: field {field_name!r} is empty; expected an id")
    return value


def _text_field(where: str, record: dict, field_name: str, *, required: bool = True) -> str:
    value = record.get(field_name)
    if value is None:
        if required:
            raise DatasetError(f"{where}: field {field_name!r} is missing; expected text")
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field {field_name!r} has type {type(value).__name__}; expected text")
    return value


def _check_unique(where: str, seen: dict[str, str], item_id: str, kind: str) -> None:
    if item_id in seen:
        raise DatasetError(f"{where}: duplicate {kind} id {item_id!r} (first at {seen[item_id]}); expected unique ids")
    seen[item_id] = where.rsplit(": ", 1)[-1]


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


# --- BEIR ---


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


# --- tables: pairs or a plain corpus ---


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


# --- precomputed embeddings ---


def _load_embeddings(
    files: _Files,
    corpus_name: str,
    *,
    stem: str,
    source: str,
    query_names: tuple[str, str],
    qrels_name: str,
    corpus_table=None,
) -> RetrievalDataset:
    corpus_ids, corpus_matrix = _read_matrix(files, corpus_name, table=corpus_table)
    present = [query_name for query_name in query_names if files.has(query_name)]
    if len(present) > 1:
        raise DatasetError(f"{files.label}: holds both {' and '.join(present)}; expected one file of query embeddings")
    query_ids: list[str] = []
    query_matrix = None
    if present:
        query_ids, query_matrix = _read_matrix(files, present[0])
        if query_matrix.shape[1] != corpus_matrix.shape[1]:
            raise DatasetError(
                f"{files.display(present[0])}: query vectors have width {query_matrix.shape[1]} but "
                f"{files.display(corpus_name)} has width {corpus_matrix.shape[1]}; expected one width (one model)"
            )
    qrels: dict[str, dict[str, int]] = {}
    if files.has(qrels_name):
        if query_matrix is None:
            raise DatasetError(
                f"{files.display(qrels_name)}: judgements need query embeddings; expected "
                f"{' or '.join(files.display(query_name) for query_name in query_names)}"
            )
        qrels = _read_qrels(
            files,
            qrels_name,
            query_ids=set(query_ids),
            corpus_ids=set(corpus_ids),
            query_file=files.display(present[0]),
            corpus_file=files.display(corpus_name),
        )
        _require_positive(files.display(qrels_name), qrels)
    return RetrievalDataset(
        name=stem,
        source=source,
        corpus_ids=corpus_ids,
        corpus_texts=None,
        query_ids=query_ids,
        query_texts=None,
        qrels=qrels,
        corpus_embeddings=corpus_matrix,
        query_embeddings=query_matrix,
    )


def _read_matrix(files: _Files, name: str, *, table=None) -> tuple[list[str], np.ndarray]:
    display = files.display(name)
    if name.lower().endswith(".parquet"):
        return _parquet_matrix(display, table if table is not None else _read_parquet(files, name))
    if files.size(name) == 0:
        raise DatasetError(f"{display}: file is empty; expected a 2-D float array")
    with files.open(name) as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise DatasetError(f"{display}: not a .npy file (no NUMPY header); expected numpy.save output")
        handle.seek(0)
        try:
            array = np.load(handle, allow_pickle=False)
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise DatasetError(
                    f"{display}: holds Python objects (dtype object), which would need unpickling; "
                    "expected a 2-D float array"
                ) from None
            raise DatasetError(f"{display}: unreadable .npy file ({error}); expected a 2-D float array") from None
        except (OSError, EOFError) as error:
            raise DatasetError(f"{display}: unreadable .npy file ({error}); expected a 2-D float array") from None
    if array.dtype.kind != "f":
        raise DatasetError(f"{display}: dtype {array.dtype}; expected a 2-D float array (float16, float32 or float64)")
    if array.ndim != 2:
        raise DatasetError(f"{display}: shape {array.shape}; expected a 2-D array with one row per vector")
    return _checked_matrix(display, [str(row) for row in range(array.shape[0])], array)


def _checked_matrix(display: str, ids: list[str], array: np.ndarray) -> tuple[list[str], np.ndarray]:
    if array.shape[0] == 0:
        raise DatasetError(f"{display}: 0 rows; expected at least one vector")
    if array.shape[1] == 0:
        raise DatasetError(f"{display}: vectors of width 0; expected at least one value per vector")
    # float64 values beyond float32's range become inf here and are reported below.
    with np.errstate(over="ignore"):
        matrix = np.ascontiguousarray(array, dtype=np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        raise DatasetError(
            f"{display}: row {row + 1} (id {ids[row]!r}) holds NaN or infinite values "
            f"(or values beyond float32); expected finite numbers ({bad_rows.size} of {len(ids)} rows affected)"
        )
    return ids, matrix


def _read_parquet(files: _Files, name: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    display = files.display(name)
    if files.size(name) == 0:
        raise DatasetError(f"{display}: file is empty; expected a Parquet table")
    with files.open(name) as handle:
        try:
            return pq.read_table(handle)
        except (pa.ArrowException, OSError) as error:
            raise DatasetError(f"{display}: not a readable Parquet file ({error})") from None


def _parquet_matrix(display: str, table) -> tuple[list[str], np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = table.column_names
    id_column = next((column for column in _ID_COLUMNS if column in columns), None)
    vector_column = next((column for column in _VECTOR_COLUMNS if column in columns), None)
    if id_column is None or vector_column is None:
        raise DatasetError(
            f"{display}: columns {columns}; expected an id column ('id' or '_id') and a vector column "
            "('embedding' or 'vector', a list of floats)"
        )
    ids: list[str] = []
    seen: dict[str, str] = {}
    for number, value in enumerate(table.column(id_column).to_pylist(), start=1):
        where = f"{display}: row {number}"
        item_id = _id_field(where, {id_column: value}, id_column)
        _check_unique(where, seen, item_id, "vector")
        ids.append(item_id)
    vectors = table.column(vector_column)
    vector_type = vectors.type
    is_list = pa.types.is_list(vector_type) or pa.types.is_large_list(vector_type)
    if not (is_list or pa.types.is_fixed_size_list(vector_type)):
        raise DatasetError(f"{display}: field {vector_column!r} has type {vector_type}; expected a list of floats")
    if not pa.types.is_floating(vector_type.value_type):
        raise DatasetError(
            f"{display}: field {vector_column!r} holds {vector_type.value_type} values; expected a list of floats"
        )
    if len(ids) == 0:
        raise DatasetError(f"{display}: 0 rows; expected at least one vector")
    if vectors.null_count:
        row = int(np.flatnonzero(vectors.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetError(
            f"{display}: row {row + 1} (id {ids[row]!r}): field {vector_column!r} is missing; expected a vector"
        )
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    ragged = np.flatnonzero(lengths != lengths[0])
    if ragged.size:
        row = int(ragged[0])
        raise DatasetError(
            f"{display}: row {row + 1} (id {ids[row]!r}): field {vector_column!r} has {lengths[row]} values but "
            f"row 1 has {lengths[0]}; expected vectors of one width"
        )
    values = pc.list_flatten(vectors)
    if values.null_count:
        position = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        row = position // int(lengths[0])
        raise DatasetError(
            f"{display}: row {row + 1} (id {ids[row]!r}): field {vector_column!r} holds a null value; expected floats"
        )
    flat = values.to_numpy(zero_copy_only=False)
    return _checked_matrix(display, ids, flat.reshape(len(ids), int(lengths[0])))
