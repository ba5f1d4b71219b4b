"""Check the cost model's bytes-per-vector against what FAISS actually serialises.

Builds every index the planner can export (factory strings from mrl_core.export) over random unit
vectors, serialises it, and prints measured bytes per vector next to mrl_core.cost's formula.
Rerun: python -m experiments.storage_formula_check [--corpus-size 20000]  (~50 s on 2 cores)
"""

import argparse

import faiss
import numpy as np

from mrl_core.cost import estimate_storage
from mrl_core.export import faiss_factory_string

COMBINATIONS = [
    ("fp32", "flat"), ("fp16", "flat"), ("int8", "flat"), ("binary", "binary"),
    ("fp32", "hnsw"), ("int8", "hnsw"), ("binary", "hnsw"), ("fp32", "ivf"), ("int8", "ivf"), ("binary", "ivf"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus-size", type=int, default=20000)
    parser.add_argument("--widths", default="64,384")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"faiss {faiss.__version__}, threads {faiss.omp_get_max_threads()}, corpus_size {args.corpus_size}, hnsw M 32")
    print(f"{'width':>5} {'precision':<9} {'index':<6} {'factory':<14} {'formula B/vec':>13} {'faiss B/vec':>11} {'ratio':>6}")
    for width in (int(w) for w in args.widths.split(",")):
        vectors = rng.standard_normal((args.corpus_size, width)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        bits = np.packbits(vectors > 0, axis=1)
        for precision, index_type in COMBINATIONS:
            factory = faiss_factory_string(width, precision, index_type, corpus_size=args.corpus_size)
            if precision == "binary":
                index = faiss.index_binary_factory(width, factory)
                index.train(bits)
                index.add(bits)
                measured = len(faiss.serialize_index_binary(index))
            else:
                index = faiss.index_factory(width, factory, faiss.METRIC_INNER_PRODUCT)
                index.train(vectors)
                index.add(vectors)
                measured = len(faiss.serialize_index(index))
            formula = estimate_storage(args.corpus_size, width, precision, index_type).storage_bytes
            print(
                f"{width:>5} {precision:<9} {index_type:<6} {factory:<14} {formula / args.corpus_size:>13.1f} "
                f"{measured / args.corpus_size:>11.1f} {measured / formula:>6.3f}"
            )


if __name__ == "__main__":
    main()
