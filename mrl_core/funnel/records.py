"""A tuned funnel in the store: its frontier as ``funnels`` rows, and the newest pick read back."""

from __future__ import annotations

import faiss
import numpy as np

from mrl_core.funnel.searcher import FunnelSearcher
from mrl_core.funnel.stages import Funnel
from mrl_core.funnel.tuner import FunnelTuner
from mrl_core.progress import Progress

TUNING_QUERY_COUNT = 300
"""Queries a funnel is tuned on, at most: half of a fixed random sample of the dataset's queries (or corpus rows)."""
HELDOUT_QUERY_COUNT = 300
"""Queries the tuned pick is measured on afterwards, at most: the other half, never seen by the tuner."""


def tune_funnel(
    store, searcher: FunnelSearcher, embeddings, *, model: str, dataset, target_recall: float, k: int,
    progress: Progress | None = None,
) -> int:
    """Tune a funnel for ``target_recall`` at ``k`` on half of a dataset's queries, measure the pick on the
    other half, and store both; return the run id.

    A seeded random permutation of the queries (a corpus without queries lends its own rows) gives the
    tuning queries (half, at most ``TUNING_QUERY_COUNT``) and the held-out ones (the rest, at most
    ``HELDOUT_QUERY_COUNT``); with a single query there is nothing to hold out. ``embeddings`` is the
    dataset's ``DatasetEmbeddings`` under ``model``.
    """
    tuning, heldout = split_queries(embeddings)
    tuner = FunnelTuner(target_recall, k).fit(searcher, tuning, progress=progress)
    tuner.measure_heldout(heldout)
    return save_tuning(
        store, tuner, model=model, model_fingerprint=embeddings.model_fingerprint, dataset=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
    )


