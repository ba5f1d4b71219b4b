"""Quality against width for one or more models on a dataset: the evaluation table and its chart.

Runs ``run_evaluation`` (widths 384..8 x every precision x prefix/PCA) for each model into
experiments/out/quality_vs_width.duckdb, prints every row and the setup, and writes
experiments/out/quality_vs_width.html (and .png when kaleido is installed).

    python experiments/quality_vs_width.py                      # base on SciFact
    python experiments/quality_vs_width.py --model base --model models/mrl-minilm --label base --label mrl

Encoding SciFact with the base model takes minutes the first time; later runs read the embedding cache.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPOSITORY = Path(__file__).resolve().parents[1]

from mrl_core.cli import StderrProgress  # noqa: E402
from mrl_core.data import load_dataset  # noqa: E402
from mrl_core.evaluate import SEARCH_BATCH_SIZE, run_evaluation  # noqa: E402
from mrl_core.figures import quality_vs_width  # noqa: E402
from mrl_core.store import ResultStore  # noqa: E402
from mrl_core.widths import METHODS, PRECISIONS  # noqa: E402

WIDTHS = [384, 256, 128, 64, 32, 16, 8]
OUT = REPOSITORY / "experiments" / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPOSITORY.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--model", action="append", help="model spec; repeat to compare models (default: base)")
    parser.add_argument("--label", action="append", help="legend label per --model (default: the model spec)")
    parser.add_argument("--metric", default="ndcg_at_10")
    parser.add_argument("--store", default=str(OUT / "quality_vs_width.duckdb"))
    args = parser.parse_args()
    models = args.model or ["base"]
    labels = args.label or models
    if len(labels) != len(models):
        parser.error(f"{len(labels)} --label values for {len(models)} --model values")

    import faiss
    import pandas as pd

    OUT.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.data)
    store = ResultStore(args.store)
    frames = []
    for model, label in zip(models, labels):
        run_id, _ = run_evaluation(
            dataset, model, widths=WIDTHS, precisions=PRECISIONS, methods=METHODS, store=store,
            progress=StderrProgress(f"encoding {label}"),
        )
        run = store.get_run(run_id)
        print(
            f"run {run_id}: model {model} ({label}), dataset {dataset.name} {dataset.fingerprint}, "
            f"corpus_size {run['corpus_size']}, queries {run['query_count']}, faiss {faiss.__version__}, "
            f"threads {run['threads']}, search batch_size {SEARCH_BATCH_SIZE}, "
            f"encode {run['summary']['encode_s']:.1f} s, grid {run['summary']['grid_s']:.1f} s"
        )
        frames.append(store.results(run_id).assign(label=label))
    results = pd.concat(frames, ignore_index=True)
    # The store returns a run's rows in no set order; print them as run_evaluation sorts them.
    results["method"] = pd.Categorical(results["method"], categories=METHODS, ordered=True)
    results["precision"] = pd.Categorical(results["precision"], categories=PRECISIONS, ordered=True)
    results = results.sort_values(["label", "method", "width", "precision"], ascending=[True, True, False, True])
    results[["method", "precision"]] = results[["method", "precision"]].astype(str)

    columns = ["label", "method", "width", "precision", "ndcg_at_10", "retention", "recall_at_10", "recall_at_100",
               "mrr_at_10", "fidelity_at_10", "search_ms"]
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.float_format", "{:.4f}".format):
        print(results[columns].to_string(index=False))

    figure = quality_vs_width(results, metric=args.metric)
    figure.update_layout(title=f"{args.metric} against width on {dataset.name}")
    html_path = OUT / "quality_vs_width.html"
    figure.write_html(html_path)
    print(f"wrote {html_path}")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        print("kaleido is not installed: no .png written")
    else:
        figure.write_image(OUT / "quality_vs_width.png")
        print(f"wrote {OUT / 'quality_vs_width.png'}")


if __name__ == "__main__":
    main()
