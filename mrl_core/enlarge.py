"""A funnel tuned on a corpus enlarged with synthetic distractor rows, and the check that those rows earn their place.

A corpus of real rows is enlarged to a planned size with rows drawn from a Gaussian mixture fitted to them
(``mrl_core.bench.sample_mixture_corpus``; real rows first, unchanged). Such rows are not real data: on
150,000 real short texts the tuner picked a different funnel on mixture rows fitted to them, and measured
3.3x over exact search instead of 8.3x. So every enlarged tuning also tunes, with the same tuner and the same
queries, on as many mixture rows as there are real rows, and stores that pick, recall and speedup beside the
real rows' own (the dataset's tuned run at its real size): how far the stand-in was where both exist.
"""

from __future__ import annotations

import hashlib

import numpy as np

from mrl_core.bench import enlargement_cluster_count, sample_mixture_corpus
from mrl_core.encode import cached_matrix
from mrl_core.funnel import FunnelSearcher, FunnelTuner, save_tuning, split_queries
from mrl_core.paths import cache_dir
from mrl_core.progress import Progress

ENLARGE_SIZES = (1_000_000, 10_000_000)
"""Sizes the app offers to enlarge a corpus to (those above its real size; tuned only where they fit in memory)."""
ENLARGE_SEED = 0
"""Seed of the mixture the distractor rows are drawn from; the check draws its rows with the next one."""


ENLARGED_COPIES_IN_RAM = 3
"""The enlarged float32 matrix is held about this many times over while a funnel is tuned on it (the matrix, the
tuner's prefix copies and quantised codes, one index under construction)."""


def check_enlargement_fits(corpus_size: int, width: int) -> None:
    """Refuse an enlargement whose tuning would not fit in this machine's available memory.

    Raises:
        ValueError: naming the size, the memory it needs and what is available.
    """
    import psutil

    needed = ENLARGED_COPIES_IN_RAM * corpus_size * width * 4
    available = psutil.virtual_memory().available
    if needed > available:
        largest = available // (ENLARGED_COPIES_IN_RAM * width * 4)
        raise ValueError(
            f"enlarging to {corpus_size:,} rows of {width} dims needs about {needed / 1e9:.1f} GB of memory to tune, "
            f"{available / 1e9:.1f} GB is available here; the largest that fits is about {largest:,} rows"
        )


def enlarged_corpus(corpus: np.ndarray, corpus_size: int) -> tuple[np.ndarray, dict]:
    """``corpus`` (real rows first, unchanged) enlarged to ``corpus_size`` rows with mixture rows, cached on disk.

    The same real rows and size always give the same matrix, so the page that searches it and the job that
    tuned on it see the same rows.

    Raises:
        ValueError: when ``corpus_size`` is not above the real row count.
    """
    real_rows = len(corpus)
    if corpus_size <= real_rows:
        raise ValueError(f"corpus_size={corpus_size:,}: enlarging needs more rows than the {real_rows:,} real ones")
    cluster_count = enlargement_cluster_count(real_rows)
    digest = hashlib.sha256(np.ascontiguousarray(corpus, dtype=np.float32).tobytes()).hexdigest()[:16]
    path = cache_dir() / "enlarged" / f"{digest}-{corpus_size}-{cluster_count}-{ENLARGE_SEED}.npy"
    details = {"corpus_size": corpus_size, "real_rows": real_rows, "synthetic_rows": corpus_size - real_rows,
               "cluster_count": cluster_count, "seed": ENLARGE_SEED}
    matrix = cached_matrix(
        path, lambda: sample_mixture_corpus(corpus, corpus_size, cluster_count=cluster_count, seed=ENLARGE_SEED)[0]
    )
    return matrix, details


def tune_enlarged_funnel(
    store, embeddings, *, model: str, dataset, target_recall: float, k: int, corpus_size: int, real_run_id: int,
    progress: Progress | None = None,
) -> int:
    """Tune a funnel on the dataset's corpus enlarged to ``corpus_size`` rows, check the stand-in, store; return the run id.

    The queries are split as ``tune_funnel`` splits them (the real run ``real_run_id`` was tuned on the same
    ones). The run's params carry ``enlarged_to`` (so ``load_tuned_funnel`` tells it from the real run) and
    its summary an ``enlargement`` object: sizes, cluster count, and ``check`` = the pick, held-out recall
    and speedup on the real rows (from ``real_run_id``) and on as many mixture rows, with their ratio.
    """
    real = embeddings.corpus
    tuning, heldout = split_queries(embeddings)
    enlarged, details = enlarged_corpus(real, corpus_size)
    tuner = FunnelTuner(target_recall, k).fit(FunnelSearcher(enlarged), tuning, progress=progress)
    tuner.measure_heldout(heldout)
    del enlarged

    drawn, _ = sample_mixture_corpus(real, 2 * len(real), cluster_count=details["cluster_count"], seed=ENLARGE_SEED + 1)
    check_tuner = FunnelTuner(target_recall, k).fit(FunnelSearcher(np.ascontiguousarray(drawn[len(real):])), tuning)
    del drawn
    synthetic = check_tuner.measure_heldout(heldout) or {}
    real_summary = store.get_run(real_run_id)["summary"] or {}
    real_heldout = real_summary.get("heldout") or {}
    check = {
        "corpus_size": len(real),
        "real": {"run_id": real_run_id, "pick": real_summary.get("chosen"),
                 "recall_at_10": real_heldout.get("recall_at_10"), "speedup": real_heldout.get("speedup")},
        "synthetic": {"pick": check_tuner.best_.describe(), "recall_at_10": synthetic.get("recall_at_10"),
                      "speedup": synthetic.get("speedup")},
    }
    check["same_pick"] = check["real"]["pick"] == check["synthetic"]["pick"]
    check["speedup_ratio"] = (
        check["synthetic"]["speedup"] / check["real"]["speedup"]
        if check["synthetic"]["speedup"] and check["real"]["speedup"] else None
    )
    return save_tuning(
        store, tuner, model=model, model_fingerprint=embeddings.model_fingerprint, dataset=dataset.name,
        dataset_fingerprint=dataset.fingerprint, params={"enlarged_to": corpus_size},
        enlargement=dict(details, check=check),
    )


def stand_in_check_text(check: dict) -> str:
    """How the stand-in rows did against real rows at the real size, in one line (``tune_enlarged_funnel``'s check)."""
    real, synthetic = check["real"], check["synthetic"]

    def side(result: dict) -> str:
        if result["speedup"] is None:
            return f"`{result['pick']}`"
        return f"`{result['pick']}`, recall@10 {result['recall_at_10']:.3f}, {result['speedup']:.2f}x"

    return (
        f"at {check['corpus_size']:,} rows, mixture rows picked {side(synthetic)}; the real rows {side(real)}"
        + ("" if check["speedup_ratio"] is None else f" (speedup x{check['speedup_ratio']:.2f} of real)")
        + (", the same pick" if check["same_pick"] else ", a different pick")
    )
