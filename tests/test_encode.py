import numpy as np
import pytest

from mrl_core import encode
from mrl_core.data import RetrievalDataset


@pytest.fixture
def tiny_dataset():
    return RetrievalDataset(
        name="tiny",
        source="test",
        corpus_ids=["cat", "car", "tax"],
        corpus_texts=["The cat sleeps on the sofa.", "A red sports car on the highway.", "How to file income tax returns."],
        query_ids=["q1"],
        query_texts=["where do cats nap"],
        qrels={"q1": {"cat": 1}},
    )


def test_base_model_encodes_normalised_full_width(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path))
    embeddings = encode.embed_dataset(tiny_dataset, "base")
    assert embeddings.corpus.shape == (3, 384) and embeddings.queries.shape == (1, 384)
    assert embeddings.corpus.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings.corpus, axis=1), 1.0, atol=1e-5)
    # the query about cats is nearest to the cat document
    assert int(np.argmax(embeddings.corpus @ embeddings.queries[0])) == 0


def test_second_embed_reads_the_cache_without_encoding(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path))
    first = encode.embed_dataset(tiny_dataset, "base")

    def refuse(*args, **kwargs):
        raise AssertionError("encoded again although the texts were cached")

    monkeypatch.setattr(encode, "encode_texts", refuse)
    second = encode.embed_dataset(tiny_dataset, "base")
    np.testing.assert_array_equal(first.corpus, second.corpus)
    assert len(list((tmp_path / "embeddings").rglob("*.npy"))) == 2
    assert not list((tmp_path / "embeddings").rglob("*partial*"))


def test_progress_reaches_the_total(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path))
    calls = []
    encode.embed_dataset(tiny_dataset, "base", progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (4, 4)


def test_precomputed_dataset_needs_no_encoder(tmp_path):
    vectors = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    dataset = RetrievalDataset(name="vectors", source="v.npy", corpus_ids=["0", "1"], corpus_texts=None,
                               corpus_embeddings=vectors)
    embeddings = encode.embed_dataset(dataset, "precomputed")
    np.testing.assert_allclose(embeddings.corpus, [[0.6, 0.8], [0.0, 1.0]])
    assert embeddings.queries.shape == (0, 2)
    with pytest.raises(ValueError, match="precomputed embeddings"):
        encode.embed_dataset(dataset, "base")


def test_unknown_model_spec_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="expected 'base'"):
        encode.model_fingerprint(str(tmp_path / "missing-model"))
