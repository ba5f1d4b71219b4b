"""Export a chosen configuration as JSON, a FAISS factory string and a Qdrant collection + query to paste.

A configuration is the planner's shape: {"stages": [{width, precision, index_type, shortlist_size}, ...],
"method": ...}; one stage is a single index, more are a funnel (stage 1 searches, later stages rescore its
shortlist with wider prefixes of the same stored vector). A planner candidate also carries its shard plan
(``shards``, ``per_shard_corpus_size``); past one shard, each export says how to split the corpus.
"""

from __future__ import annotations

import json

from mrl_core.deployment import Deployment
from mrl_core.indexes import BINARY_PRECISIONS, HNSW_M, check_index_precision, default_ivf_nlist
from mrl_core.widths import METHODS

# FAISS scalar-quantizer names for the float precisions (faiss index_factory grammar).
FAISS_ENCODINGS = {"fp32": "Flat", "fp16": "SQfp16", "int8": "SQ8"}
QDRANT_DISTANCE = "Cosine"  # Cosine renormalises stored vectors, so raw prefixes can be uploaded as they are


def faiss_factory_string(
    width: int,
    precision: str,
    index_type: str,
    *,
    method: str = "prefix",
    hnsw_m: int = HNSW_M,
    ivf_nlist: int | None = None,
    corpus_size: int | None = None,
) -> str:
    """The FAISS factory string for one index.

    Float codes go to ``faiss.index_factory(width, string, faiss.METRIC_INNER_PRODUCT)``: 'Flat', 'SQfp16',
    'SQ8', 'HNSW32,SQ8', 'IVF4000,Flat'... Bit codes go to ``faiss.index_binary_factory(width, string)``:
    'BFlat', 'BHNSW32', 'BIVF4000'. For ``method='pca'`` a float index starts with FAISS's own
    'PCA{width},L2norm,' pre-transform (centre, rotate onto the principal axes, keep ``width``, renormalise:
    what the evaluation measured), takes full-width vectors and must be trained on the corpus.

    Args:
        width: dimensions of the prefix (bits, for binary codes; FAISS needs a multiple of 8).
        precision: 'fp32', 'fp16', 'int8', 'binary' or 'binary+rescore'.
        index_type: 'flat', 'hnsw', 'ivf' or 'binary'.
        method: 'prefix' (the caller slices the first ``width`` dims) or 'pca'.
        hnsw_m: HNSW links per vector.
        ivf_nlist: IVF lists; None takes 4*sqrt(corpus_size), so corpus_size is then required.
        corpus_size: vectors the index will hold (only used to size IVF).

    Raises:
        ValueError: an index/precision pair FAISS cannot build, or IVF without a size.
    """
    check_index_precision(index_type, precision)
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(METHODS)}")
    nlist = ivf_nlist
    if index_type == "ivf" and nlist is None:
        if corpus_size is None:
            raise ValueError("index_type='ivf' needs ivf_nlist or corpus_size to size its lists")
        nlist = default_ivf_nlist(corpus_size)
    if precision in BINARY_PRECISIONS:
        if width % 8:
            raise ValueError(f"width={width}: FAISS binary indexes need a multiple of 8 bits")
        return {"binary": "BFlat", "hnsw": f"BHNSW{hnsw_m}", "ivf": f"BIVF{nlist}"}[index_type]
    encoding = FAISS_ENCODINGS[precision]
    pre_transform = f"PCA{width},L2norm," if method == "pca" else ""
    if index_type == "hnsw":
        return f"{pre_transform}HNSW{hnsw_m},{encoding}"
    if index_type == "ivf":
        return f"{pre_transform}IVF{nlist},{encoding}"
    return f"{pre_transform}{encoding}"


