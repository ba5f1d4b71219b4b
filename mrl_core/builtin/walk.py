"""Walking the sources' modules for public callables and their methods, keeping the first of every alias,
summary and document body.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import sys
import warnings
from collections.abc import Iterator

from mrl_core.builtin.docstrings import _Item, _make_item
from mrl_core.builtin.sources import PACKAGE_SOURCES, STDLIB_MODULES, STDLIB_SOURCE


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
