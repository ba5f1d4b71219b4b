"""What the builtin dataset walks: the variants, the modules of each source, and each source's installed version."""

from __future__ import annotations

import platform
from typing import Literal, get_args

Variant = Literal["full", "quick"]
VARIANTS: tuple[str, ...] = get_args(Variant)

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


def source_versions(variant: Variant) -> dict[str, str]:
    """The installed version of each source the variant walks ('stdlib' is the Python version)."""
    import importlib.metadata  # ~30 ms (it pulls in email); only the cache key needs it

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
