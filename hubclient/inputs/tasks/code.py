"""Code: MBPP Python programs under the logit lens (Austin et al. 2021; Wu et al. 2024 §4, Fig. 6).

Each program (``code`` of an MBPP record, CRLF made LF, plus its ``test_list`` asserts unless
``with_tests`` is off: most list literals of MBPP are in its tests) is one prompt. Probes are
found with Python's own parser (:mod:`ast`) and tokenizer (:mod:`tokenize`), never regexes:

``"and"`` at commas (group ``and``: the word "and")
    * ``list_comma``: the comma token between two consecutive elements of a list display
      (``ast.List``); nested commas inside an element belong to that element, not the list;
    * ``other_comma`` (control): every other comma token (call arguments, parameters, tuples,
      dict displays, subscripts, imports);
    * ``other_token`` (control): as many Python tokens of the program as it has list commas,
      drawn (seeded) among its names, numbers and operators other than commas.

Semantic roles (groups ``function``, ``argument``, ``variable``: the role words of
:data:`ROLE_WORDS`, every group at every role position, so the role-appropriate word is
compared with the other roles' words at the same position)
    * ``function_name``: the name after ``def`` and every use of that name;
    * ``argument``: each parameter (``ast.arg``, lambdas included) and every use of it;
    * ``variable``: each name bound by assignment, ``for``, ``with``, comprehension… (an
      ``ast.Name`` in a ``Store`` context) and every use of it.
    A name that falls in two roles in one program (e.g. a parameter that is reassigned) is
    left out. Attributes, keywords, builtins and imported names are never probed.

The lens is read at the span's last token (for ``count_ways``: the token ending in ``ways``).
"""

from __future__ import annotations

import ast
import functools
import io
import random
import tokenize
from dataclasses import dataclass
from pathlib import Path

from hubclient.errors import HubError
from hubclient.inputs.prompts import iter_jsonl, read_lines
from hubclient.inputs.tasks.items import LensItem, Probe

#: Role -> English words whose lens probability is read at identifiers of that role (summed).
ROLE_WORDS: dict[str, tuple[str, ...]] = {
    "function_name": ("function",),
    "argument": ("argument", "parameter"),
    "variable": ("variable",),
}
#: Group names of the role probes (one per role, in ROLE_WORDS order).
ROLE_GROUPS = {"function_name": "function", "argument": "argument", "variable": "variable"}
AND_GROUP = {"and": ("and",)}


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
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def chars(self, row: int, col: int) -> int:
        return self.starts[row - 1] + col

    def node(self, row: int, col_bytes: int) -> int:
        line = self.lines[row - 1] if row - 1 < len(self.lines) else ""
        return self.starts[row - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))


# comma_spans, role_spans and control_spans each read the same program: parse and tokenise it once.
@functools.lru_cache(maxsize=4)
def _tree(text: str) -> ast.Module:
    return ast.parse(text)


@functools.lru_cache(maxsize=4)
def _tokens(text: str) -> tuple[tokenize.TokenInfo, ...]:
    return tuple(tokenize.generate_tokens(io.StringIO(text).readline))


def comma_spans(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Comma tokens of a program: ``(list_commas, other_commas)`` as ``(start, end)`` spans.

    A list comma is the first comma token after the end of element ``i`` and before the start
    of element ``i + 1`` of an ``ast.List`` (commas nested inside an element lie inside the
    element's own span, so they are never taken).
    """
    tree = _tree(text)
    offsets = _Offsets(text)
    commas = []
    for tok in _tokens(text):
        if tok.type == tokenize.OP and tok.string == ",":
            commas.append(offsets.chars(*tok.start))
    listed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List):
            for left, right in zip(node.elts, node.elts[1:]):
                after = offsets.node(left.end_lineno, left.end_col_offset)
                before = offsets.node(right.lineno, right.col_offset)
                for start in commas:
                    if after <= start < before:
                        listed.add(start)
                        break
    list_spans, other_spans = [], []
    for start in commas:
        (list_spans if start in listed else other_spans).append((start, start + 1))
    return list_spans, other_spans


def role_spans(text: str) -> list[tuple[int, int, str]]:
    """Identifier occurrences with a semantic role: ``(start, end, role)``, sorted by start.

    Roles (see the module docstring): ``function_name`` (def names and their uses),
    ``argument`` (parameters and their uses), ``variable`` (stored names and their uses);
    names in two roles are dropped.
    """
    tree = _tree(text)
    offsets = _Offsets(text)
    functions: set[str] = set()
    arguments: set[str] = set()
    variables: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.add(node.name)
        elif isinstance(node, ast.arg):
            arguments.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            variables.add(node.id)
    roles: dict[str, str] = {}
    for role, names in (("function_name", functions), ("argument", arguments), ("variable", variables)):
        for name in names:
            roles[name] = "ambiguous" if name in roles else role
    spans: dict[int, tuple[int, int, str]] = {}

    def add(start: int, name: str) -> None:
        role = roles.get(name)
        if role in ROLE_WORDS and text[start : start + len(name)] == name:
            spans[start] = (start, start + len(name), role)

    toks = _tokens(text)
    for prev, tok in zip(toks, toks[1:]):
        if prev.type == tokenize.NAME and prev.string == "def" and tok.type == tokenize.NAME:
            add(offsets.chars(*tok.start), tok.string)
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            add(offsets.node(node.lineno, node.col_offset), node.arg)
        elif isinstance(node, ast.Name):
            add(offsets.node(node.lineno, node.col_offset), node.id)
    return [spans[k] for k in sorted(spans)]


def control_spans(text: str, count: int, rng: random.Random) -> list[tuple[int, int]]:
    """``count`` Python tokens (names, numbers, operators other than commas) drawn without
    replacement by ``rng``, sorted by start (fewer when the program has fewer)."""
    offsets = _Offsets(text)
    pool = []
    for tok in _tokens(text):
        if tok.type in (tokenize.NAME, tokenize.NUMBER) or (tok.type == tokenize.OP and tok.string != ","):
            start = offsets.chars(*tok.start)
            pool.append((start, start + len(tok.string)))
    if count <= 0 or not pool:
        return []
    return sorted(rng.sample(pool, min(count, len(pool))))


def lens_items(programs: list[Program], seed: int = 0) -> list[LensItem]:
    """The lens task: one prompt per program with its comma, control and role probes.

    Control positions of program ``k`` are drawn with ``random.Random(seed * 1_000_003 + k)``,
    so they do not change when ``n`` does.
    """
    role_groups = {}
    for role, words in ROLE_WORDS.items():
        role_groups[ROLE_GROUPS[role]] = words
    items = []
    for k, program in enumerate(programs):
        text = program.text
        probes: list[Probe] = []
        list_commas, other_commas = comma_spans(text)
        for kind, spans in (("list_comma", list_commas), ("other_comma", other_commas)):
            for start, end in spans:
                probes.append(Probe(kind, start, end, text[start:end], dict(AND_GROUP)))
        for start, end in control_spans(text, len(list_commas), random.Random(seed * 1_000_003 + k)):
            probes.append(Probe("other_token", start, end, text[start:end], dict(AND_GROUP)))
        for start, end, role in role_spans(text):
            probes.append(Probe(role, start, end, text[start:end], dict(role_groups)))
        probes.sort(key=lambda p: (p.end, p.kind))
        items.append(LensItem(text, probes, {"task_id": program.task_id, "line": program.line}))
    return items
