"""Training: a tiny real fine-tune, adaptor training and stored runs, and the input checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrl_core.data import DatasetError, RetrievalDataset
from mrl_core.widths import check_training_dims
from mrl_core.train import run_training, train_adaptor, train_full, training_pairs

TOPICS = [
    ("how do cats purr", "Cats purr by vibrating the muscles of the larynx while breathing."),
    ("what do bees make", "Honey bees make honey from flower nectar and store it in wax combs."),
    ("why is the sky blue", "Sunlight scatters off air molecules, and blue light scatters the most."),
    ("how do planes fly", "Wings shaped as airfoils create lift as air flows faster over the top."),
    ("what causes tides", "The moon's gravity pulls the oceans, raising tides twice a day."),
    ("how do vaccines work", "Vaccines train the immune system to recognise a pathogen safely."),
    ("what is photosynthesis", "Plants turn light, water and carbon dioxide into sugar and oxygen."),
    ("how do volcanoes erupt", "Pressure from molten rock and gas forces magma up through the crust."),
]


def text_dataset(pairs=TOPICS, **changes) -> RetrievalDataset:
    fields = dict(
        name="topics",
        source="topics",
        corpus_ids=[f"d{row}" for row in range(len(TOPICS))],
        corpus_texts=[document for _, document in TOPICS],
        query_ids=["q0"],
        query_texts=["where does honey come from"],
        qrels={"q0": {"d1": 1}},
        train_pairs=list(pairs),
    )
    fields.update(changes)
    return RetrievalDataset(**fields)


def test_tiny_full_run_lowers_the_loss_and_saves_a_model_usable_at_every_width(tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "model"
    steps = []
    # Four pairs in one batch of 4, three epochs: the same batch three times, so the loss must fall.
    summary = train_full(
        text_dataset(TOPICS[:4]), "base", dims=[384, 64, 16], out_dir=out, epochs=3, batch_size=4,
        learning_rate=1e-4, max_seq_length=16, dim_weights=[1, 2, 1], distill_weight=0.5,
        progress=lambda done, total: steps.append((done, total)),
    )
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert summary["steps"] == 3
    assert summary["step_losses"][-1] < summary["step_losses"][0]
    assert summary["final_loss"] == summary["loss_history"][-1]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    metadata = json.loads((out / "mrl_training.json").read_text())
    assert (metadata["dims"], metadata["dim_weights"]) == ([384, 64, 16], [1.0, 2.0, 1.0])
    assert metadata["loss"] == "MatryoshkaLoss(MultipleNegativesRankingLoss + prefix distillation)"
    assert metadata["base_model"] == "base" and metadata["pairs"] == 4
    assert (metadata["params"]["max_seq_length"], metadata["params"]["inference_max_seq_length"]) == (16, 256)
    assert metadata["params"]["device"] == "cpu"

    model = SentenceTransformer(str(out), device="cpu")
    assert model.max_seq_length == 256
    full = model.encode(["how do cats purr"], normalize_embeddings=True)
    assert full.shape == (1, 384)
    for width in (384, 64, 16):
        short = model.encode(["how do cats purr"], normalize_embeddings=True, truncate_dim=width)
        assert short.shape == (1, width)
        np.testing.assert_allclose(short[0], full[0, :width] / np.linalg.norm(full[0, :width]), atol=1e-5)


def test_pairs_are_checked_before_training(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(DatasetError, match="3 training pairs; training needs at least one batch of 4"):
        train_full(text_dataset(TOPICS[:3]), dims=[384], out_dir=out, batch_size=4)
    with pytest.raises(DatasetError, match="training pair 1 has an empty positive text"):
        train_full(text_dataset([TOPICS[0], ("q", "  "), *TOPICS[2:]]), dims=[384], out_dir=out, batch_size=4)
    with pytest.raises(DatasetError, match="all 8 training pairs repeat the same texts"):
        train_full(text_dataset([("same", "same")] * 8), dims=[384], out_dir=out, batch_size=4)
    shared_positive = [(query, TOPICS[0][1]) for query, _ in TOPICS]
    with pytest.raises(DatasetError, match="no batch of 4 pairs without a repeated text"):
        train_full(text_dataset(shared_positive), dims=[384], out_dir=out, batch_size=4)
    with pytest.raises(ValueError, match="batch_size=1: in-batch negatives need at least 2"):
        train_full(text_dataset(), dims=[384], out_dir=out, batch_size=1)
    with pytest.raises(ValueError, match="epochs=0: expected a positive integer"):
        train_full(text_dataset(), dims=[384], out_dir=out, epochs=0)
    out.mkdir()
    with pytest.raises(ValueError, match="already exists; choose another output path or pass overwrite=True"):
        train_full(text_dataset(), dims=[384], out_dir=out, batch_size=4)
    assert not any(out.iterdir())


def test_dims_above_the_model_width_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"dims: 512 is outside 1\.\.384"):
        train_full(text_dataset(), dims=[512, 384], out_dir=tmp_path / "model", batch_size=4)
    assert not (tmp_path / "model").exists()


def test_check_training_dims():
    assert check_training_dims([64, 384, 128], 384) == [384, 128, 64]
    with pytest.warns(UserWarning, match="lack the model's full width 384"):
        assert check_training_dims([64, 16], 384) == [384, 64, 16]
    for bad, message in (
        ([0, 384], "0 is outside"), ([-8], "-8 is outside"), ([64, 64, 384], r"\[64\] given more than once"),
        ([], "at least one"),
    ):
        with pytest.raises(ValueError, match=message):
            check_training_dims(bad, 384)


def test_training_pairs_leave_out_evaluation_queries():
    dataset = text_dataset([*TOPICS, ("where does honey come from", TOPICS[1][1])])
    pairs, dropped = training_pairs(dataset, batch_size=4)
    assert (len(pairs), dropped) == (8, 1)
    assert all(query != "where does honey come from" for query, _ in pairs)


def test_adaptor_training_on_texts_uses_pairs_and_saves(tmp_path, isolated_store):
    from mrl_core.adaptor import load_adaptor

    # The last positive is not in the corpus: it is encoded on its own.
    pairs = [*TOPICS, ("what melts ice", "Heat melts ice into liquid water.")]
    summary = train_adaptor(
        text_dataset(pairs), "base", dims=[384, 32], out_path=tmp_path / "adaptor.npz", epochs=2
    )
    assert summary["pairs"] == 9 and summary["dims"] == [384, 32]
    adaptor = load_adaptor(tmp_path / "adaptor.npz")
    assert (adaptor.base_model, adaptor.width, adaptor.params_["pairs"]) == ("base", 384, 9)
    with pytest.raises(ValueError, match="already exists"):
        train_adaptor(text_dataset(pairs), "base", dims=[384, 32], out_path=tmp_path / "adaptor.npz")
    with pytest.raises(ValueError, match="must end in .npz"):
        train_adaptor(text_dataset(pairs), "base", dims=[384, 32], out_path=tmp_path / "adaptor.bin")


def test_run_training_stores_the_run_and_before_after_evaluations(tmp_path, isolated_store, synthetic_dataset):
    out = tmp_path / "adaptor.npz"
    run_id, summary = run_training(
        synthetic_dataset, "precomputed", mode="adaptor", dims=[64, 16, 8], out=out, store=isolated_store,
        evaluate_widths=[64, 16, 8], epochs=1,
    )
    run = isolated_store.get_run(run_id)
    assert (run["kind"], run["status"], run["model"]) == ("train", "finished", "precomputed")
    assert run["summary"]["trained_evaluation_run_id"] == summary["trained_evaluation_run_id"]
    trained = isolated_store.results(summary["trained_evaluation_run_id"])
    base = isolated_store.results(summary["base_evaluation_run_id"])
    assert sorted(trained["width"]) == sorted(base["width"]) == [8, 16, 64]
    assert set(trained["model"]) == {str(out)} and set(base["model"]) == {"precomputed"}

    # A second training reuses the stored base evaluation instead of repeating it.
    _, again = run_training(
        synthetic_dataset, "precomputed", mode="adaptor", dims=[64, 8], out=out, store=isolated_store,
        evaluate_widths=[64, 8], epochs=1, overwrite=True,
    )
    assert again["base_evaluation_run_id"] == summary["base_evaluation_run_id"]
    assert len(isolated_store.list_runs("evaluate")) == 3


def test_adaptor_training_reports_each_phase_encoding_first(tmp_path, isolated_store):
    """A job shows what it waits for: the base model encoding the corpus and the training queries (minutes on a
    large corpus), then the epochs."""
    reports = []

    def progress(phase):
        return lambda done, total: reports.append((phase, done, total))

    run_training(
        text_dataset(), "base", mode="adaptor", dims=[384, 32], out=tmp_path / "adaptor.npz", store=isolated_store,
        evaluate_widths=[384, 32], epochs=2, progress=progress,
    )
    # The evaluations after training encode nothing: adaptor and base model read the embeddings cached here.
    phases = list(dict.fromkeys(phase for phase, _, _ in reports))
    assert phases == ["encoding", "training"]
    # The dataset (eight documents and its one test query), then the eight training queries, each to the end.
    encoding = [(done, total) for phase, done, total in reports if phase == "encoding"]
    assert encoding[-1] == (8, 8) and (9, 9) in encoding
    assert [(done, total) for phase, done, total in reports if phase == "training"] == [(1, 2), (2, 2)]


def test_run_training_rejects_an_unknown_mode_or_parameter(tmp_path, isolated_store, synthetic_dataset):
    with pytest.raises(ValueError, match=r"mode='lora': expected one of \['full', 'adaptor'\]"):
        run_training(synthetic_dataset, "precomputed", mode="lora", dims=[64], out=tmp_path / "x", store=isolated_store)
    with pytest.raises(ValueError, match=r"mode 'adaptor' does not take \['batch_size'\]; its parameters are \["):
        run_training(
            synthetic_dataset, "precomputed", mode="adaptor", dims=[64], out=tmp_path / "x.npz", store=isolated_store,
            batch_size=32,
        )
    assert isolated_store.list_runs().empty
