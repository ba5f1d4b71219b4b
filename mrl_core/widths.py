"""Width and precision: cut a Matryoshka embedding to a prefix, renormalise it, store it smaller.

Truncate -> renormalise -> quantize, for queries and documents alike. Quantization goes through
sentence-transformers' ``quantize_embeddings`` so the numbers here are the ones its users get.
"""

from __future__ import annotations

import warnings
from typing import Literal, Sequence

import numpy as np

Precision = Literal["fp32", "fp16", "int8", "binary", "binary+rescore"]
Method = Literal["prefix", "pca"]

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "binary", "binary+rescore")
"""Storage precisions, widest first. ``binary+rescore`` stores the same bits as ``binary`` and
reranks a Hamming shortlist with the float query (sentence-transformers' rescore recipe)."""

METHODS: tuple[str, ...] = ("prefix", "pca")
"""How a width is cut: the first dimensions as they are, or the first principal components."""


def check_widths(widths: Sequence[int], full_width: int, *, name: str = "widths") -> list[int]:
    """Return widths as ints after checking each is in 1..full_width and none repeats.

    Raises:
        ValueError: naming the offending width and the allowed range.
    """
    widths = list(widths)
    if not widths:
        raise ValueError(f"{name}: give at least one width in 1..{full_width}")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
            raise ValueError(f"{name}: {width!r} is not an integer; expected widths in 1..{full_width}")
        if not 1 <= width <= full_width:
            raise ValueError(f"{name}: {width} is outside 1..{full_width} (the model's full width is {full_width})")
    repeated = sorted({int(width) for width in widths if widths.count(width) > 1})
    if repeated:
        raise ValueError(f"{name}: {repeated} given more than once")
    return [int(width) for width in widths]


def check_training_dims(dims: Sequence[int], full_width: int) -> list[int]:
    """Training widths, widest first; the full width is added (with a warning) when missing.

    Matryoshka training needs the full width among its dims, or full-width quality drifts.

    Raises:
        ValueError: for a width that is not a positive integer, exceeds the full width, or repeats.
    """
    dims = check_widths(dims, full_width, name="dims")
    if full_width not in dims:
        warnings.warn(
            f"dims {dims} lack the model's full width {full_width}; adding it so full-width quality is trained too",
            stacklevel=3,
        )
        dims.append(full_width)
    return sorted(dims, reverse=True)


