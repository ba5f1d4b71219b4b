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
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import inspect
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from mrl_core.data import DatasetError, RetrievalDataset
from mrl_core.paths import cache_dir

# Bump when the extraction rules change, so stale caches are not reused.
BUILTIN_FORMAT_VERSION = 1

Variant = Literal["full", "quick"]
VARIANTS: tuple[str, ...] = get_args(Variant)

# Share of items whose summary becomes a held-out test query; the same for both variants, so the
# quick variant's split agrees with the full one's.
TEST_FRACTION = 0.2
MIN_SUMMARY_WORDS = 4
MAX_SUMMARY_WORDS = 30
MIN_BODY_WORDS = 15
# The encoder truncates at 256 tokens (~1,000-1,300 characters of prose); longer text only costs time.
MAX_DOCUMENT_CHARS = 1500

# The quick variant's modules. They are walked first in the full variant too, so every quick item
# survives deduplication there the same way and quick is an exact subset of full.
QUICK_MODULES: tuple[str, ...] = (
    "argparse", "asyncio", "base64", "bisect", "builtins", "bz2", "codecs", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "email.message", "email.utils", "enum", "fnmatch", "fractions", "functools", "glob", "gzip",
    "hashlib", "heapq", "http.client", "http.server", "inspect", "io", "ipaddress", "itertools", "json",
    "logging", "logging.handlers", "math", "operator", "os", "os.path", "pathlib", "pickle", "platform",
    "queue", "random", "re", "shlex", "shutil", "signal", "smtplib", "socket", "sqlite3", "ssl", "statistics",
    "string", "subprocess", "sys", "tarfile", "tempfile", "textwrap", "threading", "time", "traceback",
    "typing", "unittest", "unittest.mock", "urllib.parse", "urllib.request", "uuid", "weakref",
    "xml.etree.ElementTree", "xml.sax", "zipfile",
)

# Public standard-library modules with documented APIs. Left out on purpose: GUI modules (tkinter,
# turtle, idlelib, curses), modules with import side effects (this, antigravity), test suites,
# deprecated modules that warn on import, and private modules.
STDLIB_MODULES: tuple[str, ...] = QUICK_MODULES + (
    "abc", "array", "ast", "atexit", "bdb", "binascii", "cProfile", "calendar", "cmath", "cmd", "code",
    "codeop", "collections.abc", "colorsys", "compileall", "contextvars", "copyreg", "ctypes", "dbm", "dis",
    "doctest", "email", "email.charset", "email.contentmanager", "email.encoders", "email.generator",
    "email.header", "email.headerregistry", "email.iterators", "email.mime.base", "email.mime.multipart",
    "email.mime.text", "email.parser", "email.policy", "errno", "faulthandler", "filecmp", "fileinput",
    "ftplib", "gc", "getopt", "getpass", "gettext", "graphlib", "hmac", "html", "html.parser", "http",
    "http.cookiejar", "http.cookies", "imaplib", "importlib", "importlib.abc", "importlib.machinery",
    "importlib.metadata", "importlib.resources", "importlib.util", "json.decoder", "json.encoder", "keyword",
    "linecache", "locale", "logging.config", "lzma", "mailbox", "marshal", "mimetypes", "mmap",
    "modulefinder", "multiprocessing", "multiprocessing.managers", "multiprocessing.pool",
    "multiprocessing.shared_memory", "netrc", "numbers", "optparse", "pdb", "pickletools", "pkgutil",
    "plistlib", "poplib", "pprint", "profile", "pstats", "py_compile", "pyclbr", "pydoc", "quopri", "reprlib",
    "rlcompleter", "runpy", "sched", "secrets", "select", "selectors", "shelve", "site", "socketserver",
    "stat", "stringprep", "struct", "symtable", "sysconfig", "tabnanny", "timeit", "token", "tokenize",
    "tomllib", "trace", "tracemalloc", "types", "unicodedata", "urllib.error", "urllib.response",
    "urllib.robotparser", "venv", "warnings", "wave", "wsgiref.handlers", "wsgiref.headers",
    "wsgiref.simple_server", "wsgiref.util", "wsgiref.validate", "xml.dom", "xml.dom.minidom",
    "xml.dom.pulldom", "xml.parsers.expat", "xml.sax.handler", "xml.sax.saxutils", "xml.sax.xmlreader",
    "xmlrpc.client", "xmlrpc.server", "zipapp", "zipimport", "zlib", "zoneinfo",
)

