import json

import faiss
import numpy as np
import pytest

from mrl_core.deployment import Deployment
from mrl_core.indexes import code_bytes_per_vector
from mrl_core.export import config_json, export_all, faiss_export, faiss_factory_string, qdrant_export

FLOAT_CASES = [
    ("fp32", "flat", "Flat", faiss.IndexFlat),
    ("fp16", "flat", "SQfp16", faiss.IndexScalarQuantizer),
    ("int8", "flat", "SQ8", faiss.IndexScalarQuantizer),
    ("fp32", "hnsw", "HNSW32,Flat", faiss.IndexHNSWFlat),
    ("fp16", "hnsw", "HNSW32,SQfp16", faiss.IndexHNSWSQ),
    ("int8", "hnsw", "HNSW32,SQ8", faiss.IndexHNSWSQ),
    ("fp32", "ivf", "IVF400,Flat", faiss.IndexIVFFlat),
    ("int8", "ivf", "IVF400,SQ8", faiss.IndexIVFScalarQuantizer),
]


@pytest.mark.parametrize("precision, index_type, expected, index_class", FLOAT_CASES)
def test_float_factory_strings_build_inner_product_indexes(precision, index_type, expected, index_class):
    # corpus_size 10,000 -> nlist = 4 * sqrt(10,000) = 400.
    factory = faiss_factory_string(64, precision, index_type, corpus_size=10_000)
    assert factory == expected
    index = faiss.index_factory(64, factory, faiss.METRIC_INNER_PRODUCT)  # already the concrete class
    assert isinstance(index, index_class)
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    codes = faiss.downcast_index(index.storage) if index_type == "hnsw" else index
    assert codes.code_size == code_bytes_per_vector(64, precision)


@pytest.mark.parametrize(
    "precision, index_type, expected, index_class",
    [
        ("binary", "binary", "BFlat", faiss.IndexBinaryFlat),
        ("binary+rescore", "binary", "BFlat", faiss.IndexBinaryFlat),
        ("binary", "hnsw", "BHNSW16", faiss.IndexBinaryHNSW),
        ("binary", "ivf", "BIVF50", faiss.IndexBinaryIVF),
    ],
)
def test_binary_factory_strings_build_binary_indexes(precision, index_type, expected, index_class):
    factory = faiss_factory_string(128, precision, index_type, hnsw_m=16, ivf_nlist=50)
    assert factory == expected
    index = faiss.index_binary_factory(128, factory)
    assert isinstance(index, index_class)
    assert index.code_size == code_bytes_per_vector(128, precision) == 16


def test_exported_flat_index_searches_like_numpy():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((500, 32)).astype("float32")
    query = rng.standard_normal((1, 32)).astype("float32")
    index = faiss.index_factory(32, faiss_factory_string(32, "fp32", "flat"), faiss.METRIC_INNER_PRODUCT)
    index.add(corpus)
    _, ids = index.search(query, 5)
    assert list(ids[0]) == list(np.argsort(-(corpus @ query[0]))[:5])


def test_factory_refuses_what_faiss_cannot_build():
    with pytest.raises(ValueError, match="multiple of 8"):
        faiss_factory_string(12, "binary", "binary")
    with pytest.raises(ValueError, match="ivf_nlist or corpus_size"):
        faiss_factory_string(64, "fp32", "ivf")
    with pytest.raises(ValueError, match="precision='int4'"):
        faiss_factory_string(64, "int4", "flat")


FUNNEL = {
    "stages": [
        {"width": 64, "precision": "binary", "index_type": "binary", "shortlist_size": 200},
        {"width": 384, "precision": "fp32", "index_type": "flat", "shortlist_size": None},
    ]
}


def test_qdrant_funnel_names_both_vectors_and_prefetches_the_prefix():
    export = qdrant_export(FUNNEL, 384, collection_name="docs", top_k=10)
    body = json.loads(json.dumps(export))  # plain JSON, nothing Python-only
    vectors = body["create_collection"]["body"]["vectors"]
    assert body["create_collection"]["path"] == "/collections/docs"
    assert vectors["prefix_64"]["size"] == 64 and vectors["full"]["size"] == 384
    assert vectors["prefix_64"]["quantization_config"] == {"binary": {"always_ram": True}}
    assert vectors["prefix_64"]["distance"] == vectors["full"]["distance"] == "Cosine"
    # Neither vector needs a graph: stage 1 scans the bits, stage 2 only rescores.
    assert vectors["prefix_64"]["hnsw_config"] == vectors["full"]["hnsw_config"] == {"m": 0}
    query = body["query"]["body"]
    assert body["query"]["path"] == "/collections/docs/points/query"
    assert query["using"] == "full" and query["limit"] == 10
    assert query["prefetch"]["using"] == "prefix_64" and query["prefetch"]["limit"] == 200
    assert query["prefetch"]["params"] == {"quantization": {"rescore": False}}
    assert "first 64 dims" in query["prefetch"]["query"]


