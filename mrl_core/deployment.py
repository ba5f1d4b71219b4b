"""Where a corpus is deployed: the engine (vendor), copies, per-vector metadata, index parameters, and where a
funnel keeps its rescoring vectors. One ``Deployment`` value travels through the cost model, the planner,
the capacity figures and the exports, and this module holds its vocabulary.

Standard library only: the CLI reads ``VENDORS`` and ``LOCATIONS`` while building its parser, before any
command has asked for numpy, pandas or FAISS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Literal, get_args

Vendor = Literal["faiss", "qdrant", "weaviate", "opensearch"]
VENDORS: tuple[str, ...] = get_args(Vendor)
Location = Literal["ram", "disk"]
LOCATIONS: tuple[str, ...] = get_args(Location)
"""Where a funnel keeps the vectors its later stages rescore with: in RAM, or on disk (read per query)."""

# Vendors' published sizing multipliers on top of the raw index bytes:
# - Qdrant capacity planning (https://qdrant.tech/documentation/cloud/capacity-sizing):
#   memory_size = number_of_vectors * vector_dimension * 4 bytes * 1.5.
# - OpenSearch k-NN index docs (_search-plugins/knn/knn-index.md, "HNSW memory estimation"):
#   1.1 * (4 * dimension + 8 * M) bytes/vector.
# - Weaviate resource planning (https://weaviate.io/developers/weaviate/concepts/resources):
#   "Memory usage = 2x the memory footprint of all vectors"; 1M x 384 float32 -> 3 GB.
# tests/test_cost.py reproduces each vendor's worked example.
VENDOR_OVERHEAD: dict[str, float] = {"faiss": 1.0, "qdrant": 1.5, "weaviate": 2.0, "opensearch": 1.1}


def _default_hnsw_m() -> int:
    # mrl_core.indexes imports FAISS; importing it only when a Deployment is made keeps this module light.
    from mrl_core.indexes import HNSW_M

    return HNSW_M


def _is_whole(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class Deployment:
    """How a configuration is deployed; checked when made, so every Deployment is a valid one.

    Args:
        vendor: 'faiss', 'qdrant', 'weaviate' or 'opensearch'; storage is multiplied by that vendor's
            ``VENDOR_OVERHEAD`` factor.
        replicas: copies of everything.
        metadata_bytes_per_vector: ids/metadata the application keeps per vector, counted in RAM.
        hnsw_m: HNSW links per vector (M); default ``mrl_core.indexes.HNSW_M``.
        ivf_nlist: IVF lists; None takes the FAISS guideline 4*sqrt(corpus size).
        rescore_location: where a funnel keeps the vectors its later stages rescore with ('ram' or 'disk').

    Raises:
        ValueError: naming the field, the value given and what is expected.

    Example:
        >>> Deployment(vendor="qdrant", replicas=2).vendor_overhead
        1.5
        >>> Deployment(replicas=0)
        Traceback (most recent call last):
        ...
        ValueError: replicas=0: expected a whole number >= 1
    """

    vendor: Vendor = "faiss"
    replicas: int = 1
    metadata_bytes_per_vector: float = 0.0
    hnsw_m: int = field(default_factory=_default_hnsw_m)
    ivf_nlist: int | None = None
    rescore_location: Location = "ram"

    def __post_init__(self) -> None:
        if self.vendor not in VENDORS:
            raise ValueError(f"vendor={self.vendor!r}: expected one of {list(VENDORS)}")
        if not _is_whole(self.replicas) or self.replicas < 1:
            raise ValueError(f"replicas={self.replicas!r}: expected a whole number >= 1")
        metadata = self.metadata_bytes_per_vector
        if isinstance(metadata, bool) or not isinstance(metadata, Real) or not math.isfinite(metadata) or metadata < 0:
            raise ValueError(f"metadata_bytes_per_vector={metadata!r}: expected a finite number >= 0")
        if not _is_whole(self.hnsw_m) or self.hnsw_m < 1:
            raise ValueError(f"hnsw_m={self.hnsw_m!r}: expected a whole number >= 1")
        if self.ivf_nlist is not None and (not _is_whole(self.ivf_nlist) or self.ivf_nlist < 1):
            raise ValueError(
                f"ivf_nlist={self.ivf_nlist!r}: expected a whole number >= 1, or None for 4*sqrt(corpus size)"
            )
        if self.rescore_location not in LOCATIONS:
            raise ValueError(f"rescore_location={self.rescore_location!r}: expected one of {list(LOCATIONS)}")

    @property
    def vendor_overhead(self) -> float:
        """The vendor's sizing multiplier (``VENDOR_OVERHEAD``)."""
        return VENDOR_OVERHEAD[self.vendor]
