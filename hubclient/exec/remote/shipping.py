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
- **classes and functions of modules outside the allow-list**, pickled by reference: a shipped
  method that names ``Path`` (``from pathlib import Path`` at the top of its module) although
  only local code paths call it, or a ``pathlib.Path`` held as data (a file name) by an object
  that travels. The server would refuse the whole request (``Module pathlib is not whitelisted``).

:func:`ndif_pickling` changes exactly those reductions while a request is serialised:
a module outside the allow-list, or one of the shipped packages, travels as
:class:`NotOnServer` (a stand-in that raises a clear error if trace code really uses it on the
server), a cached function of a shipped package travels as its uncached function, a function of
a module outside the allow-list as :class:`FunctionNotOnServer` (raises when called) and such a
class as a placeholder class (:func:`class_not_on_server`: its instances, e.g. an unpickled
``Path``, are :class:`ValueNotOnServer` placeholders that raise when used). Every other object
is pickled as nnsight pickles it.

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

    def __reduce__(self) -> Any:
        return (NotOnServer, (self.module_name,))

    def __repr__(self) -> str:
        return f"<module {self.module_name!r} not shipped to the server>"


class FunctionNotOnServer:
    """Stands in, on the server, for a function of a module outside NDIF's allow-list that shipped
    code names as a global; calling it raises a clear error."""

    def __init__(self, name: str):
        self.qualified_name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{self.qualified_name} is not available on the NDIF server (its module is not on NDIF's import allow-list, "
            "so hub does not ship it): trace code may use only torch, math and the other allow-listed modules"
        )

    def __reduce__(self) -> Any:
        return (FunctionNotOnServer, (self.qualified_name,))

    def __repr__(self) -> str:
        return f"<{self.qualified_name} not shipped to the server>"


class ValueNotOnServer:
    """An object of a class that is not shipped (:func:`class_not_on_server`), as the server
    unpickles it: whatever it was built from is dropped; any attribute read raises."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise AttributeError(
            f"a {type(self).__name__} value is not available on the NDIF server (its module is not on NDIF's import allow-list, "
            "so hub does not ship it): use it before or after the trace, not inside"
        )


def class_not_on_server(name: str) -> type:
    """A placeholder class named ``name`` (``"pathlib.PosixPath"``), subclass of
    :class:`ValueNotOnServer`: what a class of a module outside NDIF's allow-list becomes on the
    server, so that objects of it that travel as data unpickle (as placeholders)."""
    return type(name.rsplit(".", 1)[-1], (ValueNotOnServer,), {"qualified_name": name})


def _uncached(function: Any) -> Any:
    return function


@contextmanager
def ndif_pickling(packages: list[str]) -> Iterator[None]:
    """While serialising a request: modules outside NDIF's allow-list and modules of the
    shipped ``packages`` travel as :class:`NotOnServer`; cached functions of ``packages``
    travel uncached; classes and functions of modules outside the allow-list travel as
    placeholders (:func:`class_not_on_server`, :class:`FunctionNotOnServer`; see the module
    docstring)."""
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

    def by_reference_elsewhere(obj: Any) -> str | None:
        """``module.qualname`` of a class or function that would be pickled by reference to a
        module outside the allow-list (and outside the shipped packages), else ``None``."""
        if not isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            return None
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module or module.split(".")[0] in shipped or on_allow_list(module):
            return None
        if not isinstance(obj, types.BuiltinFunctionType):  # builtins are always by reference
            try:
                if not cp._should_pickle_by_reference(obj):
                    return None
            except Exception:
                return None
        return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"

    class NdifPickler(base):  # type: ignore[misc, valid-type]
        dispatch_table = ChainMap({types.ModuleType: module_reduce, functools._lru_cache_wrapper: cached_reduce}, base.dispatch_table)

        def reducer_override(self, obj: Any) -> Any:
            reduced = super().reducer_override(obj)
            if reduced is not NotImplemented:  # by value, or cloudpickle's own reduction (types.SimpleNamespace…)
                return reduced
            name = by_reference_elsewhere(obj)
            if name is not None:
                return (class_not_on_server, (name,)) if isinstance(obj, type) else (FunctionNotOnServer, (name,))
            return NotImplemented

    serialization.CustomCloudPickler = NdifPickler
    try:
        yield
    finally:
        serialization.CustomCloudPickler = base
