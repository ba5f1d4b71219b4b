import json
import logging
import time

import pytest

from mrl_core import builtin
from mrl_core.builtin import (
    MAX_DOCUMENT_CHARS,
    MAX_SUMMARY_WORDS,
    MIN_SUMMARY_WORDS,
    build_builtin,
    builtin_cache_path,
    docstrings,
    source_of,
    walk,
)


@pytest.fixture(scope="module")
def quick():
    return build_builtin("quick", use_cache=False)


def _split_texts(dataset):
    """(test query texts, test positive documents, train query texts, train documents)."""
    text_of = dict(zip(dataset.corpus_ids, dataset.corpus_texts))
    test_queries = set(dataset.query_texts)
    test_documents = {text_of[doc_id] for qid in dataset.query_ids for doc_id in dataset.qrels[qid]}
    train_queries = {query for query, _ in dataset.train_pairs}
    train_documents = {document for _, document in dataset.train_pairs}
    return test_queries, test_documents, train_queries, train_documents


def _assert_well_formed(dataset):
    assert len(set(dataset.corpus_ids)) == dataset.corpus_size
    assert len(set(dataset.corpus_texts)) == dataset.corpus_size
    assert len(dataset.query_ids) == len(dataset.query_texts) == len(dataset.qrels)
    corpus = set(dataset.corpus_ids)
    for query_id in dataset.query_ids:
        assert len(dataset.qrels[query_id]) == 1
        ((doc_id, grade),) = dataset.qrels[query_id].items()
        assert grade == 1 and doc_id in corpus
        assert query_id == f"q:{doc_id}"
    test_queries, test_documents, train_queries, train_documents = _split_texts(dataset)
    assert not test_queries & train_queries
    assert not test_documents & train_documents
    # Every corpus document is either one test query's positive or one training pair's document.
    assert len(test_queries) + len(train_queries) == dataset.corpus_size
    assert test_documents | train_documents == set(dataset.corpus_texts)


def test_quick_has_expected_shape(quick):
    assert quick.name == quick.source == "builtin:quick"
    assert 800 <= quick.corpus_size <= 1300
    assert 150 <= len(quick.query_ids) <= 300
    assert len(quick.query_ids) + len(quick.train_pairs) == quick.corpus_size
    assert quick.has_labels and not quick.is_precomputed
    assert all(source_of(doc_id) == "stdlib" for doc_id in quick.corpus_ids)
    _assert_well_formed(quick)


def _summary_of_document(dataset):
    text_of = dict(zip(dataset.corpus_ids, dataset.corpus_texts))
    summary_of = {document: query for query, document in dataset.train_pairs}
    for query_id, query in zip(dataset.query_ids, dataset.query_texts):
        summary_of.update({text_of[doc_id]: query for doc_id in dataset.qrels[query_id]})
    return summary_of


def test_quick_texts_follow_the_filters(quick):
    summary_of = _summary_of_document(quick)
    for doc_id, document in zip(quick.corpus_ids, quick.corpus_texts):
        summary = summary_of[document]
        assert document.startswith(doc_id)
        assert summary.lower() not in document.lower()
        assert MIN_SUMMARY_WORDS <= len(summary.split()) <= MAX_SUMMARY_WORDS
        assert len(document) <= MAX_DOCUMENT_CHARS
        assert ">>>" not in document and " at 0x" not in document
        assert document == " ".join(document.split())


def test_known_callable_becomes_a_pair(quick):
    document = dict(zip(quick.corpus_ids, quick.corpus_texts))["textwrap.dedent"]
    assert document.startswith("textwrap.dedent(text) This can be used to make triple-quoted strings line up")
    assert _summary_of_document(quick)[document] == "Remove any common leading whitespace from every line in text."


def test_build_is_deterministic_and_ignores_callers_imports(quick, monkeypatch):
    # A library imported by the caller may patch the standard library (transformers adds
    # Logger.warning_once); the build must not see it.
    def shout_once(self, message):
        """Log a message once per logger, however often it is called from anywhere."""

    monkeypatch.setattr(logging.Logger, "shout_once", shout_once, raising=False)
    again = build_builtin("quick", use_cache=False)
    assert "logging.Logger.shout_once" not in again.corpus_ids
    assert again.fingerprint == quick.fingerprint
    assert again.corpus_ids == quick.corpus_ids and again.train_pairs == quick.train_pairs


def test_cache_is_written_once_and_reused(quick, tmp_path, monkeypatch):
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path))
    cache_path = builtin_cache_path("quick")
    assert cache_path.parent == tmp_path / "builtin" and not cache_path.exists()
    started = time.perf_counter()
    built = build_builtin("quick")
    build_seconds = time.perf_counter() - started
    assert cache_path.exists()
    assert [path.name for path in cache_path.parent.iterdir()] == [cache_path.name]
    started = time.perf_counter()
    cached = build_builtin("quick")
    cached_seconds = time.perf_counter() - started
    assert cached_seconds < build_seconds / 3
    assert cached.fingerprint == built.fingerprint == quick.fingerprint
    assert cached.corpus_texts == quick.corpus_texts and cached.qrels == quick.qrels


