import math

import faiss
import numpy as np
import pandas as pd
import pytest

from mrl_core.cost import (
    GB,
    MAX_SHARDS,
    check_corpus_size,
    estimate_funnel_storage,
    estimate_storage,
    latency_at,
    merge_cost_ms,
    merge_top_k,
    plan_shards,
    rescore_bytes_per_vector,
    sharded_latency_at,
)
from mrl_core.deployment import Deployment, Machine


def test_ivf_adds_centroids_once():
    estimate = estimate_storage(1_000_000, 64, "fp32", "ivf", Deployment(ivf_nlist=4000))
    assert estimate.storage_bytes == 1_000_000 * (256 + 8) + 4000 * 64 * 4
    # Binary IVF clusters in Hamming space: centroids are bits too.
    binary = estimate_storage(1_000_000, 64, "binary", "ivf", Deployment(ivf_nlist=4000))
    assert binary.storage_bytes == 1_000_000 * (8 + 8) + 4000 * 8


def test_qdrant_worked_example():
    # https://qdrant.tech/documentation/cloud/capacity-sizing: 1M x 1024 x 4 bytes x 1.5
    # "is approximately 6,144,000,000 bytes, or about 5.72 GB" (5.72 is the GiB reading).
    estimate = estimate_storage(1_000_000, 1024, "fp32", "flat", Deployment(vendor="qdrant"))
    assert estimate.storage_bytes == 6_144_000_000
    assert estimate.storage_bytes / 2**30 == pytest.approx(5.72, abs=0.005)
    assert estimate.ram_bytes == estimate.storage_bytes and estimate.disk_bytes == 0


def test_opensearch_worked_example():
    # OpenSearch k-NN docs (knn-index.md, HNSW memory estimation):
    # 1.1 * (4 * 256 + 8 * 16) * 1,000,000 ~= 1.267 GB
    estimate = estimate_storage(1_000_000, 256, "fp32", "hnsw", Deployment(vendor="opensearch", hnsw_m=16))
    assert estimate.storage_bytes == pytest.approx(1_267_200_000)
    assert estimate.storage_gb == pytest.approx(1.267, abs=0.0005)


def test_weaviate_worked_example():
    # https://weaviate.io/developers/weaviate/concepts/resources: "2 * 1e6 * 1536 B == 3 GB".
    estimate = estimate_storage(1_000_000, 384, "fp32", "flat", Deployment(vendor="weaviate"))
    assert estimate.storage_bytes == 2 * 1_000_000 * 1536
    assert estimate.storage_gb == pytest.approx(3.0, abs=0.08)


def test_vendor_factor_and_replicas_multiply():
    base = estimate_storage(1_000_000, 384, "fp32", "flat")
    weaviate = estimate_storage(1_000_000, 384, "fp32", "flat", Deployment(vendor="weaviate", replicas=3))
    assert base.storage_bytes == 1_536_000_000
    assert weaviate.storage_bytes == 1_536_000_000 * 2 * 3


def test_qdrant_keeps_float_originals_on_disk_beside_quantized_codes():
    # RAM: 1000 x 64 int8 codes x 1.5; disk: the 64 x 4-byte originals Qdrant keeps, x 1.5.
    int8 = estimate_storage(1000, 64, "int8", "flat", Deployment(vendor="qdrant"))
    assert int8.ram_bytes == 1000 * 64 * 1.5
    assert int8.disk_bytes == 1000 * 256 * 1.5
    binary = estimate_funnel_storage(
        1000, [{"width": 64, "precision": "binary", "index_type": "binary"}, {"width": 384, "precision": "fp32"}],
        Deployment(vendor="qdrant", rescore_location="disk"),
    )
    assert binary.ram_bytes == 1000 * 8 * 1.5
    assert binary.disk_bytes == 1000 * (1536 + 256) * 1.5
    assert estimate_storage(1000, 64, "int8", "flat", Deployment(vendor="opensearch")).disk_bytes == 0


def test_metadata_is_counted_in_ram_without_vendor_factor():
    estimate = estimate_storage(1000, 64, "fp16", "flat", Deployment(vendor="qdrant", metadata_bytes_per_vector=16))
    assert estimate.ram_bytes == 1000 * 128 * 1.5 + 1000 * 16


