"""Dataset loaders: every input format, exact contents, and one actionable error per malformed input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mrl_core.data
from mrl_core.data import DatasetError, RetrievalDataset, load_dataset, load_uploaded, split_pairs
from tests.fixtures_data import jsonl, qrels_tsv, write_beir, zip_folder

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"

TINY_CORPUS_TEXTS = ["Alpha first body", "second body", "Gamma"]
TINY_QRELS = {"q2": {"d2": 2, "d3": 0}, "q1": {"d1": 1}}

PAIRS = [
    ("what is alpha", "alpha is the first letter"),
    ("what is beta", "beta is the second letter"),
    ("first greek letter", "alpha is the first letter"),
    ("what is alpha", "alpha, also written 'A'"),
]
PAIRS_CORPUS = ["alpha is the first letter", "beta is the second letter", "alpha, also written 'A'"]
PAIRS_QUERIES = ["what is alpha", "what is beta", "first greek letter"]
PAIRS_QRELS = {"q0": {"d0": 1, "d2": 1}, "q1": {"d1": 1}, "q2": {"d0": 1}}


def write_pairs(path: Path, pairs=PAIRS, columns=("query", "positive")) -> Path:
    frame = pd.DataFrame(pairs, columns=list(columns))
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        path.write_text(jsonl(frame.to_dict("records")), encoding="utf-8")
    else:
        frame.to_parquet(path, index=False)
    return path


def write_vectors_parquet(path: Path, ids: list, vectors: list, *, vector_type=None) -> Path:
    vector_array = pa.array(vectors, type=vector_type or pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": ids, "embedding": vector_array}), path)
    return path


# ---------------------------------------------------------------- BEIR


def test_beir_folder_exact_contents(tmp_path):
    dataset = load_dataset(str(write_beir(tmp_path / "tiny")))
    assert dataset.name == "tiny"
    assert dataset.corpus_ids == ["d1", "d2", "d3"]
    assert dataset.corpus_texts == TINY_CORPUS_TEXTS
    assert dataset.query_ids == ["q2", "q1"]  # queries.jsonl order, not test.tsv order
    assert dataset.query_texts == ["second question", "first question"]
    assert dataset.qrels == TINY_QRELS
    assert dataset.train_pairs == [("third question", "Alpha first body")]  # score-0 train row dropped
    assert dataset.judged_query_ids() == ["q2", "q1"]
    assert not dataset.is_precomputed


def test_beir_without_test_qrels_keeps_unlabelled_non_training_queries(tmp_path):
    dataset = load_dataset(str(write_beir(tmp_path / "tiny", test=None)))
    assert dataset.query_ids == ["q2", "q1", "q4"]
    assert dataset.qrels == {}
    assert not dataset.has_labels
    assert dataset.train_pairs == [("third question", "Alpha first body")]


def test_beir_train_pairs_skip_queries_judged_in_test(tmp_path):
    folder = write_beir(tmp_path / "tiny", train=[("q1", "d2", 1), ("q3", "d1", 1)])
    assert load_dataset(str(folder)).train_pairs == [("third question", "Alpha first body")]


@pytest.mark.parametrize("inner", ["", "tiny"])
def test_beir_zip_matches_folder(tmp_path, inner):
    folder = write_beir(tmp_path / "tiny")
    archive = zip_folder(folder, tmp_path / "upload.zip", inner=inner)
    from_folder = load_dataset(str(folder))
    from_zip = load_dataset(str(archive))
    assert from_zip.name == "upload"
    assert from_zip.source == str(archive)
    assert from_zip.corpus_texts == from_folder.corpus_texts
    assert from_zip.qrels == from_folder.qrels
    assert from_zip.train_pairs == from_folder.train_pairs
    assert from_zip.fingerprint == from_folder.fingerprint


def test_beir_zip_ignores_macos_resource_forks(tmp_path):
    archive = zip_folder(write_beir(tmp_path / "tiny"), tmp_path / "mac.zip", inner="tiny")
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr("__MACOSX/tiny/._corpus.jsonl", b"\x00\x05\x16\x07")
    assert load_dataset(str(archive)).corpus_ids == ["d1", "d2", "d3"]


def test_fingerprint_stable_across_loads_and_sensitive_to_content(tmp_path):
    folder = write_beir(tmp_path / "tiny")
    first = load_dataset(str(folder)).fingerprint
    assert load_dataset(str(folder)).fingerprint == first
    assert len(first) == 16
    corpus = (folder / "corpus.jsonl").read_text().replace("second body", "second bodies")
    (folder / "corpus.jsonl").write_text(corpus)
    assert load_dataset(str(folder)).fingerprint != first


def test_scifact_counts():
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} is not present")
    dataset = load_dataset(str(SCIFACT))
    assert dataset.corpus_size == 5183
    assert len(dataset.query_ids) == 300
    assert len(dataset.judged_query_ids()) == 300
    assert sum(len(judged) for judged in dataset.qrels.values()) == 339
    assert len(dataset.train_pairs) == 919
    # Spot checks the dataset README lists: query 133 -> 5 docs, 1395 -> 17717391.
    assert len(dataset.qrels["133"]) == 5
    assert dataset.qrels["1395"] == {"17717391": 1}
    assert dataset.query_texts[0] == "0-dimensional biomaterials show inductive properties."


# ---------------------------------------------------------------- pairs


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_pairs_every_format(tmp_path, suffix):
    dataset = load_dataset(str(write_pairs(tmp_path / f"pairs{suffix}")))
    assert dataset.name == "pairs"
    assert dataset.corpus_ids == ["d0", "d1", "d2"]
    assert dataset.corpus_texts == PAIRS_CORPUS
    assert dataset.query_ids == ["q0", "q1", "q2"]
    assert dataset.query_texts == PAIRS_QUERIES
    assert dataset.qrels == PAIRS_QRELS
    assert dataset.train_pairs == []


def test_pairs_fingerprint_ignores_format(tmp_path):
    paths = [write_pairs(tmp_path / f"pairs{suffix}") for suffix in (".csv", ".parquet")]
    fingerprints = {load_dataset(str(path)).fingerprint for path in paths}
    assert len(fingerprints) == 1


def test_pairs_anchor_column(tmp_path):
    dataset = load_dataset(str(write_pairs(tmp_path / "pairs.csv", columns=("anchor", "positive"))))
    assert dataset.qrels == PAIRS_QRELS


def test_split_pairs_is_disjoint_deterministic_and_order_free(tmp_path):
    pairs = [(f"question number {index}", f"answer number {index}") for index in range(10)]
    dataset = load_dataset(str(write_pairs(tmp_path / "pairs.csv", pairs=pairs)))
    split = split_pairs(dataset, test_fraction=0.2)
    assert len(split.query_ids) == 2
    assert len(split.train_pairs) == 8
    held_out = set(split.query_texts)
    assert held_out.isdisjoint(query for query, _ in split.train_pairs)
    assert set(split.qrels) == set(split.query_ids)
    assert split.corpus_ids == dataset.corpus_ids
    for query_id, query in zip(split.query_ids, split.query_texts):
        (doc_id,) = split.qrels[query_id]
        assert split.corpus_texts[split.corpus_ids.index(doc_id)] == query.replace("question", "answer")
    again = split_pairs(load_dataset(str(write_pairs(tmp_path / "reversed.csv", pairs=pairs[::-1]))), test_fraction=0.2)
    assert set(again.query_texts) == held_out
    assert split.fingerprint != dataset.fingerprint


def test_split_pairs_rejects_bad_inputs(tmp_path):
    dataset = load_dataset(str(write_pairs(tmp_path / "pairs.csv")))
    with pytest.raises(ValueError, match="test_fraction must be strictly between 0 and 1, got 1.0"):
        split_pairs(dataset, test_fraction=1.0)
    single = load_dataset(str(write_pairs(tmp_path / "one.csv", pairs=[("q", "p")])))
    with pytest.raises(DatasetError, match="1 judged queries; split_pairs needs at least 2"):
        split_pairs(single)
    np.save(tmp_path / "vectors.npy", np.eye(2))
    with pytest.raises(DatasetError, match="holds embeddings, not texts"):
        split_pairs(load_dataset(str(tmp_path / "vectors.npy")))


# ---------------------------------------------------------------- plain corpus


def test_corpus_table_with_ids_and_titles(tmp_path):
    path = tmp_path / "docs.csv"
    frame = pd.DataFrame({"id": [10, 11], "title": ["Head", ""], "text": ["body, with comma", " spaced "]})
    frame.to_csv(path, index=False)
    dataset = load_dataset(str(path))
    assert dataset.corpus_ids == ["10", "11"]
    assert dataset.corpus_texts == ["Head body, with comma", "spaced"]
    assert dataset.query_ids == [] and dataset.qrels == {} and not dataset.has_labels


def test_corpus_jsonl_without_ids_uses_row_numbers(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(jsonl([{"text": "one"}, {"text": "two"}]) + "\n")
    dataset = load_dataset(str(path))
    assert dataset.corpus_ids == ["0", "1"]
    assert dataset.corpus_texts == ["one", "two"]


def test_corpus_txt_one_document_per_line(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes("first document\r\n\n  second document \n".encode("utf-8"))
    dataset = load_dataset(str(path))
    assert dataset.corpus_ids == ["1", "3"]
    assert dataset.corpus_texts == ["first document", "second document"]


def test_csv_fields_longer_than_csv_default_limit(tmp_path):
    long_text = "word " * 40_000  # 200,000 characters, over the csv module's 131,072 default
    path = tmp_path / "long.csv"
    pd.DataFrame({"text": [long_text]}).to_csv(path, index=False)
    assert load_dataset(str(path)).corpus_texts == [long_text.strip()]


# ---------------------------------------------------------------- precomputed embeddings


def test_npy_with_companions(tmp_path):
    corpus = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], dtype=np.float64)
    queries = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=np.float32)
    np.save(tmp_path / "vectors.npy", corpus)
    np.save(tmp_path / "vectors.queries.npy", queries)
    (tmp_path / "vectors.qrels.tsv").write_text(qrels_tsv([("1", "0", 1), ("1", "2", 2)]))
    dataset = load_dataset(str(tmp_path / "vectors.npy"))
    assert dataset.is_precomputed
    assert dataset.corpus_ids == ["0", "1", "2"]
    assert dataset.corpus_texts is None and dataset.query_texts is None
    assert dataset.corpus_embeddings.dtype == np.float32
    np.testing.assert_array_equal(dataset.corpus_embeddings, corpus.astype(np.float32))
    np.testing.assert_array_equal(dataset.query_embeddings, queries)
    assert dataset.query_ids == ["0", "1"]
    assert dataset.qrels == {"1": {"0": 1, "2": 2}}
    assert dataset.judged_query_ids() == ["1"]


def test_npy_alone_has_no_queries(tmp_path):
    np.save(tmp_path / "alone.npy", np.ones((2, 4), dtype=np.float16))
    dataset = load_dataset(str(tmp_path / "alone.npy"))
    assert dataset.corpus_embeddings.shape == (2, 4)
    assert dataset.query_embeddings is None and dataset.query_ids == []


def test_parquet_embeddings_with_companions(tmp_path):
    write_vectors_parquet(tmp_path / "emb.parquet", ["a", "b"], [[1.0, 2.0], [3.0, 4.0]])
    write_vectors_parquet(tmp_path / "emb.queries.parquet", ["x"], [[0.5, 0.25]], vector_type=pa.list_(pa.float64(), 2))
    (tmp_path / "emb.qrels.tsv").write_text(qrels_tsv([("x", "b", 1)]))
    dataset = load_dataset(str(tmp_path / "emb.parquet"))
    assert dataset.corpus_ids == ["a", "b"]
    np.testing.assert_array_equal(dataset.corpus_embeddings, [[1.0, 2.0], [3.0, 4.0]])
    assert dataset.query_ids == ["x"]
    np.testing.assert_array_equal(dataset.query_embeddings, [[0.5, 0.25]])
    assert dataset.qrels == {"x": {"b": 1}}


def test_embeddings_folder_zip_and_upload_agree(tmp_path):
    folder = tmp_path / "emb"
    folder.mkdir()
    np.save(folder / "corpus.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    write_vectors_parquet(folder / "queries.parquet", ["first"], [[1.0, 1.0]])
    (folder / "qrels.tsv").write_text(qrels_tsv([("first", "2", 1)]))
    from_folder = load_dataset(str(folder))
    assert from_folder.qrels == {"first": {"2": 1}}
    archive = zip_folder(folder, tmp_path / "emb.zip", inner="emb")
    from_upload = load_uploaded("C:\\Users\\me\\emb.zip", archive.read_bytes())
    assert from_upload.source == "emb.zip"
    assert from_upload.fingerprint == from_folder.fingerprint == load_dataset(str(archive)).fingerprint


def test_fingerprint_changes_with_vectors(tmp_path):
    np.save(tmp_path / "a.npy", np.eye(3))
    np.save(tmp_path / "b.npy", np.eye(3) * 2)
    assert load_dataset(str(tmp_path / "a.npy")).fingerprint == load_dataset(str(tmp_path / "a.npy")).fingerprint
    assert load_dataset(str(tmp_path / "a.npy")).fingerprint != load_dataset(str(tmp_path / "b.npy")).fingerprint


# ---------------------------------------------------------------- uploads and builtin


def test_upload_pairs_matches_file(tmp_path):
    path = write_pairs(tmp_path / "pairs.csv")
    uploaded = load_uploaded("pairs.csv", path.read_bytes())
    assert uploaded.source == "pairs.csv"
    assert uploaded.fingerprint == load_dataset(str(path)).fingerprint


@pytest.mark.parametrize("name", ["pairs.parquet", "pairs.jsonl", "vectors.npy", "emb.parquet"])
def test_upload_binary_and_text_formats_match_files(tmp_path, name):
    path = tmp_path / name
    if name == "vectors.npy":
        np.save(path, np.eye(3, dtype=np.float32))
    elif name == "emb.parquet":
        write_vectors_parquet(path, ["a", "b"], [[1.0, 2.0], [3.0, 4.0]])
    else:
        write_pairs(path)
    uploaded = load_uploaded(f"/home/user/{name}", path.read_bytes())
    assert uploaded.source == name
    assert uploaded.fingerprint == load_dataset(str(path)).fingerprint


def test_builtin_dispatch(monkeypatch):
    calls = []

    def build_builtin(variant):
        calls.append(variant)
        return RetrievalDataset(name=f"builtin-{variant}", source="builtin", corpus_ids=["0"], corpus_texts=["x"])

    monkeypatch.setattr(mrl_core.data, "build_builtin", build_builtin)
    assert load_dataset("builtin").name == "builtin-full"
    assert load_dataset("builtin:quick").name == "builtin-quick"
    assert calls == ["full", "quick"]
    expected = "builtin:huge: unknown built-in dataset; expected one of builtin, builtin:quick"
    with pytest.raises(DatasetError, match=expected):
        load_dataset("builtin:huge")


# ---------------------------------------------------------------- malformed inputs
# Each case writes files under tmp_path and returns the source to load; the message must name the
# file and the line, row or field, and say what was expected.


def beir_case(**files):
    return lambda tmp_path: str(write_beir(tmp_path / "set", **files))


def file_case(name: str, content: bytes | str):
    def build(tmp_path):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return str(path)

    return build


def npy_case(array, name="vectors.npy", queries=None):
    def build(tmp_path):
        np.save(tmp_path / name, array, allow_pickle=True)
        if queries is not None:
            np.save(tmp_path / "vectors.queries.npy", queries)
        return str(tmp_path / name)

    return build


def parquet_case(table: dict):
    def build(tmp_path):
        pq.write_table(pa.table(table), tmp_path / "emb.parquet")
        return str(tmp_path / "emb.parquet")

    return build


def zip_case(entries: dict[str, bytes], *, compression=zipfile.ZIP_STORED):
    def build(tmp_path):
        path = tmp_path / "data.zip"
        with zipfile.ZipFile(path, "w", compression) as archive:
            for entry, content in entries.items():
                archive.writestr(zipfile.ZipInfo(entry), content, compress_type=compression)
        return str(path)

    return build


def qrels_without_queries(tmp_path):
    np.save(tmp_path / "vectors.npy", np.eye(2))
    (tmp_path / "vectors.qrels.tsv").write_text(qrels_tsv([("0", "1", 1)]))
    return str(tmp_path / "vectors.npy")


def empty_folder(tmp_path):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.md").write_text("hi")
    return str(tmp_path / "nothing")


TINY_CORPUS_BYTES = jsonl([{"_id": "d1", "text": "x"}]).encode()
TINY_QUERIES_BYTES = jsonl([{"_id": "q1", "text": "y"}]).encode()

MALFORMED = {
    "missing file": (lambda tmp_path: str(tmp_path / "nope.csv"), ["nope.csv: no such file or folder", "expected"]),
    "unknown extension": (file_case("data.xlsx", "x"), ["data.xlsx: unknown file type '.xlsx'", ".parquet"]),
    "empty txt": (file_case("docs.txt", ""), ["docs.txt: file is empty"]),
    "whitespace-only jsonl": (file_case("pairs.jsonl", "\n  \n"), ["pairs.jsonl: file is empty"]),
    "empty npy file": (file_case("vectors.npy", b""), ["vectors.npy: file is empty", "2-D float array"]),
    "missing positive column": (
        file_case("pairs.csv", "query,negative\na,b\n"),
        ["pairs.csv: columns ['query', 'negative']", "expected 'query' (or 'anchor') and 'positive'"],
    ),
    "pairs header only": (file_case("pairs.csv", "query,positive\n"), ["pairs.csv: no rows after the header"]),
    "jsonl record missing field": (
        file_case("pairs.jsonl", jsonl([{"query": "a", "positive": "b"}, {"query": "c"}])),
        ["pairs.jsonl: line 2: field 'positive' is missing", "expected text"],
    ),
    "corpus missing _id": (
        beir_case(corpus=[{"_id": "d1", "text": "a"}, {"text": "b"}]),
        ["corpus.jsonl: line 2: field '_id' is missing", "expected an id"],
    ),
    "corpus _id wrong type": (
        beir_case(corpus=[{"_id": ["d1"], "text": "a"}]),
        ["corpus.jsonl: line 1: field '_id' has type list", "expected a string or integer id"],
    ),
    "query missing text": (
        beir_case(queries=[{"_id": "q1"}]),
        ["queries.jsonl: line 1: field 'text' is missing"],
    ),
    "corpus text not a string": (
        beir_case(corpus=[{"_id": "d1", "text": 5}]),
        ["corpus.jsonl: line 1: field 'text' has type int", "expected text"],
    ),
    "duplicate corpus id": (
        beir_case(corpus=[{"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}, {"_id": "d1", "text": "c"}]),
        ["corpus.jsonl: line 3: duplicate document id 'd1' (first at line 1)"],
    ),
    "duplicate query id": (
        beir_case(queries=[{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}]),
        ["queries.jsonl: line 2: duplicate query id 'q1' (first at line 1)"],
    ),
    "duplicate corpus id in csv": (
        file_case("docs.csv", "id,text\n7,a\n8,b\n7,c\n"),
        ["docs.csv: line 4: duplicate document id '7' (first at line 2)"],
    ),
    "qrels unknown query": (
        beir_case(test=[("q1", "d1", 1), ("q9", "d1", 1)]),
        ["test.tsv: line 3: query-id 'q9' is not in", "queries.jsonl"],
    ),
    "qrels unknown doc": (
        beir_case(test=[("q1", "d9", 1)]),
        ["test.tsv: line 2: corpus-id 'd9' is not in", "corpus.jsonl"],
    ),
    "train qrels unknown query": (
        beir_case(train=[("q8", "d1", 1)]),
        ["train.tsv: line 2: query-id 'q8' is not in"],
    ),
    "qrels non-integer score": (
        beir_case(test=[("q1", "d1", "1.5")]),
        ["test.tsv: line 2: score '1.5' is not an integer", "expected an integer grade"],
    ),
    "qrels header wrong": (
        beir_case(test="qid\tdocid\trel\nq1\td1\t1\n"),
        ["test.tsv: line 1: header is 'qid\\tdocid\\trel'", "expected 'query-id<TAB>corpus-id<TAB>score'"],
    ),
    "qrels too few fields": (
        beir_case(test="query-id\tcorpus-id\tscore\nq1\td1\n"),
        ["test.tsv: line 2: 2 tab-separated fields; expected 3"],
    ),
    "qrels conflicting grades": (
        beir_case(test=[("q1", "d1", 1), ("q1", "d1", 2)]),
        ["test.tsv: line 3: ('q1', 'd1') is judged again with score 2, earlier 1"],
    ),
    "test qrels judge no query": (
        beir_case(test=[("q1", "d1", 0), ("q2", "d2", 0)]),
        ["test.tsv: judges no query (no row with score > 0)"],
    ),
    "test qrels header only": (beir_case(test=[]), ["test.tsv: judges no query"]),
    "non-UTF-8 corpus": (
        beir_case(corpus=b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n'),
        ["corpus.jsonl: line 2: not valid UTF-8 (byte 0xe9)", "expected UTF-8 text"],
    ),
    "non-UTF-8 pairs csv": (
        file_case("pairs.csv", b"query,positive\na,b\nc,d\xff\n"),
        ["pairs.csv: line 3: not valid UTF-8 (byte 0xff)"],
    ),
    "invalid JSON line": (
        beir_case(corpus='{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": \n'),
        ["corpus.jsonl: line 2: invalid JSON", "expected one JSON object per line"],
    ),
    "JSON line not an object": (
        file_case("pairs.jsonl", '["a", "b"]\n'),
        ["pairs.jsonl: line 1: expected a JSON object, got list"],
    ),
    "empty document text": (
        beir_case(corpus=[{"_id": "d1", "title": " ", "text": ""}]),
        ["corpus.jsonl: line 1: 'title' and 'text' are both empty", "expected document text"],
    ),
    "empty query text": (
        beir_case(queries=[{"_id": "q1", "text": "  "}]),
        ["queries.jsonl: line 1: field 'text' is empty"],
    ),
    "empty corpus csv text": (file_case("docs.csv", "text\nfine\n\"\"\n"), ["docs.csv: line 3: field 'text' is empty"]),
    "pairs empty query": (
        file_case("pairs.csv", "query,positive\na,b\n,d\n"),
        ["pairs.csv: line 3: field 'query' is empty", "expected text"],
    ),
    "pairs empty positive in parquet": (
        lambda tmp_path: str(write_pairs(tmp_path / "pairs.parquet", pairs=[("a", "b"), ("c", None)])),
        ["pairs.parquet: row 2: field 'positive' is missing"],
    ),
    "csv row with extra fields": (
        file_case("pairs.csv", "query,positive\na,b\nc,d,e\n"),
        ["pairs.csv: line 3: 3 fields; expected 2 like the header (query, positive)"],
    ),
    "queries.jsonl missing": (
        beir_case(queries=None),
        ["queries.jsonl is missing", "expected it next to corpus.jsonl"],
    ),
    "folder without a corpus": (empty_folder, ["nothing: no corpus.jsonl (BEIR layout)"]),
    "NaN in npy": (
        npy_case(np.array([[1.0, 2.0], [np.nan, 0.0], [np.inf, 1.0]])),
        ["vectors.npy: row 2 (id '1') holds NaN or infinite values", "2 of 3 rows affected"],
    ),
    "float64 beyond float32": (
        npy_case(np.array([[1e300, 0.0]])),
        ["vectors.npy: row 1 (id '0') holds NaN or infinite"],
    ),
    "inf in parquet": (
        parquet_case({"id": ["a", "b"], "embedding": [[0.0, 1.0], [float("inf"), 1.0]]}),
        ["emb.parquet: row 2 (id 'b') holds NaN or infinite values"],
    ),
    "ragged parquet vectors": (
        parquet_case({"id": ["a", "b"], "embedding": [[0.0, 1.0], [1.0, 2.0, 3.0]]}),
        ["emb.parquet: row 2 (id 'b'): field 'embedding' has 3 values but row 1 has 2", "one width"],
    ),
    "null parquet vector": (
        parquet_case({"id": ["a", "b"], "vector": pa.array([[0.0, 1.0], None], type=pa.list_(pa.float32()))}),
        ["emb.parquet: row 2 (id 'b'): field 'vector' is missing"],
    ),
    "null value inside parquet vector": (
        parquet_case({"id": ["a", "b"], "vector": pa.array([[0.0, 1.0], [2.0, None]], type=pa.list_(pa.float32()))}),
        ["emb.parquet: row 2 (id 'b'): field 'vector' holds a null value"],
    ),
    "integer parquet vectors": (
        parquet_case({"id": ["a"], "embedding": [[1, 2]]}),
        ["emb.parquet: field 'embedding' holds int64 values; expected a list of floats"],
    ),
    "parquet vectors without id": (
        parquet_case({"name": ["a"], "embedding": [[1.0, 2.0]]}),
        ["emb.parquet: columns ['name', 'embedding']", "expected an id column ('id' or '_id')"],
    ),
    "parquet duplicate vector id": (
        parquet_case({"id": [1, 1], "embedding": [[1.0, 2.0], [3.0, 4.0]]}),
        ["emb.parquet: row 2: duplicate vector id '1' (first at row 1)"],
    ),
    "1-D npy": (npy_case(np.zeros(3)), ["vectors.npy: shape (3,)", "expected a 2-D array"]),
    "0-row npy": (npy_case(np.zeros((0, 4))), ["vectors.npy: 0 rows", "expected at least one vector"]),
    "object npy": (
        npy_case(np.array([[1.0, "x"]], dtype=object)),
        ["vectors.npy: holds Python objects (dtype object)", "expected a 2-D float array"],
    ),
    "integer npy": (
        npy_case(np.ones((2, 2), dtype=np.int64)),
        ["vectors.npy: dtype int64", "expected a 2-D float array"],
    ),
    "not an npy": (file_case("vectors.npy", b"hello world"), ["vectors.npy: not a .npy file", "numpy.save"]),
    "query and document widths differ": (
        npy_case(np.eye(2), queries=np.ones((1, 3))),
        ["vectors.queries.npy: query vectors have width 3 but", "vectors.npy has width 2"],
    ),
    "qrels without query embeddings": (
        qrels_without_queries,
        ["vectors.qrels.tsv: judgements need query embeddings", "vectors.queries.npy"],
    ),
    "zip entry with ..": (
        zip_case({"corpus.jsonl": TINY_CORPUS_BYTES, "../evil.txt": b"x"}),
        ["data.zip: entry '../evil.txt' points outside the archive's folder"],
    ),
    "zip entry with backslash ..": (
        zip_case({"corpus.jsonl": TINY_CORPUS_BYTES, "set\\..\\..\\evil.txt": b"x"}),
        ["data.zip: entry 'set\\\\..\\\\..\\\\evil.txt' points outside"],
    ),
    "zip absolute entry": (
        zip_case({"/etc/corpus.jsonl": TINY_CORPUS_BYTES}),
        ["data.zip: entry '/etc/corpus.jsonl' points outside"],
    ),
    "zip without corpus": (
        zip_case({"set/queries.jsonl": TINY_QUERIES_BYTES}),
        ["data.zip: no corpus.jsonl (BEIR layout)", "at the top level or inside one folder"],
    ),
    "zip with two datasets": (
        zip_case({"a/corpus.jsonl": TINY_CORPUS_BYTES, "b/corpus.jsonl": TINY_CORPUS_BYTES}),
        ["data.zip: holds datasets in several folders (a/, b/)"],
    ),
    "not a zip": (file_case("data.zip", b"this is plain text"), ["data.zip: not a zip archive"]),
    "error inside a zip names the member": (
        zip_case({"set/corpus.jsonl": b'{"_id": "d1"}\n', "set/queries.jsonl": TINY_QUERIES_BYTES}),
        ["data.zip:set/corpus.jsonl: line 1: field 'text' is missing"],
    ),
}


@pytest.mark.parametrize("build, expected", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_names_file_and_location(tmp_path, build, expected):
    with pytest.raises(DatasetError) as caught:
        load_dataset(build(tmp_path))
    for fragment in expected:
        assert fragment in str(caught.value)


def test_zip_over_uncompressed_limit(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("corpus.jsonl", b"\n" * 5_000_000)
    assert path.stat().st_size < 20_000  # highly compressible: the archive itself is tiny
    with pytest.raises(DatasetError) as caught:
        load_dataset(str(path), max_uncompressed_bytes=1_000_000)
    assert "bomb.zip: members uncompress to 5000000 bytes, over the limit of 1000000 bytes" in str(caught.value)


def test_upload_error_names_the_uploaded_file():
    with pytest.raises(DatasetError) as caught:
        load_uploaded("my pairs.csv", b"query,positive\nfine,text\nempty,\n")
    assert str(caught.value).startswith("my pairs.csv: line 3: field 'positive' is empty")
    assert "tmp" not in str(caught.value)