# (distribution name for the cache key, import root, public modules). The standard library's
# version is the Python version. networkx, sympy and mpmath come with torch.
PACKAGE_SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "numpy",
        "numpy",
        (
            "numpy", "numpy.char", "numpy.dtypes", "numpy.exceptions", "numpy.fft", "numpy.lib.array_utils",
            "numpy.lib.format", "numpy.lib.recfunctions", "numpy.lib.stride_tricks", "numpy.linalg",
            "numpy.ma", "numpy.polynomial", "numpy.random", "numpy.rec", "numpy.strings", "numpy.testing",
        ),
    ),
    (
        "scipy",
        "scipy",
        (
            "scipy.cluster.hierarchy", "scipy.cluster.vq", "scipy.constants", "scipy.datasets",
            "scipy.differentiate", "scipy.fft", "scipy.fftpack", "scipy.integrate", "scipy.interpolate",
            "scipy.io", "scipy.io.arff", "scipy.io.matlab", "scipy.io.wavfile", "scipy.linalg",
            "scipy.linalg.interpolative", "scipy.ndimage", "scipy.odr", "scipy.optimize",
            "scipy.optimize.elementwise", "scipy.signal", "scipy.signal.windows", "scipy.sparse",
            "scipy.sparse.csgraph", "scipy.sparse.linalg", "scipy.spatial", "scipy.spatial.distance",
            "scipy.spatial.transform", "scipy.special", "scipy.stats", "scipy.stats.contingency",
            "scipy.stats.mstats", "scipy.stats.qmc", "scipy.stats.sampling",
        ),
    ),
    (
        "pandas",
        "pandas",
        (
            "pandas", "pandas.api.extensions", "pandas.api.indexers", "pandas.api.interchange",
            "pandas.api.types", "pandas.api.typing", "pandas.arrays", "pandas.errors",
            "pandas.io.formats.style", "pandas.plotting", "pandas.testing", "pandas.tseries.offsets",
        ),
    ),
    (
        "scikit-learn",
        "sklearn",
        (
            "sklearn.base", "sklearn.calibration", "sklearn.cluster", "sklearn.compose", "sklearn.covariance",
            "sklearn.cross_decomposition", "sklearn.datasets", "sklearn.decomposition",
            "sklearn.discriminant_analysis", "sklearn.dummy", "sklearn.ensemble", "sklearn.exceptions",
            "sklearn.feature_extraction", "sklearn.feature_extraction.image",
            "sklearn.feature_extraction.text", "sklearn.feature_selection", "sklearn.frozen",
            "sklearn.gaussian_process", "sklearn.gaussian_process.kernels", "sklearn.impute",
            "sklearn.inspection", "sklearn.isotonic", "sklearn.kernel_approximation", "sklearn.kernel_ridge",
            "sklearn.linear_model", "sklearn.manifold", "sklearn.metrics", "sklearn.metrics.cluster",
            "sklearn.metrics.pairwise", "sklearn.mixture", "sklearn.model_selection", "sklearn.multiclass",
            "sklearn.multioutput", "sklearn.naive_bayes", "sklearn.neighbors", "sklearn.neural_network",
            "sklearn.pipeline", "sklearn.preprocessing", "sklearn.random_projection",
            "sklearn.semi_supervised", "sklearn.svm", "sklearn.tree", "sklearn.utils",
            "sklearn.utils.class_weight", "sklearn.utils.extmath", "sklearn.utils.graph",
            "sklearn.utils.multiclass", "sklearn.utils.sparsefuncs", "sklearn.utils.validation",
        ),
    ),
    (
        "torch",
        "torch",
        (
            "torch", "torch.accelerator", "torch.amp", "torch.ao.quantization", "torch.autograd",
            "torch.autograd.forward_ad", "torch.autograd.functional", "torch.autograd.graph",
            "torch.compiler", "torch.cpu", "torch.cuda", "torch.distributed", "torch.distributions",
            "torch.distributions.constraints", "torch.distributions.transforms", "torch.export", "torch.fft",
            "torch.func", "torch.futures", "torch.fx", "torch.hub", "torch.jit", "torch.library",
            "torch.linalg", "torch.masked", "torch.nested", "torch.nn", "torch.nn.functional",
            "torch.nn.init", "torch.nn.utils", "torch.nn.utils.parametrize", "torch.nn.utils.prune",
            "torch.nn.utils.rnn", "torch.onnx", "torch.optim", "torch.optim.lr_scheduler",
            "torch.optim.swa_utils", "torch.overrides", "torch.profiler", "torch.random",
            "torch.serialization", "torch.signal.windows", "torch.sparse", "torch.special", "torch.testing",
            "torch.utils.checkpoint", "torch.utils.data",
        ),
    ),
    (
        "pyarrow",
        "pyarrow",
        (
            "pyarrow", "pyarrow.compute", "pyarrow.csv", "pyarrow.dataset", "pyarrow.fs", "pyarrow.parquet",
        ),
    ),
    (
        "networkx",
        "networkx",
        (
            "networkx", "networkx.algorithms.approximation", "networkx.algorithms.bipartite",
            "networkx.algorithms.community", "networkx.algorithms.flow", "networkx.algorithms.isomorphism",
            "networkx.drawing", "networkx.generators", "networkx.linalg", "networkx.readwrite",
            "networkx.utils",
        ),
    ),
    (
        "sympy",
        "sympy",
        (
            "sympy", "sympy.algebras", "sympy.assumptions", "sympy.calculus", "sympy.categories",
            "sympy.codegen", "sympy.combinatorics", "sympy.concrete", "sympy.crypto", "sympy.diffgeom",
            "sympy.discrete", "sympy.geometry", "sympy.holonomic", "sympy.integrals", "sympy.liealgebras",
            "sympy.logic", "sympy.matrices", "sympy.ntheory", "sympy.parsing.sympy_parser",
            "sympy.physics.biomechanics", "sympy.physics.continuum_mechanics", "sympy.physics.control",
            "sympy.physics.hep.gamma_matrices", "sympy.physics.mechanics", "sympy.physics.optics",
            "sympy.physics.quantum", "sympy.physics.secondquant", "sympy.physics.units",
            "sympy.physics.vector", "sympy.physics.wigner", "sympy.plotting", "sympy.polys",
            "sympy.polys.domains", "sympy.polys.matrices", "sympy.polys.rings", "sympy.printing",
            "sympy.series", "sympy.sets", "sympy.simplify", "sympy.solvers", "sympy.stats",
            "sympy.strategies", "sympy.tensor", "sympy.unify", "sympy.utilities.iterables",
            "sympy.utilities.lambdify", "sympy.vector",
        ),
    ),
    (
        "mpmath",
        "mpmath",
        (
            "mpmath",
        ),
    ),
)

