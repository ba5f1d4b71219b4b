"""The budget planner: the cheapest width x precision x index (or funnel) that meets every target.

It joins three things no storage calculator joins: storage from the cost model, latency measured on this
hardware (bench rows in the store, projected beyond the measured corpus sizes), and quality measured on
the user's own data (evaluation rows, and funnels' own measured recall and nDCG).
"""

from __future__ import annotations

import json
import math
from typing import Literal, get_args

import numpy as np
import pandas as pd

from mrl_core.cost import (
    MERGE_TOP_K,
    ShardPlan,
    StorageEstimate,
    check_corpus_size,
    estimate_funnel_storage,
    estimate_storage,
    merge_cost_ms,
    plan_shards,
    sharded_latency_at,
)
from mrl_core.deployment import Deployment, Machine
from mrl_core.funnel.stages import Funnel
from mrl_core.indexes import APPROXIMATE_INDEX_TYPES, INDEX_TYPES, index_types_holding
from mrl_core.pareto import pareto_flags
from mrl_core.store import ResultStore

Objective = Literal["cheapest", "best_quality"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)

# Each target: the candidate column it bounds, whether it is an upper bound, and how to show it.
TARGETS = {
    "max_storage_gb": ("storage_gb", True, "storage", "GB"),
    "max_ram_gb": ("ram_gb", True, "RAM", "GB"),
    "max_p95_ms": ("p95_ms", True, "p95 latency", "ms"),
    "min_ndcg": ("ndcg_at_10", False, "nDCG@10", ""),
    "min_retention": ("retention", False, "retention", ""),
}
CLOSEST_COUNT = 5
SHARD_COUNT_COLUMNS = ("shards", "machines", "per_shard_corpus_size")
NO_BENCH_NOTE = (
    "the store has no bench rows, so no single-stage candidate has a latency ('no latency measured'): run "
    "`python -m mrl_core bench --data SRC --model MODEL --store FILE` to measure latency on this machine"
)


def _stages_key(stages) -> str:
    stages = json.loads(stages) if isinstance(stages, str) else stages
    return json.dumps(
        [
            {
                "width": int(stage["width"]),
                "precision": stage.get("precision", "fp32"),
                "index_type": stage.get("index_type", "flat"),
                "shortlist_size": stage.get("shortlist_size"),
                # IVF funnels that differ only in lists probed are different funnels.
                **({"probes": int(stage["probes"])} if stage.get("probes") is not None else {}),
                # So are HNSW stages that differ only in efSearch (the standard indexes the tuner measures).
                **({"ef_search": int(stage["ef_search"])} if stage.get("ef_search") is not None else {}),
            }
            for stage in stages
        ],
        sort_keys=True,
    )


def funnel_label(stages: list[dict]) -> str:
    """A funnel candidate's label: 'funnel ' and ``Funnel.describe()``, e.g. 'funnel binary 32 -> 200 | 384 -> 10';
    one HNSW or IVF stage alone (a standard index the funnel tuner measured) is named as that index, e.g.
    'hnsw 384 (efSearch 128)' or 'ivf 384 (probe 16)'."""
    funnel = Funnel.from_dicts(stages)
    if len(funnel.stages) == 1 and funnel.stages[0].index_type in ("hnsw", "ivf"):
        return funnel.index_label()
    return "funnel " + funnel.describe()


