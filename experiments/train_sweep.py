"""One-change-at-a-time ablations of the full Matryoshka fine-tune, on SciFact and the built-in set.

Each configuration is trained with ``mrl_core.train.train_full`` from the base model, its test corpus and
queries are encoded with the trained model, and nDCG@10 per width is computed by exact fp32 search
(``mrl_core.metrics``) on all test queries and on those whose relevant documents are never a training
positive. Results are appended to ``<out>/sweep.json`` after every run, so a stopped sweep keeps what it
measured. Meant for a machine with a GPU (``--device cuda``: minutes); on this project's 2-core CPU one
SciFact run takes ~15 minutes and a built-in run ~30 per epoch.

    # 1. pack the inputs (the datasets as JSON, the base model) into .dev/ -- the GPU machine has no access
    #    to ../shared or to the installed model package
    python experiments/train_sweep.py pack --dest .dev
    # 2. there: train and evaluate every configuration, keep the embeddings of the headline runs
    python experiments/train_sweep.py run --inputs .dev --out $OUT --device cuda
    # 3. here: re-score the kept embeddings through mrl_core.evaluate.evaluate_grid (faiss), as a check
    python experiments/train_sweep.py check --out experiments/out/sweep

The base model travels as float16 (the 64 MiB transfer limit) and is widened back to float32 before
training; the "base" rows of the sweep are that rounded model, so its small differences are visible.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from heldout import query_subsets
from mrl_core.data import RetrievalDataset, load_dataset
from mrl_core.metrics import ndcg_at_k
from mrl_core.train import train_full
from mrl_core.widths import truncate

DIMS = [384, 256, 128, 64, 32, 16, 8]
BEST = {"epochs": 5, "learning_rate": 8e-5, "dim_weights": [1, 1, 2, 4, 4, 2, 1], "distill_weight": 3.0,
        "max_seq_length": 128}
PLAIN = {"epochs": 3, "learning_rate": 2e-5, "dim_weights": None, "distill_weight": 0.0, "max_seq_length": None}
BUILTIN_BEST = {**BEST, "epochs": 3}
# (dataset, label, settings, seed, keep embeddings), in the order they run: headline runs first.
RUNS = [
    ("builtin", "best settings, 3 epochs", BUILTIN_BEST, 0, True),
    ("scifact", "best settings", BEST, 0, True),
    ("scifact", "best settings", BEST, 1, False),
    ("scifact", "best, no distillation", {**BEST, "distill_weight": 0.0}, 0, False),
    ("scifact", "best, uniform dim weights", {**BEST, "dim_weights": None}, 0, False),
    ("scifact", "best, lr 5e-5", {**BEST, "learning_rate": 5e-5}, 0, False),
    ("scifact", "best, 3 epochs", {**BEST, "epochs": 3}, 0, False),
    ("scifact", "best, max_seq_length 256", {**BEST, "max_seq_length": None}, 0, False),
    ("scifact", "plain MatryoshkaLoss (issue)", PLAIN, 0, False),
    ("builtin", "plain MatryoshkaLoss, 3 epochs", PLAIN, 0, False),
    ("builtin", "best settings, 1 epoch", {**BEST, "epochs": 1}, 0, False),
    ("builtin", "best, 3 epochs, no distillation", {**BUILTIN_BEST, "distill_weight": 0.0}, 0, False),
    ("builtin", "best, 3 epochs, uniform dim weights", {**BUILTIN_BEST, "dim_weights": None}, 0, False),
    ("scifact", "best, no distillation", {**BEST, "distill_weight": 0.0}, 1, False),
    ("scifact", "best, uniform dim weights", {**BEST, "dim_weights": None}, 1, False),
    ("builtin", "best, 5 epochs, no distillation", {**BEST, "distill_weight": 0.0}, 0, False),
]
SOURCES = {"scifact": "../shared/data/scifact", "builtin": "builtin"}


def pack(dest: Path) -> None:
    """Datasets as gzipped JSON of their fields, and the base model with float16 weights."""
    from safetensors.torch import load_file, save_file

    from mrl_core.encode import base_model_path

    dest.mkdir(parents=True, exist_ok=True)
    for name, source in SOURCES.items():
        fields = asdict(load_dataset(source))
        with gzip.open(dest / f"{name}.json.gz", "wt", encoding="utf-8") as file:
            json.dump(fields, file)
    model_dest = dest / "base_model"
    shutil.copytree(base_model_path(), model_dest, dirs_exist_ok=True)
    weights = load_file(model_dest / "model.safetensors")
    save_file({key: value.half() for key, value in weights.items()}, model_dest / "model.safetensors",
              metadata={"format": "pt"})
    print(f"packed into {dest}: {sorted(path.name for path in dest.iterdir())}")


def load_packed(inputs: Path, name: str) -> RetrievalDataset:
    with gzip.open(inputs / f"{name}.json.gz", "rt", encoding="utf-8") as file:
        fields = json.load(file)
    fields["train_pairs"] = [tuple(pair) for pair in fields["train_pairs"]]
    expected = fields.pop("fingerprint")
    dataset = RetrievalDataset(**fields)
    if dataset.fingerprint != expected:
        raise SystemExit(f"{name}: fingerprint {dataset.fingerprint} != packed {expected}")
    return dataset


def widen_model(inputs: Path, dest: Path) -> Path:
    """The packed base model with float32 weights again."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(inputs / "base_model", dest, dirs_exist_ok=True)
    weights = load_file(dest / "model.safetensors")
    save_file({key: value.float() for key, value in weights.items()}, dest / "model.safetensors",
              metadata={"format": "pt"})
    return dest


