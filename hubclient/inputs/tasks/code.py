"""Code: MBPP Python programs under the logit lens (Austin et al. 2021; Wu et al. 2024 §4, Fig. 6).

Each program (``code`` of an MBPP record, CRLF made LF, plus its ``test_list`` asserts unless
``with_tests`` is off) is one prompt. Read positions come from Python's own parser
(:mod:`ast`), as in the paper's code (``paper-protocols.md`` A7, A8):

A7, ``"and"`` at list commas (:func:`and_sites`, prompts with tests)
    the comma after each element but the last of every ``ast.List`` with more than one
    element; read there: the first token of ``" and"``, of the controls ``" or"`` and
    ``" not"``, and the true next token (``coding/logit_lens_and.py``).

A8, semantic roles (:func:`role_sites`, prompts without tests)
    the ``(`` / ``,`` before each positional argument of a call ``f(...)`` to a builtin or to a
    function defined in the program; read there: the first token of ``" " + parameter name``
    (the role) and of ``" " + ast.unparse(argument)`` (the surface); Δ = log p(role) −
    log p(surface) (``coding/logit_lens_semantic_role.py``).

Offsets are characters (``ast`` columns are UTF-8 bytes and are converted; the paper's code
uses them as characters, which differs only on lines with non-ASCII text before the site).
The paper's prompts keep MBPP's CRLF line ends; here they are LF (a whitespace difference).
"""

from __future__ import annotations

import ast
import builtins
import inspect
from dataclasses import dataclass
from pathlib import Path

from hubclient.errors import HubError
from hubclient.inputs.prompts import iter_jsonl, read_lines
from hubclient.inputs.tasks.sites import NEXT_TOKEN, Site, SiteItem


@dataclass(frozen=True)
class Program:
    """One MBPP program.

    Attributes:
        task_id: MBPP ``task_id`` (or the line number when a record has none).
        line: 1-based line of the record in the JSONL file.
        text: the prompt: code (LF line ends, trailing space stripped) and, optionally, the
            test asserts one per line.
    """

    task_id: int
    line: int
    text: str


def read_mbpp(path: Path, n: int | None = None, with_tests: bool = True) -> list[Program]:
    """Read MBPP JSONL: one JSON object a line with ``code`` (and ``test_list``, ``task_id``).

    Blank lines are skipped. Each program must parse as Python (tests included).

    Args:
        path: the ``mbpp.jsonl`` file.
        n: first ``n`` programs (``None``: all).
        with_tests: append the ``test_list`` asserts to the code.

    Raises:
        HubError: a missing or non-UTF-8 file, a line that is not a JSON object, a record
            without ``code`` (or without a ``test_list`` list when ``with_tests``), code that is
            not valid Python (each with its line number), ``n < 1`` or more than the records.
    """
    path = Path(path)
    lines = read_lines(path, "MBPP file", "; pass --mbpp PATH/mbpp.jsonl")
    if n is not None and n < 1:
        raise HubError(f"--n must be at least 1, got {n}")
    programs: list[Program] = []
    for number, record in iter_jsonl(path, lines):
        if not isinstance(record.get("code"), str):
            raise HubError(f"{path} line {number}: no 'code' string field (fields: {', '.join(sorted(record)) or 'none'})")
        text = record["code"].replace("\r\n", "\n").replace("\r", "\n").rstrip()
        if with_tests:
            tests = record.get("test_list")
            if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
                raise HubError(f"{path} line {number}: no 'test_list' list of strings (fields: {', '.join(sorted(record))}); pass --no-tests to use the code alone")
            if tests:
                text = text + "\n" + "\n".join(t.strip() for t in tests)
        try:
            ast.parse(text)
        except SyntaxError as exc:
            raise HubError(f"{path} line {number}: the program is not valid Python ({exc.msg}, program line {exc.lineno})") from None
        task_id = record.get("task_id", number)
        programs.append(Program(int(task_id) if isinstance(task_id, int) else number, number, text))
        if n is not None and len(programs) == n:  # lines after the n-th program are not read
            break
    if n is not None and len(programs) < n:
        raise HubError(f"--n {n} is more than the {len(programs)} programs in {path}; use --n {len(programs)} or fewer")
    if not programs:
        raise HubError(f"{path} holds no program")
    return programs