def test_qdrant_three_stage_funnel_nests_prefetches():
    stages = [
        {"width": 32, "precision": "int8", "index_type": "hnsw", "shortlist_size": 400},
        {"width": 128, "precision": "fp16", "shortlist_size": 50},
        {"width": 384, "precision": "fp32"},
    ]
    export = qdrant_export({"stages": stages}, 384, deployment=Deployment(hnsw_m=16))
    vectors = export["create_collection"]["body"]["vectors"]
    assert vectors["prefix_32"]["quantization_config"]["scalar"]["type"] == "int8"
    assert vectors["prefix_32"]["hnsw_config"] == {"m": 16}
    assert vectors["prefix_128"]["datatype"] == "float16"
    query = export["query"]["body"]
    assert [query["using"], query["prefetch"]["using"], query["prefetch"]["prefetch"]["using"]] == ["full", "prefix_128", "prefix_32"]
    assert [query["limit"], query["prefetch"]["limit"], query["prefetch"]["prefetch"]["limit"]] == [10, 50, 400]


def test_qdrant_single_stage_and_vendor_gaps_are_noted():
    export = qdrant_export({"stages": [{"width": 128, "precision": "fp32", "index_type": "ivf"}]}, 384)
    assert list(export["create_collection"]["body"]["vectors"]) == ["prefix_128"]
    assert "prefetch" not in export["query"]["body"]
    assert any("no IVF" in note for note in export["notes"])
    with pytest.raises(ValueError, match="exceeds full_width"):
        qdrant_export({"stages": [{"width": 512, "precision": "fp32", "index_type": "flat"}]}, 384)


def test_same_width_at_two_precisions_gets_two_vectors():
    stages = [
        {"width": 384, "precision": "binary", "index_type": "binary", "shortlist_size": 100},
        {"width": 384, "precision": "fp32"},
    ]
    vectors = qdrant_export({"stages": stages}, 384)["create_collection"]["body"]["vectors"]
    assert set(vectors) == {"full", "full_fp32"}


def test_faiss_export_describes_the_rescoring_stages():
    export = faiss_export(FUNNEL)
    assert export["factory_string"] == "BFlat" and export["factory"] == "faiss.index_binary_factory"
    assert export["rescore_stages"] == [
        {"width": 384, "precision": "fp32", "reads": "the first 384 dims of the stored vectors, renormalised", "candidates_in": 200}
    ]


def test_export_all_is_json_and_keeps_the_measurements():
    config = {**FUNNEL, "label": "funnel", "storage_bytes": 1.5e9, "p95_ms": 6.0, "ndcg_at_10": 0.63, "margins": {}}
    exports = export_all(config, 384, corpus_size=1_000_000)
    assert json.loads(json.dumps(exports)) == exports
    assert exports["json"]["stages"] == FUNNEL["stages"] and exports["json"]["full_width"] == 384
    assert json.loads(config_json(config))["ndcg_at_10"] == 0.63


def test_export_all_builds_the_index_the_deployment_costed():
    hnsw = {"stages": [{"width": 64, "precision": "int8", "index_type": "hnsw"}]}
    exports = export_all(hnsw, 384, deployment=Deployment(vendor="qdrant", hnsw_m=16))
    assert exports["faiss"]["factory_string"] == "HNSW16,SQ8"
    assert exports["qdrant"]["create_collection"]["body"]["vectors"]["prefix_64"]["hnsw_config"] == {"m": 16}
    ivf = {"stages": [{"width": 64, "precision": "fp32", "index_type": "ivf"}]}
    assert export_all(ivf, 384, corpus_size=1_000_000)["faiss"]["factory_string"] == "IVF4000,Flat"
    assert export_all(ivf, 384, deployment=Deployment(ivf_nlist=256))["faiss"]["factory_string"] == "IVF256,Flat"


def test_pca_factory_reproduces_the_evaluated_pca_ranking():
    from mrl_core.evaluate import pca_rotation
    from mrl_core.widths import truncate

    rng = np.random.default_rng(1)
    corpus = rng.standard_normal((600, 32)).astype("float32") * np.linspace(3, 0.1, 32).astype("float32")
    queries = rng.standard_normal((5, 32)).astype("float32")
    factory = faiss_factory_string(8, "fp32", "flat", method="pca")
    assert factory == "PCA8,L2norm,Flat"
    index = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(corpus)
    index.add(corpus)
    _, faiss_ids = index.search(queries, 5)
    mean, rotation = pca_rotation(corpus)
    reduced_corpus = truncate((corpus - mean) @ rotation, 8)
    reduced_queries = truncate((queries - mean) @ rotation, 8)
    numpy_ids = np.argsort(-(reduced_queries @ reduced_corpus.T), axis=1)[:, :5]
    assert (faiss_ids == numpy_ids).all()


