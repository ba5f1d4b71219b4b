"""Reading a file's contents: UTF-8 text, JSON lines and Parquet tables, and the typed fields in them."""

from __future__ import annotations

import json
from collections.abc import Iterator

from mrl_core.data.files import _Files
from mrl_core.dataset import DatasetError

_ID_COLUMNS = ("_id", "id")


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