def check_choices(values: Sequence[str], allowed: Sequence[str], name: str) -> list[str]:
    """Return ``values`` as a list after checking each is allowed and none repeats.

    Raises:
        ValueError: naming the offending value and the allowed set.
    """
    values = list(values)
    if not values:
        raise ValueError(f"{name}: give at least one of {list(allowed)}")
    for value in values:
        if value not in allowed:
            raise ValueError(f"{name}: {value!r} is not one of {list(allowed)}")
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"{name}: {repeated} given more than once")
    return values


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm, as a new C-contiguous float32 matrix; all-zero rows stay zero.

    The one renormalisation every module uses (a prefix of a unit vector is no longer unit).

    Example:
        >>> normalise_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
        array([[0.6, 0.8],
               [0. , 0. ]], dtype=float32)
    """
    rows = np.array(matrix, dtype=np.float32, order="C")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    # A row (or prefix) may be all zeros (e.g. sparse synthetic vectors); leave it zero rather than divide by 0.
    rows /= np.where(norms > 0, norms, 1.0)
    return rows


def truncate(embeddings: np.ndarray, width: int) -> np.ndarray:
    """Keep the first ``width`` dimensions and L2-renormalise each row (float32).

    Args:
        embeddings: (rows, full_width) matrix.
        width: how many leading dimensions to keep, 1..full_width.

    Returns:
        A new (rows, width) float32 matrix whose non-zero rows have unit norm.

    Raises:
        ValueError: if ``width`` is not in 1..full_width.

    Example:
        >>> truncate(np.array([[3.0, 4.0, 12.0]]), 2)
        array([[0.6, 0.8]], dtype=float32)
    """
    full_width = embeddings.shape[1]
    if not 1 <= width <= full_width:
        raise ValueError(f"width={width}: expected 1..{full_width} for {full_width}-dimensional embeddings")
    return normalise_rows(embeddings[:, :width])


def prefix_norms(matrix: np.ndarray, widths: Sequence[int] | None = None, chunk_rows: int = 65536) -> np.ndarray:
    """L2 norms of row prefixes at several widths, from one cumulative sum of squares per chunk of rows.

    Args:
        matrix: (rows, full_width) float matrix.
        widths: prefix widths in 1..full_width; None means every width 1..full_width.
        chunk_rows: rows per chunk, which bounds the temporary cumulative-sum matrix.

    Returns:
        (rows, len(widths)) float32 matrix; column j holds ``norm(matrix[:, :widths[j]], axis=1)``.

    Example:
        >>> prefix_norms(np.array([[3.0, 4.0, 12.0]]), [1, 2, 3])
        array([[ 3.,  5., 13.]], dtype=float32)
    """
    full_width = matrix.shape[1]
    columns = list(range(1, full_width + 1)) if widths is None else [int(width) for width in widths]
    for width in columns:
        if not 1 <= width <= full_width:
            raise ValueError(f"width={width}: expected 1..{full_width}")
    picks = np.array(columns) - 1
    norms = np.empty((matrix.shape[0], len(columns)), dtype=np.float32)
    for start in range(0, matrix.shape[0], chunk_rows):
        block = np.asarray(matrix[start : start + chunk_rows], dtype=np.float64)
        norms[start : start + len(block)] = np.sqrt(np.cumsum(block * block, axis=1)[:, picks])
    return norms


def renormalised_prefix(matrix: np.ndarray, width: int, norms: np.ndarray | None = None) -> np.ndarray:
    """The first ``width`` columns of each row divided by their norm (zero rows stay zero), float32.

    ``norms`` are the rows' ``width``-prefix norms when already known (``prefix_norms``); None computes
    them, which is ``truncate``.

    Example:
        >>> renormalised_prefix(np.array([[3.0, 4.0, 12.0]]), 2, norms=np.array([5.0]))
        array([[0.6, 0.8]], dtype=float32)
    """
    if norms is None:
        return truncate(matrix, width)
    prefix = np.array(matrix[:, :width], dtype=np.float32)
    prefix /= np.where(norms > 0, norms, 1.0)[:, None]
    return prefix


def quantize(corpus: np.ndarray, queries: np.ndarray, precision: Precision) -> tuple[np.ndarray, np.ndarray]:
    """Encode corpus and query embeddings (already truncated) at a storage precision.

    - ``fp32``: float32 as given.
    - ``fp16``: rounded to float16 and back to float32 (what an fp16 index computes with).
    - ``int8``: sentence-transformers int8 codes, both sides calibrated on this corpus's per-dimension
      min/max, searched by inner product of the codes.
    - ``binary`` and ``binary+rescore``: sign bits packed 8 per byte (``ubinary``), searched by Hamming
      distance; the width is padded to a whole byte with zero bits on both sides, which leaves
      distances unchanged.

    Args:
        corpus: (documents, width) float matrix.
        queries: (queries, width) float matrix.
        precision: one of ``PRECISIONS``.

    Returns:
        (corpus_codes, query_codes): float32 for fp32/fp16, int8 for int8, uint8 (width/8 bytes) for binary.

    Raises:
        ValueError: if ``precision`` is not one of ``PRECISIONS``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {list(PRECISIONS)}")
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if precision == "fp32":
        return corpus, queries
    if precision == "fp16":
        return corpus.astype(np.float16).astype(np.float32), queries.astype(np.float16).astype(np.float32)
    # Imported only for int8 and binary codes: sentence-transformers takes seconds to import.
    from sentence_transformers.util.quantization import quantize_embeddings

    if precision == "int8":
        # Queries use the corpus ranges: the corpus is what the index was built from, and a single
        # query has no range of its own.
        return (
            quantize_embeddings(corpus, precision="int8", calibration_embeddings=corpus),
            quantize_embeddings(queries, precision="int8", calibration_embeddings=corpus),
        )
    return quantize_embeddings(corpus, precision="ubinary"), quantize_embeddings(queries, precision="ubinary")


def unpack_signs(packed: np.ndarray, width: int) -> np.ndarray:
    """Turn ``ubinary`` codes back into +-1 float32 vectors of ``width`` dimensions."""
    bits = np.unpackbits(packed, axis=-1)[..., :width]
    return bits.astype(np.float32) * 2.0 - 1.0
