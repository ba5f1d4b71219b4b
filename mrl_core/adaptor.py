"""Matryoshka adaptor: give frozen embeddings prefixes that keep the full vector's similarity structure.

After Yoon et al. 2024, "Matryoshka-Adaptor": a learned map from a model's full-width embeddings to new
vectors of the same width whose every prefix (truncated, then renormalised) reproduces the cosine
similarities of the full input vectors. It serves users who cannot retrain the encoder, including those
who only have precomputed vectors. The map is linear and starts from the rotation onto the embeddings'
principal axes (uncentred, so the full-width similarities are unchanged at the start); training then
trades a little full-width exactness for much better short prefixes.

Unsupervised loss, summed over the training widths: the absolute difference between prefix and full
cosine similarity for each row's nearest neighbours in the full space, plus the same for random pairs.
With (query, positive) pairs a supervised term adds a multiple-negatives ranking loss at every width.

The adaptor file is a ``.npz`` (read without pickle) holding the weight matrix and a JSON header: format,
base model spec and fingerprint, input and output width, training widths, training-data fingerprint,
parameters and training statistics.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from mrl_core.models import model_fingerprint
from mrl_core.progress import Progress
from mrl_core.widths import check_training_dims, normalise_rows

ADAPTOR_FORMAT = "mrl_core.matryoshka_adaptor"
ADAPTOR_FORMAT_VERSION = 1
SMALLEST_DEFAULT_WIDTH = 16
MAX_FIT_ROWS = 20_000
"""Corpora larger than this are fitted on a seeded random sample of this many rows: the exact
neighbour search costs rows^2 x width, and the map has only width^2 parameters to learn."""
NEIGHBOUR_BLOCK_ROWS = 2048
MNRL_SCALE = 20.0
"""Inverse temperature of the ranking loss, sentence-transformers' MultipleNegativesRankingLoss default;
the full fine-tune (``mrl_core.train``) uses it too, for its ranking and distillation terms."""


class MatryoshkaAdaptor:
    """A linear map from a base model's embeddings to Matryoshka-style embeddings of the same width.

    Args:
        base_model: the model spec whose embeddings this adaptor takes as input: ``base``, a saved
            sentence-transformers folder, or ``precomputed`` for vectors that came with a dataset.

    Attributes (after ``fit`` or ``load_adaptor``):
        weight_: (input_width, width) float32 matrix.
        dims_: the widths the loss was computed at, widest first.
        params_: the training parameters.
        training_fingerprint_: sha256 prefix of the training matrices.
        loss_history_: mean loss per epoch.
        train_time_s_: wall time of ``fit``.
        info: free-form JSON-serialisable metadata saved with the adaptor (e.g. dataset name).

    Example:
        >>> from mrl_core.widths import truncate
        >>> corpus = np.random.default_rng(0).normal(size=(200, 32))
        >>> adaptor = MatryoshkaAdaptor("precomputed").fit(corpus, dims=[32, 8], epochs=1)
        >>> adaptor.width, adaptor.dims_
        (32, [32, 8])
        >>> truncate(adaptor.transform(corpus[:3]), 8).shape  # 8-wide prefixes, renormalised
        (3, 8)
    """

    def __init__(self, base_model: str = "precomputed"):
        self.base_model = base_model
        self.weight_: np.ndarray | None = None
        self.dims_: list[int] = []
        self.params_: dict = {}
        self.training_fingerprint_: str | None = None
        self.loss_history_: list[float] = []
        self.train_time_s_: float | None = None
        self.info: dict = {}

    @property
    def width(self) -> int:
        """Width of the transformed vectors."""
        return int(self._fitted_weight().shape[1])

    @property
    def input_width(self) -> int:
        """Width of the base embeddings the adaptor accepts."""
        return int(self._fitted_weight().shape[0])

    def fit(
        self,
        embeddings: np.ndarray,
        pairs: tuple[np.ndarray, np.ndarray] | None = None,
        *,
        dims: Sequence[int] | None = None,
        epochs: int = 4,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
        neighbour_count: int = 64,
        random_count: int = 256,
        supervised_weight: float = 0.3,
        pair_batch_size: int = 256,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> MatryoshkaAdaptor:
        """Learn the map from corpus embeddings, and from (query, positive) pairs when given.

        Args:
            embeddings: (rows, input_width) base embeddings of the corpus; never evaluation queries.
            pairs: optional (anchors, positives), two (pairs, input_width) matrices whose rows match:
                the base embeddings of training queries and of their relevant documents.
            dims: widths at which prefixes are trained; default the input width and every power of two
                below it down to 16 (384 -> 384, 256, 128, 64, 32, 16). The input width is added (with a
                warning) when missing, so the full vector stays good.
            epochs: passes over the (sampled) corpus rows as anchors.
            learning_rate: Adam learning rate.
            batch_size: anchor rows per step.
            neighbour_count: nearest neighbours per anchor whose similarities are preserved.
            random_count: random rows per step whose similarities to every anchor are preserved.
            supervised_weight: weight of the ranking loss on ``pairs`` against the unsupervised loss.
            pair_batch_size: pairs per step for the ranking loss (in-batch negatives).
            seed: seeds sampling and batching.
            progress: called as progress(epochs_done, epochs).

        Returns:
            self, fitted.

        Raises:
            ValueError: for a matrix that is not 2-D finite with at least 2 rows, widths outside
                1..input_width, mismatched pairs, or non-positive counts and rates.
        """
        import torch
        import torch.nn.functional as functional

        corpus = _check_matrix(embeddings, "embeddings")
        input_width = corpus.shape[1]
        if len(corpus) < 2:
            raise ValueError(f"embeddings: {len(corpus)} rows; the adaptor needs at least 2 corpus rows to fit")
        if dims is None:
            powers_of_two = [2**exponent for exponent in range(input_width.bit_length())]
            dims = [input_width] + [width for width in powers_of_two if SMALLEST_DEFAULT_WIDTH <= width < input_width]
        dims = check_training_dims(dims, input_width)
        for name, value in (
            ("epochs", epochs), ("batch_size", batch_size), ("neighbour_count", neighbour_count),
            ("random_count", random_count), ("pair_batch_size", pair_batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate={learning_rate!r}: expected a positive number")
        if not supervised_weight >= 0:
            raise ValueError(f"supervised_weight={supervised_weight!r}: expected a number >= 0")
        anchors = positives = None
        if pairs is not None:
            anchors = _check_matrix(pairs[0], "pairs[0] (anchors)")
            positives = _check_matrix(pairs[1], "pairs[1] (positives)")
            if anchors.shape != positives.shape or anchors.shape[1] != input_width:
                raise ValueError(
                    f"pairs: anchors {anchors.shape} and positives {positives.shape} must both be "
                    f"(pairs, {input_width}) like the embeddings"
                )
            if len(anchors) < 2:
                raise ValueError(f"pairs: {len(anchors)} pair; the ranking loss needs at least 2 (in-batch negatives)")

        started = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        fit_rows = corpus
        if len(corpus) > MAX_FIT_ROWS:
            fit_rows = corpus[np.sort(rng.choice(len(corpus), size=MAX_FIT_ROWS, replace=False))]
        rows = torch.from_numpy(np.ascontiguousarray(fit_rows))
        neighbour_count = min(neighbour_count, len(rows) - 1)
        random_count = min(random_count, len(rows))
        target_sims, neighbours = _nearest_neighbours(rows, neighbour_count)

        weight = torch.nn.Parameter(torch.from_numpy(_principal_rotation(fit_rows)))
        optimizer = torch.optim.Adam([weight], lr=learning_rate)
        # Boundaries of the chunks between consecutive widths: prefix dot products and norms at every
        # width are cumulative sums of per-chunk sums, which costs one pass instead of one per width.
        ascending = sorted(dims)
        bounds = [0] + ascending
        pair_tensors = None
        if anchors is not None:
            pair_tensors = (torch.from_numpy(anchors), torch.from_numpy(positives))

        self.loss_history_ = []
        for epoch in range(epochs):
            order = torch.randperm(len(rows), generator=generator)
            epoch_losses = []
            for start in range(0, len(rows), batch_size):
                batch = order[start : start + batch_size]
                random_rows = torch.randint(0, len(rows), (random_count,), generator=generator)
                needed, inverse = torch.unique(
                    torch.cat([batch, neighbours[batch].reshape(-1), random_rows]), return_inverse=True
                )
                projected = rows[needed] @ weight
                batch_at = inverse[: len(batch)]
                neighbour_at = inverse[len(batch) : len(batch) * (neighbour_count + 1)].reshape(len(batch), -1)
                random_at = inverse[len(batch) * (neighbour_count + 1) :]

                chunk_squares = torch.stack(
                    [projected[:, low:high].pow(2).sum(1) for low, high in zip(bounds, bounds[1:])], 1
                )
                prefix_norms = chunk_squares.cumsum(1).clamp_min(1e-12).sqrt()  # (needed, widths)
                batch_vectors = projected[batch_at]
                products = batch_vectors[:, None, :] * projected[neighbour_at]
                chunk_dots = torch.stack([products[..., low:high].sum(-1) for low, high in zip(bounds, bounds[1:])], -1)
                neighbour_sims = chunk_dots.cumsum(-1) / (
                    prefix_norms[batch_at][:, None, :] * prefix_norms[neighbour_at]
                )
                loss = (neighbour_sims - target_sims[batch][..., None]).abs().mean(dim=(0, 1)).sum()

                random_targets = rows[batch] @ rows[random_rows].T
                for position, width in enumerate(ascending):
                    random_sims = (batch_vectors[:, :width] @ projected[random_at, :width].T) / (
                        prefix_norms[batch_at, position][:, None] * prefix_norms[random_at, position][None, :]
                    )
                    loss = loss + (random_sims - random_targets).abs().mean()

                if pair_tensors is not None and supervised_weight > 0:
                    picked = torch.randperm(len(pair_tensors[0]), generator=generator)[:pair_batch_size]
                    query_vectors = pair_tensors[0][picked] @ weight
                    positive_vectors = pair_tensors[1][picked] @ weight
                    labels = torch.arange(len(picked))
                    for width in ascending:
                        query_prefix = functional.normalize(query_vectors[:, :width], dim=1)
                        positive_prefix = functional.normalize(positive_vectors[:, :width], dim=1)
                        scores = MNRL_SCALE * query_prefix @ positive_prefix.T
                        loss = loss + supervised_weight * functional.cross_entropy(scores, labels)

                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                epoch_losses.append(float(loss.detach()))
            self.loss_history_.append(float(np.mean(epoch_losses)))
            if progress is not None:
                progress(epoch + 1, epochs)

        self.weight_ = np.ascontiguousarray(weight.detach().numpy(), dtype=np.float32)
        self.dims_ = sorted(dims, reverse=True)
        self.params_ = {
            "epochs": int(epochs),
            "learning_rate": float(learning_rate),
            "batch_size": int(batch_size),
            "neighbour_count": int(neighbour_count),
            "random_count": int(random_count),
            "supervised_weight": float(supervised_weight),
            "pair_batch_size": int(pair_batch_size),
            "seed": int(seed),
            "fit_rows": int(len(rows)),
            "pairs": 0 if anchors is None else int(len(anchors)),
        }
        trained_on = [corpus] if anchors is None else [corpus, anchors, positives]
        self.training_fingerprint_ = _matrices_fingerprint(trained_on)
        self.train_time_s_ = time.perf_counter() - started
        return self

    def transform(self, matrix: np.ndarray) -> np.ndarray:
        """Map base embeddings to adapted, L2-normalised float32 vectors of full adaptor width.

        Shorter widths are prefixes: truncate and renormalise (``mrl_core.widths.truncate``).

        Raises:
            ValueError: when the matrix is not (rows, input_width).
        """
        weight = self._fitted_weight()
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[1] != weight.shape[0]:
            raise ValueError(
                f"adaptor for {self.base_model!r} takes (rows, {weight.shape[0]}) embeddings; got shape {matrix.shape}"
            )
        return normalise_rows(np.ascontiguousarray(matrix, dtype=np.float32) @ weight)

    def header(self) -> dict:
        """The JSON metadata saved with the adaptor."""
        return {
            "format": ADAPTOR_FORMAT,
            "format_version": ADAPTOR_FORMAT_VERSION,
            "base_model": self.base_model,
            "base_model_fingerprint": model_fingerprint(self.base_model),
            "input_width": self.input_width,
            "width": self.width,
            "dims": self.dims_,
            "training_fingerprint": self.training_fingerprint_,
            "params": self.params_,
            "loss_history": self.loss_history_,
            "train_time_s": self.train_time_s_,
            "info": self.info,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the adaptor to a ``.npz`` file atomically (a partial file never has the final name).

        Raises:
            ValueError: when the path does not end in ``.npz`` or the adaptor is not fitted.
        """
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: an adaptor file must end in .npz")
        weight = self._fitted_weight()
        header = json.dumps(self.header())
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        try:
            with open(partial, "wb") as handle:
                np.savez(handle, weight=weight, header=np.array(header))
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def _fitted_weight(self) -> np.ndarray:
        if self.weight_ is None:
            raise ValueError("this MatryoshkaAdaptor is not fitted yet; call fit() or load_adaptor()")
        return self.weight_


