"""Arithmetic in digits and in English words (Wu et al. 2024, §4, Fig. 5).

Generated, seeded data: every distinct expression ``a op b`` with operands ``0..max_operand``
and operators ``+ - *`` (subtraction only with ``a >= b``, so answers are never negative), in
a seeded random order; the first ``n`` are used. Each expression has two forms:

* digits: ``3+5=`` (ASCII ``+ - *``);
* words: ``three plus five equals`` (``plus``, ``minus``, ``times``; numbers from the
  maintained ``num2words`` library, e.g. ``twenty-one``, ``one hundred and five``).

Similarity task: the two forms are two aligned "languages" ``digits`` and ``words``.
Lens task: both forms are prompts; at the last token (``=`` / `` equals``) the lens probability
of the answer written as an English word (group ``english_word``) and as digits (group
``digit``) is read. A group follows the FIRST token of the answer in that form (as written and
with a leading space): the token the model would emit first if it answered in that form. For
answers of several tokens (``12`` is ``1``,``2`` on Gemma's tokenizer; ``twenty-one`` starts
with `` twenty``) that first token is shared with other numbers; the analysis records how many
tokens the full answer takes (``full_tokens``) so single-token answers can be selected.
"""

from __future__ import annotations

import operator
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from num2words import num2words

from hubclient.errors import HubError
from hubclient.inputs.parallel import ParallelCorpus
from hubclient.inputs.tasks.items import LensItem, Probe

#: symbol -> (English word, operation). The digit form uses the ASCII symbol.
OPERATORS: dict[str, tuple[str, Callable[[int, int], int]]] = {
    "+": ("plus", operator.add),
    "-": ("minus", operator.sub),
    "*": ("times", operator.mul),
}
#: other spellings accepted in ``--operators``.
ALIASES = {"−": "-", "×": "*", "x": "*"}
#: operands above this give answers of a million or more, beyond the number words that
#: tests/test_tasks.py parses back (its independent check of the word form).
MAX_OPERAND = 999
EQUALS = "equals"


@dataclass(frozen=True)
class Expression:
    """One expression ``a op b``.

    Attributes:
        a / b: operands (``0 <= a, b <= max_operand``).
        op: ``+``, ``-`` or ``*``.
    """

    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        """``a op b`` (never negative: subtraction is generated with ``a >= b``)."""
        return OPERATORS[self.op][1](self.a, self.b)

    @property
    def digits(self) -> str:
        """Digit form, e.g. ``3+5=``."""
        return f"{self.a}{self.op}{self.b}="

    @property
    def words(self) -> str:
        """Word form, e.g. ``three plus five equals``."""
        return f"{number_words(self.a)} {OPERATORS[self.op][0]} {number_words(self.b)} {EQUALS}"


def number_words(value: int) -> str:
    """English cardinal of a non-negative integer from ``num2words`` (``21`` -> ``twenty-one``)."""
    return num2words(value, lang="en")


def parse_operators(spec: str) -> list[str]:
    """Operators from ``--operators`` (``+-*``, ``+,*``, ``× −``…), in canonical order, deduplicated.

    Raises:
        HubError: an unknown operator or none at all.
    """
    found: list[str] = []
    for char in spec:
        if char in ", ":
            continue
        symbol = ALIASES.get(char, char)
        if symbol not in OPERATORS:
            raise HubError(f"unknown operator {char!r} in --operators {spec!r}; use any of + - * (e.g. '+-*')")
        if symbol not in found:
            found.append(symbol)
    if not found:
        raise HubError(f"--operators {spec!r} names no operator; use any of + - * (e.g. '+-*')")
    return [s for s in OPERATORS if s in found]


def all_expressions(max_operand: int, operators: list[str]) -> list[Expression]:
    """Every distinct expression in a fixed order (operator, then ``a``, then ``b``)."""
    out = []
    for op in operators:
        for a in range(max_operand + 1):
            for b in range(max_operand + 1):
                if op == "-" and a < b:
                    continue
                out.append(Expression(a, op, b))
    return out


def generate(n: int | None, max_operand: int = 9, operators: str = "+-*", seed: int = 0) -> list[Expression]:
    """``n`` distinct expressions, drawn without replacement in a seeded random order.

    The same ``(n, max_operand, operators, seed)`` always gives the same list, and a smaller
    ``n`` gives a prefix of a larger one.

    Args:
        n: how many (``None``: all distinct expressions).
        max_operand: operands are ``0..max_operand`` (at most 999).
        operators: see :func:`parse_operators`.
        seed: ``random.Random(seed)`` shuffles the full list.

    Raises:
        HubError: ``max_operand`` outside ``0..999``, bad operators, ``n < 2`` (Eq. 1 needs
            non-matching pairs) or ``n`` above the number of distinct expressions.
    """
    if not 0 <= max_operand <= MAX_OPERAND:
        raise HubError(f"--max-operand must be between 0 and {MAX_OPERAND}, got {max_operand}")
    pool = all_expressions(max_operand, parse_operators(operators))
    random.Random(seed).shuffle(pool)
    if n is None:
        return pool
    if n < 2:
        raise HubError(f"--n must be at least 2, got {n}")
    if n > len(pool):
        raise HubError(f"--n {n} is more than the {len(pool)} distinct expressions with operands 0..{max_operand} and operators {operators!r}; use --n {len(pool)} or raise --max-operand")
    return pool[:n]


# --------------------------------------------------------------------------- task forms
def corpus(expressions: list[Expression]) -> ParallelCorpus:
    """The similarity task: languages ``digits`` and ``words``; sentence ``i`` = expression ``i``."""
    if len(expressions) < 2:
        raise HubError("need at least 2 expressions (Eq. 1 compares non-matching pairs)")
    texts_d, texts_w = [], []
    for e in expressions:
        texts_d.append(e.digits)
        texts_w.append(e.words)
    return ParallelCorpus(
        languages=["digits", "words"], texts=[texts_d, texts_w], sentences=list(range(len(expressions))),
        sources=[Path("generated:arithmetic/digits"), Path("generated:arithmetic/words")],
    )


def lens_items(expressions: list[Expression]) -> list[LensItem]:
    """The lens task: each expression's digit form, then its word form, one probe each at the
    last token (``=`` / ``equals``), groups ``english_word`` (the answer's
    num2words form) and ``digit`` (the answer in digits)."""
    items = []
    for i, e in enumerate(expressions):
        groups = {"english_word": (number_words(e.answer),), "digit": (str(e.answer),)}
        for form, text, last in (("digits", e.digits, "="), ("words", e.words, EQUALS)):
            probe = Probe(kind=f"{form}_prompt", start=len(text) - len(last), end=len(text), text=last, groups=groups)
            items.append(LensItem(text, [probe], {"expression": i, "form": form, "a": e.a, "op": e.op, "b": e.b, "answer": e.answer}))
    return items
