"""Full Matryoshka fine-tune of the base model on a dataset's training pairs, evaluated on its test queries.

    # train on SciFact train qrels, evaluate nDCG@10 per width on the test queries (tens of minutes on CPU)
    python experiments/train_full.py --out models/scifact_mrl --epochs 3 --lr 5e-5 \
        --dims 384,256,128,64,32,16,8 --dim-weights 1,1,1,2,2,1,1 --distill-weight 1

    # evaluate an already trained model (its embeddings are cached after the first evaluation)
    python experiments/train_full.py --out models/scifact_mrl --evaluate-only

    # training-cost check: MatryoshkaLoss vs plain MultipleNegativesRankingLoss on the same pairs and batches
    python experiments/train_full.py --cost-check 200

Evaluation is exact fp32 search (mrl_core.evaluate.evaluate_grid) on the full-width embeddings of the
trained model, truncated and renormalised per width; the base model's plain prefixes are shown alongside.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import faiss
import torch

from heldout import query_subsets
from mrl_core.data import load_dataset
from mrl_core.encode import embed_dataset
from mrl_core.evaluate import evaluate_grid
from mrl_core.train import train_full


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


class StepProgress:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if done == total or done % 5 == 0:
            elapsed = time.perf_counter() - self.started
            print(f"  step {done}/{total}, {elapsed:.0f} s", file=sys.stderr, flush=True)


def cost_check(dataset, pair_count: int, batch_size: int, dims: list[int], repeats: int) -> None:
    """Time plain MNRL (dims = full width only) and MatryoshkaLoss on the same first pairs, alternating."""
    subset = replace(dataset, train_pairs=dataset.train_pairs[:pair_count], fingerprint="")
    seconds = {"MNRL": [], "MatryoshkaLoss(MNRL)": []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            for label, run_dims in (("MNRL", [max(dims)]), ("MatryoshkaLoss(MNRL)", dims)):
                summary = train_full(
                    subset, "base", dims=run_dims, out_dir=Path(folder) / f"{label}-{repeat}", epochs=1,
                    batch_size=batch_size, learning_rate=2e-5,
                )
                seconds[label].append(summary["train_time_s"])
                print(f"  {label}: {summary['steps']} steps, {summary['train_time_s']:.1f} s", flush=True)
    plain, matryoshka = min(seconds["MNRL"]), min(seconds["MatryoshkaLoss(MNRL)"])
    print(
        f"cost check on {pair_count} pairs, batch {batch_size}, dims {dims}: best of {repeats} "
        f"MNRL {plain:.1f} s, MatryoshkaLoss {matryoshka:.1f} s, ratio {matryoshka / plain:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--out", default="models/scifact_mrl")
    parser.add_argument("--dims", type=ints, default=[384, 256, 128, 64, 32, 16, 8])
    parser.add_argument("--dim-weights", type=floats, default=None)
    parser.add_argument("--distill-weight", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-seq-length", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--cost-check", type=int, default=0, help="only time MNRL vs MatryoshkaLoss on this many pairs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--evaluate-only", action="store_true", help="skip training; evaluate the model at --out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = load_dataset(args.data)
    print(
        f"dataset {dataset.name}: corpus_size {dataset.corpus_size}, test queries {len(dataset.query_ids)}, "
        f"train pairs {len(dataset.train_pairs)}; torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"faiss {faiss.__version__}",
        flush=True,
    )
    if args.cost_check:
        cost_check(dataset, args.cost_check, args.batch_size, args.dims, args.repeats)
        return
    if args.evaluate_only:
        evaluate(dataset, args.out, args.dims)
        return

    summary = train_full(
        dataset, "base", dims=args.dims, out_dir=args.out, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, dim_weights=args.dim_weights, distill_weight=args.distill_weight,
        max_seq_length=args.max_seq_length, overwrite=True, progress=StepProgress(),
    )
    params = summary["params"]
    print(
        f"trained {summary['steps']} steps on {summary['pairs']} pairs "
        f"({summary['pairs_dropped_as_evaluation_queries']} dropped: evaluation queries) in "
        f"{summary['train_time_s']:.0f} s; loss per epoch {[round(loss, 3) for loss in summary['loss_history']]}; "
        f"dims {summary['dims']} weights {summary['dim_weights']}, distill {args.distill_weight}, "
        f"batch {args.batch_size}, lr {args.lr}, max_seq_length {params['max_seq_length']} "
        f"(inference {params['inference_max_seq_length']})",
        flush=True,
    )
    evaluate(dataset, args.out, args.dims)


def evaluate(dataset, out: str, dims: list[int]) -> None:
    """nDCG@10 per width of the base and trained models: all test queries, and those whose relevant
    documents are never a training positive (a fine-tune can learn to favour the training positives)."""
    relevance, subsets = query_subsets(dataset)
    widths = sorted(set(dims) | {384}, reverse=True)
    started = time.perf_counter()
    trained = embed_dataset(dataset, out)
    print(f"encoded the corpus with the trained model in {time.perf_counter() - started:.0f} s (0 when cached)")
    base = embed_dataset(dataset, "base")
    for name, query_rows in subsets.items():
        table = {}
        for label, embeddings in (("base prefix", base), ("trained prefix", trained)):
            subset_relevance = [relevance[row] for row in query_rows]
            rows = evaluate_grid(
                embeddings.corpus, embeddings.queries[query_rows], subset_relevance, widths, ["fp32"], ["prefix"]
            )
            table[label] = {row["width"]: row["ndcg_at_10"] for row in rows}
        base_full = table["base prefix"][384]
        print(f"nDCG@10, {name} ({len(query_rows)}); retention vs base full width {base_full:.4f}")
        print("model            " + "".join(f"{width:>16}" for width in widths))
        for label, scores in table.items():
            print(f"{label:<17}" + "".join(f"{scores[w]:>8.4f} ({scores[w] / base_full:>4.0%})" for w in widths))


if __name__ == "__main__":
    main()
