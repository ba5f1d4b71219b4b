"""Matryoshka adaptor on frozen base embeddings: nDCG@10 per width for prefix, PCA and the adaptors.

Trains an unsupervised adaptor (corpus embeddings only) and a supervised one (plus the dataset's
training pairs; never its test queries), saves them under models/, and evaluates every method by exact
fp32 search on the held-out test queries: all of them, and separately those whose relevant documents
are never a training positive (on SciFact most test queries share a relevant document with the
training pairs, and a supervised map learns to favour those documents).

    python experiments/train_adaptor.py                       # SciFact, models/scifact_adaptor*.npz
    python experiments/train_adaptor.py --data ../shared/data/cisi --out-prefix models/cisi_adaptor
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import faiss
import torch

from mrl_core.adaptor import load_adaptor
from heldout import query_subsets
from mrl_core.data import load_dataset
from mrl_core.encode import embed_dataset
from mrl_core.evaluate import evaluate_grid
from mrl_core.train import train_adaptor

WIDTHS = [384, 256, 128, 64, 32, 16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--out-prefix", default="models/scifact_adaptor")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = load_dataset(args.data)
    embeddings = embed_dataset(dataset, "base")
    print(
        f"dataset {dataset.name}: corpus_size {dataset.corpus_size}, test queries {len(dataset.query_ids)}, "
        f"train pairs {len(dataset.train_pairs)}; base model all-MiniLM-L6-v2 (384-d)"
    )
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; faiss {faiss.__version__}; exact fp32 search")

    relevance, subsets = query_subsets(dataset)
    tables: dict[str, dict[str, dict[int, float]]] = {name: {} for name in subsets}

    def score(label: str, corpus, queries, method: str) -> None:
        for name, rows_of_queries in subsets.items():
            subset_relevance = [relevance[row] for row in rows_of_queries]
            rows = evaluate_grid(corpus, queries[rows_of_queries], subset_relevance, WIDTHS, ["fp32"], [method])
            tables[name][label] = {row["width"]: row["ndcg_at_10"] for row in rows}

    score("prefix", embeddings.corpus, embeddings.queries, "prefix")
    score("pca", embeddings.corpus, embeddings.queries, "pca")

    times = {}
    for label, supervised, suffix in (("adaptor unsup.", False, "_unsupervised"), ("adaptor sup.", True, "")):
        out_path = Path(f"{args.out_prefix}{suffix}.npz")
        started = time.perf_counter()
        summary = train_adaptor(
            dataset, "base", dims=WIDTHS, out_path=out_path, epochs=args.epochs, supervised=supervised, overwrite=True
        )
        adaptor = load_adaptor(out_path)
        score(label, adaptor.transform(embeddings.corpus), adaptor.transform(embeddings.queries), "prefix")
        times[label] = (summary["train_time_s"], time.perf_counter() - started, summary["pairs"], out_path)

    for name, table in tables.items():
        base_full = table["prefix"][384]
        print(f"\nnDCG@10, {name} ({len(subsets[name])}); retention vs base full width {base_full:.4f}")
        print("method           " + "".join(f"{width:>16}" for width in WIDTHS))
        for method, scores in table.items():
            print(f"{method:<17}" + "".join(f"{scores[w]:>8.4f} ({scores[w] / base_full:>4.0%})" for w in WIDTHS))
    print()
    for label, (fit_s, total_s, pairs, out_path) in times.items():
        print(
            f"{label}: fit {fit_s:.1f} s (total with cached encoding {total_s:.1f} s), pairs {pairs}, "
            f"epochs {args.epochs}, file {out_path} ({os.path.getsize(out_path) / 1024:.0f} KiB)"
        )


if __name__ == "__main__":
    main()
