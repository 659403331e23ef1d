"""What a request ships to NDIF: only what NDIF's sandbox admits, and as little as possible.

A request pickles the trace body with everything it references (cloudpickle, by value for the
packages registered with ``nnsight.register``: ``hubclient`` and the analysis' package). Two
things in that closure break on NDIF although the server never uses them:

- **module objects**. A shipped function or class that names a module as a global (an
  analysis method calling ``stats.bootstrap_ci`` after ``from hubclient.science import stats``,
  or ``hashlib.sha256``) makes cloudpickle ship it: a hub module *as a whole*, its source file
  path and every function of it included (``dynamic_subimport``), a library module by
  reference (``subimport``). NDIF deserialises under an import allow-list
  (:data:`NDIF_MODULES`), so ``hashlib``, ``csv``, ``abc`` (a ``Protocol`` class in a shipped
  module), ``_thread`` … fail the whole request (``Module X is not whitelisted``).
- **cached functions** (``functools.lru_cache``): pickled by reference to their module, which
  the server cannot import.

:func:`ndif_pickling` changes exactly those two reductions while a request is serialised:
a module outside the allow-list, or one of the shipped packages, travels as
:class:`NotOnServer` (a stand-in that raises a clear error if trace code really uses it on the
server), so does a class or function that would be pickled by reference to a module outside
the allow-list (``pathlib.Path`` named in a shipped method; instances of such a class, e.g. a
``Path`` attribute, unpickle as the stand-in), and a cached function of a shipped package
travels as its uncached function. Every
other object is pickled as nnsight pickles it.

Sources: NDIF's allow-list is ``src/ndif/services/ray/nn/security/whitelist.yaml`` of
github.com/ndif-team/ndif (``modules`` and ``deserialization_modules``); its deserialisation
runs under both lists, execution under ``modules`` only. The same list drives the strict test
server (:mod:`hubclient.testing.strict_worker`; a test checks the two agree).
"""

from __future__ import annotations

import functools
import types
from contextlib import contextmanager
from typing import Any, Iterator

#: NDIF's import allow-list, ``(name, strict)``: ``strict`` admits ``name`` only, otherwise also
#: its submodules (``modules`` plus ``deserialization_modules`` of NDIF's whitelist.yaml).
NDIF_MODULES: tuple[tuple[str, bool], ...] = (
    ("PIL", False), ("re", False), ("dataclasses", False), ("builtins", True), ("torch", False), ("collections", False),
    ("nnsight", False), ("time", False), ("numpy", False), ("sympy", False), ("nnterp", False), ("math", False),
    ("einops", False), ("urllib3", False), ("typing", False), ("_operator", True), ("operator", True), ("pandas", False),
    ("enum", False), ("__future__", False), ("diffusers", False), ("transformers", False), ("tqdm", False), ("heapq", False),
    ("json", False), ("warnings", False), ("functools", False), ("_functools", False), ("jinja2", False), ("encodings", False),
    ("peft", False), ("pydantic", False), ("argparse", False), ("datasets", False), ("tokenizers", False),
    ("huggingface_hub", False), ("httpcore", False), ("fsspec", False), ("scipy", False), ("regex", False),
    ("concurrent", False), ("io", False), ("_frozen_importlib_external", False), ("_frozen_importlib", False),
    ("pickle", False), ("cloudpickle", False), ("copyreg", False), ("transformers_modules", False),
)


def on_allow_list(name: str) -> bool:
    """True when NDIF admits module ``name`` (see :data:`NDIF_MODULES`)."""
    for entry, strict in NDIF_MODULES:
        if name == entry or (not strict and name.startswith(entry + ".")):
            return True
    return False


class NotOnServer:
    """Stands in, on the server, for a module that a request does not ship.

    Any attribute read raises ``AttributeError`` naming the module and the fix: trace code
    must call functions (imported by name at the top of its module), not modules, and only
    modules on NDIF's allow-list.
    """

    def __init__(self, name: str):
        self.module_name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr == "module_name":
            raise AttributeError(attr)
        raise AttributeError(
            f"module {self.module_name!r} is not shipped to the NDIF server (hub ships functions, not modules, "
            f"and NDIF admits only allow-listed modules): import {attr!r} by name in the trace code's module"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> "NotOnServer":
        # an instance of a stand-in class (e.g. a pathlib.Path attribute) unpickles as the stand-in
        return self

    def __reduce__(self) -> Any:
        return (NotOnServer, (self.module_name,))

    def __repr__(self) -> str:
        return f"<module {self.module_name!r} not shipped to the server>"


def _uncached(function: Any) -> Any:
    return function


@contextmanager
def ndif_pickling(packages: list[str]) -> Iterator[None]:
    """While serialising a request: modules outside NDIF's allow-list and modules of the
    shipped ``packages`` travel as :class:`NotOnServer`; cached functions of ``packages``
    travel uncached (see the module docstring)."""
    from collections import ChainMap

    import cloudpickle.cloudpickle as cp
    from nnsight.intervention import serialization

    shipped = tuple(packages)

    def module_reduce(module: types.ModuleType) -> Any:
        name = module.__name__
        if name.split(".")[0] in shipped or not on_allow_list(name):
            return (NotOnServer, (name,))
        return cp._module_reduce(module)

    def cached_reduce(wrapper: Any) -> Any:
        inner = getattr(wrapper, "__wrapped__", None)
        if inner is not None and str(getattr(wrapper, "__module__", "")).split(".")[0] in shipped:
            return (_uncached, (inner,))
        return wrapper.__reduce__()

    base = serialization.CustomCloudPickler

    class NdifPickler(base):  # type: ignore[misc, valid-type]
        dispatch_table = ChainMap({types.ModuleType: module_reduce, functools._lru_cache_wrapper: cached_reduce}, base.dispatch_table)

        def reducer_override(self, obj: Any) -> Any:
            # a class or function pickled by reference to a module NDIF does not admit (e.g.
            # pathlib.Path named in a shipped method, or the class of a Path attribute) travels
            # as a stand-in instead of failing the whole request at deserialisation
            reduced = super().reducer_override(obj)
            if reduced is NotImplemented and isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
                module = getattr(obj, "__module__", None)  # NotImplemented: pickled by reference
                if isinstance(module, str) and module.split(".")[0] not in shipped and not on_allow_list(module):
                    return (NotOnServer, (f"{module}.{getattr(obj, '__qualname__', '?')}",))
            return reduced

    serialization.CustomCloudPickler = NdifPickler
    try:
        yield
    finally:
        serialization.CustomCloudPickler = base
