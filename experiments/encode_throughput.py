"""Encoding throughput of mrl_core's cached encoder vs a plain SentenceTransformer.encode.

Goal (issue 2): mrl_core.encode.encode_texts reaches >= 0.95x the throughput of a plain
SentenceTransformer.encode on the same texts, same batch size. Runs alternate to share machine noise.

    python experiments/encode_throughput.py [--data ../shared/data/scifact] [--texts 1024] [--repeats 3]
"""

import argparse
import time

import torch

from mrl_core.data import load_dataset
from mrl_core.encode import encode_texts, load_sentence_transformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    texts = load_dataset(args.data).corpus_texts[: args.texts]
    model = load_sentence_transformer("base")
    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up: first call pays lazy initialisation

    plain_s, ours_s = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        plain_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        encode_texts("base", texts, batch_size=args.batch_size)
        ours_s.append(time.perf_counter() - started)

    plain_rate, ours_rate = len(texts) / min(plain_s), len(texts) / min(ours_s)
    print(f"setup: {len(texts)} texts from {args.data}, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"best of {args.repeats}")
    print(f"plain SentenceTransformer.encode: {plain_rate:.1f} texts/s")
    print(f"mrl_core encode_texts:            {ours_rate:.1f} texts/s")
    print(f"ratio: {ours_rate / plain_rate:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