STDLIB_SOURCE = "stdlib"
_PACKAGE_ROOTS = frozenset(root for _, root, _ in PACKAGE_SOURCES)

# A leading "name(args) -> result" paragraph, as C extensions, numpy ufuncs and torch write them.
_SIGNATURE_LINE = re.compile(r"^[A-Za-z_][\w.]*\(.*\)\s*(?:->\s*(?P<result>.*))?$", re.DOTALL)
# Memory addresses in default-value reprs change from run to run.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# "D.pop(k[,d]) -> v, remove ..." starts with a call, not with words a user would type.
_CALL_PREFIX = re.compile(r"^[A-Za-z_][\w.]*\([^)]*\)")
# "e.g. Foo" and "i.e. Bar" end in lower-case abbreviations, so a capital after them starts no sentence.
_SENTENCE_END = re.compile(r"(?<![ .(]e\.g\.)(?<![ .(]i\.e\.)(?<=[.!?])\s+(?=[A-Z])")
_RST_ROLE = re.compile(r":[\w:.-]+:`~?(?:[^`<]*<)?([^`>]+)>?`")
_DOCTEST_HEADING = re.compile(r"^\s*(?:\*\*)?(?:Examples?|Usage)(?:\*\*)?\s*:{0,2}\s*$")
_SECTION_RULE = re.compile(r"^\s*[-=~^]{3,}\s*$")
_VERSION_DIRECTIVE = re.compile(r"^\s*\.\. (?:versionadded|versionchanged|versionremoved)::")
# reST directive markers (".. note::") and their option lines (":noindex:") carry no words.
_DIRECTIVE_MARKER = re.compile(r"^(\s*)\.\. [\w:-]+::\s*")
_DIRECTIVE_OPTION = re.compile(r"^\s*:[\w-]+:\s*$")
_WORDLESS_LINES = (_DOCTEST_HEADING, _SECTION_RULE, _VERSION_DIRECTIVE, _DIRECTIVE_OPTION)


