import math

import faiss
import numpy as np
import pandas as pd
import pytest

from mrl_core.cost import (
    GB,
    estimate_funnel_storage,
    estimate_storage,
    latency_at,
    rescore_bytes_per_vector,
)
from mrl_core.deployment import Deployment


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
    assert "(log in corpus size" in estimate.basis


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
