"""Builders for tiny on-disk datasets (BEIR folders, zips, tables) shared by tests."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

TINY_CORPUS = [
    {"_id": "d1", "title": "Alpha", "text": "first body"},
    {"_id": "d2", "text": "second body"},
    {"_id": "d3", "title": "Gamma ", "text": ""},
]
TINY_QUERIES = [
    {"_id": "q2", "text": "second question"},
    {"_id": "q1", "text": "first question"},
    {"_id": "q3", "text": "third question"},
    {"_id": "q4", "text": "unused question"},
]
TINY_TEST_QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d3", 0)]
TINY_TRAIN_QRELS = [("q3", "d1", 1), ("q3", "d2", 0)]


def jsonl(records: list) -> str:
    """One JSON value per line; strings are written as they are (for malformed lines)."""
    return "".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records)


def qrels_tsv(rows: list[tuple], header: str = "query-id\tcorpus-id\tscore") -> str:
    return header + "\n" + "".join("\t".join(str(part) for part in row) + "\n" for row in rows)


def write_beir(
    folder: Path,
    *,
    corpus: list | str | bytes = TINY_CORPUS,
    queries: list | str | bytes | None = TINY_QUERIES,
    test: list | str | None = TINY_TEST_QRELS,
    train: list | str | None = TINY_TRAIN_QRELS,
) -> Path:
    """Write a BEIR folder; lists become jsonl/tsv, str and bytes are written verbatim, None leaves a file out."""
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, value, render) -> None:
        if value is None:
            return
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value if isinstance(value, str) else render(value), encoding="utf-8")

    write("corpus.jsonl", corpus, jsonl)
    write("queries.jsonl", queries, jsonl)
    write("qrels/test.tsv", test, qrels_tsv)
    write("qrels/train.tsv", train, qrels_tsv)
    return folder


def zip_folder(folder: Path, zip_path: Path, *, inner: str = "") -> Path:
    """Zip every file under ``folder``, placed under ``inner/`` inside the archive ('' = top level)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                archive.write(path, f"{inner}/{relative}" if inner else relative)
    return zip_path


def large_miniature_entries(distractors: int = 400) -> list:
    """A miniature of ``builtin:large``: the entries its example queries should find, among generated definitions."""
    from mrl_core.builtin.gcide import Entry

    targets = {
        "Thermometer": "n. An instrument for measuring temperature, founded on the principle that changes of "
                       "temperature in bodies are accompanied by proportional changes in their volumes.",
        "Chameleon": "n. (Zool.) A lizardlike reptile of the genus Chamaeleo, having the faculty of changing the "
                     "color of the skin, to harmonize with the color of contiguous objects.",
        "Palindrome": "n. A word, verse, or sentence, that is the same when read backward or forward.",
        "Astronomy": "n. The science which treats of the celestial bodies, of their magnitudes, motions, distances, "
                     "periods of revolution, eclipses, constitution, physical condition, and of the causes of their "
                     "various phenomena.",
        "Calligraphy": "n. Fair or elegant penmanship.",
    }
    things = ["tool", "vessel", "garment", "plant", "bird", "stone", "dance", "coin", "fish", "song", "tax", "wagon",
              "sword", "fabric", "grain", "disease", "office", "ship", "beetle", "lamp"]
    uses = ["carrying water", "measuring land", "binding books", "catching eels", "weaving silk", "cutting hay",
            "storing grain", "signalling ships", "brewing ale", "dyeing wool", "shoeing horses", "polishing brass",
            "trimming hedges", "grinding corn", "mending nets", "tanning hides", "pressing grapes", "roofing barns",
            "spinning flax", "smelting iron"]
    places = ["Scotland", "Persia", "Peru", "Norway", "India", "Wales", "Egypt", "Spain"]
    entries = [Entry(term.lower(), term, text, False) for term, text in targets.items()]
    for number in range(distractors):
        thing, use = things[number % len(things)], uses[(number // len(things)) % len(uses)]
        place = places[(number // (len(things) * len(uses))) % len(places)]
        term = f"Term{number:04d}"
        entries.append(Entry(term.lower(), term, f"n. A {thing} used in {place} for {use}.", False))
    return entries