def test_funnel_storage_splits_ram_and_disk():
    stages = [
        {"width": 32, "precision": "binary", "index_type": "binary", "shortlist_size": 200},
        {"width": 128, "precision": "fp32", "shortlist_size": 50},
        {"width": 384, "precision": "fp32"},
    ]
    # Later stages read prefixes of one stored fp32 vector: 384*4 bytes, not 128*4 + 384*4.
    assert rescore_bytes_per_vector(stages[1:]) == 1536
    on_disk = estimate_funnel_storage(1_000_000, stages, Deployment(rescore_location="disk"))
    assert on_disk.ram_bytes == 1_000_000 * 4
    assert on_disk.disk_bytes == 1_000_000 * 1536
    assert on_disk.rescore_location == "disk"
    in_ram = estimate_funnel_storage(1_000_000, stages, Deployment(rescore_location="ram", replicas=2))
    assert in_ram.ram_bytes == 2 * 1_000_000 * (4 + 1536)
    assert in_ram.disk_bytes == 0 and in_ram.rescore_location == "ram"


def test_funnel_storage_keeps_one_vector_per_precision():
    stages = [
        {"width": 64, "precision": "int8", "index_type": "hnsw"},
        {"width": 128, "precision": "fp16"},
        {"width": 384, "precision": "int8"},
    ]
    assert rescore_bytes_per_vector(stages[1:]) == 128 * 2 + 384
    estimate = estimate_funnel_storage(1000, stages, Deployment(hnsw_m=8))
    assert estimate.storage_bytes == 1000 * ((64 + 64) + 256 + 384)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "int4"}, "precision='int4'"),
        ({"index_type": "pq"}, "index_type='pq'"),
        ({"precision": "fp32", "index_type": "binary"}, "holds bit codes"),
        ({"precision": "binary", "index_type": "flat"}, "index_type='binary'"),
        ({"corpus_size": 0}, "corpus_size=0: expected a positive whole number"),
        ({"deployment": "qdrant"}, "deployment='qdrant': expected a mrl_core.deployment.Deployment"),
    ],
)
def test_bad_options_say_what_is_allowed(kwargs, message):
    arguments = {"corpus_size": 1000, "width": 64, "precision": "fp32", "index_type": "flat", **kwargs}
    with pytest.raises(ValueError, match=message):
        estimate_storage(**arguments)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"vendor": "pinecone"}, "vendor='pinecone': expected one of ['faiss', 'qdrant', 'weaviate', 'opensearch']"),
        ({"replicas": 0}, "replicas=0: expected a whole number >= 1"),
        ({"replicas": 1.5}, "replicas=1.5: expected a whole number >= 1"),
        ({"metadata_bytes_per_vector": -1}, "metadata_bytes_per_vector=-1: expected a finite number >= 0"),
        ({"hnsw_m": 0}, "hnsw_m=0: expected a whole number >= 1"),
        ({"ivf_nlist": 0}, "ivf_nlist=0: expected a whole number >= 1"),
        ({"rescore_location": "ssd"}, "rescore_location='ssd': expected one of ['ram', 'disk']"),
    ],
)
def test_a_bad_deployment_is_refused_when_made(fields, message):
    with pytest.raises(ValueError) as error:
        Deployment(**fields)
    assert str(error.value).startswith(message)


def test_deployment_defaults_are_faiss_one_replica_and_the_bench_hnsw():
    from mrl_core.indexes import HNSW_M

    deployment = Deployment()
    assert (deployment.vendor, deployment.replicas, deployment.metadata_bytes_per_vector) == ("faiss", 1, 0.0)
    assert (deployment.hnsw_m, deployment.ivf_nlist, deployment.rescore_location) == (HNSW_M, None, "ram")
    assert deployment.vendor_overhead == 1.0 and Deployment(vendor="weaviate").vendor_overhead == 2.0


def test_faiss_serialised_flat_index_matches_the_formula():
    vectors = np.random.default_rng(0).standard_normal((2000, 48)).astype("float32")
    index = faiss.IndexFlatIP(48)
    index.add(vectors)
    serialised = len(faiss.serialize_index(index))
    formula = estimate_storage(2000, 48, "fp32", "flat").storage_bytes
    # Only a fixed header separates them.
    assert 0 <= serialised - formula < 100