def test_pca_exports_take_full_vectors_and_name_the_components():
    config = {"method": "pca", "stages": [{"width": 128, "precision": "int8", "index_type": "hnsw"}]}
    export = faiss_export(config, full_width=384)
    assert export["factory_string"] == "PCA128,L2norm,HNSW32,SQ8" and export["dimension"] == 384
    assert isinstance(faiss.index_factory(384, export["factory_string"], faiss.METRIC_INNER_PRODUCT), faiss.IndexPreTransform)
    with pytest.raises(ValueError, match="full_width"):
        faiss_export(config)
    qdrant = qdrant_export(config, 384)
    assert list(qdrant["create_collection"]["body"]["vectors"]) == ["pca_128"]
    assert any("PCA components" in note for note in qdrant["notes"])


# -- past one machine --------------------------------------------------------------------------------------------

SHARDED = {
    "stages": [{"width": 384, "precision": "fp32", "index_type": "flat"}],
    "shards": 35, "machines": 70, "per_shard_corpus_size": 28_571_429,
}


def test_a_sharded_plan_tells_faiss_to_build_one_index_per_shard_and_merge():
    sharding = faiss_export(SHARDED, deployment=Deployment(replicas=2))["sharding"]
    assert (sharding["shards"], sharding["replicas"], sharding["machines"]) == (35, 2, 70)
    assert sharding["vectors_per_shard"] == 28_571_429
    assert "one index per shard" in sharding["build"] and "28,571,429 vectors" in sharding["build"]
    assert "faiss.merge_knn_results" in sharding["search"] and "keep_max=True" in sharding["search"]
    # Bit codes rank by Hamming distance: the merge keeps the smallest.
    binary = {**SHARDED, "stages": [{"width": 384, "precision": "binary", "index_type": "binary"}]}
    assert "keep_max=False" in faiss_export(binary)["sharding"]["search"]
    ivf = {**SHARDED, "stages": [{"width": 384, "precision": "fp32", "index_type": "ivf"}]}
    assert "one coarse quantizer" in faiss_export(ivf, corpus_size=10**9)["sharding"]["build"]
    assert "sharding" not in faiss_export({**SHARDED, "shards": 1})


def test_following_the_faiss_sharding_export_gives_the_single_index_results():
    rng = np.random.default_rng(5)
    corpus = rng.standard_normal((3000, 32)).astype("float32")
    queries = rng.standard_normal((6, 32)).astype("float32")
    config = {
        "stages": [{"width": 32, "precision": "fp32", "index_type": "flat"}], "shards": 3, "per_shard_corpus_size": 1000,
    }
    export = faiss_export(config)
    whole = faiss.index_factory(32, export["factory_string"], faiss.METRIC_INNER_PRODUCT)
    whole.add(corpus)
    expected_scores, expected_ids = whole.search(queries, 10)
    per_shard = export["sharding"]["vectors_per_shard"]
    shard_scores, shard_ids = [], []
    for first in range(0, len(corpus), per_shard):
        shard = faiss.IndexIDMap(faiss.index_factory(32, export["factory_string"], faiss.METRIC_INNER_PRODUCT))
        shard.add_with_ids(corpus[first:first + per_shard], np.arange(first, first + per_shard, dtype="int64"))
        scores, ids = shard.search(queries, 10)
        shard_scores.append(scores)
        shard_ids.append(ids)
    merged_scores, merged_ids = faiss.merge_knn_results(np.stack(shard_scores), np.stack(shard_ids), keep_max=True)
    assert (merged_ids == expected_ids).all()
    np.testing.assert_allclose(merged_scores, expected_scores, rtol=1e-6)


def test_a_sharded_plan_sets_qdrant_shard_number_and_replication_factor():
    export = qdrant_export(SHARDED, 384, deployment=Deployment(vendor="qdrant", replicas=2))
    body = export["create_collection"]["body"]
    assert (body["shard_number"], body["replication_factor"]) == (35, 2)
    assert any("70 nodes" in note and "35 shards x 2 replicas" in note for note in export["notes"])
    single = qdrant_export({**SHARDED, "shards": 1}, 384)["create_collection"]["body"]
    assert "shard_number" not in single and "replication_factor" not in single
    assert "shard_number" not in qdrant_export({**SHARDED, "shards": 1}, 384, deployment=Deployment(replicas=3))[
        "create_collection"]["body"]


def test_the_json_export_keeps_the_shard_plan():
    config = {**SHARDED, "label": "prefix 384 fp32/flat", "merge_ms": 0.01, "ram_bytes_per_shard": 4.4e10}
    kept = json.loads(config_json(config))
    assert (kept["shards"], kept["machines"], kept["per_shard_corpus_size"]) == (35, 70, 28_571_429)
    assert kept["merge_ms"] == 0.01 and kept["ram_bytes_per_shard"] == 4.4e10
