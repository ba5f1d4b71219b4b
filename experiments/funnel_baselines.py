"""The tuned funnel against exact search and the standard single indexes a user would pick instead.

SciFact (5,183 documents, 300 test queries) embedded by MODEL; with --corpus-size above the real size the
corpus is enlarged by sampling a Gaussian mixture fitted to the real embeddings
(``mrl_core.bench.sample_mixture_corpus``). The first half of the queries tunes (``FunnelTuner``, which
always measures HNSW32 and IVF over the full-width vectors at the smallest efSearch / lists probed that
meets the target, beside every funnel); the second half, unseen by the tuner, measures recall@10 of the
pick and of the fastest standard index against exact search, and their single-query latency timed in
turn with exact search (1 thread, batch 1). Indexes are built on every core. Load (``/proc/loadavg``)
before and after is recorded: the machine is shared.

    python experiments/funnel_baselines.py --model base [--corpus-size 150000] [--target-recall 0.99]

Prints the figures and writes them as JSON to experiments/out/funnel_baselines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mrl_core.bench import sample_mixture_corpus  # noqa: E402
from mrl_core.data import load_dataset  # noqa: E402
from mrl_core.encode import embed_dataset  # noqa: E402
from mrl_core.funnel import Funnel, FunnelSearcher, FunnelTuner, time_round_robin  # noqa: E402
from mrl_core.indexes import search_threads  # noqa: E402
from mrl_core.metrics import fidelity_at_k  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def load() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--corpus-size", type=int, default=0, help="0: the real corpus only")
    parser.add_argument("--clusters", type=int, default=512, help="mixture clusters when enlarging")
    parser.add_argument("--target-recall", type=float, default=0.99)
    parser.add_argument("--latency-queries", type=int, default=50)
    args = parser.parse_args()

    setup = {"faiss_version": faiss.__version__, "search_threads": 1, "build_threads": os.cpu_count(), "batch_size": 1,
             "model": args.model, "data": args.data, "target_recall": args.target_recall, "load_before": load()}
    dataset = load_dataset(args.data)
    embeddings = embed_dataset(dataset, args.model)
    corpus = embeddings.corpus
    if args.corpus_size > len(corpus):
        corpus, enlarged = sample_mixture_corpus(corpus, args.corpus_size, cluster_count=args.clusters, seed=0)
        setup["enlarged"] = {key: value for key, value in enlarged.items() if isinstance(value, (int, float, str))}
    setup["corpus_size"] = len(corpus)
    queries = embeddings.queries
    half = len(queries) // 2
    tune_queries, held_out = queries[:half], queries[half:]
    print("setup:", json.dumps(setup), flush=True)

    searcher = FunnelSearcher(corpus)
    start = time.perf_counter()
    tuner = FunnelTuner(args.target_recall, 10, latency_query_count=args.latency_queries).fit(searcher, tune_queries)
    tuning_s = time.perf_counter() - start
    comparison = tuner.comparison_
    pick = tuner.best_
    baseline = Funnel.from_dicts(comparison["baseline"]["stages"]) if comparison["baseline"] else None
    standard = [Funnel.from_dicts(row["stages"]) for row in tuner.frontier_ if row["standard_index"] and not row["measured_on_sample"]]

    with search_threads(1):
        exact = Funnel.exact(searcher.width, 10)
        exact_ids = searcher.exact_search(held_out, 10).ids
        compared = list(dict.fromkeys([pick] + standard + [exact]))
        timings = dict(zip(compared, time_round_robin(searcher, held_out[: args.latency_queries], compared, rounds=3)))
        held = {
            funnel.describe(): {
                "recall_at_10": fidelity_at_k(searcher.search(held_out, funnel).ids, exact_ids, 10),
                "p50_ms": timings[funnel]["p50_ms"],
                "p95_ms": timings[funnel]["p95_ms"],
            }
            for funnel in compared
        }
    figures = {
        "setup": dict(setup, load_after=load()),
        "tuning_s": tuning_s,
        "build_seconds": searcher.build_seconds,
        "tune_query_count": len(tune_queries),
        "held_out_query_count": len(held_out),
        "comparison_on_tuning_queries": comparison,
        "held_out": held,
        "skipped": tuner.skipped_,
        "frontier": tuner.frontier_,
    }
    print(f"tuned in {tuning_s:.0f} s on {len(tune_queries)} queries, {len(corpus):,} x {searcher.width}; builds (s): "
          + ", ".join(f"{key} {value:.1f}" for key, value in searcher.build_seconds.items()))
    print(f"verdict (tuning queries): {comparison['verdict']}")
    print(f"held-out ({len(held_out)} queries; 1 thread, batch 1, faiss {faiss.__version__}; load {figures['setup']['load_after']}):")
    for name, side in (("pick", comparison["funnel"]), ("exact", comparison["exact"]), ("baseline", comparison["baseline"])):
        if side is None:
            continue
        described = Funnel.from_dicts(side["stages"]).describe()
        row = held[described]
        print(f"  {name:<8} {described:<45} recall@10 {row['recall_at_10']:.4f}  p50 {row['p50_ms']:.3f} ms  "
              f"p95 {row['p95_ms']:.3f} ms  RAM {side['ram_bytes_per_vector']:,.0f} B/vector  disk {side['disk_bytes_per_vector']:,.0f}")
    for funnel in standard:
        if funnel != baseline:
            row = held[funnel.describe()]
            print(f"  standard {funnel.describe():<45} recall@10 {row['recall_at_10']:.4f}  p50 {row['p50_ms']:.3f} ms")
    OUT.mkdir(exist_ok=True)
    (OUT / "funnel_baselines.json").write_text(json.dumps(figures, indent=1, default=str))
    print(f"wrote {OUT / 'funnel_baselines.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
