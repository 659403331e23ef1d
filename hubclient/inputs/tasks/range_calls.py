"""MBPP one-argument ``range(`` prompts and their scoring: the code intervention of Wu et al.
2024 (paper-protocols.md A18; ``coding/intervention.py`` of ZhaofengWu/semantic-hub at
``d386fe7``).

Prompts (``load_data``, lines 20-41): for every call ``range(x)`` with exactly one positional
argument in every MBPP program (the ``full`` configuration: all 974 programs, code only, no
tests), the program text up to and including ``range(`` (or ``range (``). The code is taken as
MBPP stores it, CRLF line ends included (the released code reads the ``code`` field unchanged).

Scoring (``arguments``, lines 44-66, and ``main``, lines 93-120): the arguments of the generated
call are the continuation split at commas of bracket depth 1 up to the matching ``)``, each
stripped; a continuation whose first non-space character is ``)`` has no arguments. An item is
kept when its unsteered (strength 0) continuation has exactly one argument; a steered
continuation is *correct* when its arguments are ``["0"] + unsteered`` (``range(x)`` →
``range(0, x)``), *unchanged* when they equal the unsteered ones, *other* otherwise.

No torch, no model: plain text.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

from hubclient.errors import HubError


@dataclass(frozen=True)
class RangeCall:
    """One ``range(`` prompt.

    Attributes:
        task_id: the MBPP ``task_id`` of the program.
        prompt: the program up to and including ``range(`` / ``range (`` (CRLF kept).
        argument: the call's argument in the original code (``ast.unparse``), for reference.
    """

    task_id: int
    prompt: str
    argument: str


def _offset(lines: list[str], lineno: int, col_bytes: int) -> int:
    """Character offset of (1-based ``lineno``, UTF-8 byte column) in the text whose
    ``split("\\n")`` is ``lines`` (the released code counts ``len(line) + 1`` per line)."""
    start = 0
    for line in lines[: lineno - 1]:
        start += len(line) + 1
    line = lines[lineno - 1]
    return start + len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))


def range_calls(mbpp: Path) -> list[RangeCall]:
    """Every one-argument ``range(...)`` call of every MBPP program, as a prompt (module
    docstring), in file order and, within a program, in ``ast.walk`` order (as the released
    code).

    Args:
        mbpp: the ``mbpp.jsonl`` file (one JSON object a line with ``code`` and ``task_id``).

    Raises:
        HubError: a missing file, a line that is not JSON, a record without ``code``, or no
            one-argument ``range`` call at all.
    """
    path = Path(mbpp)
    if not path.is_file():
        raise HubError(f"MBPP file {path} does not exist; pass --mbpp PATH/mbpp.jsonl (hub data get mbpp)")
    calls: list[RangeCall] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HubError(f"{path} line {number} is not JSON ({exc.msg})") from None
        program = record.get("code") if isinstance(record, dict) else None
        if not isinstance(program, str):
            raise HubError(f"{path} line {number}: no 'code' string field")
        try:
            tree = ast.parse(program)
        except SyntaxError:
            continue
        lines = program.split("\n")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and len(node.args) == 1:
                start = _offset(lines, node.lineno, node.col_offset)
                rest = program[start:]
                if rest.startswith("range("):
                    prompt = program[:start] + "range("
                elif rest.startswith("range ("):
                    prompt = program[:start] + "range ("
                else:  # pragma: no cover - the released code asserts here
                    continue
                calls.append(RangeCall(int(record.get("task_id", number)), prompt, ast.unparse(node.args[0])))
    if not calls:
        raise HubError(f"{path} holds no one-argument range(...) call")
    return calls


def arguments(continuation: str) -> list[str]:
    """The arguments of a call whose text continues with ``continuation`` (everything after the
    opening parenthesis): split at commas of depth 1 up to the matching ``)``, each stripped.
    Source: ``coding/intervention.py:44-66``.

    A continuation that never closes the call yields the arguments seen so far, without the
    unfinished last one (as the released code); an empty or blank continuation yields ``[]``
    (the released code would raise ``IndexError`` there).
    """
    if not continuation.strip() or continuation.strip()[0] == ")":
        return []
    args: list[str] = []
    buffer: list[str] = []
    depth = 1
    for c in continuation:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if depth == 0:
            args.append("".join(buffer).strip())
            break
        if c == "," and depth == 1:
            args.append("".join(buffer).strip())
            buffer = []
        else:
            buffer.append(c)
    return args


def classify(unsteered: list[str], steered: list[str]) -> str:
    """``correct`` when ``steered == ["0"] + unsteered``, ``unchanged`` when equal, else
    ``other`` (``coding/intervention.py:113-118``)."""
    if ["0"] + list(unsteered) == list(steered):
        return "correct"
    if list(unsteered) == list(steered):
        return "unchanged"
    return "other"
