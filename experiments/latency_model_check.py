"""Does the Planner's latency hold at the scale it plans for? Predicted (from the first start's bench alone)
against measured p50 and p95 at 1M and 4M vectors.

1. The app's first start on a fresh store (``mrl_core.first_start.measure_first_start``: builtin:quick, base
   model, bench at 10k/30k/100k/1M with HNSW and IVF at 384 and 128), timed.
2. The Planner's default recommendation (1M vectors, 1 GB, p95 20 ms, 95 % of full width).
3. For flat fp32/fp16/int8 at 384/128/64/32, binary at 384/128, HNSW (up to ``--hnsw-max-size``) and IVF
   at 128 and the pick: the
   latency ``mrl_core.cost.latency_at`` gives from those rows at each check size, then a fresh bench of the
   same configurations at that size (rows drawn to match the data, as the first start draws them; HNSW and
   IVF tuned again to recall@10 0.99 there), and measured / predicted.

    python experiments/latency_model_check.py [--check-sizes 1000000,4000000] [--store FILE]

Prints the setup and the table, and writes them to experiments/out/latency_model_check.json. Run it on a
quiet machine: the first start and the check must see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mrl_core.bench import run_bench  # noqa: E402
from mrl_core.cost import latency_at  # noqa: E402
from mrl_core.encode import embed_dataset  # noqa: E402
from mrl_core.first_start import FIRST_START_MODEL, FIRST_START_SOURCE, measure_first_start  # noqa: E402
from mrl_core.data import load_dataset  # noqa: E402
from mrl_core.planner import WidthPlanner, latency_rows_for  # noqa: E402
from mrl_core.store import ResultStore  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
# (index types, precisions, widths) measured together.
CHECKS = [
    (["flat"], ["fp32", "fp16", "int8"], [384, 128, 64, 32]),
    (["binary"], ["binary"], [384, 128]),
    (["hnsw", "ivf"], ["fp32"], [128]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-sizes", default="1000000,4000000")
    parser.add_argument("--store", default=str(OUT / "latency_model_check.duckdb"),
                        help="results store; its first start is reused when it has one")
    parser.add_argument("--query-count", type=int, default=50)
    parser.add_argument("--hnsw-max-size", type=int, default=1_000_000,
                        help="HNSW is checked up to this size: a 4M-row HNSW32 build takes about 22 minutes on 2 cores")
    args = parser.parse_args()
    check_sizes = [int(size) for size in args.check_sizes.split(",")]
    OUT.mkdir(exist_ok=True)
    store = ResultStore(args.store)
    setup = {
        "faiss_version": faiss.__version__,
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "load_average_before": os.getloadavg(),
        "data": FIRST_START_SOURCE,
        "model": FIRST_START_MODEL,
        "query_count": args.query_count,
    }
    start = time.perf_counter()
    measure_first_start(store)
    setup["first_start_s"] = round(time.perf_counter() - start, 1)
    print(f"first start: {setup['first_start_s']} s (0 when the store already had it)", flush=True)

    bench_run = store.latest_run("bench")
    latency = store.rows("latency", int(bench_run["run_id"]))
    planner = WidthPlanner(1_000_000, max_storage_gb=1.0, max_p95_ms=20.0, min_retention=0.95).fit(store)
    pick = planner.recommendation_
    checks = list(CHECKS)
    if pick is not None and pick["kind"] == "single":
        checks.append(([pick["index_type"]], [pick["precision"]], [int(pick["width"])]))
        print(f"Planner's default pick: {pick['label']}", flush=True)

    dataset = load_dataset(FIRST_START_SOURCE)
    embeddings = embed_dataset(dataset, FIRST_START_MODEL)
    table = []
    for corpus_size in check_sizes:
        for index_types, precisions, widths in checks:
            if corpus_size > args.hnsw_max_size:
                index_types = [index_type for index_type in index_types if index_type != "hnsw"]
                if not index_types:
                    continue
            load_before = os.getloadavg()[0]
            measured = run_bench(
                embeddings.corpus, widths=widths, index_types=index_types, precisions=precisions,
                corpus_sizes=[corpus_size], query_embeddings=embeddings.queries, query_count=args.query_count,
                approximate_widths=widths,
            )
            for row in measured.rows:
                config = {"kind": "single", "index_type": row["index_type"], "width": row["width"], "precision": row["precision"]}
                predicted = latency_at(latency_rows_for(config, latency, pd.DataFrame()), corpus_size)
                entry = {
                    "config": f"{row['index_type']} {row['precision']} {row['width']}",
                    "corpus_size": corpus_size,
                    "predicted_p50_ms": predicted.p50_ms,
                    "measured_p50_ms": row["p50_ms"],
                    "predicted_p95_ms": predicted.p95_ms,
                    "measured_p95_ms": row["p95_ms"],
                    "ratio_p50": row["p50_ms"] / predicted.p50_ms if predicted.p50_ms else None,
                    "ratio_p95": row["p95_ms"] / predicted.p95_ms if predicted.p95_ms else None,
                    "projected": predicted.projected,
                    "basis": predicted.basis,
                    "measured_recall_at_10": row["recall_at_10"],
                    "search_params": {name: row["details"][name] for name in ("hnsw_ef_search", "ivf_nprobe") if name in row["details"]},
                    "load_average": [load_before, os.getloadavg()[0]],
                }
                table.append(entry)
                if predicted.p50_ms is None:
                    print(f"{entry['config']:>20} n={corpus_size:>9,}: no prediction ({predicted.basis})", flush=True)
                    continue
                (OUT / "latency_model_check.json").write_text(
                    json.dumps({"setup": setup, "pick": pick and pick["label"], "table": table}, indent=2, default=str)
                )
                print(
                    f"{entry['config']:>20} n={corpus_size:>9,}: p50 {entry['predicted_p50_ms']:.2f} -> "
                    f"{entry['measured_p50_ms']:.2f} ms ({entry['ratio_p50']:.2f}), p95 {entry['predicted_p95_ms']:.2f} -> "
                    f"{entry['measured_p95_ms']:.2f} ms ({entry['ratio_p95']:.2f})"
                    + (f", recall {row['recall_at_10']:.3f} {entry['search_params']}" if row["recall_at_10"] is not None else "")
                    + (" [projected]" if entry["projected"] else " [measured in the first start]")
                    + f" load {load_before:.1f}",
                    flush=True,
                )
    setup["load_average_after"] = os.getloadavg()
    ratios = np.array([value for entry in table for value in (entry["ratio_p50"], entry["ratio_p95"]) if value])
    summary = {
        "within_0.8_1.25": int(((ratios >= 0.8) & (ratios <= 1.25)).sum()),
        "ratios": int(len(ratios)),
        "min_ratio": float(ratios.min()),
        "max_ratio": float(ratios.max()),
    }
    print(f"{summary['within_0.8_1.25']} of {summary['ratios']} ratios within 0.8-1.25 "
          f"(min {summary['min_ratio']:.2f}, max {summary['max_ratio']:.2f}); setup {setup}")
    (OUT / "latency_model_check.json").write_text(
        json.dumps({"setup": setup, "pick": pick and pick["label"], "table": table, "summary": summary}, indent=2, default=str)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
