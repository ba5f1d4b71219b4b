"""Verification: build the planner's pick at the planned corpus size on this machine and measure it.

The planner predicts latency from bench rows (projected beyond the measured sizes) and recall from the
evaluation or the funnel tuning. ``verify_pick`` checks one pick against those predictions: it draws
stand-in rows at the planned size from a mixture fitted to the dataset's own embeddings (real rows first,
``mrl_core.bench.sample_mixture_corpus``), capped at the largest size whose build fits in memory, builds
the pick, times single queries on one thread and measures recall@10 against exact search on the same rows.
Since synthetic rows are only a stand-in, the same pick is also measured on the real rows and on as many
mixture rows at the real corpus size, and the result says how far apart the two were.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from mrl_core.bench import enlargement_cluster_count, index_searcher, sample_mixture_corpus
from mrl_core.cost import latency_at
from mrl_core.data import load_dataset
from mrl_core.encode import DatasetEmbeddings, embed_dataset
from mrl_core.evaluate import pca_rotation
from mrl_core.funnel import Funnel, FunnelSearcher
from mrl_core.indexes import (
    HNSW_EF_SEARCH,
    INDEX_PRECISIONS,
    INDEX_TYPES,
    build_index,
    index_bytes_per_vector,
    search_threads,
)
from mrl_core.metrics import fidelity_at_k
from mrl_core.planner import latency_rows_for
from mrl_core.progress import Progress
from mrl_core.store import ResultStore
from mrl_core.widths import METHODS, normalise_rows, prefix_norms, renormalised_prefix

K = 10
"""Results per query: recall@10, as the evaluation and the funnel tuner report it."""
VERIFY_QUERY_COUNT = 100
"""Single queries timed per measurement, the bench's default: five samples above the p95."""
MEMORY_SHARE = 0.6
"""Share of the memory available now that a verification may fill: the app, the OS page cache and other
jobs keep the rest."""
MEMORY_SAFETY = 1.25
"""Headroom on the per-row estimate (FAISS's growth when adding, numpy temporaries of a chunk)."""
IVF_DEFAULT_PROBES = 16
"""Lists an IVF pick probes when it carries no ``search_params``."""
CHUNK_ROWS = 65536
STAND_IN_ROWS = (
    "real rows first; further rows drawn from a k-means Gaussian mixture fitted to the dataset's full-width "
    "embeddings (mrl_core.bench.sample_mixture_corpus), renormalised"
)


# -- what can be built, and how much memory it takes ----------------------------------------------------------
def _label(pick: dict) -> str:
    return str(pick.get("label") or "the pick")


def check_buildable(pick: dict, full_width: int) -> None:
    """Raise ValueError, naming the field, when ``pick`` cannot be built and searched here.

    Example:
        >>> check_buildable({"label": "prefix 12 binary/binary", "kind": "single", "method": "prefix", "width": 12,
        ...                  "precision": "binary", "index_type": "binary"}, 384)
        Traceback (most recent call last):
        ...
        ValueError: prefix 12 binary/binary: width=12: expected a multiple of 8 for a binary index (whole bytes of sign bits)
    """
    label = _label(pick)
    kind = pick.get("kind", "single")
    if kind == "funnel":
        try:
            funnel = Funnel.from_dicts(pick.get("stages") or [])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{label}: stages={pick.get('stages')!r}: expected a funnel's stages ({error})") from None
        widest = max(stage.width for stage in funnel.stages)
        if widest > full_width:
            raise ValueError(f"{label}: stage width={widest}: expected at most the embeddings' full width {full_width}")
        return
    if kind != "single":
        raise ValueError(f"{label}: kind={kind!r}: expected 'single' or 'funnel'")
    index_type, precision, method = pick.get("index_type"), pick.get("precision"), pick.get("method", "prefix")
    if index_type not in INDEX_TYPES:
        raise ValueError(f"{label}: index_type={index_type!r}: expected one of {list(INDEX_TYPES)}")
    if not INDEX_PRECISIONS[index_type].get(precision):
        built = [name for name, uses in INDEX_PRECISIONS[index_type].items() if uses]
        raise ValueError(
            f"{label}: index_type={index_type!r} with precision={precision!r}: expected one of {built}; "
            "the other pairs are costed but not built here"
        )
    if method not in METHODS:
        raise ValueError(f"{label}: method={method!r}: expected one of {list(METHODS)}")
    width = pick.get("width")
    if not isinstance(width, (int, np.integer)) or not 1 <= int(width) <= full_width:
        raise ValueError(f"{label}: width={width!r}: expected 1..{full_width} (the embeddings' full width)")
    if index_type == "binary" and int(width) % 8:
        raise ValueError(
            f"{label}: width={width}: expected a multiple of 8 for a binary index (whole bytes of sign bits)"
        )


