"""Pareto fronts: which options no other option beats on every objective at once."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pareto_flags(lower_is_better: Sequence[Sequence[float]] = (), higher_is_better: Sequence[Sequence[float]] = ()) -> list[bool]:
    """True for each option that no other option dominates: as good or better on every objective, strictly
    better on one. An unknown value (NaN) counts as the worst possible on its objective.

    Args:
        lower_is_better: one sequence per objective to minimise (storage, latency), each one value per option.
        higher_is_better: one sequence per objective to maximise (quality, recall).

    Returns:
        One flag per option.

    Example:
        >>> pareto_flags(lower_is_better=[[1.0, 2.0, 3.0]], higher_is_better=[[0.5, 0.9, 0.8]])
        [True, True, False]
    """
    columns = [np.nan_to_num(np.asarray(values, dtype=float), nan=np.inf) for values in lower_is_better]
    columns += [np.nan_to_num(-np.asarray(values, dtype=float), nan=np.inf) for values in higher_is_better]
    if not columns:
        raise ValueError("pareto_flags: give at least one objective")
    costs = np.stack(columns, axis=1)
    flags = []
    for row in costs:
        no_worse = (costs <= row).all(axis=1)
        better = (costs < row).any(axis=1)
        flags.append(not bool((no_worse & better).any()))
    return flags
