"""Sizes, per-source counts and build time of the built-in dataset (API reference search).

Run: ``python experiments/builtin_stats.py [--variants quick,full] [--examples 5]``

Each variant is built from scratch into an empty cache folder, in the fresh process that
``build_builtin`` always uses, so the build time printed is what a first start costs; a second call
reads that cache and is timed too.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from collections import Counter


from mrl_core.builtin import PACKAGE_SOURCES, STDLIB_SOURCE, build_builtin, source_of, source_versions


def describe(variant: str, examples: int) -> None:
    with tempfile.TemporaryDirectory() as cache_folder:
        # An empty cache folder: the first call builds and writes the cache, the second reads it.
        os.environ["MRL_CACHE_DIR"] = cache_folder
        started = time.perf_counter()
        dataset = build_builtin(variant)
        build_seconds = time.perf_counter() - started
        started = time.perf_counter()
        cached = build_builtin(variant)
        cache_load_seconds = time.perf_counter() - started
        del os.environ["MRL_CACHE_DIR"]
    assert cached.fingerprint == dataset.fingerprint

    document_chars = sorted(len(text) for text in dataset.corpus_texts)
    query_words = sorted(len(text.split()) for text in dataset.query_texts)
    print(f"== {dataset.name} (fingerprint {dataset.fingerprint})")
    print(f"build_seconds (fresh process, no cache): {build_seconds:.1f}")
    print(f"cache_load_seconds: {cache_load_seconds:.2f}")
    print(f"corpus_size: {dataset.corpus_size}")
    print(f"test_queries: {len(dataset.query_ids)}")
    print(f"train_pairs: {len(dataset.train_pairs)}")
    print(f"document_chars: median {document_chars[len(document_chars) // 2]}, max {document_chars[-1]}")
    print(f"query_words: median {query_words[len(query_words) // 2]}, max {query_words[-1]}")
    counts = Counter(source_of(doc_id) for doc_id in dataset.corpus_ids)
    test_counts = Counter(source_of(doc_id) for query_id in dataset.query_ids for doc_id in dataset.qrels[query_id])
    versions = source_versions(variant)
    order = [STDLIB_SOURCE] + [root for _, root, _ in PACKAGE_SOURCES]
    print(f"{'source':10s} {'version':>10s} {'documents':>10s} {'test_queries':>13s}")
    for source in order:
        if source in versions:
            print(f"{source:10s} {versions[source]:>10s} {counts[source]:>10d} {test_counts[source]:>13d}")
    text_of = dict(zip(dataset.corpus_ids, dataset.corpus_texts))
    rng = random.Random(0)
    for query_id in rng.sample(dataset.query_ids, min(examples, len(dataset.query_ids))):
        query = dataset.query_texts[dataset.query_ids.index(query_id)]
        (doc_id,) = dataset.qrels[query_id]
        print(f"-- query:    {query}")
        print(f"   document: {text_of[doc_id][:300]}{'...' if len(text_of[doc_id]) > 300 else ''}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="quick,full", help="comma-separated: quick, full")
    parser.add_argument("--examples", type=int, default=5, help="random test (query, document) pairs to print")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs")
    for variant in [part.strip() for part in args.variants.split(",") if part.strip()]:
        describe(variant, args.examples)


if __name__ == "__main__":
    main()