def _bench(sizes, p95, p50=None, index_type="flat"):
    return pd.DataFrame({
        "index_type": index_type, "precision": "fp32", "width": 384, "corpus_size": sizes, "p95_ms": p95,
        "p50_ms": p50 if p50 is not None else [value / 2 for value in p95],
    })


def test_latency_at_a_measured_size_is_measured():
    estimate = latency_at(_bench([100_000, 1_000_000], [13.0, 130.0]), 1_000_000)
    assert estimate.p95_ms == 130.0 and estimate.p50_ms == 65.0
    assert not estimate.projected and estimate.relative_error == 0.0


def test_scan_latency_projects_linearly_and_is_marked():
    sizes = [10_000, 100_000, 1_000_000]
    estimate = latency_at(_bench(sizes, [0.05 + 1.3e-4 * n for n in sizes]), 4_000_000)
    assert estimate.projected
    assert estimate.p95_ms == pytest.approx(0.05 + 1.3e-4 * 4_000_000)
    assert estimate.p50_ms == pytest.approx((0.05 + 1.3e-4 * 4_000_000) / 2)
    assert estimate.relative_error == pytest.approx(0.0, abs=1e-9)
    assert estimate.basis.startswith("projected to 4,000,000 from sizes 10,000, 100,000, 1,000,000 (linear")


def test_hnsw_latency_projects_logarithmically():
    sizes = [10_000, 100_000, 1_000_000]
    estimate = latency_at(_bench(sizes, [0.2 + 0.1 * math.log(n) for n in sizes], index_type="hnsw"), 10_000_000)
    assert estimate.p95_ms == pytest.approx(0.2 + 0.1 * math.log(10_000_000))
    assert "(a + b ln(corpus size) at its tuned efSearch" in estimate.basis


def test_projection_error_is_the_holdout_error_at_the_largest_size():
    # 1.3 ms at 10k and 13 ms at 100k extrapolate to 130 ms at 1M; 260 ms was measured: off by 50%.
    estimate = latency_at(_bench([10_000, 100_000, 1_000_000], [1.3, 13.0, 260.0]), 2_000_000)
    assert estimate.relative_error == pytest.approx(0.5)
    assert "holdout error 50% at 1,000,000" in estimate.basis


def test_two_sizes_project_with_unknown_error_and_one_size_cannot():
    two = latency_at(_bench([100_000, 1_000_000], [13.0, 130.0]), 2_000_000)
    assert two.projected and two.relative_error is None
    assert two.p95_ms == pytest.approx(260.0)
    assert "error unknown: two sizes" in two.basis
    one = latency_at(_bench([100_000], [13.0]), 2_000_000)
    assert one.p95_ms is None and not one.projected
    assert "two or more sizes" in one.basis


def test_no_rows_means_no_latency():
    estimate = latency_at(_bench([], []), 1000)
    assert estimate.p95_ms is None and estimate.basis == "no latency measured"


def test_storage_gb_uses_decimal_gigabytes():
    assert estimate_storage(1_000_000, 250, "fp32", "flat").storage_gb == 1_000_000_000 / GB


# -- past one machine --------------------------------------------------------------------------------------------


def test_a_billion_384_dim_fp32_vectors_need_35_shards_of_a_64_gb_machine():
    # 10**9 x 1536 B = 1.536 TB a replica; 70% of 64 GB = 44.8 GB usable: 1536 / 44.8 = 34.3 -> 35 shards.
    storage = estimate_storage(10**9, 384, "fp32", "flat", Deployment(replicas=2))
    plan = plan_shards(storage, 10**9, Machine.from_gb(64, cores=16))
    assert (plan.shards, plan.replicas, plan.machines) == (35, 2, 70)
    assert plan.per_shard_corpus_size == 28_571_429  # ceil(10**9 / 35)
    assert plan.ram_bytes_per_shard == 28_571_429 * 1536 <= 44.8e9
    assert plan.machine.cores == 16


