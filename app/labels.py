"""How the pages name things: metrics, counts, models, runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

METRIC_LABELS = {
    "ndcg_at_10": "nDCG@10",
    "recall_at_10": "Recall@10",
    "recall_at_100": "Recall@100",
    "mrr_at_10": "MRR@10",
    "fidelity_at_10": "Fidelity@10 (overlap with full width)",
    "retention": "Retention (% of full-width nDCG@10)",
}


def available_metrics(results: pd.DataFrame) -> list[str]:
    """The quality columns that hold at least one value (label-free runs have fidelity only)."""
    return [metric for metric in METRIC_LABELS if metric in results and results[metric].notna().any()]


def headline_metric(results: pd.DataFrame) -> str:
    """nDCG@10 when the rows were judged against labels, else fidelity to full width."""
    return "ndcg_at_10" if results["ndcg_at_10"].notna().any() else "fidelity_at_10"


def format_count(count: int) -> str:
    """10_000 -> '10k', 3_000_000 -> '3M', 1_000_000_000 -> '1B'."""
    for divisor, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if count >= divisor:
            return f"{count / divisor:g}{suffix}"
    return f"{count:,}"


def model_label(model: str | None) -> str:
    """A model spec as people read it: 'base', 'precomputed', or a saved model's folder or file name."""
    if not model:
        return "—"
    return model if model in ("base", "precomputed") else Path(str(model)).name


def trained_model_label(trained: dict) -> str:
    """A ``ResultStore.trained_models()`` entry: 'adaptor.npz (run #7, trained from base)'."""
    base_model = model_label(trained["base_model"])
    return f"{Path(trained['model']).name} (run #{trained['run_id']}, trained from {base_model})"


def run_label(run: dict | pd.Series) -> str:
    """How a run is named in pickers: '#12 evaluate · base · scifact'."""
    return f"#{int(run['run_id'])} {run['kind']} · {model_label(run.get('model'))} · {run.get('dataset') or '—'}"


JOB_STATUS_BADGES = {
    "queued": ":gray-badge[:material/schedule: queued]",
    "running": ":blue-badge[:material/play_arrow: running]",
    "finished": ":green-badge[:material/check: finished]",
    "failed": ":red-badge[:material/error: failed]",
    "cancelled": ":orange-badge[:material/block: cancelled]",
    "unfinished": ":red-badge[:material/help: unfinished]",
}
"""A job's status as a coloured badge in markdown (``mrl_core.store.JOB_STATUSES``)."""


def markdown_text(text: str) -> str:
    """Free text (a job label, a file name) shown literally inside markdown: 'my_data.zip' keeps its underscore."""
    for character in "\\`*_[]<>#|~":
        text = text.replace(character, "\\" + character)
    return text


def job_label(job: dict | pd.Series) -> str:
    """How a job is named: '#4 train builtin:quick base adaptor'."""
    label = job.get("label")
    return f"#{int(job['job_id'])} {label if isinstance(label, str) and label else job['command']}"
