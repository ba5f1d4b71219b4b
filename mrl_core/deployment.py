"""Where a corpus is deployed: the engine (vendor), copies, per-vector metadata, index parameters, and where a
funnel keeps its rescoring vectors. One ``Deployment`` value travels through the cost model, the planner,
the capacity figures and the exports, and this module holds its vocabulary. A ``Machine`` is the size of
one machine a shard runs on (this machine's by default): the cost model splits a corpus that does not fit.

Standard library only: the CLI reads ``VENDORS`` and ``LOCATIONS`` while building its parser, before any
command has asked for numpy, pandas or FAISS.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
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


# -- the machine a shard runs on ---------------------------------------------------------------------------------

MAX_CORPUS_SIZE = 10**12
"""The largest corpus the planner takes: a thousand times the billion-vector sets public benchmarks run
(BigANN, 10**9); past it a mistyped size is likelier than a real plan, so it is refused rather than costed."""

USABLE_RAM_FRACTION = 0.7
"""Share of a machine's RAM the index may fill. The rest is for the OS and its page cache, the engine's
query-time buffers (per-thread result heaps, scratch for decoded codes), and ingestion (new vectors wait
in buffers; IVF training and HNSW inserts need working memory). OpenSearch's k-NN plugin is more careful
by default (knn.memory.circuit_breaker.limit: 50% of what the JVM heap leaves); 0.7 assumes a machine that
serves only this index. ``Machine(usable_ram_fraction=...)`` changes it."""

# cgroup limits, v2 then v1: inside a container they cap the process below the host's RAM that sysconf reports.
_CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def this_machine_ram_bytes() -> int:
    """RAM of this machine in bytes: physical memory (``os.sysconf``, else /proc/meminfo), capped by a
    container's cgroup memory limit when there is one.

    Raises:
        ValueError: when neither source can be read (then give the machine's RAM explicitly).
    """
    ram_bytes = None
    try:
        ram_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    ram_bytes = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    if not ram_bytes or ram_bytes <= 0:
        raise ValueError("this machine's RAM could not be read: give the machine's RAM (machine_ram_gb) explicitly")
    for limit_path in _CGROUP_MEMORY_LIMITS:
        try:
            limit = Path(limit_path).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and 0 < int(limit) < ram_bytes:
            ram_bytes = int(limit)
    return int(ram_bytes)


def this_machine_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Machine:
    """The size of one machine a shard of the index runs on; checked when made.

    A single query's latency comes from bench rows measured one thread a query, so cores do not change it;
    they are kept with the plan because they bound how many queries one machine serves at once.

    Args:
        ram_bytes: the machine's RAM in bytes.
        cores: its CPU cores.
        usable_ram_fraction: share of the RAM the index may fill (``USABLE_RAM_FRACTION``).

    Raises:
        ValueError: naming the field, the value given and what is expected.

    Example:
        >>> machine = Machine.from_gb(64, cores=16)
        >>> machine.usable_ram_bytes
        44800000000.0
        >>> Machine.from_gb(0)
        Traceback (most recent call last):
        ...
        ValueError: machine_ram_gb=0: expected a number of GB > 0
    """

    ram_bytes: int
    cores: int = 1
    usable_ram_fraction: float = USABLE_RAM_FRACTION

    def __post_init__(self) -> None:
        if not _is_whole(self.ram_bytes) or self.ram_bytes < 1:
            raise ValueError(f"ram_bytes={self.ram_bytes!r}: expected a whole number of bytes >= 1")
        if not _is_whole(self.cores) or self.cores < 1:
            raise ValueError(f"cores={self.cores!r}: expected a whole number >= 1")
        fraction = self.usable_ram_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1:
            raise ValueError(f"usable_ram_fraction={fraction!r}: expected a number in (0, 1]")

    @classmethod
    def this(cls) -> Machine:
        """This machine: its RAM (``this_machine_ram_bytes``) and cores (``this_machine_cores``)."""
        return cls(ram_bytes=this_machine_ram_bytes(), cores=this_machine_cores())

    @classmethod
    def from_gb(cls, ram_gb: float | None = None, cores: int | None = None) -> Machine:
        """A machine of ``ram_gb`` GB (10**9 bytes) and ``cores`` cores; None takes this machine's.

        Errors name the command-line options (``machine_ram_gb``, ``machine_cores``) these come from.
        """
        if ram_gb is None:
            ram_bytes = this_machine_ram_bytes()
        elif isinstance(ram_gb, bool) or not isinstance(ram_gb, Real) or not math.isfinite(ram_gb) or ram_gb <= 0:
            raise ValueError(f"machine_ram_gb={ram_gb!r}: expected a number of GB > 0")
        else:
            ram_bytes = max(1, round(ram_gb * 10**9))
        if cores is None:
            cores = this_machine_cores()
        elif not _is_whole(cores) or cores < 1:
            raise ValueError(f"machine_cores={cores!r}: expected a whole number >= 1")
        return cls(ram_bytes=ram_bytes, cores=cores)

    @property
    def ram_gb(self) -> float:
        """RAM in GB (10**9 bytes)."""
        return self.ram_bytes / 10**9

    @property
    def usable_ram_bytes(self) -> float:
        """RAM the index may fill: ``ram_bytes`` x ``usable_ram_fraction``."""
        return self.ram_bytes * self.usable_ram_fraction

    def to_dict(self) -> dict:
        """The machine as JSON-friendly fields, with its RAM in GB and the usable share."""
        return {
            "ram_bytes": self.ram_bytes,
            "ram_gb": self.ram_gb,
            "cores": self.cores,
            "usable_ram_fraction": self.usable_ram_fraction,
            "usable_ram_bytes": self.usable_ram_bytes,
        }
