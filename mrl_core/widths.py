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
    prefix = np.array(embeddings[:, :width], dtype=np.float32)
    norms = np.linalg.norm(prefix, axis=1, keepdims=True)
    # A prefix may be all zeros (e.g. sparse synthetic vectors); leave it zero rather than divide by 0.
    prefix /= np.where(norms > 0, norms, 1.0)
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
    from sentence_transformers.util.quantization import quantize_embeddings

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {list(PRECISIONS)}")
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if precision == "fp32":
        return corpus, queries
    if precision == "fp16":
        return corpus.astype(np.float16).astype(np.float32), queries.astype(np.float16).astype(np.float32)
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
