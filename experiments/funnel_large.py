"""The live funnel demo's figures on builtin:large (105,377 GCIDE definitions): the acceptance command, measured.

Runs ``python -m mrl_core funnel --data builtin:large --model MODEL --query QUERY --target-recall 0.99 --json``
(tuning again with --retune unless --stored) in a store of its own, and reports what it measured on the
queries the tuner did not see (``measured_recall_at_10``, ``measured_speedup``) with the pick, exact search
and the fastest standard index. With --enlarge ROWS it runs the same with ``--enlarge ROWS`` and reports the
stand-in check beside it. The build is timed too: the dictionary's extraction from the package (no cache), and
encoding throughput on a random sample of definitions (the full encode, about 40 minutes here, is projected
from it and labelled so). Setup (faiss, threads, cores, load before and after) is recorded: the machine is
shared.

    python experiments/funnel_large.py [--model base] [--enlarge 1000000] [--store experiments/out/funnel_large.duckdb]

Prints the figures and writes them as JSON to experiments/out/funnel_large.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import time
from pathlib import Path

import faiss

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mrl_core.builtin.gcide import EXAMPLE_QUERIES, build_large  # noqa: E402
from mrl_core.cli import main as cli  # noqa: E402
from mrl_core.encode import encode_texts, load_sentence_transformer  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def load() -> str:
    return Path("/proc/loadavg").read_text().strip()


def funnel(arguments: list[str]) -> dict:
    """One ``funnel --json`` run's payload, timed."""
    output = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(output):
        code = cli(["funnel", *arguments, "--json"])
    if code != 0:
        raise SystemExit(f"funnel {' '.join(arguments)} exited {code}")
    payload = json.loads(output.getvalue())
    payload["wall_s"] = time.perf_counter() - start
    return payload


def figures(payload: dict) -> dict:
    comparison = payload["comparison"]
    baseline = comparison["baseline"] or {}
    return {
        "corpus_size": payload["corpus_size"],
        "pick": payload["description"],
        "measured_recall_at_10": payload["measured_recall_at_10"],
        "measured_speedup": payload["measured_speedup"],
        "heldout": comparison["heldout"],
        "tuning_sample": {"p50_ms": comparison["funnel"]["p50_ms"], "exact_p50_ms": comparison["exact"]["p50_ms"]},
        "fastest_standard_index": {key: baseline.get(key) for key in ("label", "p50_ms", "recall_at_10",
                                                                       "ram_bytes_per_vector", "measured_on_sample")},
        "funnel_ram_bytes_per_vector": comparison["funnel"]["ram_bytes_per_vector"],
        "live_query": {"query": payload.get("query"), "speedup": payload.get("speedup"),
                       "top_exact": [hit["doc_id"] for hit in payload.get("exact_results", [])[:3]],
                       "top_funnel": [hit["doc_id"] for hit in payload.get("results", [])[:3]]},
        "enlargement": payload["enlargement"],
        "tuned_now": payload["tuned_now"],
        "wall_s": payload["wall_s"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--enlarge", type=int, default=None)
    parser.add_argument("--store", default=str(OUT / "funnel_large.duckdb"))
    parser.add_argument("--stored", action="store_true", help="use the store's tuned funnels instead of tuning again")
    parser.add_argument("--encode-sample", type=int, default=1024)
    args = parser.parse_args()

    setup = {"faiss_version": faiss.__version__, "search_threads": 1, "batch_size": 1, "cores": os.cpu_count(),
             "model": args.model, "target_recall": 0.99, "load_before": load()}
    start = time.perf_counter()
    dataset = build_large(use_cache=False)
    build = {"extract_s": time.perf_counter() - start, "documents": dataset.corpus_size,
             "test_queries": len(dataset.query_ids), "train_pairs": len(dataset.train_pairs)}
    sample = random.Random(0).sample(dataset.corpus_texts, args.encode_sample)
    load_sentence_transformer("base")
    start = time.perf_counter()
    encode_texts("base", sample)
    rate = len(sample) / (time.perf_counter() - start)
    build.update(encode_texts_per_s=rate, encode_sample=len(sample),
                 encode_all_min_projected=dataset.corpus_size / rate / 60)

    common = ["--data", "builtin:large", "--model", args.model, "--target-recall", "0.99", "--store", args.store,
              "--query", next(iter(EXAMPLE_QUERIES))]
    results = {"setup": setup, "build": build, "real": figures(funnel(common + ([] if args.stored else ["--retune"])))}
    if args.enlarge:
        # The real corpus's tuning just stored is the enlarged run's reference; --retune would tune it again.
        results["enlarged"] = figures(funnel(common + ["--enlarge", str(args.enlarge)]))
    setup["load_after"] = load()
    OUT.mkdir(exist_ok=True)
    (OUT / "funnel_large.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