def test_a_corpus_that_fits_one_machine_is_one_shard():
    plan = plan_shards(estimate_storage(1_000_000, 384, "fp32", "flat"), 1_000_000, Machine.from_gb(64, cores=8))
    assert (plan.shards, plan.machines, plan.per_shard_corpus_size) == (1, 1, 1_000_000)


def test_disk_resident_rescoring_vectors_do_not_count_against_ram():
    stages = [{"width": 32, "precision": "binary", "index_type": "binary", "shortlist_size": 200}, {"width": 384}]
    machine = Machine.from_gb(64, cores=8)
    in_ram = estimate_funnel_storage(10**9, stages, Deployment(rescore_location="ram"))
    on_disk = estimate_funnel_storage(10**9, stages, Deployment(rescore_location="disk"))
    # RAM: 4 + 1536 B a vector in RAM -> 35 shards; 4 B with the rescoring vectors on disk -> 1 shard.
    assert plan_shards(in_ram, 10**9, machine).shards == 35
    disk_plan = plan_shards(on_disk, 10**9, machine)
    assert disk_plan.shards == 1 and disk_plan.ram_bytes_per_shard == 4e9
    assert disk_plan.disk_bytes_per_shard == 1536e9


def test_ivf_centroids_are_counted_on_every_shard():
    # 1M lists x 384 floats = 1.536 GB of centroids on each shard, + (1536 + 8) B a vector.
    storage = estimate_storage(10**8, 384, "fp32", "ivf", Deployment(ivf_nlist=1_000_000))
    plan = plan_shards(storage, 10**8, Machine(ram_bytes=20 * GB, usable_ram_fraction=1.0))
    vectors_per_machine = (20e9 - 1.536e9) // 1544
    assert plan.shards == math.ceil(10**8 / vectors_per_machine)
    assert plan.ram_bytes_per_shard == pytest.approx(1.536e9 + 1544 * plan.per_shard_corpus_size)


@pytest.mark.parametrize(
    "ram_gb, corpus_size, index_type, message",
    [
        # 1.4 GB usable cannot hold 1.536 GB of centroids: a machine needs (1.536e9 + 1544) / 0.7 = 2.19 GB.
        (2, 10**8, "ivf", (
            "machine_ram_gb=2: smaller than one shard: 1.4 GB usable (70% of its RAM), but one vector and the "
            "index's fixed part (IVF centroids) need 1.54 GB; expected a machine of at least 2.19 GB"
        )),
        # 7 MB usable holds 4,557 vectors of 1536 B; 10**12 of them need 219,442,616 machines. 10**7 a machine
        # (the most MAX_SHARDS allows) is 15.36 GB, so 15.36 / 0.7 = 21.9 GB.
        (0.01, 10**12, "flat", (
            "machine_ram_gb=0.01: the corpus would need 219,442,616 shards (0.007 GB usable (70% of its RAM) each); "
            f"expected a machine that holds it in at most {MAX_SHARDS:,}: at least 21.9 GB"
        )),
    ],
)
def test_a_machine_too_small_is_refused_with_the_size_that_would_do(ram_gb, corpus_size, index_type, message):
    storage = estimate_storage(corpus_size, 384, "fp32", index_type, Deployment(ivf_nlist=1_000_000))
    with pytest.raises(ValueError) as error:
        plan_shards(storage, corpus_size, Machine.from_gb(ram_gb, cores=1))
    assert str(error.value) == message


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"ram_gb": 0}, "machine_ram_gb=0: expected a number of GB > 0"),
        ({"ram_gb": -8.0}, "machine_ram_gb=-8.0: expected a number of GB > 0"),
        ({"ram_gb": math.inf}, "machine_ram_gb=inf: expected a number of GB > 0"),
        ({"ram_gb": 64, "cores": 0}, "machine_cores=0: expected a whole number >= 1"),
    ],
)
def test_a_bad_machine_size_names_the_option(arguments, message):
    with pytest.raises(ValueError) as error:
        Machine.from_gb(**arguments)
    assert str(error.value) == message


