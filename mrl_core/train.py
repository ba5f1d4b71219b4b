"""Make embeddings Matryoshka: fine-tune the encoder, or fit an adaptor on its frozen embeddings.

``full`` fine-tunes a sentence-transformers model with ``MatryoshkaLoss`` around
``MultipleNegativesRankingLoss`` on the dataset's training pairs (never its evaluation queries), through
sentence-transformers' ``SentenceTransformerTrainer`` on the CPU (AdamW, linear warm-up and decay,
gradient clipping at 1, batches without a repeated text). An optional self-distillation term pulls every
prefix's in-batch score distribution towards the full width's. ``adaptor`` fits a ``MatryoshkaAdaptor``
(``mrl_core.adaptor``) on the base model's corpus embeddings, supervised by the training pairs when
there are some.

Outputs never look complete before they are: a model is trained into ``<out>.partial-<pid>`` and
renamed at the end; an adaptor file is written the same way.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Literal, Sequence, get_args

import numpy as np

from mrl_core.adaptor import MNRL_SCALE, MatryoshkaAdaptor
from mrl_core.dataset import DatasetError, RetrievalDataset
from mrl_core.models import base_model_path, is_adaptor, model_fingerprint
from mrl_core.progress import Progress
from mrl_core.widths import check_training_dims

TrainMode = Literal["full", "adaptor"]
TRAIN_MODES: tuple[str, ...] = get_args(TrainMode)
DEFAULT_DIMS = (384, 256, 128, 64, 32, 16)
DEFAULT_EVALUATE_WIDTHS = (384, 256, 128, 64, 32, 16, 8)
METADATA_FILE = "mrl_training.json"
"""Written inside a fine-tuned model folder: base model, dims, data fingerprint, params, time, loss."""
WARMUP_FRACTION = 0.1
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.01


# -- input checks -----------------------------------------------------------------------------------


def training_pairs(dataset: RetrievalDataset, batch_size: int) -> tuple[list[tuple[str, str]], int]:
    """The dataset's (query, positive) training pairs, checked, minus any whose query is an evaluation query.

    Returns:
        (pairs, dropped): the usable pairs and how many were left out because their query text is
        also one of the dataset's evaluation queries (training on them would inflate the evaluation).

    Raises:
        DatasetError: when a pair has an empty text, every pair repeats the same texts, or fewer
            usable pairs remain than one batch.
    """
    evaluation_queries = {text.strip() for text in dataset.query_texts or []}
    pairs, dropped = [], 0
    for row, pair in enumerate(dataset.train_pairs):
        if len(pair) != 2 or not all(isinstance(text, str) for text in pair):
            raise DatasetError(
                f"{dataset.source}: training pair {row} is {pair!r}; expected (query text, positive text)"
            )
        query, positive = pair
        if not query.strip() or not positive.strip():
            side = "query" if not query.strip() else "positive"
            raise DatasetError(f"{dataset.source}: training pair {row} has an empty {side} text")
        if query.strip() in evaluation_queries:
            dropped += 1
            continue
        pairs.append((query, positive))
    if len(pairs) < batch_size:
        raise DatasetError(
            f"{dataset.source}: {len(pairs)} training pairs"
            + (f" ({dropped} more left out: their queries are evaluation queries)" if dropped else "")
            + f"; training needs at least one batch of {batch_size} (lower --batch-size or add pairs)"
        )
    if len({text for pair in pairs for text in pair}) < 3:
        raise DatasetError(
            f"{dataset.source}: all {len(pairs)} training pairs repeat the same texts; in-batch negatives need "
            "distinct queries and positives"
        )
    return pairs, dropped


def _check_positive(name: str, value, *, integer: bool) -> None:
    allowed = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, allowed) or not value > 0:
        raise ValueError(f"{name}={value!r}: expected a positive {'integer' if integer else 'number'}")


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse to write over an existing output unless told to (checked before any training, and before a
    training job is queued)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; choose another output path or pass overwrite=True (--overwrite)")


def _replace(partial: Path, final: Path) -> None:
    """Move a finished output into place; an old output is removed only once the new one is there."""
    old = None
    if final.exists():
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        final.rename(old)
    partial.rename(final)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()


# -- full fine-tune ---------------------------------------------------------------------------------


def _distilling_ranking_loss(model, distill_weight: float):
    """MultipleNegativesRankingLoss plus, at each prefix width, KL(full-width in-batch scores || prefix scores).

    ``MatryoshkaLoss`` calls its inner loss once per width, widest (the full width) first, on embeddings
    from one cached forward pass; the full-width call records its score distribution (detached) as the
    teacher of the shorter ones, so the distillation costs no extra forward pass.
    """
    import torch
    import torch.nn.functional as functional
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    ranking = MultipleNegativesRankingLoss(model, scale=MNRL_SCALE)
    if distill_weight == 0:
        return ranking
    full_width = model.get_embedding_dimension()

    class DistillingRankingLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.ranking = ranking
            self.teacher_log_probs = None

        def forward(self, sentence_features, labels):
            embeddings = embed_columns(self.model, sentence_features)
            loss = self.ranking.compute_loss_from_embeddings(embeddings, labels)
            queries = functional.normalize(embeddings[0], dim=-1)
            positives = functional.normalize(embeddings[1], dim=-1)
            log_probs = functional.log_softmax(MNRL_SCALE * queries @ positives.T, dim=1)
            if embeddings[0].shape[-1] == full_width:
                self.teacher_log_probs = log_probs.detach()
                return loss
            distillation = functional.kl_div(log_probs, self.teacher_log_probs, log_target=True, reduction="batchmean")
            return loss + distill_weight * distillation

    return DistillingRankingLoss()


def _training_recorder(progress: Progress | None):
    """A trainer callback that reports progress(steps_done, total_steps) and keeps every step's loss.

    The trainer logs the loss after every step (``logging_steps=1``), before the epoch ends, so each
    epoch's mean covers all of its steps.
    """
    from transformers import TrainerCallback

    class TrainingRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.step_losses: list[float] = []
            self.epoch_losses: list[float] = []
            self._epoch_start = 0

        def on_step_end(self, args, state, control, **kwargs):
            if progress is not None:
                progress(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.step_losses.append(float(logs["loss"]))

        def on_epoch_end(self, args, state, control, **kwargs):
            self.epoch_losses.append(float(np.mean(self.step_losses[self._epoch_start :])))
            self._epoch_start = len(self.step_losses)

    return TrainingRecorder()


def train_full(
    dataset: RetrievalDataset,
    base_model: str = "base",
    *,
    dims: Sequence[int] = DEFAULT_DIMS,
    out_dir: str | os.PathLike,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    dim_weights: Sequence[float] | None = None,
    distill_weight: float = 0.0,
    max_seq_length: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
    device: str = "cpu",
) -> dict:
    """Fine-tune a sentence-transformers model with MatryoshkaLoss(MultipleNegativesRankingLoss).

    Args:
        dataset: a text dataset with ``train_pairs``; pairs whose query is an evaluation query are left out.
        base_model: ``base`` or a saved sentence-transformers folder.
        dims: Matryoshka widths; the model's full width is added (with a warning) if missing.
        out_dir: folder for the trained model (a standard sentence-transformers folder plus
            ``mrl_training.json``).
        epochs: passes over the pairs.
        batch_size: pairs per step; every other positive in a batch is a negative.
        learning_rate: AdamW peak learning rate (linear warm-up over the first 10% of steps, then decay).
        dim_weights: one positive loss weight per entry of ``dims`` (same order); default all 1.
        distill_weight: weight of the prefix-vs-full-width distillation term; 0 turns it off.
        max_seq_length: token limit per text while training (shorter is faster); default the model's own.
            The saved model keeps the base model's limit, so documents are encoded whole as before.
        seed: seeds shuffling and PyTorch.
        overwrite: replace an existing ``out_dir`` (only once the new model is complete).
        progress: called as progress(steps_done, total_steps).
        device: PyTorch device to train on: ``cpu`` (the default; everything here runs on a CPU) or, where
            one is available, ``cuda``.

    Returns:
        The metadata written to ``mrl_training.json``: base model and fingerprint, dims, weights, dataset
        name and fingerprint, pair counts, params, steps, ``train_time_s``, per-epoch mean loss
        (``loss_history``) and ``final_loss``, the mean loss of the last epoch.

    Raises:
        ValueError: for bad dims, weights or numbers, a non-trainable model spec, or an existing output.
        DatasetError: for a dataset without texts or without enough valid training pairs.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers, NoDuplicatesBatchSampler
    from sentence_transformers.losses import MatryoshkaLoss
    from transformers import PrinterCallback

    out_dir = Path(out_dir)
    _check_positive("epochs", epochs, integer=True)
    _check_positive("batch_size", batch_size, integer=True)
    _check_positive("learning_rate", learning_rate, integer=False)
    if max_seq_length is not None:
        _check_positive("max_seq_length", max_seq_length, integer=True)
    if not distill_weight >= 0:
        raise ValueError(f"distill_weight={distill_weight!r}: expected a number >= 0")
    if base_model == "precomputed" or is_adaptor(base_model):
        raise ValueError(f"model {base_model!r}: full fine-tuning needs 'base' or a saved sentence-transformers folder")
    if dataset.corpus_texts is None:
        raise DatasetError(
            f"{dataset.source}: holds embeddings, not texts; full fine-tuning needs texts (use mode 'adaptor')"
        )
    if batch_size < 2:
        raise ValueError(f"batch_size={batch_size}: in-batch negatives need at least 2 pairs per batch")
    pairs, dropped = training_pairs(dataset, batch_size)
    check_output(out_dir, overwrite)
    model_path = base_model_path() if base_model == "base" else Path(base_model)
    if not (model_path / "modules.json").exists() and not (model_path / "config.json").exists():
        raise ValueError(f"model {base_model!r}: {model_path} is not a saved sentence-transformers folder")

    torch.manual_seed(seed)
    model = SentenceTransformer(str(model_path), device=device)
    inference_max_seq_length = model.max_seq_length
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    training_max_seq_length = model.max_seq_length
    full_width = int(model.get_embedding_dimension())
    given_dims = list(dims)
    dims = check_training_dims(dims, full_width)
    if dim_weights is None:
        weights = [1.0] * len(dims)
    else:
        dim_weights = list(dim_weights)
        if len(dim_weights) != len(given_dims):
            raise ValueError(f"dim_weights: {len(dim_weights)} weights for {len(given_dims)} dims {given_dims}")
        for weight in dim_weights:
            _check_positive("dim_weights entry", weight, integer=False)
        weight_of = dict(zip(given_dims, dim_weights))
        weights = [float(weight_of.get(width, 1.0)) for width in dims]
    loss = MatryoshkaLoss(model, _distilling_ranking_loss(model, distill_weight), dims, matryoshka_weights=weights)

    train_dataset = Dataset.from_dict(
        {"query": [query for query, _ in pairs], "positive": [positive for _, positive in pairs]}
    )
    # The trainer's own no-duplicates sampler, seeded as the trainer seeds it: a repeated query or
    # positive would be scored as its own in-batch negative, and when not even one batch without a
    # repeat can be formed the trainer would silently train zero steps.
    sampler = NoDuplicatesBatchSampler(
        train_dataset, batch_size=batch_size, drop_last=True, generator=torch.Generator(), seed=seed
    )
    if next(iter(sampler), None) is None:
        raise DatasetError(
            f"{dataset.source}: the {len(pairs)} training pairs repeat queries or positives so often that no batch "
            f"of {batch_size} pairs without a repeated text can be formed; lower the batch size"
        )

    recorder = _training_recorder(progress)
    with tempfile.TemporaryDirectory(prefix="mrl-trainer-") as trainer_dir:
        arguments = SentenceTransformerTrainingArguments(
            output_dir=trainer_dir,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=WARMUP_FRACTION,
            weight_decay=WEIGHT_DECAY,
            max_grad_norm=MAX_GRAD_NORM,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            dataloader_drop_last=True,
            seed=seed,
            use_cpu=device == "cpu",
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=arguments, train_dataset=train_dataset, loss=loss, callbacks=[recorder]
        )
        # With tqdm off the trainer prints every step's log dict to stdout; progress goes through the recorder.
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        train_time_s = time.perf_counter() - started
    total_steps = trainer.state.max_steps
    model.eval()
    model.max_seq_length = inference_max_seq_length

    metadata = {
        "mode": "full",
        "base_model": base_model,
        "base_model_fingerprint": model_fingerprint(base_model),
        "width": full_width,
        "dims": dims,
        "dim_weights": weights,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "pairs": len(pairs),
        "pairs_dropped_as_evaluation_queries": dropped,
        "params": {
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "distill_weight": distill_weight,
            "max_seq_length": training_max_seq_length,
            "inference_max_seq_length": inference_max_seq_length,
            "seed": seed,
            "warmup_steps": arguments.get_warmup_steps(total_steps),
            "weight_decay": WEIGHT_DECAY,
            "max_grad_norm": MAX_GRAD_NORM,
            "torch_threads": torch.get_num_threads(),
            "device": device,
        },
        "loss": "MatryoshkaLoss(MultipleNegativesRankingLoss" + (" + prefix distillation)" if distill_weight else ")"),
        "steps": total_steps,
        "train_time_s": train_time_s,
        "loss_history": recorder.epoch_losses,
        "step_losses": recorder.step_losses,
        "final_loss": recorder.epoch_losses[-1],
    }
    partial = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        model.save(str(partial))
        (partial / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        _replace(partial, out_dir)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return {**metadata, "out": str(out_dir)}


# -- adaptor ----------------------------------------------------------------------------------------


def _embed_texts(base_model: str, texts: list[str], source: str, progress: Progress | None) -> np.ndarray:
    """Base-model embeddings of extra texts, through embed_dataset's disk cache so reruns never re-encode."""
    from mrl_core.encode import embed_dataset

    holder = RetrievalDataset(
        name="training-texts", source=source, corpus_ids=[str(row) for row in range(len(texts))], corpus_texts=texts
    )
    return embed_dataset(holder, base_model, progress).corpus


def train_adaptor(
    dataset: RetrievalDataset,
    base_model: str = "base",
    *,
    dims: Sequence[int] = DEFAULT_DIMS,
    out_path: str | os.PathLike,
    epochs: int = 4,
    learning_rate: float = 1e-3,
    supervised: bool = True,
    supervised_weight: float = 0.3,
    neighbour_count: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
    encode_progress: Progress | None = None,
) -> dict:
    """Fit a Matryoshka adaptor on the base model's corpus embeddings (and training pairs) and save it.

    Args:
        dataset: a text dataset, or a precomputed-embeddings one (then ``base_model`` is ``precomputed``
            and training is unsupervised). Evaluation queries are never used.
        base_model: ``base``, a saved sentence-transformers folder, or ``precomputed``.
        dims: widths to train; the full width is added (with a warning) if missing.
        out_path: the adaptor file, ending in ``.npz``.
        epochs, learning_rate, supervised_weight, neighbour_count, seed: see ``MatryoshkaAdaptor.fit``.
        supervised: use the dataset's training pairs (when it has at least 2) for the ranking loss.
        overwrite: replace an existing file.
        progress: called as progress(epochs_done, epochs) while fitting.
        encode_progress: called as encode_progress(texts_done, texts) while the base model encodes the corpus,
            then the training queries (minutes for a large corpus on a cold cache; nothing when cached).

    Returns:
        Summary: out path, base model, width, dims, dataset fingerprint, pair counts, params,
        ``train_time_s`` (fit only; encoding excluded), ``encode_time_s``, ``loss_history``, ``final_loss``.

    Raises:
        ValueError: for bad dims or numbers, a path not ending in ``.npz``, or an existing file.
        DatasetError: for malformed training pairs.

    Example:
        >>> corpus = np.random.default_rng(0).normal(size=(200, 32))
        >>> dataset = RetrievalDataset("toy", "toy", corpus_ids=[str(row) for row in range(200)],
        ...                            corpus_texts=None, corpus_embeddings=corpus)
        >>> out_path = Path(tempfile.mkdtemp()) / "adaptor.npz"
        >>> summary = train_adaptor(dataset, "precomputed", dims=[32, 8], out_path=out_path, epochs=1)
        >>> summary["width"], summary["dims"], summary["pairs"], out_path.exists()
        (32, [32, 8], 0, True)
    """
    from mrl_core.encode import embed_dataset, model_width

    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise ValueError(f"{out_path}: an adaptor file must end in .npz")
    if is_adaptor(base_model):
        raise ValueError(f"model {base_model!r} is already an adaptor; give the model it was trained on")
    if dataset.is_precomputed != (base_model == "precomputed"):
        raise ValueError(
            f"model {base_model!r} does not fit {dataset.source}: use 'precomputed' exactly when the dataset "
            "holds embeddings"
        )
    full_width = int(dataset.corpus_embeddings.shape[1]) if dataset.is_precomputed else model_width(base_model)
    dims = check_training_dims(dims, full_width)
    pairs: list[tuple[str, str]] = []
    dropped = 0
    if supervised and dataset.train_pairs and not dataset.is_precomputed:
        pairs, dropped = training_pairs(dataset, batch_size=2)
    check_output(out_path, overwrite)

    started = time.perf_counter()
    corpus = embed_dataset(dataset, base_model, encode_progress).corpus
    pair_matrices = None
    if pairs:
        row_of = {text: row for row, text in enumerate(dataset.corpus_texts)}
        queries = list(dict.fromkeys(query for query, _ in pairs))
        outside = list(dict.fromkeys(positive for _, positive in pairs if positive not in row_of))
        query_embeddings = _embed_texts(base_model, queries, dataset.source, encode_progress)
        outside_embeddings = _embed_texts(base_model, outside, dataset.source, encode_progress) if outside else None
        query_row = {text: row for row, text in enumerate(queries)}
        outside_row = {text: row for row, text in enumerate(outside)}
        anchors = query_embeddings[[query_row[query] for query, _ in pairs]]
        positives = np.stack(
            [corpus[row_of[text]] if text in row_of else outside_embeddings[outside_row[text]] for _, text in pairs]
        )
        pair_matrices = (anchors, positives)
    encode_time_s = time.perf_counter() - started

    adaptor = MatryoshkaAdaptor(base_model)
    adaptor.info = {"dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint, "pairs_dropped": dropped}
    adaptor.fit(
        corpus,
        pair_matrices,
        dims=dims,
        epochs=epochs,
        learning_rate=learning_rate,
        supervised_weight=supervised_weight,
        neighbour_count=neighbour_count,
        seed=seed,
        progress=progress,
    )
    adaptor.save(out_path)
    return {
        "mode": "adaptor",
        "out": str(out_path),
        "base_model": base_model,
        "width": adaptor.width,
        "dims": adaptor.dims_,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "pairs": len(pairs),
        "pairs_dropped_as_evaluation_queries": dropped,
        "params": adaptor.params_,
        "train_time_s": adaptor.train_time_s_,
        "encode_time_s": encode_time_s,
        "loss_history": adaptor.loss_history_,
        "final_loss": adaptor.loss_history_[-1],
    }


# -- stored run + before/after evaluation -----------------------------------------------------------


def run_training(
    dataset: RetrievalDataset,
    model: str,
    *,
    mode: TrainMode,
    dims: Sequence[int],
    out: str | os.PathLike,
    store,
    evaluate_widths: Sequence[int] = DEFAULT_EVALUATE_WIDTHS,
    evaluate_precisions: Sequence[str] = ("fp32",),
    progress: Callable[[str], Progress] | None = None,
    **params,
) -> tuple[int, dict]:
    """Train (``full`` or ``adaptor``), store a ``train`` run, then evaluate the result and the base model.

    The trained model is evaluated on the dataset's held-out queries (prefix method); the base model
    too, unless the store already holds a finished evaluation of it on this dataset. The train run's
    summary names both evaluation runs (``trained_evaluation_run_id``, ``base_evaluation_run_id``)
    so the app can draw before/after.

    Args:
        dataset: the dataset to train on and evaluate.
        model: the base model spec (``base``, a folder, or ``precomputed`` for an adaptor on vectors).
        mode: ``full`` or ``adaptor``.
        dims: training widths.
        out: output folder (full) or ``.npz`` file (adaptor).
        store: a ``ResultStore``.
        evaluate_widths: widths to evaluate (those above the model's width are skipped).
        evaluate_precisions: precisions to evaluate.
        progress: makes a ``progress(done, total)`` callback for each phase from its name: ``encoding`` (an adaptor's
            base embeddings), ``training``, ``evaluating`` (the trained model, then the base model when needed).
        **params: passed to ``train_full`` or ``train_adaptor`` (epochs, batch_size, learning_rate, ...).

    Returns:
        (run_id, summary): the train run's id and its summary.

    Raises:
        ValueError: for an unknown mode and everything ``train_full``/``train_adaptor`` reject, before training.
    """
    import torch

    from mrl_core.evaluate import run_evaluation

    if mode not in TRAIN_MODES:
        raise ValueError(f"mode={mode!r}: expected one of {list(TRAIN_MODES)}")
    trainer = train_full if mode == "full" else train_adaptor
    out_key = "out_dir" if mode == "full" else "out_path"
    fixed = {"dataset", "base_model", "dims", out_key, "progress", "encode_progress"}
    allowed = sorted(set(inspect.signature(trainer).parameters) - fixed)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"mode {mode!r} does not take {unknown}; its parameters are {allowed}")
    run_params = {"mode": mode, "dims": list(dims), "out": str(out), **params}

    def phase_progress(phase: str) -> Progress | None:
        return None if progress is None else progress(phase)

    fingerprint = model_fingerprint(model)

    with store.run(
        "train",
        model=model,
        model_fingerprint=fingerprint,
        dataset=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        corpus_size=dataset.corpus_size,
        query_count=len(dataset.train_pairs),
        params=run_params,
        threads=torch.get_num_threads(),
    ) as run_id:
        phases = {"progress": phase_progress("training")}
        if mode == "adaptor":
            phases["encode_progress"] = phase_progress("encoding")
        summary = trainer(dataset, model, dims=dims, **{out_key: out}, **phases, **params)
        full_width = summary["width"]
        widths = sorted({width for width in evaluate_widths if width <= full_width} | {full_width}, reverse=True)
        # An absolute spec, so the stored run still names the model when read from another folder.
        trained_run_id, trained_rows = run_evaluation(
            dataset, str(Path(out).resolve()), widths=widths, precisions=evaluate_precisions, methods=["prefix"],
            store=store, progress=phase_progress("evaluating"),
        )
        summary["trained_evaluation_run_id"] = trained_run_id
        base_run = store.latest_run("evaluate", model=model, dataset_fingerprint=dataset.fingerprint)
        if base_run is None:
            base_run_id, _ = run_evaluation(
                dataset, model, widths=widths, precisions=evaluate_precisions, methods=["prefix"], store=store,
                progress=phase_progress("evaluating"),
            )
        else:
            base_run_id = int(base_run["run_id"])
        summary["base_evaluation_run_id"] = base_run_id
        summary["trained_ndcg_at_10"] = {
            row["width"]: row["ndcg_at_10"] for row in trained_rows if row["precision"] == "fp32"
        }
        summary.pop("step_losses", None)
        store.finish_run(run_id, summary=summary)
    return run_id, summary