def test_damaged_cache_is_rebuilt(quick, tmp_path, monkeypatch):
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path))
    cache_path = builtin_cache_path("quick")
    cache_path.parent.mkdir(parents=True)
    payload = {"format": builtin.BUILTIN_FORMAT_VERSION, "variant": "quick", "fingerprint": quick.fingerprint,
               "qualified_names": ["a.b"], "summaries": ["One two three four."], "documents": ["a.b() text"]}
    cache_path.write_text(json.dumps(payload), encoding="utf-8")
    rebuilt = build_builtin("quick")
    assert rebuilt.fingerprint == quick.fingerprint
    assert json.loads(cache_path.read_text(encoding="utf-8"))["fingerprint"] == quick.fingerprint


def test_cache_key_follows_variant_and_versions(tmp_path, monkeypatch):
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path))
    assert builtin_cache_path("quick") != builtin_cache_path("full")
    before = builtin_cache_path("full")
    monkeypatch.setattr(builtin, "BUILTIN_FORMAT_VERSION", builtin.BUILTIN_FORMAT_VERSION + 1)
    assert builtin_cache_path("full") != before
    assert set(builtin.source_versions("full")) == {"stdlib", "numpy", "scipy", "pandas", "sklearn", "torch",
                                                    "pyarrow", "networkx", "sympy", "mpmath"}


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match=r"'full', 'quick'; got 'tiny'"):
        build_builtin("tiny")


def test_source_of():
    assert source_of("numpy.linalg.norm") == "numpy"
    assert source_of("sklearn.svm.SVC.fit") == "sklearn"
    assert source_of("os.path.join") == "stdlib"
    assert source_of("builtins.str.split") == "stdlib"


def test_docstring_is_split_into_summary_and_document():
    def scale_rows(matrix, factor=2.0):
        """Multiply every row of a matrix by a factor.

        The matrix is changed in place and also returned, so calls can be chained
        by callers who prefer that style of writing numerical code.

        Examples
        --------
        >>> scale_rows([[1.0]])
        [[2.0]]

        .. versionadded:: 1.2
        """

    item, body = docstrings._make_item("pkg.scale_rows", scale_rows)
    assert item.summary == "Multiply every row of a matrix by a factor."
    assert body == ("The matrix is changed in place and also returned, so calls can be chained by callers "
                    "who prefer that style of writing numerical code.")
    assert item.document == "pkg.scale_rows(matrix, factor=2.0) " + body


def test_leading_signature_paragraphs_and_long_openings():
    class Ufunc:
        """add(x1, x2, /, out=None)

        add(a, b)

        Add the arguments element by element. This opening sentence is followed by more words that make the
        first paragraph far longer than thirty words, so only its first sentence can serve as the
        summary and the rest has to move into the document body.
        """

        def __call__(self, *args):
            return args

    item, body = docstrings._make_item("pkg.add", Ufunc())
    assert item.summary == "Add the arguments element by element."
    assert item.document.startswith("pkg.add(a, b) This opening sentence is followed")


def test_summaries_that_are_calls_or_too_short_are_dropped():
    def pop():
        """D.pop(k[,d]) -> v, remove specified key and return the corresponding value.

        If the key is not found, return the default if given; otherwise raise a KeyError, which
        callers are expected to handle themselves in every case.
        """

    def tiny():
        """See other.

        A longer explanation follows here, with enough words in it to pass the minimum body length
        that the builder asks of every document.
        """

    assert docstrings._make_item("pkg.pop", pop) is None
    assert docstrings._make_item("pkg.tiny", tiny) is None


def test_bad_modules_are_skipped_quietly(tmp_path, monkeypatch, capsys):
    (tmp_path / "mrl_test_raises.py").write_text("raise RuntimeError('broken install')\n")
    (tmp_path / "mrl_test_exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "mrl_test_noisy.py").write_text(
        "import warnings\nprint('hello from import')\nwarnings.warn('noisy import')\n"
        "def greet(name):\n    return name\n_hidden = greet\nVERSION = '1'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with walk._quiet():
        assert walk._public_objects("mrl_test_raises", "mrl_test_raises") == []
        assert walk._public_objects("mrl_test_exits", "mrl_test_exits") == []
        assert walk._public_objects("mrl_test_missing", "mrl_test_missing") == []
        noisy = walk._public_objects("mrl_test_noisy", "mrl_test_noisy")
    assert [name for name, _ in noisy] == ["greet"]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.slow
def test_full_variant(quick):
    started = time.perf_counter()
    full = build_builtin("full", use_cache=False)
    build_seconds = time.perf_counter() - started
    assert full.name == full.source == "builtin"
    assert full.corpus_size >= 10_000
    assert build_seconds < 120
    _assert_well_formed(full)
    counts = {}
    for doc_id in full.corpus_ids:
        counts[source_of(doc_id)] = counts.get(source_of(doc_id), 0) + 1
    assert set(counts) == {"stdlib", "numpy", "scipy", "pandas", "sklearn", "torch", "pyarrow", "networkx",
                           "sympy", "mpmath"}
    assert min(counts.values()) >= 100
    # quick is an exact subset of full, with the same documents and the same split.
    full_text_of = dict(zip(full.corpus_ids, full.corpus_texts))
    assert all(full_text_of[doc_id] == text for doc_id, text in zip(quick.corpus_ids, quick.corpus_texts))
    assert set(quick.query_ids) <= set(full.query_ids)
    assert set(quick.train_pairs) <= set(full.train_pairs)
