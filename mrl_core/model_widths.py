"""The widths a model offers: its full width, and the usual Matryoshka widths below it."""

from __future__ import annotations

from mrl_core.dataset import RetrievalDataset
from mrl_core.encode import model_width

STANDARD_WIDTHS = (1024, 768, 512, 256, 128, 64, 32, 16, 8)
"""The usual Matryoshka training and evaluation widths (the MRL paper's nesting, halving down to 8)."""


def full_width(model: str, vectors: RetrievalDataset | int | None = None) -> int:
    """A model's full width: the widest prefix it gives.

    Args:
        model: a MODEL spec. ``base``, a saved model folder or a saved adaptor: the width its encoder (or
            adaptor) outputs. ``precomputed`` has no encoder: the width of the vectors it stands for.
        vectors: for ``precomputed`` only, those vectors: the dataset that carries them, or their width
            (e.g. the widest width evaluated on that dataset, ``WidthPlanner.context_["full_width"]``).

    Raises:
        ValueError: ``precomputed`` without a dataset of embeddings or a width; a model spec that names
            nothing loadable.

    Example:
        >>> full_width("precomputed", 768)
        768
    """
    if model != "precomputed":
        return model_width(model)
    if isinstance(vectors, RetrievalDataset):
        if not vectors.is_precomputed:
            raise ValueError(f"{vectors.source}: holds texts, not embeddings; model 'precomputed' has no width here")
        return int(vectors.corpus_embeddings.shape[1])
    if vectors is None:
        raise ValueError("model 'precomputed' has no encoder: give the dataset of embeddings or their width")
    return int(vectors)


def width_choices(full_width: int) -> list[int]:
    """The full width and the standard widths below it, widest first.

    Example:
        >>> width_choices(384)
        [384, 256, 128, 64, 32, 16, 8]
    """
    return [full_width] + [width for width in STANDARD_WIDTHS if width < full_width]