_loaded: dict[tuple[str, int, int], MatryoshkaAdaptor] = {}


def load_adaptor(path: str | os.PathLike) -> MatryoshkaAdaptor:
    """Load a saved adaptor (cached per file path and modification time).

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when the file is not an adaptor saved by ``MatryoshkaAdaptor.save``.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _loaded:
        try:
            with np.load(path, allow_pickle=False) as archive:
                header = json.loads(str(archive["header"]))
                weight = np.ascontiguousarray(archive["weight"], dtype=np.float32)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path}: not a Matryoshka adaptor file ({error})") from error
        if header.get("format") != ADAPTOR_FORMAT or header.get("format_version") != ADAPTOR_FORMAT_VERSION:
            raise ValueError(
                f"{path}: format {header.get('format')!r} version {header.get('format_version')!r}; "
                f"expected {ADAPTOR_FORMAT!r} version {ADAPTOR_FORMAT_VERSION}"
            )
        if weight.shape != (header["input_width"], header["width"]):
            raise ValueError(f"{path}: weight shape {weight.shape} does not match the header's widths")
        adaptor = MatryoshkaAdaptor(header["base_model"])
        adaptor.weight_ = weight
        adaptor.dims_ = list(header["dims"])
        adaptor.params_ = dict(header["params"])
        adaptor.training_fingerprint_ = header["training_fingerprint"]
        adaptor.loss_history_ = list(header["loss_history"])
        adaptor.train_time_s_ = header["train_time_s"]
        adaptor.info = dict(header["info"])
        _loaded[key] = adaptor
    return _loaded[key]


def _check_matrix(matrix: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] < 1:
        raise ValueError(f"{name}: expected a 2-D (rows, width) matrix; got shape {matrix.shape}")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    # Cosine targets assume unit rows, as every embedding in mrl_core is; renormalise defensively.
    return normalise_rows(matrix)


def _principal_rotation(matrix: np.ndarray) -> np.ndarray:
    """Right singular vectors of the (uncentred) matrix, strongest first: an orthonormal rotation,
    so full-width cosines are unchanged while the leading coordinates carry the most energy."""
    scatter = matrix.astype(np.float64).T @ matrix.astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(scatter)
    return np.ascontiguousarray(eigenvectors[:, np.argsort(eigenvalues)[::-1]], dtype=np.float32)


def _nearest_neighbours(rows, count: int):
    """Exact top-``count`` cosine neighbours of every row among the others: (similarities, indices)."""
    import torch

    similarities, indices = [], []
    for start in range(0, len(rows), NEIGHBOUR_BLOCK_ROWS):
        block = rows[start : start + NEIGHBOUR_BLOCK_ROWS] @ rows.T
        own = torch.arange(start, start + len(block))
        block[torch.arange(len(block)), own] = -torch.inf
        top = block.topk(count, dim=1)
        similarities.append(top.values)
        indices.append(top.indices)
    return torch.cat(similarities), torch.cat(indices)


def _matrices_fingerprint(matrices: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for matrix in matrices:
        digest.update(str(matrix.shape).encode())
        digest.update(np.ascontiguousarray(matrix, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]