# --------------------------------------------------------------------------- spans
class _Offsets:
    """Line/column -> character offset in a source text (tokenize columns are characters,
    ast columns are UTF-8 bytes)."""

    def __init__(self, text: str):
        # split on "\n" only, as Python's parser does for LF text (str.splitlines would also
        # split on form feeds and other separators that may sit inside string literals)
        self.lines = [line + "\n" for line in text.split("\n")]
        self.lines[-1] = self.lines[-1][:-1]
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def chars(self, row: int, col: int) -> int:
        return self.starts[row - 1] + col

    def node(self, row: int, col_bytes: int) -> int:
        line = self.lines[row - 1] if row - 1 < len(self.lines) else ""
        return self.starts[row - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        """``(start, end)`` character offsets of an ``ast`` node in the text."""
        return self.node(node.lineno, node.col_offset), self.node(node.end_lineno, node.end_col_offset)


# --------------------------------------------------------------------------- A7: "and" at commas
#: A7's targets at each comma: the word read for ``and`` and its controls (first token of
#: ``" " + word``), and the true next token (``coding/logit_lens_and.py:68-83``).
AND_TARGETS: tuple[tuple[str, str], ...] = (("and", "and"), ("or", "or"), ("not", "not"), ("next", NEXT_TOKEN))


def and_sites(text: str) -> list[Site]:
    """A7 comma sites of one program (``paper-protocols.md`` A7; ``coding/logit_lens_and.py:31-66``).

    For every ``ast.List`` with more than one element (nested lists included, each list on its
    own) and each element: from the element's end, skip spaces and newlines; the next character
    must be ``,`` (a ``]`` means the last element: not counted; anything else, e.g. a comment,
    is the code's "corner case": not counted). The comma's character index is the site; the
    lens is read at the token that is exactly that comma (``match="comma-token"``: merged
    tokens such as ``',`` are skipped when the tokenizer is known).

    Returns:
        the sites in text order, each with :data:`AND_TARGETS` and ``info`` ``{"list_size"}``.
    """
    tree = ast.parse(text)
    offsets = _Offsets(text)
    found: dict[int, int] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.List) and len(node.elts) > 1):
            continue
        for element in node.elts:
            end = offsets.span(element)[1]
            while end < len(text) and text[end] in (" ", "\n"):
                end += 1
            if end < len(text) and text[end] == ",":
                found[end] = len(node.elts)
    out = []
    for char in sorted(found):
        out.append(Site("comma", "comma-token", AND_TARGETS, char=char, info={"list_size": found[char]}))
    return out


# --------------------------------------------------------------------------- A8: parameter names
#: Builtins whose overloads have different first parameters: skipped (``coding/logit_lens_semantic_role.py:43-45``).
SKIPPED_BUILTINS = frozenset({"range", "max", "min", "dict", "zip", "type"})
#: Parameter names of builtins that :func:`inspect.signature` cannot read (from ``builtins.pyi``,
#: as hard-coded in ``coding/logit_lens_semantic_role.py:51-62``).
BUILTIN_PARAMS: dict[str, tuple[str, ...]] = {
    "bool": ("o",),
    "int": ("x", "base"),
    "float": ("x",),
    "filter": ("function", "iterable"),
    "map": ("func", "iter1", "iter2"),
    "next": ("i", "default"),
    "iter": ("object", "sentinel"),
    "set": ("iterable",),
    "str": ("object", "encoding", "errors"),
}
#: Parameter names never used as a role word (``coding/logit_lens_semantic_role.py:160``).
SKIPPED_PARAMS = frozenset({"obj", "object"})


def builtin_param(function: str, index: int) -> str | None:
    """Name of positional parameter ``index`` of builtin ``function``, or ``None`` when the
    paper's code has none (a skipped builtin, a builtin neither :func:`inspect.signature` nor
    :data:`BUILTIN_PARAMS` describes, or an index past its parameters; the paper's code
    would raise on the last two, which MBPP never reaches with Python 3.11).

    ``inspect.signature`` depends on the Python version; with Python 3.11 (checked) the
    builtins MBPP calls read as in the paper's code (``print``'s second positional argument
    reads ``sep``, as there).
    """
    if function in SKIPPED_BUILTINS:
        return None
    try:
        params = list(inspect.signature(getattr(builtins, function)).parameters)
    except (ValueError, TypeError):
        params = list(BUILTIN_PARAMS.get(function, ()))
    return params[index] if index < len(params) else None


