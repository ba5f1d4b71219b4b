"""Matryoshka adaptor: fidelity gain over plain prefixes, transform, save/load, input checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrl_core.adaptor import MatryoshkaAdaptor, _principal_rotation, load_adaptor
from mrl_core.data import RetrievalDataset


def low_rank_rows(rows: int, width: int = 64, rank: int = 12, seed: int = 0) -> np.ndarray:
    """Unit rows near a random rank-``rank`` subspace: its variance is spread over all coordinates,
    so a plain prefix keeps little of it while the principal axes keep nearly all."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, width))
    latent = rng.standard_normal((rows, rank)) * (1.0 / np.sqrt(np.arange(1, rank + 1)))
    matrix = latent @ basis + 0.05 * rng.standard_normal((rows, width))
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def fidelity_at_10(corpus: np.ndarray, queries: np.ndarray, width: int) -> float:
    """Mean overlap between the top 10 at ``width`` (prefix, renormalised) and the full-width top 10."""

    def top(c, q):
        return np.argsort(-(q @ c.T), axis=1)[:, :10]

    def prefix(m):
        m = m[:, :width]
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    full = top(corpus, queries)
    short = top(prefix(corpus), prefix(queries))
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full, short)]))


@pytest.fixture(scope="module")
def split_rows():
    # Same generator for both parts so they share the subspace; queries are never seen by fit.
    matrix = low_rank_rows(1400)
    return matrix[:1200], matrix[1200:]


@pytest.fixture(scope="module")
def fitted(split_rows):
    corpus, _ = split_rows
    return MatryoshkaAdaptor("precomputed").fit(corpus, dims=[64, 16, 8], epochs=3)


def test_adaptor_beats_plain_prefix_on_held_out_rows(split_rows, fitted):
    corpus, held_out = split_rows
    plain = fidelity_at_10(corpus, held_out, 8)
    adapted = fidelity_at_10(fitted.transform(corpus), fitted.transform(held_out), 8)
    assert plain < 0.5
    assert adapted > plain + 0.2
    # Full-width neighbours are kept: the map starts as a rotation and training barely bends it.
    assert fidelity_at_10(fitted.transform(corpus), fitted.transform(held_out), 64) > 0.9
    assert fitted.loss_history_[-1] < fitted.loss_history_[0]


def test_transform_is_unit_float32_of_adaptor_width(split_rows, fitted):
    _, held_out = split_rows
    adapted = fitted.transform(held_out.astype(np.float64))
    assert adapted.dtype == np.float32
    assert adapted.shape == (len(held_out), fitted.width) == (200, 64)
    np.testing.assert_allclose(np.linalg.norm(adapted, axis=1), 1.0, atol=1e-5)


def test_transform_applies_the_weight_then_normalises():
    adaptor = MatryoshkaAdaptor()
    adaptor.weight_ = np.array([[0.0, 2.0], [1.0, 0.0]], dtype=np.float32)
    # [3, 4] @ W = [4, 6] -> / sqrt(52)
    np.testing.assert_allclose(adaptor.transform(np.array([[3.0, 4.0]])), [[4 / 52**0.5, 6 / 52**0.5]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"takes \(rows, 2\) embeddings; got shape \(1, 3\)"):
        adaptor.transform(np.ones((1, 3)))


def test_principal_rotation_puts_the_strongest_axis_first():
    # Scatter matrix diag(1, 0.25, 9): axes ordered z, x, y.
    rows = np.array([[0.0, 0.0, 3.0], [0.0, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    rotation = _principal_rotation(rows)
    np.testing.assert_allclose(np.abs(rotation), [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-6)


def test_unfitted_adaptor_says_so():
    with pytest.raises(ValueError, match="not fitted"):
        MatryoshkaAdaptor().transform(np.ones((1, 4)))


def test_supervised_pairs_are_used_and_checked(split_rows):
    corpus, _ = split_rows
    rng = np.random.default_rng(1)
    positives = corpus[:100]
    anchors = positives + 0.1 * rng.standard_normal(positives.shape).astype(np.float32)
    adaptor = MatryoshkaAdaptor().fit(corpus, (anchors, positives), dims=[64, 8], epochs=2)
    assert adaptor.params_["pairs"] == 100
    with pytest.raises(ValueError, match=r"anchors \(100, 64\) and positives \(99, 64\)"):
        MatryoshkaAdaptor().fit(corpus, (anchors, positives[:99]), dims=[64, 8])


def test_dims_are_checked_and_full_width_added(split_rows):
    corpus, _ = split_rows
    with pytest.raises(ValueError, match=r"dims: 65 is outside 1\.\.64"):
        MatryoshkaAdaptor().fit(corpus, dims=[65])
    with pytest.raises(ValueError, match=r"dims: 0 is outside"):
        MatryoshkaAdaptor().fit(corpus, dims=[0, 64])
    with pytest.warns(UserWarning, match="lack the model.s full width 64"):
        adaptor = MatryoshkaAdaptor().fit(corpus[:200], dims=[8], epochs=1)
    assert adaptor.dims_ == [64, 8]
    assert MatryoshkaAdaptor().fit(corpus[:100], epochs=1).dims_ == [64, 32, 16]
    with pytest.raises(ValueError, match="NaN"):
        MatryoshkaAdaptor().fit(np.full((3, 4), np.nan), dims=[4])


def test_save_load_round_trip(tmp_path, split_rows, fitted):
    _, held_out = split_rows
    fitted.info = {"dataset": "low-rank"}
    path = fitted.save(tmp_path / "adaptor.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["adaptor.npz"]
    loaded = load_adaptor(path)
    assert load_adaptor(path) is loaded
    np.testing.assert_array_equal(loaded.transform(held_out), fitted.transform(held_out))
    assert (loaded.base_model, loaded.width, loaded.input_width, loaded.dims_) == ("precomputed", 64, 64, [64, 16, 8])
    assert loaded.training_fingerprint_ == fitted.training_fingerprint_
    assert loaded.info == {"dataset": "low-rank"}
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(str(archive["header"]))
    assert header["format"] == "mrl_core.matryoshka_adaptor"
    assert header["params"]["epochs"] == 3


def test_save_and_load_reject_wrong_files(tmp_path, fitted):
    with pytest.raises(ValueError, match="must end in .npz"):
        fitted.save(tmp_path / "adaptor.bin")
    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, weight=np.ones((2, 2)))
    with pytest.raises(ValueError, match="not a Matryoshka adaptor file"):
        load_adaptor(bogus)


def test_embed_dataset_applies_a_saved_adaptor(tmp_path, isolated_store, split_rows, fitted):
    from mrl_core.encode import embed_dataset, model_width

    corpus, held_out = split_rows
    dataset = RetrievalDataset(
        name="low-rank", source="low-rank", corpus_ids=[str(row) for row in range(len(corpus))], corpus_texts=None,
        corpus_embeddings=corpus, query_embeddings=held_out,
    )
    path = str(fitted.save(tmp_path / "adaptor.npz"))
    embeddings = embed_dataset(dataset, path)
    # embed_dataset renormalises precomputed rows first, which moves the last float bit.
    np.testing.assert_allclose(embeddings.corpus, fitted.transform(corpus), atol=1e-6)
    np.testing.assert_allclose(embeddings.queries, fitted.transform(held_out), atol=1e-6)
    assert model_width(path) == 64
