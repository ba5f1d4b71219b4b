"""Command line: ``python -m mrl_core {evaluate,train,bench,funnel,recommend,runs}``.

With ``--json`` a command prints exactly one JSON object on stdout; progress and messages go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from mrl_core.paths import default_store_path


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class StderrProgress:
    """Prints 'label: done/total' to stderr at most twice a second."""

    def __init__(self, label: str):
        self.label = label
        self._last_print = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last_print > 0.5:
            self._last_print = now
            print(f"{self.label}: {done}/{total}", file=sys.stderr, flush=True)


def _emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload, default=str))
    else:
        print(text)


def _add_common(parser: argparse.ArgumentParser, *, data: bool = True, model: bool = True, store: bool = True) -> None:
    if data:
        parser.add_argument("--data", required=True, help="BEIR folder or .zip, pairs/corpus/embeddings file, or builtin[:quick]")
    if model:
        parser.add_argument("--model", default="base", help="'base', a saved sentence-transformers folder, a saved adaptor, or 'precomputed'")
    if store:
        parser.add_argument("--store", default=None, help=f"DuckDB results file (default {default_store_path()})")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else there")


def _store(args: argparse.Namespace):
    from mrl_core.store import ResultStore

    return ResultStore(args.store)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mrl_core.data import load_dataset
    from mrl_core.evaluate import run_evaluation

    dataset = load_dataset(args.data)
    run_id, rows = run_evaluation(
        dataset,
        args.model,
        widths=args.widths,
        precisions=args.precisions,
        methods=args.methods,
        store=_store(args),
        progress=StderrProgress("encoding"),
    )
    lines = [f"run {run_id}: {dataset.name}, model {args.model}"]
    for row in rows:
        metrics = ", ".join(
            f"{key} {row[key]:.4f}" for key in ("ndcg_at_10", "recall_at_100", "fidelity_at_10") if row.get(key) is not None
        )
        lines.append(f"  {row['method']:>6} {row['width']:>4} {row['precision']:<14} {metrics}")
    _emit(args, {"run_id": run_id, "dataset": dataset.summary(), "model": args.model, "results": rows}, "\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mrl_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", help="quality at every width x precision x method, stored")
    _add_common(evaluate)
    evaluate.add_argument("--widths", type=_int_list, default=[384, 256, 128, 64, 32, 16, 8])
    evaluate.add_argument("--precisions", type=_str_list, default=["fp32", "fp16", "int8", "binary", "binary+rescore"])
    evaluate.add_argument("--methods", type=_str_list, default=["prefix", "pca"])
    evaluate.set_defaults(handler=_cmd_evaluate)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mrl_core.data import DatasetError
    from mrl_core.store import StoreError

    try:
        return args.handler(args)
    except (DatasetError, StoreError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
