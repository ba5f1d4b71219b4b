import numpy as np
import pytest

from mrl_core.widths import METHODS, PRECISIONS, check_choices, prefix_norms, quantize, truncate, unpack_signs


def test_truncate_keeps_prefix_and_renormalises():
    embeddings = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]])
    prefix = truncate(embeddings, 2)
    assert prefix.dtype == np.float32
    # (3, 4) has norm 5; (0, 0) has no direction and stays zero
    np.testing.assert_allclose(prefix, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(truncate(embeddings, 3)[0], np.array([3, 4, 12]) / 13, rtol=1e-6)
    # the input is not modified
    assert embeddings[0, 0] == 3.0


@pytest.mark.parametrize("width", [0, -1, 4])
def test_truncate_rejects_widths_outside_the_embedding(width):
    with pytest.raises(ValueError, match=f"width={width}: expected 1..3"):
        truncate(np.ones((2, 3)), width)


def test_fp16_round_trips_to_float32():
    corpus = np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float32)
    corpus_codes, query_codes = quantize(corpus, corpus[:1], "fp16")
    assert corpus_codes.dtype == np.float32 and query_codes.shape == (1, 2)
    np.testing.assert_array_equal(corpus_codes, corpus.astype(np.float16).astype(np.float32))
    # 0.1 is not exact in fp16: the round trip changes it by less than fp16's half-ulp (2**-14 near 0.1)
    assert corpus_codes[0, 0] != np.float32(0.1)
    assert abs(corpus_codes[0, 0] - 0.1) < 2**-14


def test_int8_is_calibrated_on_the_corpus_for_both_sides():
    corpus = np.array([[-1.0, 0.0], [1.0, 0.5], [0.0, 1.0]], dtype=np.float32)
    queries = np.array([[2.0, -3.0], [1.0, 0.5]], dtype=np.float32)
    corpus_codes, query_codes = quantize(corpus, queries, "int8")
    assert corpus_codes.dtype == np.int8 and corpus_codes.shape == (3, 2)
    assert query_codes.dtype == np.int8 and query_codes.shape == (2, 2)
    # each dimension's corpus minimum is bucket 0 of 256 (code -128); 0.0 on [-1, 1] is
    # floor(1 / (2/255)) = 127 buckets up (code -1)
    assert corpus_codes[0].tolist() == [-128, -128] and corpus_codes[2, 0] == -1
    # a query beyond the corpus range clips at the corpus's ends rather than using its own range
    assert query_codes[0].tolist() == [127, -128]
    # a query equal to a document gets the document's codes
    np.testing.assert_array_equal(query_codes[1], corpus_codes[1])


def test_binary_packs_sign_bits_to_whole_bytes():
    corpus = np.array([[0.5, -0.1, 0.2, 0.3, -0.4, 0.1, 0.1, -0.2, 0.9, -0.9, 0.3, -0.3]], dtype=np.float32)
    for precision in ("binary", "binary+rescore"):
        corpus_codes, query_codes = quantize(corpus, corpus, precision)
        # 12 dimensions need 2 bytes; the 4 padding bits are zero
        assert corpus_codes.dtype == np.uint8 and corpus_codes.shape == (1, 2)
        assert corpus_codes.tolist() == [[0b10110110, 0b10100000]]
        np.testing.assert_array_equal(unpack_signs(corpus_codes, 12), np.where(corpus > 0, 1.0, -1.0))


def test_hamming_ranking_equals_sign_agreement_ranking():
    import faiss

    rng = np.random.default_rng(7)
    width = 24
    corpus = rng.standard_normal((40, width)).astype(np.float32)
    query = rng.standard_normal((1, width)).astype(np.float32)
    corpus_codes, query_codes = quantize(corpus, query, "binary")
    index = faiss.IndexBinaryFlat(width)
    index.add(corpus_codes)
    distances, ids = index.search(query_codes, len(corpus))
    agreement = ((corpus > 0) == (query > 0)).sum(axis=1)
    # Hamming distance = width - agreeing signs, and the ranking walks agreement from high to low
    np.testing.assert_array_equal(distances[0], width - agreement[ids[0]])
    np.testing.assert_array_equal(agreement[ids[0]], np.sort(agreement)[::-1])


def test_unknown_precision_names_the_allowed_set():
    with pytest.raises(ValueError, match=r"precision='int4': expected one of \['fp32', 'fp16', 'int8', 'binary', 'binary\+rescore'\]"):
        quantize(np.ones((2, 2)), np.ones((1, 2)), "int4")


def test_check_choices():
    assert check_choices(("pca", "prefix"), METHODS, "methods") == ["pca", "prefix"]
    with pytest.raises(ValueError, match=r"methods: 'svd' is not one of \['prefix', 'pca'\]"):
        check_choices(["prefix", "svd"], METHODS, "methods")
    with pytest.raises(ValueError, match=r"precisions: \['int8'\] given more than once"):
        check_choices(["int8", "fp32", "int8"], PRECISIONS, "precisions")
    with pytest.raises(ValueError, match="give at least one"):
        check_choices([], PRECISIONS, "precisions")


def test_prefix_norms_match_explicit_norms():
    assert prefix_norms(np.array([[3.0, 4.0, 12.0]]), [1, 2, 3]).tolist() == [[3.0, 5.0, 13.0]]
    matrix = np.random.default_rng(1).normal(size=(50, 20)).astype(np.float32)
    norms = prefix_norms(matrix, [1, 7, 20], chunk_rows=16)
    for column, width in enumerate([1, 7, 20]):
        np.testing.assert_allclose(norms[:, column], np.linalg.norm(matrix[:, :width], axis=1), rtol=1e-5)
    assert prefix_norms(matrix).shape == (50, 20)
    with pytest.raises(ValueError, match="width=21"):
        prefix_norms(matrix, [21])