@dataclass(frozen=True)
class _Item:
    """One callable as a query (its summary) and a document (name, signature, rest of the docstring)."""

    qualified_name: str
    summary: str
    document: str


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
        >>> dataset = build_builtin("quick")
        >>> dataset.name, dataset.corpus_size > 500
        ('builtin:quick', True)
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


def source_versions(variant: Variant) -> dict[str, str]:
    """The installed version of each source the variant walks ('stdlib' is the Python version)."""
    _check_variant(variant)
    versions = {STDLIB_SOURCE: platform.python_version()}
    if variant == "full":
        for distribution, root, _modules in PACKAGE_SOURCES:
            try:
                versions[root] = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                versions[root] = "absent"
    return versions


def source_of(corpus_id: str) -> str:
    """The source a builtin corpus id came from: 'stdlib' or a package's import root ('numpy', 'torch')."""
    root = corpus_id.split(".", 1)[0]
    return root if root in _PACKAGE_ROOTS else STDLIB_SOURCE


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(repr(v) for v in VARIANTS)}; got {variant!r}")


def _build_in_fresh_process(variant: Variant, output_path: Path) -> None:
    """Runs ``_build_to_file`` in a new interpreter with a fixed hash seed, started from an empty folder."""
    package_root = str(Path(__file__).resolve().parent.parent)
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


def _collect_items(quick_modules: tuple[str, ...] | None) -> list[_Item]:
    """Walks the sources in a fixed order and keeps the first of every alias, summary and body.

    The standard library is listed and walked before any third-party package is imported, so a
    package that patches it on import cannot change the standard-library items.
    """
    if quick_modules is not None:
        plan = [(STDLIB_SOURCE, STDLIB_MODULES, quick_modules)]
    else:
        plan = [(STDLIB_SOURCE, STDLIB_MODULES, STDLIB_MODULES)]
        plan += [(root, modules, modules) for _, root, modules in PACKAGE_SOURCES]
    seen_objects: set[int] = set()
    # Objects are kept alive here so that ids in seen_objects are never reused by new objects.
    kept_alive: list[object] = []
    seen_summaries: set[str] = set()
    seen_bodies: set[str] = set()
    items: list[_Item] = []
    with _quiet():
        for source, listed_modules, walked_modules in plan:
            public = {module_name: _public_objects(module_name, source) for module_name in listed_modules}
            # Inherited methods are named after the class that defines them wherever that class is
            # public in the source (torch.nn.Module.apply, not torch.ao.quantization.SomeObserver.apply).
            # The quick variant lists every standard-library module too, so it names them as full does.
            public_class_ids = {id(obj) for objects in public.values() for _, obj in objects if inspect.isclass(obj)}
            for module_name in walked_modules:
                for qualified_name, obj in _walk_module(module_name, public[module_name], source, public_class_ids):
                    # A bound method (random.randint, mpmath.whitw) is its function under another name.
                    target = getattr(obj, "__func__", obj)
                    if id(target) in seen_objects:
                        continue
                    seen_objects.add(id(target))
                    kept_alive.append(target)
                    made = _make_item(qualified_name, obj)
                    if made is None:
                        continue
                    item, body = made
                    summary_key = item.summary.lower()
                    body_key = body.lower()
                    if summary_key in seen_summaries or body_key in seen_bodies:
                        continue
                    seen_summaries.add(summary_key)
                    seen_bodies.add(body_key)
                    items.append(item)
    return items


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences warnings and Python-level prints while third-party modules import and are inspected."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        with contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield


