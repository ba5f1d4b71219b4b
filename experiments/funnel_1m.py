"""Auto-tuned funnel vs exact full-width search on a 1M-vector corpus of Matryoshka embeddings.

The real SciFact corpus (5,183 documents) embedded by MODEL is enlarged to --corpus-size rows: the real
rows first, unchanged, then (--enlarge mixture, the default) new vectors drawn from a Gaussian mixture
(k-means means, pooled full within-cluster covariance) fitted to the real embeddings: for an adaptor,
in its BASE model's space, renormalised and mapped through the adaptor like real rows; for a
fine-tuned model, in that model's own space (``mrl_core.bench.sample_mixture_corpus``). The cluster
count is calibrated: the one whose synthetic rows' median nearest-neighbour cosine (among as many
synthetic rows as there are real ones) is closest to the real rows' own. --enlarge noise keeps the
older method, noisy copies of real rows (``mrl_core.bench.enlarge_corpus``), whose exact top-10 are
near-duplicates ordered by isotropic noise.
HNSW and IVF stage 1s are built at --hnsw-widths / --ivf-widths before tuning, on every core (the
tuner times with one thread and would build them on one). The SciFact test queries are split in two:
the first half tunes the funnel (``FunnelTuner``, to --tune-target, a margin above --target-recall),
the second half, never seen by the tuner, measures recall@10 against exact search and single-query
latency of the pick vs exact search (timed in turn, one thread, batch size 1). Recall is also checked
on the real part: how many of the exact top-10 are real documents, the share of those the funnel
returns, and the pick's config run on the real corpus alone. Stage 1's scan rate (of the pick, or of
the fastest funnel meeting the target whose stage 1 scans the whole corpus when the pick's searches
a graph or lists) is compared with this machine's memory read bandwidth, probed here with numpy before
and after the timed searches (the CPU is shared; the better probe counts). The load (``uptime``)
before and after is recorded.

    python experiments/funnel_1m.py --model models/scifact_adaptor.npz [--corpus-size 1000000]

Prints the setup and every figure, and writes them as JSON to experiments/out/funnel_1m.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import faiss
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mrl_core.adaptor import load_adaptor  # noqa: E402
from mrl_core.bench import enlarge_corpus, sample_mixture_corpus  # noqa: E402
from mrl_core.data import load_dataset  # noqa: E402
from mrl_core.encode import embed_dataset, is_adaptor  # noqa: E402
from mrl_core.metrics import fidelity_at_k  # noqa: E402
from mrl_core.funnel import (  # noqa: E402
    Funnel,
    FunnelStage,
    FunnelSearcher,
    FunnelTuner,
    save_tuning,
    time_round_robin,
)
from mrl_core.indexes import index_bytes_per_vector, search_threads  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def read_bandwidth_gb_s(size_bytes: int = 1 << 30, repeats: int = 8) -> dict:
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


def median_neighbour_cosine(rows: np.ndarray) -> float:
    """Median over rows of the cosine to their nearest other row (unit-norm rows, exact)."""
    similarities = rows @ rows.T
    np.fill_diagonal(similarities, -np.inf)
    return float(np.median(similarities.max(axis=1)))


def calibrate_cluster_count(base: np.ndarray, transform, candidates: list[int], seed: int) -> tuple[int, dict]:
    """The mixture cluster count whose synthetic rows look as tight as the real ones at equal density.

    For each candidate, as many synthetic rows as there are real rows are drawn and the median cosine of
    each to its nearest other synthetic row is compared with the real rows' own median (both after
    ``transform``). Returns (the closest candidate, {"real": median, candidate: median, ...}).
    """
    real_rows = len(base)
    medians = {"real": median_neighbour_cosine(transform(base))}
    for count in candidates:
        sample, _ = sample_mixture_corpus(base, 2 * real_rows, transform=transform, cluster_count=count, seed=seed + 1)
        medians[count] = median_neighbour_cosine(sample[real_rows:])
    best = min(candidates, key=lambda count: abs(medians[count] - medians["real"]))
    return best, medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an MRL model: a saved adaptor file or model folder")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--corpus-size", type=int, default=1_000_000)
    parser.add_argument("--enlarge", choices=["mixture", "noise"], default="mixture",
                        help="mixture: Gaussian mixture fitted to the real embeddings (an adaptor's: in its base space); "
                             "noise: noisy copies of real rows")
    parser.add_argument("--clusters", default="256,512,1024,2048",
                        help="mixture cluster counts to calibrate over (one number: use it as is)")
    parser.add_argument("--noise-scale", type=float, default=0.5, help="for --enlarge noise")
    parser.add_argument("--target-recall", type=float, default=0.99, help="recall@10 the held-out queries must reach")
    parser.add_argument("--tune-target", type=float, default=0.995,
                        help="recall@10 the tuner demands on its own queries (a margin over --target-recall: the "
                             "smallest passing shortlists fit the tuning queries a little too well)")
    parser.add_argument("--max-shortlist-size", type=int, default=20000)
    parser.add_argument("--latency-queries", type=int, default=50, help="queries timed per candidate while tuning")
    parser.add_argument("--index-types", default="flat,binary,hnsw,ivf", help="stage-1 index types")
    parser.add_argument("--hnsw-widths", default="64,128",
                        help="widths HNSW stage 1s are built at (before tuning, on every core: ~1.5 min each at 1M)")
    parser.add_argument("--ivf-widths", default="64,128",
                        help="widths IVF stage 1s are built at (4*sqrt(N) lists, k-means on 64 rows per list, every core)")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--hnsw-ef-construction", type=int, default=80)
    parser.add_argument("--precisions", default="fp32,fp16,int8,binary", help="stage-1 precisions (flat: fp32, fp16, int8)")
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
        "enlarge": args.enlarge,
        "noise_scale": args.noise_scale if args.enlarge == "noise" else None,
        "target_recall": args.target_recall,
        "tune_target": args.tune_target,
        "index_types": args.index_types,
        "precisions": args.precisions,
        "hnsw": {"widths": args.hnsw_widths, "m": args.hnsw_m, "ef_construction": args.hnsw_ef_construction},
        "ivf_widths": args.ivf_widths,
    }
    # The machine is shared: its load during the run says how much to trust the latencies.
    setup["uptime_before"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("setup:", json.dumps(setup), flush=True)

    dataset = load_dataset(args.data)
    embeddings = embed_dataset(dataset, args.model)
    real = embeddings.corpus
    queries = embeddings.queries
    half = len(queries) // 2
    tune_queries, held_out = queries[:half], queries[half:]
    start = time.perf_counter()
    if args.enlarge == "mixture":
        if is_adaptor(args.model):
            adaptor = load_adaptor(args.model)
            base, transform = embed_dataset(dataset, adaptor.base_model).corpus, adaptor.transform
        else:
            base, transform = real, None
        candidates = [int(count) for count in args.clusters.split(",")]
        cluster_count, medians = calibrate_cluster_count(base, transform or (lambda rows: rows), candidates, seed=0)
        print(f"calibration: median nearest-neighbour cosine at {len(base):,} rows: "
              + ", ".join(f"{key}: {value:.3f}" for key, value in medians.items()) + f" -> {cluster_count} clusters", flush=True)
        corpus, enlarge_details = sample_mixture_corpus(
            base, args.corpus_size, transform=transform, cluster_count=cluster_count, seed=0
        )
        enlarge_details["calibration_median_neighbour_cosine"] = {str(key): value for key, value in medians.items()}
    else:
        corpus, enlarge_details = enlarge_corpus(real, args.corpus_size, noise_scale=args.noise_scale, seed=0)
    print(f"corpus: {corpus.shape[0]:,} x {corpus.shape[1]} ({enlarge_details}) in {time.perf_counter() - start:.1f} s", flush=True)

    bandwidth = read_bandwidth_gb_s()
    print(
        f"memory bandwidth (1 thread, 1 GiB): read {bandwidth['read_gb_s']:.1f} GB/s (sum {bandwidth['sum_gb_s']:.1f}, "
        f"dot {bandwidth['dot_gb_s']:.1f}, matvec {bandwidth['matvec_gb_s']:.1f}), copy {bandwidth['copy_gb_s']:.1f} GB/s",
        flush=True,
    )

    searcher = FunnelSearcher(corpus, hnsw_m=args.hnsw_m, hnsw_ef_construction=args.hnsw_ef_construction)
    index_widths = {
        index_type: [int(width) for width in widths.split(",") if width.strip()]
        for index_type, widths in (("hnsw", args.hnsw_widths), ("ivf", args.ivf_widths))
    }
    build_s = {}
    # Graph and list indexes are built here on every core; the tuner (one thread) reuses them.
    with search_threads(os.cpu_count()):
        for index_type, widths in index_widths.items():
            if index_type not in args.index_types.split(","):
                continue
            for width in widths:
                start = time.perf_counter()
                searcher.prepare(Funnel((FunnelStage(width, 10, index_type, probes=1 if index_type == "ivf" else None),)))
                build_s[f"{index_type} {width}"] = time.perf_counter() - start
                print(f"{index_type} over {corpus.shape[0]:,} x {width} built in {build_s[f'{index_type} {width}']:.0f} s "
                      f"({os.cpu_count()} threads; HNSW M {args.hnsw_m}, efConstruction {args.hnsw_ef_construction}; "
                      f"IVF {searcher.ivf_lists} lists)", flush=True)
    start = time.perf_counter()
    tuner = FunnelTuner(
        args.tune_target, 10, index_types=args.index_types.split(","), precisions=args.precisions.split(","),
        max_shortlist_size=args.max_shortlist_size, hnsw_widths=index_widths["hnsw"], ivf_widths=index_widths["ivf"],
        hnsw_max_corpus_size=corpus.shape[0],
        latency_query_count=args.latency_queries, threads=threads,
    ).fit(searcher, tune_queries, progress=lambda done, total: print(f"  timed {done}/{total}", end="\r", flush=True))
    tuning_s = time.perf_counter() - start
    best = tuner.best_
    print(f"\ntuned in {tuning_s:.0f} s on {len(tune_queries)} queries; skipped: {tuner.skipped_}")
    print(f"chosen: {best.describe()}")

    with search_threads(threads):
        exact_ids = searcher.exact_search(held_out, 10).ids
        funnel_ids = searcher.search(held_out, best).ids
        held_out_recall = fidelity_at_k(funnel_ids, exact_ids, 10)
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
        real_only_recall = fidelity_at_k(real_searcher.search(held_out, best).ids, real_searcher.exact_search(held_out, 10).ids, 10)

    # The CPU is shared and busy spells slow the probe: probe again after the timed searches, keep the best.
    bandwidth_after = read_bandwidth_gb_s()
    bandwidth = {key: max(value, bandwidth_after[key]) if key.endswith("_gb_s") else value for key, value in bandwidth.items()}
    bandwidth["probes"] = 2
    print(f"memory bandwidth, best of the probes before and after timing: read {bandwidth['read_gb_s']:.1f} GB/s", flush=True)
    # Scan rate of stage 1: the pick's, or when the pick's stage 1 is a graph or list search (no whole
    # scan), that of the fastest funnel meeting the target whose stage 1 scans (its tuning timings).
    if best.stages[0].index_type not in ("hnsw", "ivf"):
        scan_description, first, stage1_ms = best.describe(), best.stages[0], best_timing["stage_p50_ms"][0]
    else:
        scanning = min(
            (row for row in tuner.frontier_
             if row["meets_target"] and not row["exact"] and row["stages"][0]["index_type"] not in ("hnsw", "ivf")),
            key=lambda row: row["p50_ms"],
        )
        scan_description, first, stage1_ms = (
            scanning["description"], Funnel.from_dicts(scanning["stages"]).stages[0], scanning["stage_p50_ms"][0]
        )
    scan_index = "binary" if first.precision == "binary" else "flat"
    stage1_bytes = corpus.shape[0] * index_bytes_per_vector(first.width, first.precision, scan_index)
    scan_gb_s = stage1_bytes / (stage1_ms / 1000) / 1e9
    exact_scan_gb_s = corpus.nbytes / (exact_timing["p50_ms"] / 1000) / 1e9
    speedup = exact_timing["p50_ms"] / best_timing["p50_ms"]
    reference = next((row for row in tuner.frontier_ if row["reference"]), None)

    figures = {
        "setup": setup,
        "enlarge": enlarge_details,
        "bandwidth": bandwidth,
        "tuning_s": tuning_s,
        "index_build_s": build_s,
        "tune_query_count": len(tune_queries),
        "held_out_query_count": len(held_out),
        "chosen": best.to_dicts(),
        "chosen_description": best.describe(),
        "held_out_recall_at_10": held_out_recall,
        "held_out_meets_target": held_out_recall >= args.target_recall,
        "held_out_real_part_recall": real_hits / real_total if real_total else None,
        "held_out_real_part_neighbours": real_total,
        "exact_top10_real_share": real_total / (10 * len(held_out)),
        "goal_speedup": 20.0,
        "meets_goal": bool(held_out_recall >= args.target_recall and speedup >= 20.0),
        "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "real_corpus_only_recall_at_10": real_only_recall,
        "funnel_p50_ms": best_timing["p50_ms"],
        "funnel_p95_ms": best_timing["p95_ms"],
        "funnel_stage_p50_ms": best_timing["stage_p50_ms"],
        "exact_p50_ms": exact_timing["p50_ms"],
        "exact_p95_ms": exact_timing["p95_ms"],
        "speedup_p50": speedup,
        "stage1_scan_funnel": scan_description,
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
    print(f"  real part: {real_total} of the {10 * len(held_out)} exact top-10 are real documents "
          f"({figures['exact_top10_real_share']:.1%}); the funnel finds {figures['held_out_real_part_recall']} of them; "
          f"same config on the real corpus alone: recall@10 {real_only_recall:.4f}")
    print(f"  stage 1 scan of {scan_description}: {scan_gb_s:.1f} GB/s = {figures['stage1_share_of_read_bandwidth']:.0%} of read bandwidth; "
          f"exact scan {exact_scan_gb_s:.1f} GB/s = {figures['exact_share_of_read_bandwidth']:.0%}")
    print(f"  goal (>= 20x at recall@10 >= {args.target_recall}): {'met' if figures['meets_goal'] else 'missed'}; "
          f"load {figures['uptime_after']}")
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
