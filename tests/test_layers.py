"""The layer contract of ``hubclient`` and ``analyses``, and no import cycles (static, ``ast`` only).

Layers, lowest first (``hubclient/__init__.py`` and ``docs/developing.md`` describe them)::

    0  hubclient (the package root), hubclient.errors, hubclient.fs
    1  hubclient.models, hubclient.inputs, hubclient.science
    2  hubclient.run, hubclient.plots, hubclient.analysis
    3  hubclient.exec (with hubclient.exec.remote)
    4  hubclient.runner
    5  hubclient.testing   (the NDIF test server: may import anything below the CLI)
    6  hubclient.cli
    7  analyses            (may import anything in hubclient, and each other)

The rules:

* A module imports from its own layer or lower ones only. Every import counts: module top,
  inside functions and methods, ``try``/``if`` blocks, and ``importlib.import_module`` with a
  literal name (``tests/import_graph.py`` says exactly how imports are read and resolved; old
  flat-layout paths such as ``hubclient.arch`` count as their new homes).
* ``if TYPE_CHECKING:`` imports are treated like any other import, for the layers and for
  cycles. Nothing needs more today: the type-only imports of the package (``HubModel``,
  ``RunDir``, ``RunConfig``, ``Analysis``…) all point at or below the importing layer. A type
  hint that would need a higher layer is a sign the code is in the wrong layer.
* Same-layer imports (sibling sub-packages, e.g. ``run`` <-> ``analysis``, ``science`` ->
  ``models``) are allowed as long as they form no import cycle: the cycle test checks the
  module graph (module granularity; a package ``__init__`` importing its own submodules is
  not a cycle, see ``tests/import_graph.py``).
* ``hubclient`` never imports ``analyses`` (the CLI finds analyses through entry points), and
  nothing in ``hubclient`` (outside ``hubclient.testing``) or ``analyses`` imports
  ``hubclient.testing``, which only tests use.

``KNOWN_VIOLATIONS`` / ``KNOWN_CYCLES`` list what is wrong today in code other people are
changing; the strict tests skip exactly those, and the xfail test turns XPASS once they are gone
(then delete the entries).
"""

from __future__ import annotations

from pathlib import Path


import import_graph as graph_mod
from import_graph import ROOT, Import, cycles, describe_cycle, graph, imports, imports_in, module_files

#: (name prefix, layer) — the longest matching prefix wins.
LAYERS: dict[str, int] = {
    "hubclient": 0,
    "hubclient.errors": 0,
    "hubclient.fs": 0,
    "hubclient.models": 1,
    "hubclient.inputs": 1,
    "hubclient.science": 1,
    "hubclient.run": 2,
    "hubclient.plots": 2,
    "hubclient.analysis": 2,
    "hubclient.exec": 3,
    "hubclient.runner": 4,
    "hubclient.testing": 5,
    "hubclient.cli": 6,
    "analyses": 7,
}
LAYER_NAMES = {0: "errors/fs", 1: "models/inputs/science", 2: "run/plots/analysis", 3: "exec", 4: "runner", 5: "testing", 6: "cli", 7: "analyses"}

#: (importing module, imported module) -> why it is tolerated for now and how to fix it.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}

#: sets of modules forming an import cycle -> why it is tolerated for now and how to fix it.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def violations() -> list[Import]:
    return [imp for imp in imports() if layer_of(imp.target) > layer_of(imp.source)]


def _fmt(found: list[Import]) -> str:
    return "\n".join(
        f"  {imp.where()}   ({imp.source} [{LAYER_NAMES[layer_of(imp.source)]}] -> {imp.target} [{LAYER_NAMES[layer_of(imp.target)]}])"
        for imp in found
    )


def test_every_module_has_a_layer() -> None:
    missing = []
    for name in module_files():
        try:
            layer_of(name)
        except KeyError:
            missing.append(name)
    assert not missing, f"modules outside every layer (add them to LAYERS in {Path(__file__).name}): {missing}"


def test_layer_contract() -> None:
    found = [imp for imp in violations() if (imp.source, imp.target) not in KNOWN_VIOLATIONS]
    assert not found, (
        "imports from a higher layer (a module may import from its own layer or lower ones; "
        "docs/developing.md):\n" + _fmt(found)
    )


def test_hubclient_never_imports_analyses() -> None:
    found = [imp for imp in imports() if imp.source.split(".")[0] == "hubclient" and imp.target.split(".")[0] == "analyses"]
    assert not found, "hubclient must not import analyses (the CLI finds them through entry points):\n" + _fmt(found)


def test_testing_server_is_for_tests_only() -> None:
    found = [
        imp for imp in imports()
        if imp.target.startswith("hubclient.testing") and not imp.source.startswith("hubclient.testing")
    ]
    assert not found, "hubclient.testing is used by tests only:\n" + _fmt(found)


def _cycles_report(components: list[list[str]], edges: dict[str, set[str]]) -> str:
    return "\n".join(describe_cycle(c, edges) for c in components)


def test_no_import_cycles_in_hubclient() -> None:
    edges = graph(type_checking=True)
    found = [c for c in cycles(edges) if c[0].startswith("hubclient") and frozenset(c) not in KNOWN_CYCLES]
    assert not found, "import cycles in hubclient:\n" + _cycles_report(found, edges)


def test_no_import_cycles_in_analyses() -> None:
    edges = graph(type_checking=True)
    found = [c for c in cycles(edges) if any(m.startswith("analyses") for m in c)]
    assert not found, "import cycles involving analyses:\n" + _cycles_report(found, edges)


# ----------------------------------------------------------------------- the scanner itself
def test_scanner_sees_function_level_type_checking_legacy_and_dynamic_imports() -> None:
    source = '''
from typing import TYPE_CHECKING
import hubclient.errors
from . import lifecycle
from .folder import RunDir
if TYPE_CHECKING:
    from hubclient.runner import RunConfig

def f():
    from hubclient.arch import get_module
    import importlib
    importlib.import_module("analyses.logit_lens")

class C:
    def g(self):
        from hubclient.remote.jobs import JobBook
'''
    found = imports_in("hubclient.run.example", source, ROOT / "hubclient" / "run" / "example.py")
    got = {(imp.target, imp.type_checking) for imp in found}
    assert got == {
        ("hubclient.errors", False),
        ("hubclient.run.lifecycle", False),  # relative, a submodule
        ("hubclient.run.folder", False),  # relative, a name of a module
        ("hubclient.runner", True),
        ("hubclient.models.arch", False),  # legacy alias, inside a function
        ("analyses.logit_lens", False),  # import_module with a literal
        ("hubclient.exec.remote.jobs", False),  # legacy alias of a package's submodule, in a method
    }


def test_cycle_finder() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert graph_mod.cycles({"x": {"y"}, "y": set()}) == []
