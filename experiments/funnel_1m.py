"""Auto-tuned funnel vs exact full-width search on a 1M-vector corpus of Matryoshka embeddings.

The real SciFact corpus (5,183 documents) embedded by MODEL is enlarged to --corpus-size rows: the real
rows first, unchanged, then copies of random real rows plus gaussian noise scaled per coordinate
(``mrl_core.bench.enlarge_corpus``), renormalised. The SciFact test queries are split in two: the first
half tunes the funnel (``FunnelTuner``, to --tune-target, a margin above --target-recall), the second
half, never seen by the tuner, measures recall@10
against exact search and single-query latency of the pick vs exact search (timed in turn, one thread,
batch size 1). Recall is also checked on the real part: the pick's config run on the real corpus alone,
and, on the enlarged corpus, the share of the exact top-10's real documents that the funnel returns.
Stage 1's scan rate is compared with this machine's memory read bandwidth measured here with numpy.

    python experiments/funnel_1m.py --model models/scifact_adaptor.npz [--corpus-size 1000000]

Prints the setup and every figure, and writes them as JSON to experiments/out/funnel_1m.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrl_core.bench import enlarge_corpus  # noqa: E402
from mrl_core.data import load_dataset  # noqa: E402
from mrl_core.encode import embed_dataset  # noqa: E402
from mrl_core.funnel import (  # noqa: E402
    FunnelSearcher,
    FunnelTuner,
    recall_at_k,
    save_tuning,
    search_threads,
    time_round_robin,
)

OUT = Path(__file__).resolve().parent / "out"


def read_bandwidth_gb_s(size_bytes: int = 1 << 30, repeats: int = 4) -> dict:
    """Single-thread memory bandwidth over a 1 GiB float32 array, best of ``repeats`` per probe.

    Read probes: numpy sum, BLAS dot, and a BLAS matrix-vector product (the access pattern of a flat
    scan); copy counts bytes read plus written. numpy's sum alone reads slower than a SIMD scan can, so
    the read bandwidth is the best read probe.
    """
    source = np.ones(size_bytes // 4, dtype=np.float32)
    target = np.empty_like(source)
    ones = np.ones(256, dtype=np.float32)
    probes = {
        "sum": (lambda: source.sum(), size_bytes),
        "dot": (lambda: np.dot(source, source), size_bytes),
        "matvec": (lambda: source.reshape(-1, 256) @ ones, size_bytes),
        "copy": (lambda: np.copyto(target, source), 2 * size_bytes),
    }
    rates = {}
    with search_threads(1):
        for name, (probe, moved_bytes) in probes.items():
            best = 0.0
            for _ in range(repeats):
                start = time.perf_counter()
                probe()
                best = max(best, moved_bytes / (time.perf_counter() - start) / 1e9)
            rates[f"{name}_gb_s"] = best
    rates["read_gb_s"] = max(rates["sum_gb_s"], rates["dot_gb_s"], rates["matvec_gb_s"])
    return dict(rates, array_bytes=size_bytes, repeats=repeats, threads=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an MRL model: a saved adaptor file or model folder")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--corpus-size", type=int, default=1_000_000)
    parser.add_argument("--noise-scale", type=float, default=0.5)
    parser.add_argument("--target-recall", type=float, default=0.99, help="recall@10 the held-out queries must reach")
    parser.add_argument("--tune-target", type=float, default=0.995,
                        help="recall@10 the tuner demands on its own queries (a margin over --target-recall: the "
                             "smallest passing shortlists fit the tuning queries a little too well)")
    parser.add_argument("--max-shortlist-size", type=int, default=10000)
    parser.add_argument("--latency-queries", type=int, default=50, help="queries timed per candidate while tuning")
    parser.add_argument("--index-types", default="flat,binary,hnsw", help="stage-1 index types (HNSW is skipped above 50k rows)")
    parser.add_argument("--store", default=None, help="also save the tuned frontier to this results store")
    args = parser.parse_args()

    threads = 1
    setup = {
        "faiss_version": faiss.__version__,
        "numpy_version": np.__version__,
        "threads": threads,
        "batch_size": 1,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "model": args.model,
        "data": args.data,
        "corpus_size": args.corpus_size,
        "noise_scale": args.noise_scale,
        "target_recall": args.target_recall,
        "tune_target": args.tune_target,
        "index_types": args.index_types,
    }
    print("setup:", json.dumps(setup), flush=True)

    dataset = load_dataset(args.data)
    embeddings = embed_dataset(dataset, args.model)
    real = embeddings.corpus
    queries = embeddings.queries
    half = len(queries) // 2
    tune_queries, held_out = queries[:half], queries[half:]
    start = time.perf_counter()
    corpus, enlarge_details = enlarge_corpus(real, args.corpus_size, noise_scale=args.noise_scale, seed=0)
    print(f"corpus: {corpus.shape[0]:,} x {corpus.shape[1]} ({enlarge_details}) in {time.perf_counter() - start:.1f} s", flush=True)

    bandwidth = read_bandwidth_gb_s()
    print(
        f"memory bandwidth (1 thread, 1 GiB): read {bandwidth['read_gb_s']:.1f} GB/s (sum {bandwidth['sum_gb_s']:.1f}, "
        f"dot {bandwidth['dot_gb_s']:.1f}, matvec {bandwidth['matvec_gb_s']:.1f}), copy {bandwidth['copy_gb_s']:.1f} GB/s",
        flush=True,
    )

    searcher = FunnelSearcher(corpus)
    start = time.perf_counter()
    tuner = FunnelTuner(
        args.tune_target, 10, index_types=args.index_types.split(","), max_shortlist_size=args.max_shortlist_size,
        latency_query_count=args.latency_queries, threads=threads,
    ).fit(searcher, tune_queries, progress=lambda done, total: print(f"  timed {done}/{total}", end="\r", flush=True))
    tuning_s = time.perf_counter() - start
    best = tuner.best_
    print(f"\ntuned in {tuning_s:.0f} s on {len(tune_queries)} queries; skipped: {tuner.skipped_}")
    print(f"chosen: {best.describe()}")

    with search_threads(threads):
        exact_ids = searcher.exact_search(held_out, 10).ids
        funnel_ids = searcher.search(held_out, best).ids
        held_out_recall = recall_at_k(funnel_ids, exact_ids, 10)
        exact_funnel = type(best).exact(searcher.width, 10)
        best_timing, exact_timing = time_round_robin(searcher, held_out, [best, exact_funnel], rounds=2)
        # The real part: exact top-10 members that are real documents, and the same config on the real corpus alone.
        real_rows = enlarge_details["real_rows"]
        real_hits = real_total = 0
        for found, truth in zip(funnel_ids, exact_ids):
            truth_real = set(truth[truth < real_rows].tolist())
            real_total += len(truth_real)
            real_hits += len(truth_real & set(found.tolist()))
        real_searcher = FunnelSearcher(real)
        real_only_recall = recall_at_k(real_searcher.search(held_out, best).ids, real_searcher.exact_search(held_out, 10).ids, 10)

    first = best.stages[0]
    stage1_bytes = corpus.shape[0] * (first.width / 8 if first.precision == "binary" else 4 * first.width)
    stage1_ms = best_timing["stage_p50_ms"][0]
    scan_gb_s = stage1_bytes / (stage1_ms / 1000) / 1e9
    exact_scan_gb_s = corpus.nbytes / (exact_timing["p50_ms"] / 1000) / 1e9
    speedup = exact_timing["p50_ms"] / best_timing["p50_ms"]
    reference = next((row for row in tuner.frontier_ if row["reference"]), None)

    figures = {
        "setup": setup,
        "enlarge": enlarge_details,
        "bandwidth": bandwidth,
        "tuning_s": tuning_s,
        "tune_query_count": len(tune_queries),
        "held_out_query_count": len(held_out),
        "chosen": best.to_dicts(),
        "chosen_description": best.describe(),
        "held_out_recall_at_10": held_out_recall,
        "held_out_meets_target": held_out_recall >= args.target_recall,
        "held_out_real_part_recall": real_hits / real_total if real_total else None,
        "held_out_real_part_neighbours": real_total,
        "real_corpus_only_recall_at_10": real_only_recall,
        "funnel_p50_ms": best_timing["p50_ms"],
        "funnel_p95_ms": best_timing["p95_ms"],
        "funnel_stage_p50_ms": best_timing["stage_p50_ms"],
        "exact_p50_ms": exact_timing["p50_ms"],
        "exact_p95_ms": exact_timing["p95_ms"],
        "speedup_p50": speedup,
        "stage1_scan_gb_s": scan_gb_s,
        "stage1_share_of_read_bandwidth": scan_gb_s / bandwidth["read_gb_s"],
        "exact_scan_gb_s": exact_scan_gb_s,
        "exact_share_of_read_bandwidth": exact_scan_gb_s / bandwidth["read_gb_s"],
        "reference_funnel": reference,
        "frontier": tuner.frontier_,
    }
    print(f"held-out ({len(held_out)} queries, 1 thread, batch 1, faiss {faiss.__version__}):")
    print(f"  funnel {best.describe()}: p50 {best_timing['p50_ms']:.2f} ms, p95 {best_timing['p95_ms']:.2f} ms, "
          f"stages {[round(ms, 3) for ms in best_timing['stage_p50_ms']]} ms")
    print(f"  exact {corpus.shape[0]:,} x {searcher.width} fp32: p50 {exact_timing['p50_ms']:.2f} ms, p95 {exact_timing['p95_ms']:.2f} ms")
    print(f"  speedup (p50) {speedup:.1f}x at recall@10 {held_out_recall:.4f} vs exact "
          f"({'meets' if held_out_recall >= args.target_recall else 'misses'} the {args.target_recall} target)")
    print(f"  real part: {figures['held_out_real_part_recall']} of {real_total} real exact neighbours found; "
          f"same config on the real corpus alone: recall@10 {real_only_recall:.4f}")
    print(f"  stage 1 scan {scan_gb_s:.1f} GB/s = {figures['stage1_share_of_read_bandwidth']:.0%} of read bandwidth; "
          f"exact scan {exact_scan_gb_s:.1f} GB/s = {figures['exact_share_of_read_bandwidth']:.0%}")
    if reference:
        print(f"  paper funnel {reference['description']}: recall@10 {reference['recall_at_10']:.4f} (tuning queries), "
              f"p50 {reference['p50_ms']:.2f} ms")
    print("frontier (tuning queries, fastest first):")
    for row in sorted(tuner.frontier_, key=lambda row: row["p50_ms"])[:25]:
        flags = "".join(flag for flag, on in (("*", row["chosen"]), ("F", row["on_frontier"]), ("R", row["reference"])) if on)
        print(f"  {flags:>3} {row['description']:<55} recall {row['recall_at_10']:.4f}  p50 {row['p50_ms']:8.3f} ms  p95 {row['p95_ms']:8.3f} ms")

    if args.store:
        from mrl_core.store import ResultStore

        run_id = save_tuning(
            ResultStore(args.store), tuner, model=args.model, model_fingerprint=embeddings.model_fingerprint,
            dataset=f"{dataset.name} enlarged to {args.corpus_size}", dataset_fingerprint=dataset.fingerprint,
            params={"enlarge": enlarge_details, "experiment": "funnel_1m"},
        )
        figures["store_run_id"] = run_id
        print(f"stored as funnel run {run_id} in {args.store}")
    OUT.mkdir(exist_ok=True)
    (OUT / "funnel_1m.json").write_text(json.dumps(figures, indent=1, default=str))
    print(f"wrote {OUT / 'funnel_1m.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