def _public_objects(module_name: str, source: str) -> list[tuple[str, object]]:
    """(name, object) for the module's public callables that belong to source, sorted by name."""
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit):
        # One module that fails to import (missing optional dependency, broken install) must not
        # take the whole dataset down; it is simply not part of it.
        return []
    public_names = getattr(module, "__all__", None)
    if not isinstance(public_names, (list, tuple)):
        public_names = dir(module)
    public_objects: list[tuple[str, object]] = []
    for name in sorted({str(name) for name in public_names}):
        if name.startswith("_"):
            continue
        try:
            obj = getattr(module, name)
        except Exception:
            continue
        if not inspect.ismodule(obj) and callable(obj) and _defined_in_source(obj, source):
            public_objects.append((name, obj))
    return public_objects


def _walk_module(
    module_name: str, public_objects: list[tuple[str, object]], source: str, public_class_ids: set[int]
) -> Iterator[tuple[str, object]]:
    """Yields (qualified name, object) for the module's public callables, then their classes' public methods."""
    # Module-level names come first: they are the names users call (mpmath.whitw, random.randint),
    # and the class methods behind them (MPContext.whitw, Random.randint) become aliases.
    yield from ((f"{module_name}.{name}", obj) for name, obj in public_objects)
    for name, obj in public_objects:
        if inspect.isclass(obj):
            yield from _class_members(f"{module_name}.{name}", obj, source, public_class_ids, nested=True)


def _class_members(
    class_name: str, cls: type, source: str, public_class_ids: set[int], *, nested: bool
) -> Iterator[tuple[str, object]]:
    """Public methods of cls, own and inherited, plus those of accessor classes (``Series.str``).

    An inherited method is skipped when the class that defines it is public in the source: it is
    named after that class instead. Methods inherited from other sources (``dict``, ``object``)
    belong to the walk of those sources.
    """
    for member_name in sorted(name for name in dir(cls) if not name.startswith("_")):
        owner = next((klass for klass in cls.__mro__ if member_name in vars(klass)), None)
        if owner is None or not _defined_in_source(owner, source):
            continue
        if owner is not cls and id(owner) in public_class_ids:
            continue
        member = vars(owner)[member_name]
        if isinstance(member, (classmethod, staticmethod)):
            member = member.__func__
        defining_class = getattr(member, "__objclass__", None)
        if inspect.isclass(defining_class) and defining_class not in cls.__mro__:
            # A C method copied onto an unrelated class (torch's legacy BoolTensor holds TensorBase's
            # methods) is named where it is defined, through the class that really inherits it.
            continue
        if callable(member) and not inspect.isclass(member):
            yield f"{class_name}.{member_name}", member
            continue
        # Only a descriptor that hands out a class is an accessor; a plain class attribute
        # (DatetimeTZDtype.type is Timestamp) is another public class, walked under its own name.
        if not nested or inspect.isclass(member):
            continue
        try:
            accessor = getattr(cls, member_name)
        except Exception:
            continue
        if inspect.isclass(accessor) and accessor is not cls and _defined_in_source(accessor, source):
            yield from _class_members(f"{class_name}.{member_name}", accessor, source, set(), nested=False)


