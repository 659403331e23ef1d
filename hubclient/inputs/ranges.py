"""One parser for layer lists and number lists given on the command line (no model needed).

Layers (:func:`parse_layers`), the same syntax on every command that takes them
(``similarity --layers``/``--heatmap-layer``, ``intervene patch|steer|arithmetic --layer``…):

* ``all``: every layer ``low..high``;
* one index ``6``, or a list ``0,4,8``;
* inclusive ranges ``2-10``, ``0:8`` and ``0:8:2`` (step 2);
* mixes ``0,4:6,10-12``;
* negative indices count from the top: ``-1`` is the last layer (``high``), ``-2`` the one
  before; in ranges too (``-4:-1``, ``0:-1:2``).

The result is sorted and without repeats. Numbers (:func:`parse_numbers`, e.g. ``--coeff``):
``5``, ``2,4,8``, ``0:8`` or ``0:8:2`` (inclusive), a mix ``0,4:6``; first-seen order kept.

Every problem raises :class:`~hubclient.errors.HubError` with one line naming the option, the
bad item and what is valid.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hubclient.errors import HubError

#: One layer item: an index, ``a-b``, ``a:b`` or ``a:b:step`` (indices may be negative).
_ITEM = re.compile(r"^(-?\d+)(?:(-|:)(-?\d+)(?::(\d+))?)?$")
SYNTAX = "all, an index such as 6 or -1 (the last), a list such as 0,4,8, or a range such as 2-10, 0:8 or 0:8:2"


def check_layers(text: str, option: str = "--layers") -> None:
    """Check the syntax of a layer list without a model (so bad input fails before loading).

    Raises:
        HubError: an empty option, an item that is not an index or range, a zero step, or
            ``a-b`` where ``a:b:step`` was meant (one line naming ``option`` and the item).
    """
    _items(text, option)


def parse_layers(text: str, low: int, high: int, option: str = "--layers", what: str = "layers") -> list[int]:
    """Resolve a layer list (module docstring) against the valid layers ``low..high``.

    Args:
        text: the option's text, e.g. ``all``, ``2-10``, ``0:8:2``, ``0,4:6``, ``-1``.
        low / high: the first and last valid layer (inclusive), e.g. ``0..L`` for the residual
            stream (0 = embeddings) or ``1..L`` for blocks.
        option: the option's name, used in error messages (``--layers``, ``--layer``…).
        what: what the layers are, used in error messages (``resid layers``…).

    Returns:
        the sorted unique layer indices, each in ``low..high``. A negative index ``-k`` is
        ``high + 1 - k`` (``-1`` = ``high``).

    Raises:
        HubError: bad syntax (see :func:`check_layers`), an index outside ``low..high`` after
            resolving negatives, or a range whose start is after its end.
    """
    if high < low:
        raise ValueError(f"empty layer range {low}..{high}")
    valid = f"this model has {what} {low}..{high}" + (" (0 = embeddings)" if low == 0 else "") + f"; -1 = {high}, the last"
    out: set[int] = set()
    for item, start, stop, step in _items(text, option):
        if start is None:  # all
            out.update(range(low, high + 1))
            continue
        first, last = _resolve(start, high), _resolve(stop, high)
        for value, raw in ((first, start), (last, stop)):
            if not low <= value <= high:
                shown = f"{option} {raw}" if item == str(raw) else f"{option} {item!r} reaches {raw}, which"
                raise HubError(f"{shown} is out of range: {valid}")
        if last < first:
            raise HubError(f"{option} range {item!r} starts after it ends (layers {first} > {last}); write the lower layer first")
        out.update(range(first, last + 1, step))
    return sorted(out)


def parse_layer(text: str, low: int, high: int, option: str) -> int:
    """One layer (e.g. ``--heatmap-layer``): an index, negative from the top (``-1`` = ``high``).

    Raises:
        HubError: anything but a single index in ``low..high`` (see :func:`parse_layers`).
    """
    layers = parse_layers(text, low, high, option)
    if len(layers) != 1 or "," in str(text) or str(text).strip().lower() == "all":
        raise HubError(f"{option} takes one layer, got {str(text)!r}; e.g. 6 or -1 (the last)")
    return layers[0]


def _resolve(index: int, high: int) -> int:
    return high + 1 + index if index < 0 else index


def _items(text: str, option: str) -> list[tuple[str, int | None, int | None, int]]:
    """``(item, start, stop, step)`` per comma item; ``start`` is ``None`` for ``all``."""
    spec = str(text).strip()
    if not spec:
        raise HubError(f"{option} is empty; give {SYNTAX}")
    out: list[tuple[str, int | None, int | None, int]] = []
    for raw in spec.split(","):
        item = re.sub(r"\s+", "", raw)
        if item.lower() == "all":
            out.append((item, None, None, 1))
            continue
        match = _ITEM.match(item)
        if not match:
            raise HubError(f"{option} item {raw.strip()!r} is not an integer layer; give {SYNTAX}")
        start = int(match.group(1))
        stop = int(match.group(3)) if match.group(3) is not None else start
        step = int(match.group(4)) if match.group(4) is not None else 1
        if match.group(4) is not None and match.group(2) != ":":
            raise HubError(f"{option} item {item!r}: a step needs the start:stop:step form, e.g. 0:8:2")
        if step <= 0:
            raise HubError(f"{option} range {item!r} needs a positive step")
        out.append((item, start, stop, step))
    return out


def parse_numbers(text: str, name: str, integer: bool) -> list[float] | list[int]:
    """Parse a list/range option: ``5``, ``2,4,8``, ``0:8`` (inclusive), ``0:8:2`` (inclusive,
    step 2), or a mix ``0,4:6``. Values keep their first-seen order; duplicates are dropped.

    Args:
        text: the option's text.
        name: the option's name without dashes (``coeff`` -> ``--coeff`` in messages).
        integer: integers only (else floats; ranges then step by floats, e.g. ``0:1:0.25``).

    Raises:
        HubError: an empty item, a value that is not a number (an integer where ``integer``), a
            non-finite number, a zero or negative step, an empty range (start > stop).
    """
    out: list[Any] = []
    cast = int if integer else float
    kind = "an integer" if integer else "a number"
    text = str(text).strip()
    if not text:
        raise HubError(f"--{name} is empty; give {kind}, a list such as 1,2,4 or a range such as 0:8:2")
    for item in text.split(","):
        item = item.strip()
        parts = item.split(":") if ":" in item.lstrip("-") else [item]
        try:
            values = [cast(p) for p in parts]
        except ValueError:
            raise HubError(f"--{name} value {item!r} is not {kind}; use e.g. 4, 2,4,8 or 0:8:2") from None
        for v in values:
            if not integer and not math.isfinite(v):
                raise HubError(f"--{name} value {item!r} is not a finite number")
        if len(values) == 1:
            expanded = values
        elif len(values) in (2, 3):
            start, stop = values[0], values[1]
            step = values[2] if len(values) == 3 else cast(1)
            if step <= 0:
                raise HubError(f"--{name} range {item!r} needs a positive step")
            expanded, k = [], 0
            while start + k * step <= stop + (1e-9 if not integer else 0):
                expanded.append(cast(round(start + k * step, 10)) if not integer else start + k * step)
                k += 1
            if not expanded:
                raise HubError(f"--{name} range {item!r} is empty (start > stop)")
        else:
            raise HubError(f"--{name} item {item!r} is not a value or a start:stop[:step] range")
        for v in expanded:
            if v not in out:
                out.append(v)
    return out