def test_this_machine_is_read_from_the_os_and_bad_fields_are_refused():
    import os

    machine = Machine.this()
    assert 0 < machine.ram_bytes <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 1 <= machine.cores <= os.cpu_count()
    assert machine.usable_ram_bytes == pytest.approx(0.7 * machine.ram_bytes)
    with pytest.raises(ValueError, match="ram_bytes=0: expected a whole number of bytes >= 1"):
        Machine(ram_bytes=0)
    with pytest.raises(ValueError, match=r"usable_ram_fraction=1.5: expected a number in \(0, 1\]"):
        Machine(ram_bytes=10**9, usable_ram_fraction=1.5)


@pytest.mark.parametrize(
    "corpus_size, message",
    [
        (0, "corpus_size=0: expected a positive whole number of vectors"),
        (1.5e6, "corpus_size=1500000.0: expected a positive whole number of vectors"),
        (10**12 + 1, "corpus_size=1000000000001: expected at most 1,000,000,000,000 vectors (10**12)"),
    ],
)
def test_a_corpus_size_out_of_range_is_refused(corpus_size, message):
    with pytest.raises(ValueError) as error:
        check_corpus_size(corpus_size)
    assert str(error.value) == message
    check_corpus_size(10**12)


def test_merging_shards_keeps_the_overall_top_k():
    rng = np.random.default_rng(3)
    scores = -np.sort(-rng.random((7, 10)).astype("float32"), axis=1)
    ids = rng.permutation(70).reshape(7, 10).astype("int64")
    merged_scores, merged_ids = merge_top_k(scores, ids)
    best = np.argsort(-scores.ravel(), kind="stable")[:10]
    assert merged_ids.tolist() == ids.ravel()[best].tolist()
    assert merged_scores.tolist() == scores.ravel()[best].tolist()


def test_merge_cost_is_measured_for_several_shards_and_nothing_for_one():
    assert merge_cost_ms(1) == (0.0, 0.0)
    p50_ms, p95_ms = merge_cost_ms(8)
    assert 0 < p50_ms <= p95_ms
    assert merge_cost_ms(8) == (p50_ms, p95_ms)  # measured once per process


def _shards_of_a_million(shards):
    """A plan that puts exactly 1M 384-d fp32 vectors on each of ``shards`` machines."""
    corpus_size = shards * 1_000_000
    machine = Machine(ram_bytes=1_536_000_000, usable_ram_fraction=1.0)
    return plan_shards(estimate_storage(corpus_size, 384, "fp32", "flat"), corpus_size, machine)


def test_sharded_latency_is_one_shard_at_its_own_size_plus_the_merge():
    rows = _bench([100_000, 1_000_000], [13.0, 130.0])
    plan = _shards_of_a_million(4)
    assert (plan.shards, plan.per_shard_corpus_size) == (4, 1_000_000)
    estimate = sharded_latency_at(rows, plan)
    merge_p50_ms, merge_p95_ms = merge_cost_ms(4)
    # 1M a shard was measured: the latency is measured, not projected to the 4M corpus.
    assert not estimate.projected and estimate.relative_error == 0.0
    assert estimate.p95_ms == pytest.approx(130.0 + merge_p95_ms)
    assert estimate.p50_ms == pytest.approx(65.0 + merge_p50_ms)
    assert estimate.basis.startswith(
        "4 shards of 1,000,000 vectors searched in parallel, one a machine: measured at 1,000,000"
    )
    assert "network time not included" in estimate.basis
    # Past the measured sizes a shard's latency is projected to its own size (2M), with that projection's error.
    machine = Machine(ram_bytes=3_072_000_000, usable_ram_fraction=1.0)
    plan = plan_shards(estimate_storage(6_000_000, 384, "fp32", "flat"), 6_000_000, machine)
    assert (plan.shards, plan.per_shard_corpus_size) == (3, 2_000_000)
    projected = sharded_latency_at(rows, plan)
    assert projected.projected and projected.relative_error is None  # two sizes: error unknown
    assert projected.p95_ms == pytest.approx(latency_at(rows, 2_000_000).p95_ms + merge_cost_ms(3)[1])
    assert "projected to 2,000,000" in projected.basis


def test_one_shard_is_plain_latency_at_the_corpus_size():
    rows = _bench([100_000, 1_000_000], [13.0, 130.0])
    assert sharded_latency_at(rows, _shards_of_a_million(1)) == latency_at(rows, 1_000_000)