def encode(model_dir: Path, texts: list[str], device: str) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=device)
    return model.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)


def ndcg_per_width(corpus: np.ndarray, queries: np.ndarray, relevance: list[dict[int, int]],
                   subsets: dict[str, list[int]], device: str) -> dict[str, dict[int, float]]:
    """nDCG@10 per width and query subset, by exact inner-product search over renormalised prefixes."""
    import torch

    scores = {}
    for width in DIMS:
        corpus_prefix = torch.from_numpy(truncate(corpus, width)).to(device)
        query_prefix = torch.from_numpy(truncate(queries, width)).to(device)
        retrieved = torch.topk(query_prefix @ corpus_prefix.T, k=10, dim=1).indices.cpu().numpy()
        for name, rows in subsets.items():
            scores.setdefault(name, {})[width] = ndcg_at_k(retrieved[rows], [relevance[row] for row in rows], 10)
    return scores


def run(inputs: Path, out: Path, device: str, limit_pairs: int | None, only: int | None) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/mrl_sweep")
    base_dir = widen_model(inputs, work / "base_model")
    datasets = {name: load_packed(inputs, name) for name in SOURCES}
    if limit_pairs:
        datasets = {name: _smaller(dataset, limit_pairs) for name, dataset in datasets.items()}
    records = []
    environment = {"torch": torch.__version__, "device": device,
                   "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}
    print(json.dumps(environment), flush=True)

    def save() -> None:
        (out / "sweep.json").write_text(json.dumps({"environment": environment, "runs": records}, indent=1))

    for name, dataset in datasets.items():
        relevance, subsets = query_subsets(dataset)
        corpus = encode(base_dir, dataset.corpus_texts, device)
        queries = encode(base_dir, dataset.query_texts, device)
        records.append({"dataset": name, "label": "base model (float16-rounded weights)",
                        "ndcg_at_10": ndcg_per_width(corpus, queries, relevance, subsets, device)})
        save()
    for index, (name, label, settings, seed, keep) in enumerate(RUNS[:only]):
        dataset = datasets[name]
        relevance, subsets = query_subsets(dataset)
        model_dir = work / f"run{index}"
        summary = train_full(dataset, str(base_dir), dims=DIMS, out_dir=model_dir, batch_size=32, seed=seed,
                             overwrite=True, device=device, **settings)
        started = time.perf_counter()
        corpus = encode(model_dir, dataset.corpus_texts, device)
        queries = encode(model_dir, dataset.query_texts, device)
        encode_s = time.perf_counter() - started
        record = {
            "dataset": name, "label": label, "seed": seed, "settings": settings, "steps": summary["steps"],
            "pairs": summary["pairs"], "train_time_s": round(summary["train_time_s"], 1),
            "encode_time_s": round(encode_s, 1), "loss_history": summary["loss_history"],
            "ndcg_at_10": ndcg_per_width(corpus, queries, relevance, subsets, device),
        }
        records.append(record)
        save()
        full, at_64 = record["ndcg_at_10"]["all test queries"][384], record["ndcg_at_10"]["all test queries"][64]
        print(f"{name} | {label} | seed {seed}: {summary['steps']} steps {summary['train_time_s']:.0f} s, "
              f"384 {full:.4f}, 64 {at_64:.4f} ({at_64 / full:.1%})", flush=True)
        if keep:
            np.savez(out / f"embeddings_{name}_run{index}.npz", corpus=corpus.astype(np.float16),
                     queries=queries.astype(np.float16), label=label, seed=seed)
        shutil.rmtree(model_dir)


def _smaller(dataset: RetrievalDataset, pairs: int) -> RetrievalDataset:
    """A smoke-test version: the first 20 test queries, their judged documents plus 200 others, few pairs."""
    query_ids = dataset.query_ids[:20]
    judged = {doc_id for query_id in query_ids for doc_id in dataset.qrels.get(query_id, {})}
    rows = [row for row, doc_id in enumerate(dataset.corpus_ids) if doc_id in judged or row < 200]
    return RetrievalDataset(
        name=dataset.name, source=dataset.source, corpus_ids=[dataset.corpus_ids[row] for row in rows],
        corpus_texts=[dataset.corpus_texts[row] for row in rows], query_ids=query_ids,
        query_texts=dataset.query_texts[:20], qrels={query_id: dataset.qrels[query_id] for query_id in query_ids},
        train_pairs=dataset.train_pairs[:pairs],
    )


def check(out: Path) -> None:
    """Re-score the kept embeddings with mrl_core.evaluate.evaluate_grid (faiss) and compare."""
    from mrl_core.evaluate import evaluate_grid

    sweep = json.loads((out / "sweep.json").read_text())
    for path in sorted(out.glob("embeddings_*_run*.npz")):
        name, index = path.stem.split("_")[1], int(path.stem.rsplit("run", 1)[1])
        label, seed = RUNS[index][1], RUNS[index][3]
        record = next(r for r in sweep["runs"] if r["dataset"] == name and r["label"] == label and r.get("seed") == seed)
        dataset = load_dataset(SOURCES[name])
        relevance, subsets = query_subsets(dataset)
        saved = np.load(path)
        corpus, queries = saved["corpus"].astype(np.float32), saved["queries"].astype(np.float32)
        for subset, rows in subsets.items():
            grid = evaluate_grid(corpus, queries[rows], [relevance[row] for row in rows], DIMS, ["fp32"], ["prefix"])
            ours = {row["width"]: row["ndcg_at_10"] for row in grid}
            device = record["ndcg_at_10"][subset]
            print(f"{name} | {label} | {subset}: " + ", ".join(
                f"{width}: {ours[width]:.4f} (GPU {device[str(width)]:.4f})" for width in DIMS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack")
    pack_parser.add_argument("--dest", type=Path, default=Path(".dev"))
    run_parser = commands.add_parser("run")
    run_parser.add_argument("--inputs", type=Path, default=Path(".dev"))
    run_parser.add_argument("--out", type=Path, required=True)
    run_parser.add_argument("--device", default="cuda")
    run_parser.add_argument("--limit-pairs", type=int, default=None, help="smoke test: train on this many pairs")
    run_parser.add_argument("--only", type=int, default=None, help="smoke test: run only the first N configurations")
    check_parser = commands.add_parser("check")
    check_parser.add_argument("--out", type=Path, default=Path("experiments/out/sweep"))
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.dest)
    elif args.command == "run":
        run(args.inputs, args.out, args.device, args.limit_pairs, args.only)
    else:
        check(args.out)


if __name__ == "__main__":
    main()