def _latest_per(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The row of the newest run for each key (re-runs replace older measurements)."""
    if frame.empty:
        return frame
    return frame.sort_values("run_id").groupby(keys, dropna=False, sort=False).tail(1)


def _finished(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "finished"] if "status" in frame.columns else frame


def latency_rows_for(
    config: dict,
    latency: pd.DataFrame,
    funnels: pd.DataFrame,
    *,
    dataset_fingerprint: str | None = None,
    model: str | None = None,
) -> pd.DataFrame:
    """The measured rows behind one configuration's latency, as ``WidthPlanner`` reads them.

    A single-stage configuration takes the bench rows of its (index_type, width, precision); a funnel
    takes its own ``funnels`` rows (same stages: width, precision, index and shortlist of each), labelled
    with its first stage's index_type, width and precision, which decide the scaling fit (scan or HNSW).
    Only finished runs count, and at each corpus size the newest run's row: re-runs replace older
    measurements. Bench p50/p95 are single-query latencies whatever the row's throughput batch size.

    Args:
        config: a planner candidate (``candidates_`` row or ``recommendation_``): ``kind`` ('single' or
            'funnel'), ``stages``, and for single-stage ``index_type``, ``width``, ``precision``.
        latency: the store's ``latency`` rows.
        funnels: the store's ``funnels`` rows.
        dataset_fingerprint, model: when given, funnel rows of other datasets or models are left out (a
            funnel's recall, and so its tuned shortlist, belongs to the data it was measured on).

    Returns:
        The matching rows, one per corpus size, sorted by corpus size (empty when nothing matches).

    Raises:
        ValueError: for a ``kind`` other than 'single' or 'funnel'.

    Example:
        >>> latency = pd.DataFrame({"run_id": [1, 2, 2], "index_type": "flat", "width": 128, "precision": "fp32",
        ...                         "corpus_size": [1000, 1000, 10_000], "p95_ms": [0.9, 0.8, 6.5]})
        >>> config = {"kind": "single", "index_type": "flat", "width": 128, "precision": "fp32"}
        >>> rows = latency_rows_for(config, latency, pd.DataFrame())
        >>> rows["corpus_size"].tolist(), rows["p95_ms"].tolist()  # run 2 replaced run 1 at 1000
        ([1000, 10000], [0.8, 6.5])
    """
    kind = config.get("kind", "single")
    if kind == "funnel":
        rows = _finished(funnels)
        if not rows.empty:
            if dataset_fingerprint is not None:
                rows = rows[rows["dataset_fingerprint"] == dataset_fingerprint]
            if model is not None:
                rows = rows[rows["model"] == model]
            rows = rows[rows["stages"].map(_stages_key) == _stages_key(config["stages"])]
            first = (json.loads(config["stages"]) if isinstance(config["stages"], str) else config["stages"])[0]
            rows = rows.assign(
                index_type=first.get("index_type", "flat"), precision=first.get("precision", "fp32"), width=int(first["width"])
            )
    elif kind == "single":
        rows = _finished(latency)
        if not rows.empty:
            rows = rows[
                (rows["index_type"] == config["index_type"])
                & (rows["width"] == int(config["width"]))
                & (rows["precision"] == config["precision"])
            ]
    else:
        raise ValueError(f"config kind={kind!r}: expected 'single' or 'funnel'")
    if rows.empty:
        return rows
    return _latest_per(rows, ["corpus_size"]).sort_values("corpus_size")


class WidthPlanner:
    """Recommends the cheapest configuration meeting storage, RAM, latency and quality targets.

    Shaped like a scikit-learn estimator: parameters here, work in ``fit``, learned attributes end in ``_``.

    Args:
        corpus_size: vectors the deployment will hold.
        max_storage_gb: total RAM + disk over all replicas, in GB (10**9 bytes).
        max_ram_gb: RAM over all replicas, in GB.
        max_p95_ms: p95 single-query latency, measured or projected from bench rows.
        min_ndcg: nDCG@10 floor on the evaluated dataset.
        min_retention: floor on nDCG@10 relative to full-width fp32 (1.0 = no loss).
        objective: 'cheapest' (least storage, then latency) or 'best_quality' (highest nDCG, then storage).
        index_types: index types to consider for single-stage candidates.
        deployment: vendor, replicas, metadata bytes per vector, HNSW M, IVF lists and where funnels keep
            the vectors later stages rescore with (``mrl_core.deployment.Deployment``); storage is costed for it.
        machine: the size of one machine (``mrl_core.deployment.Machine``); None takes this machine's. A
            corpus whose RAM does not fit one machine is split into shards (``mrl_core.cost.plan_shards``),
            each searched on its own machine, and latency is one shard's plus the merge.

    Learned attributes:
        candidates_: DataFrame, one row per configuration with data, with storage, latency, quality,
            ``feasible``, ``misses`` ({target: by how much}) and ``reasons``; ``verified``: the newest
            verification of it on this machine at this corpus size (``mrl_core.verify``: measured and
            predicted p50/p95 and recall, their ratios, the size built), or None.
        recommendation_: dict for the chosen candidate with ``margins`` on each target and ``decided_by``
            (what the candidates ranked ahead of it missed, and the fastest feasible one when it differs), or None.
        frontier_: DataFrame of Pareto-optimal candidates over storage, p95 latency and nDCG@10.
        closest_: when nothing is feasible, {"candidates": DataFrame, "relax": [...]}: the nearest
            candidates and, per target, how far relaxing it alone would make something feasible.
        context_: dataset, model and runs the candidates were built from, and the machine planned for.
        machine_: the ``Machine`` the candidates were sharded for.
        notes_: messages about what the store lacks (no bench rows: no single-stage latency), for the user.

    Example:
        >>> import tempfile
        >>> store = ResultStore(f"{tempfile.mkdtemp()}/results.duckdb")
        >>> quality = {("fp32", 384): 0.65, ("int8", 384): 0.64, ("fp32", 128): 0.60, ("fp32", 64): 0.48}
        >>> rows = [{"method": "prefix", "width": width, "precision": precision, "ndcg_at_10": ndcg}
        ...         for (precision, width), ndcg in quality.items()]
        >>> with store.run("evaluate", model="base", dataset="toy", dataset_fingerprint="fp-toy") as run_id:
        ...     store.add_rows("results", run_id, rows)
        >>> planner = WidthPlanner(1_000_000, max_storage_gb=0.5, min_ndcg=0.6).fit(store)
        >>> planner.recommendation_["label"], planner.recommendation_["storage_gb"]
        ('prefix 384 int8/flat', 0.384)
    """

    def __init__(
        self,
        corpus_size: int,
        max_storage_gb: float | None = None,
        max_ram_gb: float | None = None,
        max_p95_ms: float | None = None,
        min_ndcg: float | None = None,
        min_retention: float | None = None,
        objective: Objective = "cheapest",
        index_types: tuple[str, ...] = INDEX_TYPES,
        deployment: Deployment = Deployment(),
        machine: Machine | None = None,
    ):
        self.corpus_size = corpus_size
        self.max_storage_gb = max_storage_gb
        self.max_ram_gb = max_ram_gb
        self.max_p95_ms = max_p95_ms
        self.min_ndcg = min_ndcg
        self.min_retention = min_retention
        self.objective = objective
        self.index_types = index_types
        self.deployment = deployment
        self.machine = machine

    # -- public --------------------------------------------------------------------------------
    def targets(self) -> dict[str, float]:
        """The targets that were set, by name."""
        return {name: getattr(self, name) for name in TARGETS if getattr(self, name) is not None}

    def fit(self, store: ResultStore, dataset_fingerprint: str | None = None, model: str | None = None) -> "WidthPlanner":
        """Build every candidate from the store, then pick, rank and explain.

        Args:
            store: the results store.
            dataset_fingerprint: which evaluated dataset's quality to use (fingerprint or name); None takes
                the dataset of the newest evaluation.
            model: which model's quality to use; None takes the newest evaluated model for that dataset.

        Returns:
            self.

        Raises:
            ValueError: a parameter is out of range, or the store has no evaluation for the selection.
        """
        self._validate()
        self.machine_ = self.machine if self.machine is not None else Machine.this()
        results = _finished(store.results())
        results, self.context_ = self._select_quality_rows(results, dataset_fingerprint, model)
        # Bench rows' p50/p95 are single-query latencies (their batch_size is the throughput run's).
        latency = _finished(store.rows("latency"))
        funnels = _finished(store.rows("funnels"))
        if not funnels.empty:
            funnels = funnels[
                (funnels["dataset_fingerprint"] == self.context_["dataset_fingerprint"])
                & (funnels["model"] == self.context_["model"])
            ]
        self.context_["latency_runs"] = sorted(int(r) for r in latency["run_id"].unique())
        self.context_["funnel_runs"] = sorted(int(r) for r in funnels["run_id"].unique())
        self.context_["latency_threads"] = sorted({int(t) for t in latency["threads"].dropna()})
        self.context_["faiss_versions"] = sorted({str(v) for v in latency["faiss_version"].dropna()})
        self.context_["machine"] = self.machine_.to_dict()
        self.notes_ = [] if not latency.empty else [NO_BENCH_NOTE]

        rows = self._single_stage_candidates(results, latency) + self._funnel_candidates(funnels, latency, results)
        if not rows:
            raise ValueError(
                f"index_types={list(self.index_types)} hold none of the evaluated precisions "
                f"{sorted(results['precision'].unique())} and no funnel was measured: nothing to plan with"
            )
        if all(row["shard_error"] for row in rows):
            # Not one configuration fits this machine: a wrong machine size, not a plan to explain.
            raise ValueError(min(rows, key=lambda row: row["ram_bytes"])["shard_error"])
        candidates = pd.DataFrame(rows)
        for column in SHARD_COUNT_COLUMNS:
            # Whole numbers stay whole beside candidates that fit no machine (None), which pandas would make floats.
            candidates[column] = pd.Series([row[column] for row in rows], dtype=object, index=candidates.index)
        candidates["verified"] = self._verified(store, candidates)
        self._judge(candidates)
        candidates["on_frontier"] = pareto_mask(candidates)
        self.candidates_ = candidates.sort_values(["feasible", "storage_bytes", "label"], ascending=[False, True, True])
        self.candidates_ = self.candidates_.reset_index(drop=True)
        self.frontier_ = self.candidates_[self.candidates_["on_frontier"]].sort_values(["storage_bytes", "label"])
        self.frontier_ = self.frontier_.reset_index(drop=True)
        feasible = self.candidates_[self.candidates_["feasible"]]
        if feasible.empty:
            self.recommendation_ = None
            self.closest_ = self._closest()
        else:
            chosen = rank(feasible, self.objective).iloc[0]
            self.recommendation_ = self._describe(chosen)
            self.closest_ = None
        return self

    # -- inputs --------------------------------------------------------------------------------
    def _validate(self) -> None:
        check_corpus_size(self.corpus_size)
        # A Machine checks its own fields when it is made.
        if self.machine is not None and not isinstance(self.machine, Machine):
            raise ValueError(
                f"machine={self.machine!r}: expected a mrl_core.deployment.Machine, or None for this machine"
            )
        for name in TARGETS:
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}={value!r}: expected a finite number >= 0, or None for no target")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}: expected one of {list(OBJECTIVES)}")
        # A Deployment checks its own fields when it is made.
        if not isinstance(self.deployment, Deployment):
            raise ValueError(f"deployment={self.deployment!r}: expected a mrl_core.deployment.Deployment")
        unknown = [index_type for index_type in self.index_types if index_type not in INDEX_TYPES]
        if unknown or not self.index_types:
            raise ValueError(f"index_types={list(self.index_types)!r}: expected a non-empty subset of {list(INDEX_TYPES)}")

    def _select_quality_rows(self, results: pd.DataFrame, dataset: str | None, model: str | None):
        if results.empty:
            raise ValueError(
                "the store has no finished evaluation: run `python -m mrl_core evaluate --data SRC --model MODEL "
                "--store FILE` first, so quality is measured on your data"
            )
        selection = results
        if dataset is not None:
            selection = selection[(selection["dataset_fingerprint"] == dataset) | (selection["dataset"] == dataset)]
            if selection.empty:
                known = sorted({f"{r.dataset} ({r.dataset_fingerprint})" for r in results.itertuples()})
                raise ValueError(f"dataset={dataset!r}: no evaluation of it in the store; evaluated: {known}")
        else:
            newest = selection.sort_values("run_id").iloc[-1]
            selection = selection[selection["dataset_fingerprint"] == newest["dataset_fingerprint"]]
        if model is not None:
            narrowed = selection[selection["model"] == model]
            if narrowed.empty:
                known = sorted(str(m) for m in selection["model"].unique())
                raise ValueError(f"model={model!r}: no evaluation of it on this dataset; evaluated models: {known}")
            selection = narrowed
        else:
            newest = selection.sort_values("run_id").iloc[-1]
            selection = selection[selection["model"] == newest["model"]]
        selection = _latest_per(selection, ["method", "width", "precision"])
        first = selection.iloc[0]
        context = {
            "dataset": first["dataset"],
            "dataset_fingerprint": first["dataset_fingerprint"],
            "model": first["model"],
            "full_width": int(selection["width"].max()),
            "evaluation_runs": sorted(int(r) for r in selection["run_id"].unique()),
        }
        return selection, context

    # -- candidates ----------------------------------------------------------------------------
    def _reference_ndcg(self, results: pd.DataFrame) -> float | None:
        reference = results[(results["method"] == "prefix") & (results["precision"] == "fp32")].dropna(subset=["ndcg_at_10"])
        if reference.empty:
            return None
        return float(reference.sort_values("width").iloc[-1]["ndcg_at_10"])

    def _shard_plan(self, storage: StorageEstimate) -> ShardPlan | str:
        """How this configuration splits over ``machine_``, or why it cannot."""
        try:
            return plan_shards(storage, self.corpus_size, self.machine_)
        except ValueError as error:
            return str(error)

    def _latency_fields(self, rows: pd.DataFrame, plan: ShardPlan | str) -> dict:
        if isinstance(plan, str):
            measured_sizes = sorted(int(size) for size in set(rows.get("corpus_size", [])))
            return {
                "p50_ms": None, "p95_ms": None, "latency_projected": False, "latency_error": None,
                "latency_basis": f"not costed: {plan}", "latency_sizes": measured_sizes, "merge_ms": None,
            }
        estimate = sharded_latency_at(rows, plan)
        return {
            # The merge's own p95, included in p95_ms (0 on one machine).
            "merge_ms": merge_cost_ms(plan.shards, MERGE_TOP_K)[1] if estimate.p95_ms is not None else None,
            "p50_ms": estimate.p50_ms,
            "p95_ms": estimate.p95_ms,
            "latency_projected": estimate.projected,
            "latency_error": estimate.relative_error,
            "latency_basis": estimate.basis,
            "latency_sizes": list(estimate.measured_sizes),
        }

    def _index_recall_fields(self, index_type: str, rows: pd.DataFrame) -> dict:
        """For HNSW/IVF: recall@10 against exact search and the efSearch/nprobe the bench measured it at, from
        the measured size nearest the planned corpus (recall falls as a corpus grows at a fixed parameter)."""
        if index_type not in APPROXIMATE_INDEX_TYPES:
            return {}
        known = rows.dropna(subset=["recall_at_10"]) if "recall_at_10" in rows.columns else rows.iloc[0:0]
        if known.empty:
            return {"index_recall_at_10": None, "search_params": None, "index_recall_size": None}
        distance = (np.log(known["corpus_size"].astype(float)) - math.log(self.corpus_size)).abs()
        nearest = known.iloc[int(np.argmin(distance.to_numpy()))]
        details = nearest["details"] if isinstance(nearest.get("details"), dict) else {}
        params = {name: int(details[name]) for name in ("hnsw_ef_search", "ivf_nprobe", "ivf_lists") if details.get(name)}
        return {
            "index_recall_at_10": float(nearest["recall_at_10"]),
            "search_params": params or None,
            "index_recall_size": int(nearest["corpus_size"]),
        }

    def _storage_fields(self, estimate: StorageEstimate, plan: ShardPlan | str) -> dict:
        fits = not isinstance(plan, str)
        return {
            "shards": plan.shards if fits else None,
            "machines": plan.machines if fits else None,
            "per_shard_corpus_size": plan.per_shard_corpus_size if fits else None,
            "ram_bytes_per_shard": plan.ram_bytes_per_shard if fits else None,
            "shard_error": None if fits else plan,
            "storage_bytes": estimate.storage_bytes,
            "ram_bytes": estimate.ram_bytes,
            "disk_bytes": estimate.disk_bytes,
            "storage_gb": estimate.storage_gb,
            "ram_gb": estimate.ram_gb,
            "rescore_location": estimate.rescore_location,
        }

    def _single_stage_candidates(self, results: pd.DataFrame, latency: pd.DataFrame) -> list[dict]:
        reference = self._reference_ndcg(results)
        no_funnels = pd.DataFrame()
        # Methods share a configuration's latency (a PCA prefix searches like a plain one): look each up once.
        measured: dict[tuple[str, int, str], dict] = {}
        candidates = []
        for row in results.itertuples():
            for index_type in index_types_holding(row.precision, self.index_types):
                config = {"kind": "single", "index_type": index_type, "width": int(row.width), "precision": row.precision}
                key = (index_type, int(row.width), row.precision)
                storage = estimate_storage(self.corpus_size, int(row.width), row.precision, index_type, self.deployment)
                # Methods share storage too, so one shard plan per key.
                plan = self._shard_plan(storage)
                if key not in measured:
                    rows = latency_rows_for(config, latency, no_funnels)
                    measured[key] = {**self._latency_fields(rows, plan), **self._index_recall_fields(index_type, rows)}
                ndcg = None if pd.isna(row.ndcg_at_10) else float(row.ndcg_at_10)
                retention = None if pd.isna(row.retention) else float(row.retention)
                if retention is None and ndcg is not None and reference:
                    retention = ndcg / reference
                approximate = index_type in APPROXIMATE_INDEX_TYPES
                index_recall = measured[key].get("index_recall_at_10")
                if index_recall is not None and ndcg is not None:
                    # Evaluation searched exactly; the index finds this share of each exact top 10. Scaling by it
                    # assumes the missed results are as relevant as the found ones on average.
                    ndcg *= index_recall
                    retention = retention * index_recall if retention is not None else None
                candidates.append({
                    "label": f"{row.method} {int(row.width)} {row.precision}/{index_type}",
                    "kind": "single",
                    "method": row.method,
                    "width": int(row.width),
                    "precision": row.precision,
                    "index_type": index_type,
                    "stages": [{"width": int(row.width), "precision": row.precision, "index_type": index_type}],
                    **self._storage_fields(storage, plan),
                    **measured[key],
                    "ndcg_at_10": ndcg,
                    "recall_at_10": None if pd.isna(row.recall_at_10) else float(row.recall_at_10),
                    "retention": retention,
                    # Evaluation searches exactly; an approximate index can only lose some of that quality.
                    "quality_source": _approximate_quality_source(index_type, measured[key]) if approximate else "measured",
                })
        return candidates

    def _funnel_candidates(self, funnels: pd.DataFrame, latency: pd.DataFrame, results: pd.DataFrame) -> list[dict]:
        if funnels.empty:
            return []
        reference = self._reference_ndcg(results)
        candidates = []
        for key in sorted(set(funnels["stages"].map(_stages_key))):
            stages = json.loads(key)
            group = latency_rows_for({"kind": "funnel", "stages": stages}, latency, funnels)
            storage = estimate_funnel_storage(self.corpus_size, stages, self.deployment)
            plan = self._shard_plan(storage)
            # Quality from the measured size nearest the target: recall of a shortlist falls as the corpus grows.
            nearest = group.iloc[(np.log(group["corpus_size"].astype(float)) - math.log(self.corpus_size)).abs().argsort()]
            measured = nearest.dropna(subset=["ndcg_at_10"])
            recall_rows = nearest.dropna(subset=["recall_at_10"])
            recall = float(recall_rows.iloc[0]["recall_at_10"]) if not recall_rows.empty else None
            if not measured.empty:
                ndcg = float(measured.iloc[0]["ndcg_at_10"])
                source = f"measured at {int(measured.iloc[0]['corpus_size']):,} vectors"
            elif recall is not None and reference is not None:
                ndcg = reference * recall
                source = f"estimated: full-width nDCG@10 {reference:.4f} x funnel recall@10 {recall:.3f}"
            else:
                ndcg, source = None, "not measured"
            first = stages[0]
            candidates.append({
                "label": funnel_label(stages),
                "kind": "funnel",
                "method": "prefix",
                "width": int(first["width"]),
                "precision": first["precision"],
                "index_type": first["index_type"],
                "stages": stages,
                **self._storage_fields(storage, plan),
                **self._latency_fields(group, plan),
                "ndcg_at_10": ndcg,
                "recall_at_10": recall,
                "retention": ndcg / reference if ndcg is not None and reference else None,
                "quality_source": source,
            })
        return candidates

    def _verified(self, store: ResultStore, candidates: pd.DataFrame) -> list[dict | None]:
        """Per candidate, its newest verification on this machine (``mrl_core.verify``) at the planned corpus
        size, for this dataset and model: measured against predicted latency and recall, or None."""
        rows = _finished(store.rows("verifications"))
        if not rows.empty:
            rows = rows[
                (rows["dataset_fingerprint"] == self.context_["dataset_fingerprint"])
                & (rows["model"] == self.context_["model"]) & (rows["planned_corpus_size"] == self.corpus_size)
            ]
        found = {}
        for row in _plain(rows.sort_values("run_id").to_dict("records")):
            found[(row["label"], _stages_key(row["stages"]))] = {
                "run_id": int(row["run_id"]),
                "corpus_size": int(row["corpus_size"]),
                "capped_from": (row["details"] or {}).get("capped_from"),
                **{key: row[key] for key in (
                    "predicted_p50_ms", "measured_p50_ms", "predicted_p95_ms", "measured_p95_ms",
                    "predicted_recall_at_10", "measured_recall_at_10",
                )},
                "ratio_p50": row["measured_p50_ms"] / row["predicted_p50_ms"] if row["predicted_p50_ms"] else None,
                "ratio_p95": row["measured_p95_ms"] / row["predicted_p95_ms"] if row["predicted_p95_ms"] else None,
            }
        return [found.get((candidate["label"], _stages_key(candidate["stages"]))) for candidate in candidates.to_dict("records")]

    # -- judgement -----------------------------------------------------------------------------
    def _judge(self, candidates: pd.DataFrame) -> None:
        targets = self.targets()
        misses_column, reasons_column = [], []
        for candidate in candidates.to_dict("records"):
            misses, reasons = {}, []
            unfit = isinstance(candidate.get("shard_error"), str)
            if unfit:
                # Fits no machine of this size: that is the reason, and its latency was never costed.
                misses["machine_ram_gb"] = None
                reasons.append(f"does not fit the machine: {candidate['shard_error']}")
            for name, limit in targets.items():
                column, upper, title, unit = TARGETS[name]
                value = candidate[column]
                if column == "p95_ms" and unfit:
                    continue
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    misses[name] = None
                    reasons.append("no latency measured" if column == "p95_ms" else f"no {title} measured")
                    continue
                shortfall = value - limit if upper else limit - value
                if shortfall > 0:
                    misses[name] = float(shortfall)
                    word = "over" if upper else "under"
                    relation = ">" if upper else "<"
                    reasons.append(
                        f"{title} {_fmt(value, unit)} {relation} {name} {_fmt(limit, unit)} ({word} by {_fmt(shortfall, unit)})"
                    )
            misses_column.append(misses)
            reasons_column.append(reasons)
        candidates["misses"] = misses_column
        candidates["reasons"] = reasons_column
        candidates["feasible"] = [not misses for misses in misses_column]

    def margins(self, candidate: dict) -> dict:
        """How much room a candidate leaves on each target that was set (negative = missed by)."""
        margins = {}
        for name, limit in self.targets().items():
            column, upper, _, _ = TARGETS[name]
            value = candidate.get(column)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                margins[name] = {"target": limit, "value": None, "margin": None, "relative_margin": None}
                continue
            margin = limit - value if upper else value - limit
            margins[name] = {
                "target": limit,
                "value": float(value),
                "margin": float(margin),
                "relative_margin": float(margin / limit) if limit else None,
            }
        return margins

    def _describe(self, candidate: pd.Series) -> dict:
        description = _plain(candidate.to_dict())
        description["margins"] = self.margins(description)
        description["decided_by"] = self._decided_by(description)
        return description

    def _decided_by(self, chosen: dict) -> dict:
        """Which constraint decided: what the configurations ranked ahead of the pick by the objective missed
        (cheaper ones under 'cheapest', better-quality ones under 'best_quality'), and the fastest configuration
        that meets every target when it is not the pick, with its storage and RAM: latency alone would pick
        it, the objective did not."""
        candidates = self.candidates_
        if self.objective == "cheapest":
            ahead = candidates[candidates["storage_bytes"] < chosen["storage_bytes"]]
            ranked_by = "cheapest"
        else:
            quality = candidates["ndcg_at_10"].astype(float)
            ahead = candidates[quality > (chosen["ndcg_at_10"] if chosen["ndcg_at_10"] is not None else -math.inf)]
            ranked_by = "best nDCG@10"
        missed: dict[str, int] = {}
        for misses in ahead["misses"]:
            for name in misses:
                missed[name] = missed.get(name, 0) + 1
        feasible = candidates[candidates["feasible"]].dropna(subset=["p95_ms"])
        fastest = None
        if not feasible.empty:
            best = feasible.sort_values(["p95_ms", "storage_bytes", "label"]).iloc[0]
            if best["label"] != chosen["label"]:
                fastest = {key: _plain(best[key]) for key in ("label", "p95_ms", "storage_gb", "ram_gb")}
        missed_text = ", ".join(
            f"{TARGETS[name][2]} ({count})" for name, count in sorted(missed.items(), key=lambda item: -item[1])
        )
        text = f"{ranked_by.capitalize()} that meets every target"
        if len(ahead):
            text += f"; the {len(ahead)} ranked ahead of it miss: {missed_text}"
        if fastest is not None:
            text += (
                f". Fastest that meets every target: {fastest['label']} (p95 {fastest['p95_ms']:.3g} ms, "
                f"{fastest['storage_gb']:.3g} GB, RAM {fastest['ram_gb']:.3g} GB)"
            )
        return {"objective": self.objective, "ahead": int(len(ahead)), "missed": missed, "fastest": fastest, "text": text + "."}

    def _closest(self) -> dict:
        targets = self.targets()
        candidates = self.candidates_.copy()

        def distance(misses: dict) -> float:
            if any(amount is None for amount in misses.values()):
                return math.inf
            return sum(amount / targets[name] if targets[name] else math.inf for name, amount in misses.items())

        candidates["distance"] = candidates["misses"].map(distance)
        closest = candidates.sort_values(["distance", "storage_bytes", "label"]).head(CLOSEST_COUNT).reset_index(drop=True)
        relax = []
        for name, limit in targets.items():
            _, upper, title, unit = TARGETS[name]
            only_this = [
                misses[name] for misses in self.candidates_["misses"]
                if set(misses) == {name} and misses[name] is not None
            ]
            if not only_this:
                continue
            by = min(only_this)
            needed = limit + by if upper else limit - by
            relax.append({
                "target": name,
                "current": limit,
                "needed": needed,
                "by": by,
                "relative": by / limit if limit else None,
                "text": f"relax {name} from {_fmt(limit, unit)} to {_fmt(needed, unit)} ({title}, by {_fmt(by, unit)})",
            })
        relax.sort(key=lambda item: math.inf if item["relative"] is None else item["relative"])
        return {"candidates": closest, "relax": relax}


def rank(candidates: pd.DataFrame, objective: Objective = "cheapest") -> pd.DataFrame:
    """Candidates in preference order: 'cheapest' = least storage, then p95, then best nDCG;
    'best_quality' = best nDCG, then least storage, then p95. Unknown latency sorts last."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r}: expected one of {list(OBJECTIVES)}")
    keyed = candidates.assign(
        _p95=candidates["p95_ms"].astype(float).fillna(math.inf),
        _ndcg=-candidates["ndcg_at_10"].astype(float).fillna(-math.inf),
    )
    order = ["storage_bytes", "_p95", "_ndcg", "label"] if objective == "cheapest" else ["_ndcg", "storage_bytes", "_p95", "label"]
    return keyed.sort_values(order, kind="mergesort").drop(columns=["_p95", "_ndcg"])


def pareto_mask(candidates: pd.DataFrame) -> list[bool]:
    """True for candidates no other candidate beats: as small or smaller storage and p95, as high or higher
    nDCG@10, and strictly better on one. Unknown latency counts as worst; unknown nDCG is never on it."""
    quality = candidates["ndcg_at_10"].astype(float)
    flags = pareto_flags(
        lower_is_better=[candidates["storage_bytes"].astype(float), candidates["p95_ms"].astype(float)],
        higher_is_better=[quality],
    )
    return [flag and known for flag, known in zip(flags, quality.notna())]


def _approximate_quality_source(index_type: str, fields: dict) -> str:
    recall = fields.get("index_recall_at_10")
    if recall is None:
        return f"measured with exact search; {index_type} recall not measured"
    params = ", ".join(f"{name} {value}" for name, value in (fields.get("search_params") or {}).items())
    return (
        f"estimated: nDCG@10 measured with exact search x {index_type} recall@10 {recall:.3f} against exact "
        f"search ({params}) measured at {fields['index_recall_size']:,} vectors"
    )


def _fmt(value: float, unit: str) -> str:
    if unit == "GB":
        return f"{value:.3g} GB"
    if unit == "ms":
        return f"{value:.3g} ms"
    return f"{value:.4f}"


def _plain(value):
    """numpy/pandas scalars and NaN -> JSON-friendly Python values."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def candidates_records(frame: pd.DataFrame) -> list[dict]:
    """A candidates DataFrame as JSON-friendly records."""
    return [_plain(record) for record in frame.to_dict("records")]


def exact_search_comparison(candidates: pd.DataFrame, recommendation: dict) -> list[dict]:
    """The recommendation, then the widest fp32 prefix on a flat index (exact full-width search) unless that
    is the recommendation itself: the configurations a capacity projection sets side by side.

    Args:
        candidates: a fitted planner's ``candidates_``.
        recommendation: its ``recommendation_``.
    """
    exact = candidates[
        (candidates["kind"] == "single") & (candidates["method"] == "prefix") & (candidates["precision"] == "fp32")
        & (candidates["index_type"] == "flat")
    ].sort_values("width")
    compared = [recommendation]
    if not exact.empty and exact.iloc[-1]["label"] != recommendation["label"]:
        compared.append(exact.iloc[-1].to_dict())
    return compared
