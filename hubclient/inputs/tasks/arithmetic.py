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


# --------------------------------------------------------------------------- the paper's data (wu2024)
#: Operators of the paper's arithmetic data and their words (``arithmetic/similarity.py:38-43``).
WU2024_OPERATORS = {"+": "plus", "*": "times"}
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def paper_number_words(value: int) -> str:
    """English words of ``0..99`` as the paper's code writes them (``inflect``'s
    ``number_to_words``: ``21`` -> ``twenty-one``, ``40`` -> ``forty``), built in so the paper's
    data needs no ``inflect``.

    Raises:
        HubError: a value outside ``0..99`` (the paper's operands are 1..98).
    """
    if not 0 <= value <= 99:
        raise HubError(f"paper_number_words covers 0..99, got {value}")
    if value < 20:
        return _ONES[value]
    tens, ones = divmod(value, 10)
    return _TENS[tens] if ones == 0 else f"{_TENS[tens]}-{_ONES[ones]}"


@dataclass(frozen=True)
class PaperItem:
    """One item of the paper's arithmetic data (``create_data``, ``arithmetic/logit_lens.py:18-31``;
    ``paper-protocols.md`` §A4–A6): ``other op target = result``.

    Attributes:
        op: ``+`` or ``*``.
        other: the first operand (``+``: 1..99−target; ``*``: 1..ceil(100/target)−1).
        target: the second operand, a single digit 1..9 (the one the lens prompt leaves out).
        result: ``other op target`` (< 100).
    """

    op: str
    other: int
    target: int
    result: int

    @property
    def digits(self) -> str:
        """A4's digit form, ``f"{other}{op}{target}"`` (``5+3``; no ``=``)."""
        return f"{self.other}{self.op}{self.target}"

    @property
    def words(self) -> str:
        """A4's word form, ``five plus three`` / ``five times three`` (no ``equals``)."""
        return f"{paper_number_words(self.other)} {WU2024_OPERATORS[self.op]} {paper_number_words(self.target)}"

    @property
    def lens_prompt(self) -> str:
        """A5/A6's prompt ``f"{result}={other}{op}"`` (``8=5+``): the missing operand is ``target``."""
        return f"{self.result}={self.other}{self.op}"

    @property
    def target_digit(self) -> str:
        """The digit A5 follows, no leading space (``"3"``)."""
        return str(self.target)

    @property
    def target_word(self) -> str:
        """The English word A5 follows, with a leading space (``" three"``)."""
        return " " + paper_number_words(self.target)


def paper_items(operators: str = "+*") -> list[PaperItem]:
    """The paper's data in its order (``create_data``, ``arithmetic/logit_lens.py:18-31``): for
    ``target`` in 1..9, first every ``+`` item (``other`` in ``1..99-target``), then every ``*``
    item (``other`` in ``1..ceil(100/target)-1``). All of it is 1,123 items: 846 ``+`` and 277 ``*``.

    Args:
        operators: keep these of ``+`` and ``*`` (``×`` accepted), in the same order.

    Raises:
        HubError: an operator other than ``+`` or ``*``.
    """
    keep = parse_operators(operators)
    for op in keep:
        if op not in WU2024_OPERATORS:
            raise HubError(f"the paper's arithmetic data has only + and *; --operators {operators!r} asks for {op!r}")
    items = []
    for target in range(1, 10):
        for other in range(1, 100 - target):
            items.append(PaperItem("+", other, target, other + target))
        for other in range(1, -(-100 // target)):
            items.append(PaperItem("*", other, target, other * target))
    return [item for item in items if item.op in keep]


def sample_paper_items(items: list[PaperItem], n: int | None, seed: int = 0) -> list[PaperItem]:
    """All ``items`` (``n`` is ``None``: the paper's setting), or ``n`` of them drawn without
    replacement by ``random.Random(seed)``, kept in the paper's order.

    Raises:
        HubError: ``n < 2`` or more than there are items.
    """
    if n is None:
        return list(items)
    if n < 2:
        raise HubError(f"--n must be at least 2, got {n}")
    if n > len(items):
        raise HubError(f"--n {n} is more than the paper's {len(items)} items; leave --n out to use them all")
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def paper_corpus(items: list[PaperItem]) -> ParallelCorpus:
    """A4's similarity task: languages ``digits`` (``5+3``) and ``words`` (``five plus three``);
    sentence ``i`` = item ``i``.

    Raises:
        HubError: fewer than 2 items.
    """
    if len(items) < 2:
        raise HubError("need at least 2 items (the similarity baseline compares other pairs)")
    return ParallelCorpus(
        languages=["digits", "words"], texts=[[i.digits for i in items], [i.words for i in items]], sentences=list(range(len(items))),
        sources=[Path("generated:arithmetic-wu2024/digits"), Path("generated:arithmetic-wu2024/words")],
    )