def split_queries(embeddings) -> tuple[np.ndarray, np.ndarray]:
    """(tuning queries, held-out queries) of a dataset's embeddings, as ``tune_funnel`` describes, always the same."""
    pool = embeddings.queries if len(embeddings.queries) else embeddings.corpus
    order = np.random.default_rng(0).permutation(len(pool))
    tuning_count = min(TUNING_QUERY_COUNT, max(1, len(pool) // 2))
    tuning = pool[np.sort(order[:tuning_count])]
    heldout = pool[np.sort(order[tuning_count : tuning_count + HELDOUT_QUERY_COUNT])]
    return tuning, heldout


def funnel_rows(tuner: FunnelTuner) -> list[dict]:
    """Rows for the store's ``funnels`` table: the tuner's frontier, the pick marked ``chosen``.

    A standard index measured on a sample of the corpus is stored at the sample's size (what it was
    measured on), with ``measured_on_sample`` in its details. Every row's details carry the comparison
    against the fastest standard index meeting the target (``baseline``, ``speedup_vs_baseline``) and the
    row's own RAM and disk bytes per vector.
    """
    comparison = tuner.comparison_
    baseline = comparison["baseline"]
    rows = []
    for entry in tuner.frontier_:
        exact_p50_ms = entry["exact_p50_ms"]
        rows.append(
            {
                "corpus_size": entry["corpus_size"],
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
                    "standard_index": entry["standard_index"],
                    "ram_bytes_per_vector": entry["ram_bytes_per_vector"],
                    "disk_bytes_per_vector": entry["disk_bytes_per_vector"],
                    "rescore_location": tuner.rescore_location,
                    "measured_on_sample": entry["measured_on_sample"],
                    "baseline": _baseline_details(baseline),
                    "speedup_vs_baseline": (
                        baseline["p50_ms"] / entry["p50_ms"] if baseline is not None and entry["p50_ms"] > 0 else None
                    ),
                    # The tuner times every funnel one query per call (``time_funnel``, ``time_round_robin``).
                    "batch_size": 1,
                    "threads": tuner.threads_,
                    "faiss_version": faiss.__version__,
                },
            }
        )
    return rows


def _baseline_details(baseline: dict | None) -> dict | None:
    """The fastest standard index meeting the target, as stored beside each row (None when none met it)."""
    if baseline is None:
        return None
    return {
        key: baseline[key]
        for key in (
            "label", "stages", "p50_ms", "p95_ms", "recall_at_10", "ram_bytes_per_vector", "disk_bytes_per_vector",
            "corpus_size", "measured_on_sample",
        )
    }


def save_tuning(store, tuner: FunnelTuner, *, enlargement: dict | None = None, **run_fields) -> int:
    """Store a fitted tuner as one run of kind ``funnel`` (frontier rows, the pick ``chosen``); return its id.

    ``run_fields`` go to ``ResultStore.start_run`` (model, dataset_fingerprint, ...); the tuner's
    target recall and k are added to the run's params so ``load_tuned_funnel`` can match them.
    ``enlargement`` (``mrl_core.enlarge``) goes to the run's summary as it is.
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
        comparison = tuner.comparison_
        store.finish_run(
            run_id,
            summary={
                "chosen": tuner.best_.describe(),
                "p50_ms": best["p50_ms"],
                "exact_p50_ms": tuner.exact_timing_["p50_ms"],
                "speedup": tuner.exact_timing_["p50_ms"] / best["p50_ms"],
                "recall_at_10": best["recall_at_10"],
                "ram_bytes_per_vector": comparison["funnel"]["ram_bytes_per_vector"],
                "disk_bytes_per_vector": comparison["funnel"]["disk_bytes_per_vector"],
                "exact_ram_bytes_per_vector": comparison["exact"]["ram_bytes_per_vector"],
                "baseline": _baseline_details(comparison["baseline"]),
                "speedup_vs_baseline": comparison["speedup_vs_baseline"],
                "faster": comparison["faster"],
                "smaller_in_ram": comparison["smaller_in_ram"],
                "verdict": comparison["verdict"],
                "rescore_location": tuner.rescore_location,
                "skipped": tuner.skipped_,
                "tuning_target": tuner.tuning_target_,
                "heldout": tuner.heldout_,
                "enlargement": enlargement,
            },
        )
    return run_id


def load_tuned_funnel(
    store, *, model: str, dataset_fingerprint: str, target_recall: float, k: int, enlarged_to: int | None = None
) -> tuple[Funnel, int] | None:
    """The chosen funnel of the newest finished ``funnel`` run for this model, dataset, target and k, tuned on the
    real corpus (``enlarged_to`` None) or on it enlarged to that many rows (``mrl_core.enlarge``)."""
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
            and params.get("enlarged_to") == enlarged_to
        ):
            rows = store.rows("funnels", int(run["run_id"]))
            chosen = rows[rows["chosen"]]
            if len(chosen):
                return Funnel.from_dicts(chosen.iloc[0]["stages"]), int(run["run_id"])
    return None


def tuned_funnels_by_model(store, *, dataset_fingerprint: str, target_recall: float, k: int) -> list[dict]:
    """Each model's newest funnel tuned on this dataset's real corpus for this target and k, for side by side.

    Returns:
        One dict per model, newest tuning first: model, run_id, pick, p50_ms and exact_p50_ms on the tuning
        queries, and the held-out recall@k and speedup (None for a run stored before they were measured).
    """
    runs = store.list_runs("funnel")
    models = []
    for run in [] if runs.empty else runs.to_dict("records"):
        params = run.get("params") or {}
        if (
            run["status"] != "finished"
            or run["dataset_fingerprint"] != dataset_fingerprint
            or params.get("target_recall") != target_recall
            or params.get("k") != k
            or params.get("enlarged_to") is not None
            or any(entry["model"] == run["model"] for entry in models)
        ):
            continue
        summary = run.get("summary") or {}
        heldout = summary.get("heldout") or {}
        models.append({
            "model": run["model"], "run_id": int(run["run_id"]), "pick": summary.get("chosen"),
            "p50_ms": summary.get("p50_ms"), "exact_p50_ms": summary.get("exact_p50_ms"),
            "heldout_recall_at_10": heldout.get("recall_at_10"), "heldout_speedup": heldout.get("speedup"),
        })
    return models


def tuned_comparison(store, run_id: int) -> dict:
    """A stored tuning run's pick beside exact search and the fastest standard index meeting the target.

    Returns:
        {"funnel", "exact", "baseline" (None when no standard index met the target, or the run predates
        the comparison), "speedup_vs_exact", "speedup_vs_baseline", "faster", "smaller_in_ram",
        "rescore_location", "verdict", "heldout"}; each side is {label, p50_ms, recall_at_10,
        ram_bytes_per_vector, disk_bytes_per_vector} (bytes None for a run stored before they were);
        "heldout" is the pick measured on queries the tuner did not see (``FunnelTuner.measure_heldout``),
        None when the run had none or predates it; "enlargement" says how a run on an enlarged corpus was
        made and how its stand-in rows compared with real ones (``mrl_core.enlarge``), else None.
    """
    summary = store.get_run(run_id)["summary"] or {}
    exact_p50_ms = summary.get("exact_p50_ms")
    baseline = summary.get("baseline")
    verdict = summary.get("verdict")
    if verdict is None:
        verdict = f"Run {run_id} was tuned before the standard indexes were measured beside funnels; tune again to compare."
    return {
        "funnel": {
            "label": summary.get("chosen"),
            "p50_ms": summary.get("p50_ms"),
            "recall_at_10": summary.get("recall_at_10"),
            "ram_bytes_per_vector": summary.get("ram_bytes_per_vector"),
            "disk_bytes_per_vector": summary.get("disk_bytes_per_vector"),
        },
        "exact": {
            "label": "exact search (flat fp32, full width)",
            "p50_ms": exact_p50_ms,
            "recall_at_10": 1.0,
            "ram_bytes_per_vector": summary.get("exact_ram_bytes_per_vector"),
            "disk_bytes_per_vector": 0.0 if "exact_ram_bytes_per_vector" in summary else None,
        },
        "baseline": baseline,
        "speedup_vs_exact": summary.get("speedup"),
        "speedup_vs_baseline": summary.get("speedup_vs_baseline"),
        "faster": summary.get("faster"),
        "smaller_in_ram": summary.get("smaller_in_ram"),
        "rescore_location": summary.get("rescore_location"),
        "verdict": verdict,
        "heldout": summary.get("heldout"),
        "enlargement": summary.get("enlargement"),
    }
