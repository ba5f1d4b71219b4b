"""Retrieval datasets: one in-memory shape for every input a user may bring.

``load_dataset`` and ``load_uploaded`` choose a reader by what the input is; each format lives in its own
module (``beir``, ``tables``, ``embeddings``) and reads through ``files`` (folder, zip or upload).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from mrl_core.builtin import build_builtin, builtin_cache_path
from mrl_core.builtin.gcide import build_large, large_cache_path
from mrl_core.data.beir import _load_beir
from mrl_core.data.embeddings import _VECTOR_COLUMNS, _load_embeddings
from mrl_core.data.files import _check_zip_entry, _Files, _FolderFiles, _MemoryFiles, _zip_root, _ZipFiles
from mrl_core.data.records import _read_parquet
from mrl_core.data.splitting import split_pairs
from mrl_core.data.tables import _load_lines, _load_table, _parquet_records, _text_table_records
from mrl_core.dataset import DatasetError, RetrievalDataset, content_fingerprint

__all__ = [
    "DEFAULT_MAX_UNCOMPRESSED_BYTES",
    "DatasetError",
    "RetrievalDataset",
    "allowed_data_roots",
    "builtin_is_built",
    "check_local_path",
    "content_fingerprint",
    "check_source",
    "load_dataset",
    "load_uploaded",
    "split_pairs",
]


DEFAULT_MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
_BUILTIN_VARIANTS = {"builtin": "full", "builtin:quick": "quick", "builtin:large": "large"}
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
_KNOWN_SUFFIXES = ".zip, .csv, .tsv, .jsonl, .parquet, .txt or .npy"


def load_dataset(
    source: str | os.PathLike, *, max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES
) -> RetrievalDataset:
    """Load any supported input as a RetrievalDataset, validating it on the way.

    Accepted sources, chosen by what the path is:

    * ``builtin`` / ``builtin:quick``: the embedded default dataset (``mrl_core.builtin``);
      ``builtin:large``: 105,377 dictionary definitions (``mrl_core.builtin.gcide``).
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
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "pairs.csv").write_text("query,positive\\nwhat is 2+2,four\\ncapital of France,Paris\\n")
        >>> dataset = load_dataset(folder / "pairs.csv")
        >>> dataset.corpus_size, len(dataset.query_ids)
        (2, 2)
    """
    source_text = os.fspath(source)
    check_source(source_text)
    if source_text == "builtin" or source_text.startswith("builtin:"):
        return _load_builtin(source_text)
    path = Path(source_text)
    if path.is_dir():
        return _load_bundle(_FolderFiles(path, source_text), name=path.resolve().name, source=source_text)
    return _load_file(
        _FolderFiles(path.parent, os.path.dirname(source_text)),
        path.name,
        source=source_text,
        max_uncompressed_bytes=max_uncompressed_bytes,
    )


def check_source(source: str | os.PathLike) -> None:
    """Raise the ``DatasetError`` ``load_dataset`` would for a source that names nothing loadable (an unknown
    built-in, a missing path), without reading it: what a background job checks before it is queued."""
    source_text = os.fspath(source)
    if source_text == "builtin" or source_text.startswith("builtin:"):
        if source_text not in _BUILTIN_VARIANTS:
            raise DatasetError(
                f"{source_text}: unknown built-in dataset; expected one of {', '.join(_BUILTIN_VARIANTS)}"
            )
        return
    path = Path(source_text)
    if not path.is_dir() and not path.is_file():
        raise DatasetError(
            f"{source_text}: no such file or folder; expected a BEIR folder or .zip, a pairs, corpus or "
            "embeddings file, or 'builtin'"
        )


def allowed_data_roots() -> list[Path]:
    """Folders whose files the app may load by path: ``$MRL_DATA_ROOTS`` (separated by ``os.pathsep``), else the
    user's home folder. Resolved, so a symbolic link cannot lead out of them."""
    configured = os.environ.get("MRL_DATA_ROOTS")
    texts = [part for part in configured.split(os.pathsep) if part.strip()] if configured else [str(Path.home())]
    return [Path(text).expanduser().resolve() for text in texts]


def check_local_path(path_text: str, roots: list[Path] | None = None) -> Path:
    """A file or folder on this machine that a user named, checked before anything reads it.

    Refused: an empty path, any ``..`` component, a path that does not exist or cannot be read, and one whose
    real location (symbolic links followed) is outside every allowed root (``allowed_data_roots()`` unless
    ``roots`` is given).

    Returns:
        The resolved path, for ``load_dataset``.

    Raises:
        DatasetError: naming the path and what is wrong with it.

    Example:
        >>> check_local_path("../etc/passwd", roots=[Path("/")])
        Traceback (most recent call last):
        ...
        mrl_core.dataset.DatasetError: ../etc/passwd: a path may not contain '..'; give it from an allowed folder down
    """
    text = path_text.strip()
    if not text:
        raise DatasetError("no path given; expected a BEIR folder, a .zip, a table, a .txt or a .npy file on this machine")
    path = Path(text).expanduser()
    if ".." in path.parts:
        raise DatasetError(f"{text}: a path may not contain '..'; give it from an allowed folder down")
    if not path.exists():
        raise DatasetError(f"{text}: no such file or folder on this machine")
    resolved = path.resolve()
    roots = allowed_data_roots() if roots is None else [Path(root).resolve() for root in roots]
    if not any(resolved == root or root in resolved.parents for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise DatasetError(
            f"{text}: outside the folders this app may read ({allowed}); set MRL_DATA_ROOTS to allow another"
        )
    if not os.access(resolved, os.R_OK | (os.X_OK if resolved.is_dir() else 0)):
        raise DatasetError(f"{text}: not readable by this app's user")
    return resolved


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


def builtin_is_built(source: str) -> bool:
    """Whether a built-in dataset (``builtin``, ``builtin:quick``, ``builtin:large``) is in the cache, so loading
    it reads a file instead of walking packages or extracting a dictionary."""
    check_source(source)
    variant = _BUILTIN_VARIANTS[source]
    return (large_cache_path() if variant == "large" else builtin_cache_path(variant)).is_file()


def _load_builtin(source: str) -> RetrievalDataset:
    variant = _BUILTIN_VARIANTS[source]
    return build_large() if variant == "large" else build_builtin(variant)


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
