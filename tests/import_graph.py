"""The static import graph of ``hubclient`` and ``analyses``, read with :mod:`ast` alone (no
module is imported, so a broken or slow module cannot hide an edge).

Used by ``tests/test_layers.py``. What counts as an import of module ``m``:

* every ``import x`` and ``from x import y`` anywhere in ``m``: at module top, inside functions,
  methods, ``try`` blocks and ``if`` blocks (``ast.walk`` sees them all);
* ``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")`` with a string
  literal (a way round the rule is still an import);
* relative imports, resolved against ``m``'s package;
* ``from pkg import name`` is an edge to the submodule ``pkg.name`` when that file exists,
  otherwise to ``pkg`` itself (a name defined in its ``__init__``);
* an old flat-layout path (``hubclient.arch``, ``hubclient.remote.jobs``…) is resolved to its
  new home through ``hubclient.LEGACY_MODULES``, read from ``hubclient/__init__.py`` with
  :func:`ast.literal_eval`;
* importing ``a.b.c`` is an edge to ``a.b.c`` only, not to the packages ``a`` and ``a.b`` whose
  ``__init__`` Python also runs (the usual convention of import linters: a package's own
  ``__init__`` importing its submodules would otherwise always look like a cycle).

Each import records whether it sits under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``),
because those never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hubclient", "analyses")


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted, legacy paths resolved
    path: Path  # file of ``source``
    line: int
    text: str  # the statement as written (first line)
    type_checking: bool  # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line} {self.text}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@lru_cache(maxsize=None)
def module_files() -> dict[str, Path]:
    """Every module of the packages, by dotted name."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


@lru_cache(maxsize=None)
def legacy_modules() -> dict[str, str]:
    tree = ast.parse((ROOT / "hubclient" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "LEGACY_MODULES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("hubclient/__init__.py defines no LEGACY_MODULES table")


def resolve_legacy(name: str) -> str:
    for old, new in legacy_modules().items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return name


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside the body (not the ``else``) of ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                inside.update(id(n) for n in ast.walk(stmt))
    return inside


def _literal_import_call(node: ast.AST) -> str | None:
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports_in(source: str, text: str, path: Path, is_package: bool = False) -> list[Import]:
    """The imports of our modules in module ``source`` (source code ``text``, file ``path``)."""
    files = module_files()
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    guarded = _type_checking_nodes(tree)
    package = source.split(".") if is_package else source.split(".")[:-1]
    found: list[Import] = []
    seen: set[tuple[str, int]] = set()

    def add(target: str, node: ast.AST) -> None:
        target = resolve_legacy(target)
        if not _ours(target) or (target, node.lineno) in seen:
            return
        seen.add((target, node.lineno))
        found.append(Import(source, target, path, node.lineno, lines[node.lineno - 1].strip(), id(node) in guarded))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            base = resolve_legacy(base)
            for alias in node.names:
                sub = resolve_legacy(f"{base}.{alias.name}")
                add(sub if sub in files else base, node)
        elif (literal := _literal_import_call(node)) is not None:
            add(literal, node)
    return sorted(found, key=lambda imp: (imp.line, imp.target))


@lru_cache(maxsize=None)
def imports() -> tuple[Import, ...]:
    """Every import of one of our modules by one of our modules."""
    found: list[Import] = []
    for source, path in module_files().items():
        found += imports_in(source, path.read_text(encoding="utf-8"), path, path.name == "__init__.py")
    return tuple(found)


def graph(*, type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports (ours only; ``type_checking`` adds the guarded ones)."""
    edges: dict[str, set[str]] = {name: set() for name in module_files()}
    for imp in imports():
        if imp.source != imp.target and (type_checking or not imp.type_checking):
            edges[imp.source].add(imp.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, and
    for each one a concrete cycle through it is easy to read off the listed edges."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return sorted(components)


def describe_cycle(component: list[str], edges: dict[str, set[str]]) -> str:
    """``a -> b -> c -> a`` for one cycle through the component, then the import lines that
    make up the component's edges."""
    members = set(component)
    # shortest cycle back to the first member (BFS inside the component)
    first = component[0]
    previous: dict[str, str] = {}
    frontier = [first]
    path: list[str] = []
    while frontier and not path:
        next_frontier = []
        for node in frontier:
            for child in sorted(edges[node] & members):
                if child == first:
                    back = [node]
                    while back[-1] != first:
                        back.append(previous[back[-1]])
                    path = back[::-1] + [first]
                    break
                if child not in previous:
                    previous[child] = node
                    next_frontier.append(child)
            if path:
                break
        frontier = next_frontier
    lines = [" -> ".join(path) if path else " <-> ".join(component)]
    for imp in imports():
        if imp.source in members and imp.target in members and imp.source != imp.target and imp.target in edges[imp.source]:
            lines.append(f"    {imp.where()}")
    return "\n".join(lines)
