"""Search latency vs corpus size per (index, precision, width), and how well a line fitted on the smaller
sizes predicts the largest one.

The real SciFact corpus embedded by MODEL is enlarged to each size above its own (real rows plus noisy
copies, renormalised: ``mrl_core.bench.enlarge_corpus``). Every configuration is timed on the SciFact
test queries one at a time (p50/p95, one thread) and in batches (throughput), and its index memory is
measured from the serialised FAISS index next to FAISS's formula.

    python experiments/bench_scaling.py --model base [--corpus-sizes 5183,25000,100000,400000,1000000]

Prints the setup and every figure, and writes them as JSON to experiments/out/bench_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mrl_core.bench import run_bench  # noqa: E402
from mrl_core.scaling import fit_latency, project_latency_ms  # noqa: E402
from mrl_core.data import load_dataset  # noqa: E402
from mrl_core.encode import embed_dataset  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--corpus-sizes", default="5183,25000,100000,400000,1000000")
    parser.add_argument("--widths", default="384,128,64,32")
    parser.add_argument("--query-count", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--store", default=None, help="also save the rows to this results store")
    args = parser.parse_args()

    sizes = [int(size) for size in args.corpus_sizes.split(",")]
    widths = [int(width) for width in args.widths.split(",")]
    dataset = load_dataset(args.data)
    embeddings = embed_dataset(dataset, args.model)
    setup = {
        "faiss_version": faiss.__version__,
        "numpy_version": np.__version__,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "query_count": args.query_count,
        "cpu_count": os.cpu_count(),
        "model": args.model,
        "data": args.data,
        "real_corpus_size": dataset.corpus_size,
        "corpus_sizes": sizes,
        "widths": widths,
    }
    print("setup:", json.dumps(setup), flush=True)
    store = None
    if args.store:
        from mrl_core.store import ResultStore

        store = ResultStore(args.store)
    start = time.perf_counter()
    result = run_bench(
        embeddings.corpus, widths=widths, corpus_sizes=sizes, query_embeddings=embeddings.queries,
        query_count=args.query_count, batch_size=args.batch_size, threads=args.threads, store=store,
        run_fields={"model": args.model, "model_fingerprint": embeddings.model_fingerprint, "dataset": dataset.name,
                    "dataset_fingerprint": dataset.fingerprint},
        progress=lambda done, total: print(f"  measured {done}/{total}", end="\r", flush=True),
    )
    print(f"\nmeasured in {time.perf_counter() - start:.0f} s")
    print(f"{'index':>6} {'prec':<6} {'width':>5} {'corpus':>9} {'p50 ms':>9} {'p95 ms':>9} {'q/s':>10} {'B/vec':>8} {'formula':>8}")
    for row in result.rows:
        print(f"{row['index_type']:>6} {row['precision']:<6} {row['width']:>5} {row['corpus_size']:>9,} {row['p50_ms']:9.3f} "
              f"{row['p95_ms']:9.3f} {row['queries_per_s']:10,.0f} {row['bytes_per_vector']:8.1f} {row['formula_bytes_per_vector']:8.1f}")
    print("p50 fits (held out: the largest size, predicted from the others):")
    fits = fit_latency(result.rows, "p50_ms")
    for (index_type, precision, width), fit in fits.items():
        error = "n/a" if fit.holdout_relative_error is None else f"{fit.holdout_relative_error:.1%}"
        print(f"  {index_type:>6} {precision:<6} {width:>4}: {fit.form:<6} p50 = {fit.intercept_ms:.4f} + {fit.slope_ms:.3e} * "
              f"{'n' if fit.form == 'linear' else 'ln n'} ms; at 10M {project_latency_ms(fit, 10_000_000):.1f} ms; "
              f"held-out error at {fit.holdout_corpus_size}: {error}")
    for reason in result.skipped:
        print(f"  skipped: {reason}")
    OUT.mkdir(exist_ok=True)
    figures = {"setup": setup, "run_id": result.run_id, "rows": result.rows, "fits": result.fits, "skipped": result.skipped}
    (OUT / "bench_scaling.json").write_text(json.dumps(figures, indent=1, default=str))
    print(f"wrote {OUT / 'bench_scaling.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
