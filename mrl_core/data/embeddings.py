"""Precomputed embeddings: .npy arrays or Parquet vector columns, with optional query vectors and qrels."""

from __future__ import annotations

import numpy as np

from mrl_core.data.files import _Files
from mrl_core.data.qrels import _read_qrels, _require_positive
from mrl_core.data.records import _ID_COLUMNS, _check_unique, _id_field, _read_parquet
from mrl_core.dataset import DatasetError, RetrievalDataset

_VECTOR_COLUMNS = ("embedding", "vector")


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
