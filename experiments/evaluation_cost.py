"""What the whole evaluation grid costs next to one full-width fp32 evaluation, both from a cold cache.

Each measurement is one ``python -m mrl_core evaluate`` process with its own empty embedding cache
(MRL_CACHE_DIR in a fresh temporary folder), so it pays for everything a user pays for: imports,
model load, encoding the corpus and queries, the searches, the metrics and the store writes.

    python experiments/evaluation_cost.py                       # base on SciFact: encodes it twice, ~10 min
    python experiments/evaluation_cost.py --data builtin:quick  # a quick check of the script itself

Goal: the grid (7 widths x 5 precisions x 2 methods) costs at most 1.1x the single evaluation,
because encoding happens once and every cell after it is a cheap exact search.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPOSITORY = Path(__file__).resolve().parents[1]

from mrl_core.store import ResultStore  # noqa: E402
from mrl_core.widths import METHODS, PRECISIONS  # noqa: E402

GRID_WIDTHS = [384, 256, 128, 64, 32, 16, 8]
COST_GOAL_RATIO = 1.1


def measure(data: str, model: str, widths: list[int], precisions: list[str], methods: list[str]) -> dict:
    """Run one cold evaluation in its own process; return its wall time and what its run recorded."""
    with tempfile.TemporaryDirectory(prefix="mrl-cost-") as folder:
        store_path = Path(folder) / "results.duckdb"
        command = [
            sys.executable, "-m", "mrl_core", "evaluate", "--data", data, "--model", model,
            "--widths", ",".join(map(str, widths)), "--precisions", ",".join(precisions),
            "--methods", ",".join(methods), "--store", str(store_path), "--json",
        ]
        environment = os.environ | {"MRL_CACHE_DIR": str(Path(folder) / "cache")}
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True)
        wall_s = time.perf_counter() - started
        if completed.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
        output = json.loads(completed.stdout)
        run = ResultStore(store_path).get_run(output["run_id"])
    return {
        "wall_s": wall_s,
        "cells": len(output["results"]),
        "encode_s": run["summary"]["encode_s"],
        "grid_s": run["summary"]["grid_s"],
        "threads": run["threads"],
        "faiss_version": run["params"]["faiss_version"],
        "search_batch_size": run["params"]["search_batch_size"],
        "corpus_size": run["corpus_size"],
        "query_count": run["query_count"],
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPOSITORY.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--model", default="base")
    args = parser.parse_args()

    import torch

    from mrl_core.encode import model_width

    full_width = model_width(args.model)
    widths = [width for width in GRID_WIDTHS if width <= full_width]
    if full_width not in widths:
        widths.insert(0, full_width)
    single = measure(args.data, args.model, [full_width], ["fp32"], ["prefix"])
    grid = measure(args.data, args.model, widths, list(PRECISIONS), list(METHODS))

    print(
        f"setup: data {args.data}, model {args.model}, corpus_size {single['corpus_size']}, queries "
        f"{single['query_count']}, faiss {single['faiss_version']}, faiss threads {single['threads']}, torch threads "
        f"{torch.get_num_threads()}, search batch_size {single['search_batch_size']}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}; each run a fresh process with an empty embedding cache"
    )
    for name, result in (("single (full width, fp32, prefix)", single), (f"grid ({len(widths)} widths x {len(PRECISIONS)} precisions x {len(METHODS)} methods)", grid)):
        print(
            f"{name}: {result['cells']} cells, wall {result['wall_s']:.1f} s "
            f"(encode {result['encode_s']:.1f} s, evaluate {result['grid_s']:.2f} s, the rest imports, model load "
            f"and store), load average {result['load_before']:.1f} -> {result['load_after']:.1f}"
        )
    ratio = grid["wall_s"] / single["wall_s"]
    verdict = "met" if ratio <= COST_GOAL_RATIO else "NOT met"
    print(f"ratio grid / single = {ratio:.3f} (goal <= {COST_GOAL_RATIO}: {verdict})")
    print(f"grid evaluation alone / single evaluation alone = {grid['grid_s']:.2f} s / {single['grid_s']:.2f} s")


if __name__ == "__main__":
    main()
