import faiss
import numpy as np
import pytest

from mrl_core.indexes import (
    FIRST_STAGE_PRECISIONS,
    INDEX_PRECISIONS,
    INDEX_TYPES,
    MEASURED_PRECISIONS,
    Int8PrefixIndex,
    build_index,
    check_index_precision,
    code_bytes_per_vector,
    index_bytes_per_vector,
    index_types_holding,
    measured_bytes_per_vector,
)
from mrl_core.metrics import fidelity_at_k
from mrl_core.widths import PRECISIONS


def test_the_table_names_only_known_index_types_and_precisions():
    assert set(INDEX_PRECISIONS) == set(INDEX_TYPES)
    for precisions in INDEX_PRECISIONS.values():
        assert set(precisions) <= set(PRECISIONS)
    # What is measured or searched in a funnel is also costed: every such pair passes the cost model's check.
    for table in (MEASURED_PRECISIONS, FIRST_STAGE_PRECISIONS):
        for index_type, precisions in table.items():
            for precision in precisions:
                check_index_precision(index_type, precision)
    assert index_types_holding("fp16") == ["flat", "hnsw", "ivf"]
    assert index_types_holding("binary+rescore", ["flat", "binary"]) == ["binary"]


def test_every_measured_and_first_stage_pair_builds_and_finds_the_nearest_row():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(400, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    pairs = {(i, p) for table in (MEASURED_PRECISIONS, FIRST_STAGE_PRECISIONS) for i, ps in table.items() for p in ps}
    for index_type, precision in sorted(pairs):
        index = build_index(rows, index_type, precision, ivf_lists=4)
        if index_type == "binary":
            _, ids = index.search(np.packbits(rows[:5] > 0, axis=1), 1)
        elif index_type == "ivf":
            _, ids = index.search(rows[:5], 1, params=faiss.SearchParametersIVF(nprobe=4))
        else:
            _, ids = index.search(rows[:5], 1)
        assert ids[:, 0].tolist() == [0, 1, 2, 3, 4], (index_type, precision)
        assert measured_bytes_per_vector(index) >= code_bytes_per_vector(16, precision)
    with pytest.raises(ValueError, match="index_type='hnsw' with precision='int8'"):
        build_index(rows, "hnsw", "int8")


@pytest.mark.parametrize(
    "precision, expected", [("fp32", 1536), ("fp16", 768), ("int8", 384), ("binary", 48), ("binary+rescore", 48)]
)
def test_code_bytes_for_minilm_width(precision, expected):
    assert code_bytes_per_vector(384, precision) == expected


def test_binary_codes_round_up_to_whole_bytes():
    assert code_bytes_per_vector(12, "binary") == 2


def test_index_extras_hand_computed():
    # FAISS wiki: HNSW d*4 + M*2*4 -> 384*4 + 32*8 = 1792; IVF adds an 8-byte id.
    assert index_bytes_per_vector(384, "fp32", "hnsw", hnsw_m=32) == 1792
    assert index_bytes_per_vector(64, "int8", "hnsw", hnsw_m=16) == 64 + 128
    assert index_bytes_per_vector(64, "fp32", "ivf") == 264
    assert index_bytes_per_vector(256, "binary", "binary") == 32


def test_int8_prefix_index_scores_approximate_float_inner_products():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(500, 32)) * np.linspace(2.0, 0.2, 32)  # dimensions of very different ranges
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    queries = rows[:20] + 0.1 * rng.normal(size=(20, 32)).astype(np.float32)
    index = Int8PrefixIndex(rows, chunk_rows=128)
    scores, ids = index.search(queries, 5)
    exact = queries @ rows.T
    np.testing.assert_allclose(scores, np.take_along_axis(exact, ids, axis=1), atol=0.03)
    assert fidelity_at_k(ids, np.argsort(-exact, axis=1)[:, :5], 5) >= 0.9
    assert index.ntotal == 500 and 32 <= index.serialized_bytes / 500 < 33


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_faiss_code_sizes_agree_with_the_formula(precision):
    factory = {"fp32": "Flat", "fp16": "SQfp16", "int8": "SQ8"}[precision]
    index = faiss.index_factory(96, factory, faiss.METRIC_INNER_PRODUCT)  # already the concrete class
    assert index.code_size == code_bytes_per_vector(96, precision)