def role_sites(text: str) -> tuple[list[Site], dict[str, int]]:
    """A8 sites of one program (``paper-protocols.md`` A8; ``coding/logit_lens_semantic_role.py:104-168``).

    For every ``ast.Call`` whose function is a plain name (``f(...)``, not ``a.f(...)``) and
    each positional argument ``k``: the key character is the ``(`` before argument 0 or the
    ``,`` before argument ``k > 0``, found from the end of the function name / argument
    ``k-1`` by skipping spaces and ``)``. The role word is the parameter's name: for a name in
    ``dir(builtins)`` :func:`builtin_param`; otherwise the only ``def`` of that name in the
    program (``args.args[k]``). Dropped (counted in the returned dict):

    * ``no_param``: a skipped builtin, an imported/undefined function, a function defined
      twice, no parameter ``k``;
    * ``same``: the parameter's name is the argument's source (``ast.unparse``);
    * ``paren``: the argument's source starts with ``(``;
    * ``obj``: the parameter is ``obj`` or ``object``;
    * ``no_key``: the character found is not ``(`` or ``,`` (the paper's code asserts).

    Two more skips need the tokenizer and happen in :mod:`analyses.code_lens`: no token ends
    at the key (``([`` merged forward), and equal first tokens of role and surface.

    Returns:
        ``(sites, dropped)``: sites in (call, argument) walk order with targets
        ``(("role", param), ("surface", unparse(arg)))`` and ``info`` ``{"function", "arg_index",
        "param", "surface"}``; ``dropped``: reason -> count.
    """
    tree = ast.parse(text)
    offsets = _Offsets(text)
    defs: dict[str, list[ast.FunctionDef]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            defs.setdefault(node.name, []).append(node)
    builtin_names = set(dir(builtins))
    dropped = {"no_param": 0, "same": 0, "paren": 0, "obj": 0, "no_key": 0}
    sites: list[Site] = []
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.args):
            continue
        name = call.func.id
        for k, arg in enumerate(call.args):
            previous = call.args[k - 1] if k > 0 else call.func
            key = offsets.span(previous)[1]
            while key < len(text) and text[key] in (" ", ")"):
                key += 1
            if key >= len(text) or text[key] not in ("(", ","):
                dropped["no_key"] += 1
                continue
            if name in builtin_names:
                param = builtin_param(name, k)
            else:
                found = defs.get(name, [])
                param = found[0].args.args[k].arg if len(found) == 1 and k < len(found[0].args.args) else None
            if param is None:
                dropped["no_param"] += 1
                continue
            surface = ast.unparse(arg)
            if param == surface:
                dropped["same"] += 1
                continue
            if surface.startswith("("):
                dropped["paren"] += 1
                continue
            if param in SKIPPED_PARAMS:
                dropped["obj"] += 1
                continue
            info = {"function": name, "arg_index": k, "param": param, "surface": surface}
            sites.append(Site("argument", "ends-at", (("role", param), ("surface", surface)), char=key, info=info))
    return sites, dropped


def and_items(programs: list[Program]) -> list[SiteItem]:
    """A7 prompts: the programs that have at least one comma site (the paper's code skips a
    program without a list of two or more elements before running the model; a program whose
    lists end every element with ``]`` or a comment has no site either and is skipped too:
    it would add nothing)."""
    items = []
    for program in programs:
        sites = and_sites(program.text)
        if sites:
            items.append(SiteItem(program.text, sites, {"task_id": program.task_id, "line": program.line}))
    return items


def role_items(programs: list[Program]) -> tuple[list[SiteItem], dict[str, int]]:
    """A8 prompts: the programs with at least one argument site, and the summed drop counts
    of :func:`role_sites`."""
    items = []
    dropped: dict[str, int] = {}
    for program in programs:
        sites, why = role_sites(program.text)
        for reason, count in why.items():
            dropped[reason] = dropped.get(reason, 0) + count
        if sites:
            items.append(SiteItem(program.text, sites, {"task_id": program.task_id, "line": program.line}))
    return items, dropped