def faiss_export(
    config: dict,
    *,
    full_width: int | None = None,
    corpus_size: int | None = None,
    deployment: Deployment = Deployment(),
) -> dict:
    """What to build in FAISS: the stage-1 factory string, which factory takes it, its input, and what
    later stages read. ``full_width`` is needed for a PCA configuration (its index takes full vectors);
    ``deployment`` gives HNSW M and IVF lists (None: sized from ``corpus_size``). A configuration the planner
    split over several shards (its ``shards``) also gets ``sharding``: how to build and search the shards."""
    stages = config["stages"]
    first = stages[0]
    width = int(first["width"])
    method = config.get("method", "prefix")
    binary = first["precision"] in BINARY_PRECISIONS
    if method == "pca" and full_width is None:
        raise ValueError("a PCA configuration needs full_width: its index takes full-width vectors")
    if binary:
        reduce = "the first {w} PCA components (centre, rotate, keep {w})" if method == "pca" else "the first {w} dims"
        model_input = f"sign bits of {reduce.format(w=width)}, packed with numpy.packbits"
    elif method == "pca":
        model_input = f"full {full_width}-dim vectors; train the index on the corpus so PCA{width} learns its axes"
    else:
        model_input = f"the first {width} dims, L2-renormalised"
    export = {
        "factory_string": faiss_factory_string(
            width, first["precision"], first["index_type"], method="prefix" if binary else method,
            hnsw_m=deployment.hnsw_m, ivf_nlist=deployment.ivf_nlist, corpus_size=corpus_size,
        ),
        "factory": "faiss.index_binary_factory" if binary else "faiss.index_factory",
        "dimension": full_width if method == "pca" and not binary else width,
        "metric": "hamming" if binary else "METRIC_INNER_PRODUCT",
        "input": model_input,
    }
    if first["precision"] == "binary+rescore":
        export["rescore"] = "rescore the Hamming shortlist with the float query against the unpacked bits"
    if _shards(config) > 1:
        export["sharding"] = _faiss_sharding(config, deployment, binary=binary)
    if len(stages) > 1:
        export["rescore_stages"] = [
            {
                "width": int(stage["width"]),
                "precision": stage.get("precision", "fp32"),
                "reads": f"the first {int(stage['width'])} dims of the stored vectors, renormalised",
                "candidates_in": int(previous["shortlist_size"]) if previous.get("shortlist_size") else None,
            }
            for previous, stage in zip(stages, stages[1:])
        ]
    return export


def _shards(config: dict) -> int:
    return int(config.get("shards") or 1)


def _faiss_sharding(config: dict, deployment: Deployment, *, binary: bool) -> dict:
    """How to split a configuration the planner sharded over several FAISS machines."""
    shards = _shards(config)
    per_shard = config.get("per_shard_corpus_size")
    size = f"{int(per_shard):,} vectors" if per_shard else f"1/{shards} of the corpus"
    stages = config["stages"]
    build = (
        f"one index per shard, each built with this factory string over {size} (shard i holds rows "
        f"i*n .. (i+1)*n-1 with n = ceil(corpus size / {shards})); add them with their global ids "
        "(faiss.IndexIDMap, or add the shard's first row to the ids each shard returns)"
    )
    if stages[0].get("index_type") == "ivf":
        build += "; train one coarse quantizer on a sample of the whole corpus and give every shard a copy"
    if len(stages) > 1:
        build += "; each shard keeps its own vectors' rescoring prefixes and runs the whole funnel on them"
    order = "smallest Hamming distance first (keep_max=False)" if binary else "highest inner product first (keep_max=True)"
    return {
        "shards": shards,
        "replicas": deployment.replicas,
        "machines": shards * deployment.replicas,
        "vectors_per_shard": int(per_shard) if per_shard else None,
        "build": build,
        "search": (
            f"send each query to all {shards} shards at once, ask each for the top k, and merge the {shards} x k "
            f"results with faiss.merge_knn_results, {order}; faiss.IndexShards does both within one process"
        ),
    }


def _vector_name(width: int, full_width: int, method: str) -> str:
    return "full" if width == full_width and method == "prefix" else f"{method}_{width}"


def _qdrant_vector(stage: dict, *, searched: bool, hnsw_m: int) -> tuple[dict, dict]:
    """A named-vector definition and the search params that go with it."""
    precision = stage.get("precision", "fp32")
    index_type = stage.get("index_type", "flat")
    vector = {"size": int(stage["width"]), "distance": QDRANT_DISTANCE}
    params: dict = {}
    if precision == "fp16":
        vector["datatype"] = "float16"
    elif precision == "int8":
        # Only the int8 codes in RAM; Qdrant keeps the originals too, so they go to disk.
        vector["quantization_config"] = {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}
        vector["on_disk"] = True
        params["quantization"] = {"rescore": False}
    elif precision in BINARY_PRECISIONS:
        vector["quantization_config"] = {"binary": {"always_ram": True}}
        vector["on_disk"] = True
        params["quantization"] = {"rescore": precision == "binary+rescore"}
    if not searched or index_type != "hnsw":
        # Rescoring vectors and full scans need no graph; with m=0 Qdrant builds none and scans every vector
        # (through the quantized codes where there are some).
        vector["hnsw_config"] = {"m": 0}
    else:
        vector["hnsw_config"] = {"m": hnsw_m}
    return vector, params


