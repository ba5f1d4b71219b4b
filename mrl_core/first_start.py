"""The first start: measure the built-in data once, so a fresh store holds quality and latency to plan with.

A store with no finished evaluation gets one of ``builtin:quick`` with the base model at every width,
precision and method; each of ``bench.DATASET_BENCH_CORPUS_SIZES`` (up to 1M rows drawn to match the data)
that no finished benchmark has measured gets a benchmark of the same embeddings, one run per size, smallest
first, with HNSW and IVF at ``bench.DATASET_BENCH_APPROXIMATE_WIDTHS``: the planner works from the first
sizes while the 1M one is measured. Later starts find everything and measure nothing. The app runs this as
a background job (``python -m mrl_core first-start``); progress goes to callbacks, one per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Literal

from mrl_core.bench import DATASET_BENCH_CORPUS_SIZES, BenchResult, bench_dataset
from mrl_core.data import load_dataset
from mrl_core.dataset import RetrievalDataset
from mrl_core.encode import embed_dataset
from mrl_core.evaluate import run_evaluation
from mrl_core.progress import Progress
from mrl_core.store import ResultStore
from mrl_core.widths import METHODS, PRECISIONS

FIRST_START_SOURCE = "builtin:quick"
FIRST_START_MODEL = "base"
FIRST_START_WIDTHS = (384, 256, 128, 64, 32, 16, 8)
"""The base model's full width and the standard widths below it (``model_widths.width_choices(384)``)."""

MeasurementKind = Literal["evaluate", "bench"]
MEASUREMENT_KINDS: tuple[str, ...] = ("evaluate", "bench")
Step = Literal["evaluate", "embed", "bench"]
"""``evaluate``: encode and evaluate; ``embed``: read (or, when evaluated elsewhere, encode) the embeddings
the benchmark times; ``bench``: time every index."""


@dataclass
class FirstStartResult:
    """What the first start stored: the evaluation run's id (None when not needed) and one benchmark per size
    measured, smallest first."""

    evaluation_run_id: int | None = None
    benches: list[BenchResult] = field(default_factory=list)


def missing_bench_sizes(store: ResultStore) -> list[int]:
    """Those of ``DATASET_BENCH_CORPUS_SIZES`` no finished benchmark has measured, smallest first."""
    latency = store.rows("latency")
    measured = set(latency.loc[latency["status"] == "finished", "corpus_size"].astype(int)) if len(latency) else set()
    return [size for size in sorted(DATASET_BENCH_CORPUS_SIZES) if size not in measured]


def missing_measurements(store: ResultStore) -> list[MeasurementKind]:
    """What the store lacks, in the order the first start measures it: 'evaluate' (no finished evaluation),
    'bench' (a first-start corpus size no finished benchmark measured)."""
    missing: list[MeasurementKind] = []
    if store.latest_run("evaluate") is None:
        missing.append("evaluate")
    if missing_bench_sizes(store):
        missing.append("bench")
    return missing


def measure_first_start(
    store: ResultStore,
    dataset: RetrievalDataset | None = None,
    *,
    missing: Collection[MeasurementKind] | None = None,
    step_progress: Callable[[Step], Progress | None] | None = None,
    step_done: Callable[[Step], None] | None = None,
) -> FirstStartResult:
    """Evaluate and benchmark the built-in data where the store lacks it.

    Args:
        store: the results store both runs go to.
        dataset: ``builtin:quick`` when already loaded (the app caches it); None loads it.
        missing: the kinds to measure (``MEASUREMENT_KINDS``); None asks ``missing_measurements``.
        step_progress: called as each step starts; returns that step's ``progress(done, total)`` or None.
        step_done: called as each of the 'evaluate' and 'bench' steps ends (after the last size).

    Returns:
        A ``FirstStartResult``.

    Raises:
        ValueError: ``missing`` names something other than ``MEASUREMENT_KINDS``.
    """
    missing = missing_measurements(store) if missing is None else list(missing)
    unknown = sorted(set(missing) - set(MEASUREMENT_KINDS))
    if unknown:
        raise ValueError(f"missing={unknown}: expected a subset of {list(MEASUREMENT_KINDS)}")
    step_progress = step_progress or (lambda step: None)
    step_done = step_done or (lambda step: None)
    result = FirstStartResult()
    if not missing:
        return result
    dataset = dataset if dataset is not None else load_dataset(FIRST_START_SOURCE)
    if "evaluate" in missing:
        result.evaluation_run_id, _ = run_evaluation(
            dataset, FIRST_START_MODEL, widths=FIRST_START_WIDTHS, precisions=PRECISIONS, methods=METHODS,
            store=store, progress=step_progress("evaluate"),
        )
        step_done("evaluate")
    if "bench" in missing:
        # Cached on disk by the evaluation; encoded here only when the store was evaluated elsewhere.
        embeddings = embed_dataset(dataset, FIRST_START_MODEL, step_progress("embed"))
        # One run per size, so each lands in the store (and the planner uses it) as soon as it is measured.
        for size in missing_bench_sizes(store):
            result.benches.append(
                bench_dataset(
                    dataset, embeddings, widths=FIRST_START_WIDTHS, corpus_sizes=[size], store=store,
                    progress=step_progress("bench"),
                )
            )
        step_done("bench")
    return result