def _defined_in_source(obj: object, source: str) -> bool:
    """Whether obj belongs to the source being walked, not something it re-exports from elsewhere."""
    module_name = getattr(obj, "__module__", None)
    if not isinstance(module_name, str):
        module_name = getattr(type(obj), "__module__", "")
    root = module_name.split(".", 1)[0]
    if source == STDLIB_SOURCE:
        return root.lstrip("_") in sys.stdlib_module_names or root in sys.stdlib_module_names
    return root == source


def _make_item(qualified_name: str, obj: object) -> tuple[_Item, str] | None:
    """The item for obj and its document body (no name or signature); None if the docstring fails the filters."""
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    paragraphs = [paragraph for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if paragraph.strip()]
    doc_signature = None
    # numpy and scipy ufuncs carry two signature paragraphs (generic, then specific); keep the last.
    while paragraphs and (signature := _signature_paragraph(paragraphs[0])) is not None:
        doc_signature = signature
        paragraphs.pop(0)
    if not paragraphs:
        return None
    summary = _clean_text(paragraphs[0])
    opening_rest = ""
    if len(summary.split()) > MAX_SUMMARY_WORDS:
        # A long opening paragraph: its first sentence is the summary, the others open the body.
        summary, opening_rest = _first_sentence(summary)
    if _CALL_PREFIX.match(summary) or not MIN_SUMMARY_WORDS <= len(summary.split()) <= MAX_SUMMARY_WORDS:
        return None
    body_text = opening_rest + "\n\n" + _strip_examples("\n\n".join(paragraphs[1:]))
    body = _truncate(_clean_text(body_text), MAX_DOCUMENT_CHARS)
    if len(body.split()) < MIN_BODY_WORDS or summary.lower() in body.lower():
        return None
    signature = doc_signature if doc_signature is not None else _signature(obj)
    document = _truncate(" ".join(f"{qualified_name}{signature} {body}".split()), MAX_DOCUMENT_CHARS)
    return _Item(qualified_name=qualified_name, summary=summary, document=document), body


def _first_sentence(text: str) -> tuple[str, str]:
    """Splits text after its first sentence: a '.', '!' or '?' followed by a space and a capital letter."""
    parts = _SENTENCE_END.split(text, maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else (text, "")


def _signature_paragraph(paragraph: str) -> str | None:
    """The "(args) -> result" part of a leading call-signature paragraph, or None if it is prose."""
    text = " ".join(paragraph.split())
    match = _SIGNATURE_LINE.match(text)
    if match is None:
        return None
    result = match.group("result")
    # "D.pop(k[,d]) -> v, remove specified key and ..." is a summary in disguise, not a signature.
    if result is not None and len(result.split()) > 4:
        return None
    return text[text.index("(") :]


def _signature(obj: object) -> str:
    try:
        return _ADDRESS.sub("", str(inspect.signature(obj)))
    except (TypeError, ValueError):
        return ""


def _strip_examples(text: str) -> str:
    """Drops doctest sessions and their output, Examples headings and section underlines."""
    kept: list[str] = []
    in_session = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_session = True
            continue
        if in_session:
            # Output lines and "..." continuations run until the next blank line.
            if stripped:
                continue
            in_session = False
        if any(pattern.match(line) for pattern in _WORDLESS_LINES):
            continue
        kept.append(_DIRECTIVE_MARKER.sub(r"\1", line))
    return "\n".join(kept)


def _clean_text(text: str) -> str:
    """Turns reST roles and literals into plain words and collapses whitespace."""
    text = _RST_ROLE.sub(r"\1", text)
    text = text.replace("``", "").replace("`", "")
    return _ADDRESS.sub("", " ".join(text.split()))


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut


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