def qdrant_export(
    config: dict,
    full_width: int,
    *,
    collection_name: str = "mrl",
    top_k: int = 10,
    deployment: Deployment = Deployment(),
) -> dict:
    """A Qdrant collection definition and Query API request for a configuration.

    Each stage's width is a named vector ('prefix_64', or 'full' at the full width). A funnel becomes the
    Query API's nested ``prefetch``: the innermost prefetch searches stage 1 ``using`` its prefix vector
    with ``limit`` = its shortlist, each outer level rescores with the next (wider) vector, and the top
    level returns the last stage's ``shortlist_size`` (k). A plan of several shards sets the collection's
    ``shard_number``, and replicas set its ``replication_factor``.

    Args:
        config: {"stages": [...]} as the planner gives it, with its ``shards`` when it has more than one.
        full_width: the model's full embedding width.
        collection_name: the collection to create.
        top_k: results returned when the last stage does not say (its shortlist_size is k).
        deployment: gives the HNSW links (M) of a stage-1 'hnsw' index, and the replicas.

    Returns:
        {"create_collection": {"method": "PUT", "path": ..., "body": ...},
         "query": {"method": "POST", "path": ..., "body": ...}, "notes": [...]}; query vectors are
        placeholders naming which prefix to send.
    """
    stages = config["stages"]
    method = config.get("method", "prefix")
    vectors: dict[str, dict] = {}
    stage_params = []
    notes = []
    for position, stage in enumerate(stages):
        if int(stage["width"]) > full_width:
            raise ValueError(f"stages[{position}].width={stage['width']} exceeds full_width={full_width}")
        name = _vector_name(int(stage["width"]), full_width, method)
        if name in vectors:
            # Two stages reading the same width at different precisions need two stored vectors.
            name = f"{name}_{stage.get('precision', 'fp32').replace('+', '_')}"
        vector, params = _qdrant_vector(stage, searched=position == 0, hnsw_m=deployment.hnsw_m)
        vectors[name] = vector
        stage_params.append((name, params))
    if stages[0].get("index_type") == "ivf":
        notes.append("Qdrant has no IVF index; stage 1 is exported as a full scan (hnsw_config.m = 0)")
    if method == "pca":
        notes.append("upload the corpus's PCA components (centre, rotate, keep the first N), not raw prefixes")
    if stages[0].get("precision") == "binary+rescore":
        notes.append("Qdrant rescores binary candidates against the original vectors (kept on disk)")
    shards, replicas = _shards(config), deployment.replicas
    placement: dict = {}
    if shards > 1:
        placement["shard_number"] = shards
        notes.append(
            f"shard_number {shards}: run a distributed Qdrant cluster of {shards * replicas} nodes "
            f"({shards} shards x {replicas} replicas, one shard a node); Qdrant sends each query to every shard "
            "and merges their results"
        )
    if replicas > 1:
        placement["replication_factor"] = replicas

    def placeholder(name: str) -> str:
        width = vectors[name]["size"]
        return f"<query embedding: first {width} {'PCA components' if method == 'pca' else 'dims'}>"

    query: dict = {}
    for position, (name, params) in enumerate(stage_params):
        level = {"query": placeholder(name), "using": name}
        level["limit"] = int(stages[position].get("shortlist_size") or top_k)
        if params:
            level["params"] = params
        if query:
            level["prefetch"] = query
        query = level
    query["with_payload"] = True
    return {
        "create_collection": {
            "method": "PUT",
            "path": f"/collections/{collection_name}",
            "body": {"vectors": vectors, **placement},
        },
        "query": {"method": "POST", "path": f"/collections/{collection_name}/points/query", "body": query},
        "notes": notes,
    }


def config_json(config: dict, *, full_width: int | None = None) -> str:
    """The configuration as indented JSON (stages, method, storage and the measurements behind it)."""
    keep = (
        "label", "kind", "method", "stages", "storage_bytes", "ram_bytes", "disk_bytes", "rescore_location",
        "p50_ms", "p95_ms", "latency_projected", "latency_error", "latency_basis", "ndcg_at_10", "recall_at_10",
        "retention", "quality_source", "margins", "shards", "machines", "per_shard_corpus_size", "ram_bytes_per_shard",
        "merge_ms",
    )
    payload = {key: config[key] for key in keep if key in config}
    if full_width is not None:
        payload["full_width"] = full_width
    return json.dumps(payload, indent=2, default=str)


def export_all(
    config: dict,
    full_width: int,
    *,
    corpus_size: int | None = None,
    deployment: Deployment = Deployment(),
    top_k: int = 10,
) -> dict:
    """Every export of one configuration: {"json": ..., "faiss": ..., "qdrant": ...}, built for ``deployment``
    (the one the planner costed)."""
    return {
        "json": json.loads(config_json(config, full_width=full_width)),
        "faiss": faiss_export(config, full_width=full_width, corpus_size=corpus_size, deployment=deployment),
        "qdrant": qdrant_export(config, full_width, top_k=top_k, deployment=deployment),
    }
