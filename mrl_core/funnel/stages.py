"""What a funnel is: stages in search order, each keeping the best rows scored at one prefix width."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mrl_core.indexes import FIRST_STAGE_INDEX_TYPES, FIRST_STAGE_PRECISIONS

REFERENCE_WIDTHS = (16, 32, 64, 128)
REFERENCE_SHORTLISTS = (200, 100, 50, 25)
"""The MRL paper's hand-picked funnel: 16->32->64->128->full with shortlists 200->100->50->25->k."""


@dataclass(frozen=True)
class FunnelStage:
    """One stage: keep the best ``shortlist_size`` rows scored at ``width`` dimensions.

    ``index_type``, ``precision``, ``probes`` and ``ef_search`` only matter for stage 1, which searches
    the whole corpus (a flat scan over fp32, fp16 or int8 prefixes, a Hamming scan over sign bits, HNSW
    over fp32 keeping ``ef_search`` candidates while it walks the graph, or IVF over fp32 scanning the
    ``probes`` lists nearest the query); later stages rescore the previous shortlist in fp32 and must say
    ``flat``/``fp32``. ``precision`` defaults to the index type's first of ``FIRST_STAGE_PRECISIONS``;
    ``probes`` is required for IVF and refused otherwise; ``ef_search`` is only for HNSW, and when it is
    None (stages stored before it existed) HNSW keeps ``max(shortlist_size, 16)`` candidates.
    """

    width: int
    shortlist_size: int
    index_type: str = "flat"
    precision: str | None = None
    probes: int | None = None
    ef_search: int | None = None

    def __post_init__(self) -> None:
        if self.index_type not in FIRST_STAGE_INDEX_TYPES:
            raise ValueError(f"index_type={self.index_type!r}: expected one of {list(FIRST_STAGE_INDEX_TYPES)}")
        allowed = FIRST_STAGE_PRECISIONS[self.index_type]
        if self.precision is None:
            object.__setattr__(self, "precision", allowed[0])
        elif self.precision not in allowed:
            raise ValueError(
                f"precision={self.precision!r}: a {self.index_type} stage stores one of {list(allowed)}"
            )
        if int(self.width) < 1:
            raise ValueError(f"width={self.width!r}: expected a positive number of dimensions")
        if int(self.shortlist_size) < 1:
            raise ValueError(f"shortlist_size={self.shortlist_size!r}: expected a positive number of rows")
        if self.index_type == "binary" and self.width % 8:
            raise ValueError(f"width={self.width}: a binary stage needs a multiple of 8 bits")
        if self.index_type == "ivf":
            if self.probes is None or int(self.probes) < 1:
                raise ValueError(f"probes={self.probes!r}: an ivf stage needs a positive number of lists to probe")
            object.__setattr__(self, "probes", int(self.probes))
        elif self.probes is not None:
            raise ValueError(f"probes={self.probes!r}: only an ivf stage probes lists")
        if self.ef_search is not None:
            if self.index_type != "hnsw":
                raise ValueError(f"ef_search={self.ef_search!r}: only an hnsw stage has a search candidate list")
            if int(self.ef_search) < 1:
                raise ValueError(f"ef_search={self.ef_search!r}: expected a positive candidate list length")
            object.__setattr__(self, "ef_search", int(self.ef_search))

    @property
    def hnsw_ef_search(self) -> int:
        """The candidate list HNSW keeps: ``ef_search``, else the shortlist size (at least 16); never below
        the shortlist size, which a shorter list could not fill."""
        return max(self.ef_search or max(int(self.shortlist_size), 16), int(self.shortlist_size))

    def to_dict(self) -> dict:
        stage = {
            "width": int(self.width),
            "precision": self.precision,
            "index_type": self.index_type,
            "shortlist_size": int(self.shortlist_size),
        }
        if self.probes is not None:
            stage["probes"] = self.probes
        if self.ef_search is not None:
            stage["ef_search"] = self.ef_search
        return stage


@dataclass(frozen=True)
class Funnel:
    """Stages in search order; the last stage's ``shortlist_size`` is k, the number of results."""

    stages: tuple[FunnelStage, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("a funnel needs at least one stage")
        for number, stage in enumerate(self.stages[1:], start=2):
            if (stage.index_type, stage.precision) != ("flat", "fp32"):
                raise ValueError(
                    f"stage {number}: index_type={stage.index_type!r}, precision={stage.precision!r}; only "
                    "stage 1 searches an index, later stages rescore the shortlist in fp32 and must be 'flat'"
                )
        for number, (before, after) in enumerate(zip(self.stages, self.stages[1:]), start=2):
            if after.shortlist_size > before.shortlist_size:
                raise ValueError(
                    f"stage {number}: shortlist_size={after.shortlist_size} exceeds the "
                    f"{before.shortlist_size} rows stage {number - 1} passes on"
                )

    @property
    def k(self) -> int:
        return int(self.stages[-1].shortlist_size)

    def to_dicts(self) -> list[dict]:
        return [stage.to_dict() for stage in self.stages]

    @classmethod
    def from_dicts(cls, stages: Sequence[dict]) -> "Funnel":
        """Rebuild a funnel from ``to_dicts()`` output (as stored in the ``funnels`` table)."""
        return cls(
            tuple(
                FunnelStage(
                    int(stage["width"]), int(stage["shortlist_size"]), stage.get("index_type", "flat"),
                    stage.get("precision"), stage.get("probes"), stage.get("ef_search"),
                )
                for stage in stages
            )
        )

    def describe(self) -> str:
        """E.g. ``binary 128 -> 400 | 384 -> 10``, ``flat int8 64 -> 2000 | 384 -> 10`` or ``hnsw 384 (efSearch 128) -> 10``."""
        parts = []
        for number, stage in enumerate(self.stages):
            if number:
                label = f"{stage.width}"
            elif stage.precision == FIRST_STAGE_PRECISIONS[stage.index_type][0]:
                label = f"{stage.index_type} {stage.width}"
            else:
                label = f"{stage.index_type} {stage.precision} {stage.width}"
            if stage.probes is not None:
                label += f" (probe {stage.probes})"
            if stage.ef_search is not None:
                label += f" (efSearch {stage.ef_search})"
            parts.append(f"{label} -> {stage.shortlist_size}")
        return " | ".join(parts)

    def index_label(self) -> str:
        """``describe()`` without the last shortlist: a one-stage funnel reads as the index it searches,
        e.g. ``hnsw 384 (efSearch 128)`` or ``ivf 384 (probe 16)``."""
        return self.describe().rsplit(" -> ", 1)[0]

    @classmethod
    def exact(cls, full_width: int, k: int = 10) -> "Funnel":
        """One flat stage at full width: exact search."""
        return cls((FunnelStage(full_width, k, "flat"),))

    @classmethod
    def reference(cls, full_width: int, k: int = 10) -> "Funnel":
        """The MRL paper's funnel 16->32->64->128->full, shortlists 200->100->50->25->k."""
        stages = [FunnelStage(w, s) for w, s in zip(REFERENCE_WIDTHS, REFERENCE_SHORTLISTS) if w < full_width]
        return cls(tuple(stages) + (FunnelStage(full_width, k),))


@dataclass
class FunnelResult:
    """Top-k ids and scores per query (-1 / -inf where a stage found fewer rows) and wall time per stage."""

    ids: np.ndarray
    scores: np.ndarray
    stage_ms: list[float]

    @property
    def total_ms(self) -> float:
        return float(sum(self.stage_ms))
