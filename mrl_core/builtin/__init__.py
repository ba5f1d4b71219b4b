"""The built-in default dataset: API reference search over the installed Python stack's docstrings.

The app and the CLI must work with no upload and no download, so the default dataset is built at run
time from what the install already contains. Every public callable (function, class, method) of a fixed
list of modules from the standard library, numpy, scipy, pandas, scikit-learn, torch, pyarrow, networkx,
sympy and mpmath whose docstring passes the filters becomes one item:

- query: the docstring's summary (its first paragraph, or first sentence when that paragraph is long),
  written by the library's authors;
- document: the qualified name, the call signature and the rest of the docstring without the summary,
  doctest sessions removed, whitespace collapsed, at most ``MAX_DOCUMENT_CHARS`` characters.

Items are deduplicated (an object reached under several names is kept under the first; an item whose
summary or document body repeats an earlier one is dropped), split into training pairs and held-out
test queries by a hash of the qualified name, and cached on disk keyed by the package versions. The
walk runs in a fresh interpreter, so what the caller has imported cannot change the result.

This module builds, splits and caches the dataset; ``sources`` lists what is walked, ``walk`` finds the
callables and ``docstrings`` turns each into an item.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mrl_core.builtin.docstrings import MAX_DOCUMENT_CHARS, MAX_SUMMARY_WORDS, MIN_BODY_WORDS, MIN_SUMMARY_WORDS, _Item
from mrl_core.builtin.sources import (
    PACKAGE_SOURCES,
    QUICK_MODULES,
    STDLIB_MODULES,
    STDLIB_SOURCE,
    VARIANTS,
    Variant,
    _check_variant,
    source_of,
    source_versions,
)
from mrl_core.builtin.walk import _collect_items
from mrl_core.dataset import DatasetError, RetrievalDataset
from mrl_core.paths import cache_dir

__all__ = [
    "BUILTIN_FORMAT_VERSION",
    "MAX_DOCUMENT_CHARS",
    "MAX_SUMMARY_WORDS",
    "MIN_BODY_WORDS",
    "MIN_SUMMARY_WORDS",
    "PACKAGE_SOURCES",
    "QUICK_MODULES",
    "STDLIB_MODULES",
    "STDLIB_SOURCE",
    "TEST_FRACTION",
    "VARIANTS",
    "Variant",
    "build_builtin",
    "builtin_cache_path",
    "source_of",
    "source_versions",
]


# Bump when the extraction rules change, so stale caches are not reused.
BUILTIN_FORMAT_VERSION = 1

# Share of items whose summary becomes a held-out test query; the same for both variants, so the
# quick variant's split agrees with the full one's.
TEST_FRACTION = 0.2


def build_builtin(variant: Variant = "full", *, use_cache: bool = True) -> RetrievalDataset:
    """Builds (or loads from cache) the API-reference-search dataset from the installed packages.

    The build runs in a fresh Python process: libraries patch each other on import (transformers adds
    methods to ``logging.Logger``), so walking them inside a caller that has imported other things
    would give a different dataset.

    Args:
        variant: ``"full"`` walks the standard library, numpy, scipy, pandas, scikit-learn, torch,
            pyarrow, networkx, sympy and mpmath (10,000+ documents, tens of seconds); ``"quick"`` walks
            common standard-library modules (~1,000 documents, about a second) and is an exact subset
            of ``"full"`` with the same split.
        use_cache: read and write ``cache_dir() / "builtin"``; False always rebuilds and writes no cache.

    Returns:
        A RetrievalDataset named (and sourced) ``"builtin"`` or ``"builtin:quick"``. Corpus ids are
        qualified names. Test queries (ids ``"q:" + qualified name``) judge their own document relevant;
        every other item gives a ``train_pairs`` entry (summary, document) and stays in the corpus.

    Raises:
        ValueError: if ``variant`` is not ``"full"`` or ``"quick"``.
        DatasetError: if the build process fails; the message ends with its error output.

    Example:
        >>> build_builtin("tiny")
        Traceback (most recent call last):
        ...
        ValueError: variant must be one of 'full', 'quick'; got 'tiny'
    """
    _check_variant(variant)
    if use_cache:
        cache_path = builtin_cache_path(variant)
        cached = _read_payload(cache_path, variant)
        if cached is not None:
            return cached
        output_path = cache_path
        _build_in_fresh_process(variant, output_path)
        dataset = _read_payload(output_path, variant)
    else:
        with tempfile.TemporaryDirectory(prefix="mrl_builtin_") as folder:
            output_path = Path(folder) / "dataset.json"
            _build_in_fresh_process(variant, output_path)
            dataset = _read_payload(output_path, variant)
    if dataset is None:
        raise DatasetError(
            f"{output_path}: the {variant!r} builtin dataset build wrote a file that does not read back "
            f"(bad JSON, wrong format version {BUILTIN_FORMAT_VERSION} or fingerprint mismatch)"
        )
    return dataset


def builtin_cache_path(variant: Variant) -> Path:
    """The cache file for ``variant``, named by the format version and the versions of every source walked."""
    _check_variant(variant)
    key_text = json.dumps({"format": BUILTIN_FORMAT_VERSION, "versions": source_versions(variant)}, sort_keys=True)
    key = hashlib.sha256(key_text.encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "builtin" / f"{variant}-{key}.json"


def _build_in_fresh_process(variant: Variant, output_path: Path) -> None:
    """Runs ``_build_to_file`` in a new interpreter with a fixed hash seed, started from an empty folder."""
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    environment = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=python_path)
    code = "import sys; from mrl_core.builtin import _build_to_file; _build_to_file(sys.argv[1], sys.argv[2])"
    with tempfile.TemporaryDirectory(prefix="mrl_builtin_cwd_") as empty_folder:
        # An empty working folder keeps a stray json.py or numpy/ next to the caller from being imported.
        completed = subprocess.run(
            [sys.executable, "-c", code, variant, str(output_path)],
            cwd=empty_folder,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    if completed.returncode != 0:
        error_tail = completed.stderr.strip()[-2000:]
        raise DatasetError(
            f"building the {variant!r} builtin dataset failed (exit {completed.returncode}): {error_tail}"
        )


def _build_to_file(variant: Variant, output_path: str) -> None:
    """Walks the sources in this process and writes the items atomically to output_path."""
    _check_variant(variant)
    items = _collect_items(QUICK_MODULES if variant == "quick" else None)
    dataset = _to_dataset(items, variant)
    payload = {
        "format": BUILTIN_FORMAT_VERSION,
        "variant": variant,
        "fingerprint": dataset.fingerprint,
        "qualified_names": [item.qualified_name for item in items],
        "summaries": [item.summary for item in items],
        "documents": [item.document for item in items],
    }
    _write_json_atomically(Path(output_path), payload)


def _test_share(qualified_name: str) -> float:
    """A stable number in [0, 1) per name, so the split does not depend on order or on other items."""
    digest = hashlib.sha256(qualified_name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _to_dataset(items: list[_Item], variant: Variant) -> RetrievalDataset:
    name = "builtin" if variant == "full" else "builtin:quick"
    query_ids: list[str] = []
    query_texts: list[str] = []
    qrels: dict[str, dict[str, int]] = {}
    train_pairs: list[tuple[str, str]] = []
    for item in items:
        if _test_share(item.qualified_name) < TEST_FRACTION:
            query_id = f"q:{item.qualified_name}"
            query_ids.append(query_id)
            query_texts.append(item.summary)
            qrels[query_id] = {item.qualified_name: 1}
        else:
            train_pairs.append((item.summary, item.document))
    return RetrievalDataset(
        name=name,
        source=name,
        corpus_ids=[item.qualified_name for item in items],
        corpus_texts=[item.document for item in items],
        query_ids=query_ids,
        query_texts=query_texts,
        qrels=qrels,
        train_pairs=train_pairs,
    )


def _read_payload(path: Path, variant: Variant) -> RetrievalDataset | None:
    """The dataset stored at path, or None if absent or damaged (a damaged cache is rebuilt, not trusted)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        items = [
            _Item(qualified_name=name, summary=summary, document=document)
            for name, summary, document in zip(
                payload["qualified_names"], payload["summaries"], payload["documents"], strict=True
            )
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if payload.get("format") != BUILTIN_FORMAT_VERSION or payload.get("variant") != variant:
        return None
    dataset = _to_dataset(items, variant)
    return dataset if dataset.fingerprint == payload.get("fingerprint") else None


def _write_json_atomically(path: Path, payload: dict) -> None:
    """Writes through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(payload, file, ensure_ascii=False)
        os.replace(temporary_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary_name)
        raise
