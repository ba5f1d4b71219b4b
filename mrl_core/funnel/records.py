"""A tuned funnel in the store: its frontier as ``funnels`` rows, and the newest pick read back."""

from __future__ import annotations

import faiss

from mrl_core.funnel.stages import Funnel
from mrl_core.funnel.tuner import FunnelTuner


def funnel_rows(tuner: FunnelTuner) -> list[dict]:
    """Rows for the store's ``funnels`` table: the tuner's frontier, the pick marked ``chosen``."""
    exact_p50_ms = tuner.exact_timing_["p50_ms"]
    rows = []
    for entry in tuner.frontier_:
        rows.append(
            {
                "corpus_size": tuner.corpus_size_,
                "stages": entry["stages"],
                "recall_at_10": entry["recall_at_10"],
                "ndcg_at_10": None,
                "p50_ms": entry["p50_ms"],
                "p95_ms": entry["p95_ms"],
                "exact_p50_ms": exact_p50_ms,
                "speedup": exact_p50_ms / entry["p50_ms"] if entry["p50_ms"] > 0 else None,
                "on_frontier": entry["on_frontier"],
                "chosen": entry["chosen"],
                "details": {
                    "description": entry["description"],
                    "stage_p50_ms": entry["stage_p50_ms"],
                    "latency_query_count": entry["latency_query_count"],
                    "recall_query_count": tuner.query_count_,
                    "meets_target": entry["meets_target"],
                    "target_recall": tuner.target_recall,
                    "k": tuner.k,
                    "reference": entry["reference"],
                    "exact": entry["exact"],
                    "exact_p95_ms": tuner.exact_timing_["p95_ms"],
                    # The tuner times every funnel one query per call (``time_funnel``, ``time_round_robin``).
                    "batch_size": 1,
                    "threads": tuner.threads_,
                    "faiss_version": faiss.__version__,
                },
            }
        )
    return rows


def save_tuning(store, tuner: FunnelTuner, **run_fields) -> int:
    """Store a fitted tuner as one run of kind ``funnel`` (frontier rows, the pick ``chosen``); return its id.

    ``run_fields`` go to ``ResultStore.start_run`` (model, dataset_fingerprint, ...); the tuner's
    target recall and k are added to the run's params so ``load_tuned_funnel`` can match them.
    """
    params = dict(run_fields.pop("params", None) or {})
    params.update(target_recall=tuner.target_recall, k=tuner.k, max_stages=tuner.max_stages)
    with store.run(
        "funnel",
        corpus_size=tuner.corpus_size_,
        query_count=tuner.query_count_,
        threads=tuner.threads_,
        params=params,
        **run_fields,
    ) as run_id:
        store.add_rows("funnels", run_id, funnel_rows(tuner))
        best = tuner.best_timing_
        store.finish_run(
            run_id,
            summary={
                "chosen": tuner.best_.describe(),
                "p50_ms": best["p50_ms"],
                "exact_p50_ms": tuner.exact_timing_["p50_ms"],
                "speedup": tuner.exact_timing_["p50_ms"] / best["p50_ms"],
                "recall_at_10": best["recall_at_10"],
                "skipped": tuner.skipped_,
            },
        )
    return run_id


def load_tuned_funnel(store, *, model: str, dataset_fingerprint: str, target_recall: float, k: int) -> tuple[Funnel, int] | None:
    """The chosen funnel of the newest finished ``funnel`` run for this model, dataset, target and k."""
    runs = store.list_runs("funnel")
    if runs.empty:
        return None
    for run in runs.to_dict("records"):
        params = run.get("params") or {}
        if (
            run["status"] == "finished"
            and run["model"] == model
            and run["dataset_fingerprint"] == dataset_fingerprint
            and params.get("target_recall") == target_recall
            and params.get("k") == k
        ):
            rows = store.rows("funnels", int(run["run_id"]))
            chosen = rows[rows["chosen"]]
            if len(chosen):
                return Funnel.from_dicts(chosen.iloc[0]["stages"]), int(run["run_id"])
    return None