def bytes_per_row(pick: dict, full_width: int) -> float:
    """Memory one row of a verification takes: its full-width fp32 stand-in, the searched copy and the index.

    Example:
        >>> bytes_per_row({"kind": "single", "width": 64, "precision": "fp32", "index_type": "flat"}, 384)
        2048.0
    """
    if pick.get("kind") == "funnel":
        stages = Funnel.from_dicts(pick["stages"]).stages
        first = stages[0]
        index_bytes = index_bytes_per_vector(first.width, first.precision, first.index_type)
        # A prefix norm per stage width, and the renormalised stage-1 prefix the index is built from.
        searched = 4.0 * len(stages) + 4.0 * first.width
    else:
        index_bytes = index_bytes_per_vector(int(pick["width"]), pick["precision"], pick["index_type"])
        searched = 4.0 * int(pick["width"])
    return 4.0 * full_width + searched + index_bytes


def available_memory_bytes() -> int:
    """Memory available to this process now: the system's, bounded by a cgroup limit where one is set."""
    import psutil

    available = int(psutil.virtual_memory().available)
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int((cgroup / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        pass
    return max(0, available)


def fitting_corpus_size(pick: dict, full_width: int, memory_limit_bytes: int) -> int:
    """The largest corpus whose verification fits in ``memory_limit_bytes`` (two significant figures, rounded down).

    Example:
        >>> fitting_corpus_size({"kind": "single", "width": 64, "precision": "fp32", "index_type": "flat"}, 384, 10**9)
        390000
    """
    rows = int(memory_limit_bytes / (MEMORY_SAFETY * bytes_per_row(pick, full_width)))
    if rows < 100:
        return rows
    magnitude = 10 ** (len(str(rows)) - 2)
    return rows // magnitude * magnitude


# -- building and measuring one pick ------------------------------------------------------------------------
@dataclass
class _Built:
    """A pick built over one corpus: ``search(rows)`` returns the top-10 ids of those query rows."""

    search: Callable[[slice], np.ndarray]
    build_s: float
    same_width_exact_ids: np.ndarray | None = None


def _cut(matrix: np.ndarray, method: str, width: int, pca) -> np.ndarray:
    """The renormalised ``width``-prefix of each row, after the PCA rotation for method 'pca'."""
    if method != "pca":
        return renormalised_prefix(matrix, width, prefix_norms(matrix, [width])[:, 0])
    mean, rotation = pca
    cut = np.empty((len(matrix), width), dtype=np.float32)
    for start in range(0, len(matrix), CHUNK_ROWS):
        cut[start : start + CHUNK_ROWS] = normalise_rows((matrix[start : start + CHUNK_ROWS] - mean) @ rotation[:, :width])
    return cut


def _search_param(search_params: dict, *names: str) -> int | None:
    """The first of ``names`` the pick's search parameters hold (the bench's names first), as an int."""
    for name in names:
        if search_params.get(name) is not None:
            return int(search_params[name])
    return None


def _build(pick: dict, corpus: np.ndarray, queries: np.ndarray, pca) -> _Built:
    search_params = pick.get("search_params") or {}
    if pick.get("kind") == "funnel":
        funnel = Funnel.from_dicts(pick["stages"])
        start = time.perf_counter()
        searcher = FunnelSearcher(corpus)
        searcher.prepare(funnel)
        build_s = time.perf_counter() - start
        return _Built(lambda rows: searcher.search(queries[rows], funnel).ids, build_s)

    index_type, precision, width = pick["index_type"], pick["precision"], int(pick["width"])
    method = pick.get("method", "prefix")
    prefix = _cut(corpus, method, width, pca)
    query_prefix = _cut(queries, method, width, pca)
    start = time.perf_counter()
    # As in the bench, a graph or k-means build is not what is timed: it gets every core.
    with search_threads(os.cpu_count() if index_type in ("hnsw", "ivf") else None):
        index = build_index(prefix, index_type, precision, ivf_lists=_search_param(search_params, "ivf_lists", "nlist"))
    build_s = time.perf_counter() - start
    same_width_exact_ids = None
    if index_type in ("hnsw", "ivf"):
        # What the bench's index recall is measured against: exact search over the same prefixes.
        same_width_exact_ids = faiss.knn(query_prefix, prefix, K, faiss.METRIC_INNER_PRODUCT)[1]
    del prefix
    codes = np.packbits(query_prefix > 0, axis=1) if index_type == "binary" else query_prefix
    if index_type == "ivf":
        probes = _search_param(search_params, "ivf_nprobe", "nprobe") or IVF_DEFAULT_PROBES
        parameters = faiss.SearchParametersIVF(nprobe=min(probes, index.nlist))

        def run(rows: slice) -> np.ndarray:
            return index.search(codes[rows], K, params=parameters)[1]
    else:
        search = index_searcher(
            index, index_type, precision, k=K,
            hnsw_ef_search=_search_param(search_params, "hnsw_ef_search", "ef_search") or HNSW_EF_SEARCH,
        )

        def run(rows: slice) -> np.ndarray:
            return search(codes[rows], query_prefix[rows])

    return _Built(run, build_s, same_width_exact_ids)


def _single_query_ms(search: Callable[[slice], object], query_count: int) -> tuple[float, float]:
    """p50 and p95 of one query per call, after one warm-up query (encoding done before the clock)."""
    search(slice(0, 1))
    samples_ms = []
    for row in range(query_count):
        start = time.perf_counter()
        search(slice(row, row + 1))
        samples_ms.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(samples_ms, 50)), float(np.percentile(samples_ms, 95))


def _measure(pick: dict, corpus: np.ndarray, queries: np.ndarray, pca, threads: int, *, exact_timing: bool = False) -> dict:
    """Build the pick over ``corpus``, time single queries on ``threads`` threads and measure recall@10
    against exact search."""
    exact_ids = faiss.knn(queries, corpus, K, faiss.METRIC_INNER_PRODUCT)[1]
    built = _build(pick, corpus, queries, pca)
    with search_threads(threads):
        p50_ms, p95_ms = _single_query_ms(built.search, len(queries))
        exact_p50_ms = None
        if exact_timing:
            exact_p50_ms, _ = _single_query_ms(
                lambda rows: faiss.knn(queries[rows], corpus, K, faiss.METRIC_INNER_PRODUCT), len(queries)
            )
    ids = built.search(slice(None))
    measured = {
        "corpus_size": len(corpus),
        "build_s": built.build_s,
        "p50_ms": p50_ms,
        "p95_ms": p95_ms,
        "full_width_recall_at_10": fidelity_at_k(ids, exact_ids, K),
        "index_recall_at_10": (
            None if built.same_width_exact_ids is None else fidelity_at_k(ids, built.same_width_exact_ids, K)
        ),
    }
    if exact_timing:
        measured["exact_p50_ms"] = exact_p50_ms
        measured["speedup"] = exact_p50_ms / p50_ms if p50_ms > 0 else None
    return measured


# -- predictions -------------------------------------------------------------------------------------------------
def _predicted_latency(pick: dict, size: int, planned_size: int, store, context) -> tuple[float | None, float | None, str]:
    """The planner's p50/p95 at the verified size: the pick's own at the planned size, else projected again."""
    if size == planned_size or store is None:
        at = "the planned size" if size == planned_size else f"the planned size {planned_size:,} (no store to project from)"
        return pick.get("p50_ms"), pick.get("p95_ms"), at
    rows = latency_rows_for(
        pick, store.rows("latency"), store.rows("funnels"),
        dataset_fingerprint=context.get("dataset_fingerprint"), model=context.get("model"),
    )
    if rows.empty:
        return None, None, f"{size:,} vectors: no latency measured"
    estimate = latency_at(rows, size)
    return estimate.p50_ms, estimate.p95_ms, f"{size:,} vectors: {estimate.basis}"


def _predicted_recall(pick: dict, store, context, real_rows: int) -> tuple[float | None, str | None, str]:
    """(predicted recall@10, where it comes from, what it is measured against)."""
    if pick.get("kind") == "funnel":
        return pick.get("recall_at_10"), "funnel tuning", "exact full-width fp32 search"
    if pick.get("index_type") in ("hnsw", "ivf"):
        source = "bench index recall" if pick.get("index_recall_at_10") is not None else None
        return pick.get("index_recall_at_10"), source, "exact search over the same prefixes"
    # A flat or binary scan loses only to its width, method and precision: the evaluation's fidelity@10 is
    # the recall@10 of exactly that search against exact full-width fp32 search, at the real corpus size.
    if store is not None and context.get("dataset_fingerprint"):
        results = store.results(method=pick.get("method", "prefix"), precision=pick["precision"])
        results = results[
            (results["dataset_fingerprint"] == context["dataset_fingerprint"]) & (results["model"] == context.get("model"))
            & (results["width"] == int(pick["width"])) & (results["status"] == "finished")
        ].dropna(subset=["fidelity_at_10"])
        if not results.empty:
            # Measured on the real rows: a scan's recall falls as the corpus grows, which is what is verified here.
            source = f"evaluation fidelity@10 on the {real_rows:,} real rows"
            return float(results.iloc[-1]["fidelity_at_10"]), source, "exact full-width fp32 search"
    return None, None, "exact full-width fp32 search"


def _ratio(measured: float | None, predicted: float | None) -> float | None:
    return measured / predicted if measured is not None and predicted else None


# -- the verification ------------------------------------------------------------------------------------------
def verify_pick(
    pick: dict,
    embeddings: DatasetEmbeddings,
    corpus_size: int,
    *,
    context: dict | None = None,
    store: ResultStore | None = None,
    threads: int = 1,
    query_count: int = VERIFY_QUERY_COUNT,
    memory_limit_bytes: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict:
    """Build the planner's pick at the planned corpus size on this machine; measure latency and recall.

    Rows: the dataset's real corpus rows first, then rows drawn from a Gaussian mixture fitted to them
    (``sample_mixture_corpus``); at or below the real size a random subset of real rows. A sharded pick
    (``shards`` > 1) is verified on one shard of ``per_shard_corpus_size`` rows. When the build would not
    fit in memory the size is capped at the largest that does (``capped_from`` says from what), and the
    prediction is projected again at that size from the store's rows. Single queries are timed one per
    call on ``threads`` threads. Recall@10 is measured against exact search on the same rows: exact search
    over the same prefixes for HNSW and IVF (what the bench's index recall is), exact full-width fp32 search
    otherwise (``full_width_recall_at_10`` always). When synthetic rows were used, the same pick is measured
    again on the real rows and on as many synthetic rows (``stand_in_check``).

    Args:
        pick: a planner candidate (``recommendation_`` or a ``candidates_`` record): ``label``, ``kind``,
            ``stages``, ``method``, ``width``, ``precision``, ``index_type``, ``p50_ms``, ``p95_ms``, and
            where present ``search_params``, ``index_recall_at_10``, ``recall_at_10`` (funnels), ``shards``.
        embeddings: the evaluated dataset's full-width embeddings (``mrl_core.encode.embed_dataset``).
        corpus_size: the planned corpus size the pick's predictions are for.
        context: the planner's ``context_`` (``dataset``, ``dataset_fingerprint``, ``model``): needed to store
            the verification and to look predictions up in the store.
        store: a ``ResultStore``; the verification is stored as a run of kind ``verify``. None: not stored.
        threads: FAISS/BLAS threads while timing.
        query_count: single queries timed (the dataset's queries, cycled; random corpus rows when it has none).
        memory_limit_bytes: memory the verification may fill; None: ``MEMORY_SHARE`` of what is available.
        seed: seed of the mixture and of subsets.
        progress: called as progress(done, total) over the steps.

    Returns:
        A JSON-friendly dict: ``corpus_size`` (verified), ``planned_corpus_size``, ``capped_from``,
        ``predicted_p50_ms``, ``measured_p50_ms``, ``predicted_p95_ms``, ``measured_p95_ms``, ``ratio_p50``,
        ``ratio_p95`` (measured / predicted), ``predicted_recall_at_10``, ``measured_recall_at_10``,
        ``recall_reference``, ``full_width_recall_at_10``, ``rows`` (how they were made), ``stand_in_check``,
        ``setup`` (faiss version, threads, load average) and ``run_id``.

    Raises:
        ValueError: the pick cannot be built here (unknown index, a pair not built, a binary width that is not
            whole bytes), an argument is out of range, or memory cannot hold even the real rows.

    Example:
        >>> from mrl_core.widths import normalise_rows
        >>> rng = np.random.default_rng(0)
        >>> corpus = normalise_rows(rng.normal(size=(500, 32)))
        >>> embeddings = DatasetEmbeddings(corpus, corpus[:20], "precomputed", "precomputed")
        >>> pick = {"label": "prefix 32 fp32/flat", "kind": "single", "method": "prefix", "width": 32,
        ...         "precision": "fp32", "index_type": "flat", "p50_ms": 0.1, "p95_ms": 0.2}
        >>> result = verify_pick(pick, embeddings, 800, query_count=20)
        >>> result["corpus_size"], result["rows"]["synthetic_rows"], result["measured_recall_at_10"]
        (800, 300, 1.0)
    """
    corpus = embeddings.corpus
    real_rows, full_width = corpus.shape
    check_buildable(pick, full_width)
    context = dict(context or {})
    if store is not None and not context.get("dataset_fingerprint"):
        raise ValueError("context: expected the planner's context_ (dataset, dataset_fingerprint, model) to store the verification")
    if not isinstance(corpus_size, (int, np.integer)) or corpus_size < 1:
        raise ValueError(f"corpus_size={corpus_size!r}: expected a positive whole number of vectors")
    if not isinstance(query_count, (int, np.integer)) or query_count < 1:
        raise ValueError(f"query_count={query_count!r}: expected a positive whole number of queries")
    if real_rows < 2:
        raise ValueError(f"embeddings: {real_rows} corpus row(s); expected at least 2 to draw stand-in rows from")

    shards = int(pick.get("shards") or 1)
    target = int(pick.get("per_shard_corpus_size") or math.ceil(corpus_size / shards)) if shards > 1 else int(corpus_size)
    memory = int(memory_limit_bytes) if memory_limit_bytes is not None else int(MEMORY_SHARE * available_memory_bytes())
    fitting = fitting_corpus_size(pick, full_width, memory)
    size = min(target, fitting)
    if size < min(target, real_rows):
        raise ValueError(
            f"memory_limit_bytes={memory:,}: expected room for at least {min(target, real_rows):,} rows "
            f"(about {bytes_per_row(pick, full_width) * MEMORY_SAFETY:,.0f} bytes each) to verify {_label(pick)}"
        )
    steps = 4 if size > real_rows else 3
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps)

    if progress is not None:
        progress(0, steps)
    rng = np.random.default_rng(seed)
    if len(embeddings.queries):
        pool, query_source = embeddings.queries, "dataset queries"
    else:
        pool, query_source = corpus[np.sort(rng.choice(real_rows, min(real_rows, query_count), replace=False))], "random corpus rows"
    queries = np.ascontiguousarray(pool[np.arange(query_count) % len(pool)], dtype=np.float32)
    pca = pca_rotation(corpus) if pick.get("method") == "pca" else None
    cluster_count = enlargement_cluster_count(real_rows)
    load_before = os.getloadavg()

    with search_threads(threads):
        used_threads = faiss.omp_get_max_threads()
    rows, row_details = sample_mixture_corpus(corpus, size, cluster_count=cluster_count, seed=seed)
    step()
    measured = _measure(pick, rows, queries, pca, threads)
    del rows
    step()
    stand_in_check = None
    if size > real_rows:
        stand_in_check = _stand_in_check(pick, corpus, queries, pca, threads, cluster_count, seed)
        step()
    load_after = os.getloadavg()

    planned_size = int(corpus_size)
    predicted_p50, predicted_p95, predicted_at = _predicted_latency(pick, size, planned_size, store, context)
    predicted_recall, recall_source, recall_reference = _predicted_recall(pick, store, context, real_rows)
    uses_index_recall = recall_reference == "exact search over the same prefixes"
    measured_recall = measured["index_recall_at_10"] if uses_index_recall else measured["full_width_recall_at_10"]
    result = {
        "label": pick.get("label"),
        "kind": pick.get("kind", "single"),
        "stages": pick.get("stages"),
        "method": pick.get("method", "prefix"),
        "search_params": pick.get("search_params"),
        "planned_corpus_size": planned_size,
        "corpus_size": size,
        "capped_from": target if size < target else None,
        "cap_reason": (
            f"a build of {target:,} rows would not fit in {memory / 1e9:.3g} GB of memory; verified at {size:,}"
            if size < target else None
        ),
        "shards": shards,
        "sharding": f"one shard of {target:,} of {shards} shards verified" if shards > 1 else None,
        "predicted_p50_ms": predicted_p50,
        "measured_p50_ms": measured["p50_ms"],
        "predicted_p95_ms": predicted_p95,
        "measured_p95_ms": measured["p95_ms"],
        "ratio_p50": _ratio(measured["p50_ms"], predicted_p50),
        "ratio_p95": _ratio(measured["p95_ms"], predicted_p95),
        "predicted_at": predicted_at,
        "predicted_recall_at_10": predicted_recall,
        "measured_recall_at_10": measured_recall,
        "predicted_recall_source": recall_source,
        "recall_reference": recall_reference,
        "full_width_recall_at_10": measured["full_width_recall_at_10"],
        "build_s": measured["build_s"],
        "rows": {**row_details, "method": STAND_IN_ROWS if row_details.get("enlarged") else "a random subset of the real rows"},
        "stand_in_check": stand_in_check,
        "setup": {
            "faiss_version": faiss.__version__,
            "threads": used_threads,
            "batch_size": 1,
            "query_count": int(query_count),
            "query_source": query_source,
            "k": K,
            "cpu_count": os.cpu_count(),
            "load_average_1m": [load_before[0], load_after[0]],
            "memory_limit_bytes": memory,
        },
        "run_id": None,
    }
    if store is not None:
        result["run_id"] = _store_verification(store, result, context, embeddings)
    step()
    return result


def _stand_in_check(pick: dict, corpus: np.ndarray, queries: np.ndarray, pca, threads: int, cluster_count: int, seed: int) -> dict:
    """The same pick on the real rows and on as many mixture rows, same queries: how far the stand-in is."""
    real_rows = len(corpus)
    drawn, _ = sample_mixture_corpus(corpus, 2 * real_rows, cluster_count=cluster_count, seed=seed)
    synthetic = np.ascontiguousarray(drawn[real_rows:])
    del drawn
    real = _measure(pick, corpus, queries, pca, threads, exact_timing=True)
    stand_in = _measure(pick, synthetic, queries, pca, threads, exact_timing=True)
    keys = ("p50_ms", "p95_ms", "exact_p50_ms", "speedup", "full_width_recall_at_10", "index_recall_at_10")
    recall_key = "index_recall_at_10" if real["index_recall_at_10"] is not None else "full_width_recall_at_10"
    return {
        "corpus_size": real_rows,
        "real": {key: real[key] for key in keys},
        "stand_in": {key: stand_in[key] for key in keys},
        "ratio_p50": _ratio(stand_in["p50_ms"], real["p50_ms"]),
        "ratio_speedup": _ratio(stand_in["speedup"], real["speedup"]),
        "recall_difference": stand_in[recall_key] - real[recall_key],
        "text": (
            f"at {real_rows:,} rows, mixture rows vs real rows: p50 x{_ratio(stand_in['p50_ms'], real['p50_ms']):.2f}, "
            f"recall@10 {stand_in[recall_key]:.3f} vs {real[recall_key]:.3f}, speedup over exact "
            f"{stand_in['speedup']:.2f}x vs {real['speedup']:.2f}x"
        ),
    }


def _store_verification(store: ResultStore, result: dict, context: dict, embeddings: DatasetEmbeddings) -> int:
    row_keys = {
        "planned_corpus_size", "corpus_size", "label", "kind", "stages", "predicted_p50_ms", "measured_p50_ms",
        "predicted_p95_ms", "measured_p95_ms", "predicted_recall_at_10", "measured_recall_at_10",
    }
    row = {key: result[key] for key in row_keys}
    row["details"] = {key: value for key, value in result.items() if key not in row_keys and key != "run_id"}
    with store.run(
        "verify", model=context.get("model", embeddings.model), model_fingerprint=embeddings.model_fingerprint,
        dataset=context.get("dataset"), dataset_fingerprint=context["dataset_fingerprint"],
        corpus_size=result["corpus_size"], query_count=result["setup"]["query_count"],
        params={"label": result["label"], "planned_corpus_size": result["planned_corpus_size"]},
        threads=result["setup"]["threads"],
    ) as run_id:
        store.add_rows("verifications", run_id, [row])
    return run_id


# -- the rows a verification needs ---------------------------------------------------------------------------------
def evaluated_source(store: ResultStore, dataset_fingerprint: str) -> str | None:
    """Where the newest finished evaluation of a dataset loaded it from, when the store says (None otherwise).

    Evaluations record their source in the run's params; a built-in dataset is named by its source.
    """
    runs = store.list_runs("evaluate")
    runs = runs[(runs["dataset_fingerprint"] == dataset_fingerprint) & (runs["status"] == "finished")]
    for run in runs.to_dict("records"):
        source = (run.get("params") or {}).get("source")
        if source:
            return str(source)
        if str(run.get("dataset")).split(":")[0] == "builtin":
            return str(run["dataset"])
    return None


def verification_embeddings(
    store: ResultStore, context: dict, data: str | None = None, progress: Progress | None = None
) -> DatasetEmbeddings:
    """The evaluated dataset's full-width embeddings under the evaluated model, to draw verification rows from.

    Args:
        store: the results store the planner read.
        context: the planner's ``context_`` (``dataset``, ``dataset_fingerprint``, ``model``).
        data: the dataset's source (a path or ``builtin[:quick]``); None reloads the source the evaluation
            recorded.
        progress: encoding progress, when the embeddings are not cached.

    Raises:
        ValueError: no source is known, or the data loaded is not the evaluated dataset.
    """
    fingerprint, name = context["dataset_fingerprint"], context.get("dataset")
    source = data if data is not None else evaluated_source(store, fingerprint)
    if source is None:
        raise ValueError(
            f"data=None: the store does not record where dataset {name!r} ({fingerprint}) was loaded from; "
            "expected its source (on the command line: --data SRC)"
        )
    try:
        dataset = load_dataset(source)
    except (OSError, ValueError) as error:
        raise ValueError(f"data={source!r}: cannot reload the evaluated dataset {name!r}: {error}") from None
    if dataset.fingerprint != fingerprint:
        raise ValueError(
            f"data={source!r}: holds dataset {dataset.name!r} ({dataset.fingerprint}); expected the evaluated "
            f"dataset {name!r} ({fingerprint}) the recommendation's quality came from"
        )
    return embed_dataset(dataset, context["model"], progress)


def verification_text(verification: dict) -> list[str]:
    """A verification as lines of text: predicted next to measured, the cap and the stand-in check."""

    def ms(value: float | None) -> str:
        return "not predicted" if value is None else f"{value:.3g} ms"

    def times(value: float | None) -> str:
        return "" if value is None else f" (x{value:.2f})"

    lines = [f"verified {verification['label']} at {verification['corpus_size']:,} vectors on this machine"]
    if verification["capped_from"]:
        lines.append(f"  capped: {verification['cap_reason']}")
    if verification["sharding"]:
        lines.append(f"  {verification['sharding']}")
    lines.append(
        f"  p50 {verification['measured_p50_ms']:.3g} ms measured, {ms(verification['predicted_p50_ms'])} predicted"
        f"{times(verification['ratio_p50'])}; p95 {verification['measured_p95_ms']:.3g} ms measured, "
        f"{ms(verification['predicted_p95_ms'])} predicted{times(verification['ratio_p95'])}"
    )
    predicted_recall = verification["predicted_recall_at_10"]
    lines.append(
        f"  recall@10 {verification['measured_recall_at_10']:.3f} measured"
        + ("" if predicted_recall is None else f", {predicted_recall:.3f} predicted ({verification['predicted_recall_source']})")
        + f"; against {verification['recall_reference']}"
    )
    check = verification["stand_in_check"]
    lines.append(f"  stand-in check {check['text']}" if check else "  rows: all real")
    return lines
