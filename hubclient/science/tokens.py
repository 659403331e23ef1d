"""Words to token ids, and token ids to display text: the one place these rules live.

Every analysis that follows a *word* (a ``--target``, a ``--token``, a caption word, a
dictionary translation, a sentiment word, a task probe's answer) asks the same question: which
vocabulary token(s) stand for it? The answer depends on two choices, named here once.

**Spellings** (which strings of the word are tokenised, in order; no special tokens are added):

* ``written``: the word as written (``"cat"``);
* ``written+space``: as written, then with a leading space (``"cat"``, ``" cat"``); a leading
  space is how a word looks mid-sentence, so with SentencePiece (``▁cat``) and byte-level BPE
  (``Ġcat``) tokenizers the second spelling reaches the word-start-marker form of the token;
* ``space+written``: the mid-sentence form first (``" cat"``, ``"cat"``);
* ``stripped+space``: as written, stripped of surrounding whitespace, and stripped with one
  leading space (``" cat "`` -> ``" cat "``, ``"cat"``, ``" cat"``); repeats dropped.

**Rules** (which token(s) of each spelling's ids are kept):

* ``first``: the first token of the spelling, whatever it is;
* ``first-real``: the first token, unless it is the unknown token or decodes to whitespace
  only (e.g. a bare SentencePiece ``▁`` in front of a digit);
* ``single``: the spelling's only token, when the spelling is exactly one token that is not
  the unknown token (words of several tokens give nothing).

:func:`word_ids` applies a rule to every spelling and keeps the ids in spelling order without
repeats. :func:`follow_word` is the rule of a word the user names on the command line (one
token, ``first`` of ``written``), with its warnings: a word of several tokens, and a word with
no real token of its own (:func:`word_fallback`: the unknown token or a raw byte token such as
``<0xEE>``, which thousands of characters share).

:func:`decoder` turns token ids into display text (table columns, plot labels), optionally
with whitespace made visible (``␣`` for a leading space, ``\\n`` for a newline) for heatmaps.

Only the tokenizer object is used: no model loading, no torch.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from hubclient.errors import HubError

#: The word-start markers of SentencePiece (``▁``) and byte-level BPE (``Ġ``) token pieces.
WORD_START = ("▁", "Ġ")

#: Names of the spellings (see the module docstring).
SPELLINGS = ("written", "written+space", "space+written", "stripped+space")

#: Names of the rules (see the module docstring).
RULES = ("first", "first-real", "single")

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def spellings(word: str, spelling: str = "written") -> list[str]:
    """The strings of ``word`` that ``spelling`` tokenises, in order, without repeats.

    Raises:
        ValueError: an unknown spelling name (see :data:`SPELLINGS`).
    """
    if spelling == "written":
        forms = [word]
    elif spelling == "written+space":
        forms = [word, " " + word]
    elif spelling == "space+written":
        forms = [" " + word, word]
    elif spelling == "stripped+space":
        forms = [word, word.strip(), " " + word.strip()]
    else:
        raise ValueError(f"unknown spelling {spelling!r}; choose one of {', '.join(SPELLINGS)}")
    return list(dict.fromkeys(forms))


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (no BOS), as plain ints."""
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def spelled_ids(tokenizer: Any, word: str, spelling: str = "written") -> list[list[int]]:
    """The full token ids of each spelling of ``word`` (:func:`spellings`), ``[spellings][tokens]``.

    Raises:
        ValueError: an unknown spelling name.
    """
    out = []
    for form in spellings(word, spelling):
        out.append(encode_text(tokenizer, form))
    return out


def pick(tokenizer: Any, ids: Sequence[int], rule: str) -> int | None:
    """The token ``rule`` keeps from one spelling's ids, or ``None`` (see :data:`RULES`).

    Raises:
        ValueError: an unknown rule name.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if not ids:
        return None
    first = int(ids[0])
    if rule == "first":
        return first
    if rule == "single":
        return first if len(ids) == 1 and first != tokenizer.unk_token_id else None
    if first == tokenizer.unk_token_id or not tokenizer.decode([first]).strip():
        return None
    return first


def word_ids(tokenizer: Any, word: str, rule: str = "first", spelling: str = "written") -> list[int]:
    """Token ids that stand for ``word``: ``rule`` applied to each spelling's ids, in spelling
    order, repeats dropped (possibly empty).

    Examples (a tokenizer with ``▁cat`` but no ``cat``): ``word_ids(tok, "cat", "single",
    "written+space")`` -> ``[id("▁cat")]``; ``word_ids(tok, "cat", "first", "written")`` -> the
    first piece of ``"cat"`` as written.

    Raises:
        ValueError: an unknown rule or spelling name.
    """
    out: list[int] = []
    for ids in spelled_ids(tokenizer, word, spelling):
        token = pick(tokenizer, ids, rule)
        if token is not None and token not in out:
            out.append(token)
    return out


def fallback_kind(tokenizer: Any, token_id: int, word: str = "") -> str | None:
    """Why ``token_id`` is no real token of ``word``, or ``None`` when it is one.

    Returns:
        ``"the unknown token"``; ``"a raw byte token"`` for a SentencePiece byte-fallback piece
        (``<0xEE>``) or a byte-level BPE token that decodes to an incomplete UTF-8 sequence
        (U+FFFD where ``word`` has none): tokens shared by every character that starts with
        that byte; ``None`` otherwise.
    """
    if tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id:
        return "the unknown token"
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if isinstance(piece, str) and _BYTE_PIECE.match(piece):
        return "a raw byte token"
    if "\ufffd" in tokenizer.decode([int(token_id)]) and "\ufffd" not in word:
        return "a raw byte token"
    return None


def word_fallback(tokenizer: Any, ids: Sequence[int], word: str) -> str | None:
    """Why the tokens ``ids`` of ``word`` are no real token of it, or ``None`` when they are.

    Leading tokens that decode to whitespace only (a bare SentencePiece ``▁`` that Llama-style
    tokenizers put in front of a word) are passed over; the first token after them decides
    (:func:`fallback_kind`). A word that is only whitespace tokens has a real token.
    """
    for token in ids:
        kind = fallback_kind(tokenizer, int(token), word)
        if kind is not None:
            return kind
        if tokenizer.decode([int(token)]).strip():
            return None
    return None


def follow_word(tokenizer: Any, word: str, option: str = "--target") -> int:
    """The token followed for a word named on the command line: rule ``first`` of spelling
    ``written`` (the first token of the word as written).

    Warns (``warnings.warn``, printed by the CLI as one ``warning:`` line), at most once per
    word: when the word has no real token (:func:`word_fallback`: its text starts with the
    unknown token or a raw byte token shared by thousands of characters, e.g. U+E000 ->
    ``<0xEE> <0x80> <0x80>``), naming the word, its tokens and the one followed; otherwise when
    the word is several tokens, naming the pieces and the one followed.

    Args:
        tokenizer: a Hugging Face tokenizer.
        word: the word.
        option: the option that named it, for the messages (``--target``, ``--token``).

    Returns:
        the followed token id.

    Raises:
        HubError: a word that tokenises to no tokens.
    """
    ids = encode_text(tokenizer, word)
    if not ids:
        raise HubError(f"{option} {word!r} tokenises to no tokens; give a word")
    pieces = tokenizer.convert_ids_to_tokens(ids)
    kind = word_fallback(tokenizer, ids, word)
    if kind is not None:
        codepoints = " ".join(f"U+{ord(c):04X}" for c in word)
        shared = "" if kind == "the unknown token" else ", shared by every character that starts with that byte"
        warnings.warn(
            f"{option} {word!r} ({codepoints}) has no token of its own in this model's vocabulary: its tokens {pieces} "
            f"start with {kind}{shared}; it would follow {pieces[0]!r}, which says little about the word",
            stacklevel=2,
        )
    elif len(ids) > 1:
        warnings.warn(f"{option} {word!r} is {len(ids)} tokens {pieces}; following its first token {pieces[0]!r}", stacklevel=2)
    return ids[0]


# --------------------------------------------------------------------------- display
def show_whitespace(text: str) -> str:
    """``text`` with whitespace made visible for labels: a leading space as ``␣``, newlines as
    ``\\n``, tabs as ``\\t`` (inner spaces stay)."""
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    if text.startswith(" "):
        text = "␣" + text[1:]
    return text


def decode_token(tokenizer: Any, token_id: int, visible: bool = False) -> str:
    """One token's display text: ``tokenizer.decode([token_id])`` (so SentencePiece ``▁`` shows
    as a space), with :func:`show_whitespace` when ``visible``."""
    text = tokenizer.decode([int(token_id)])
    return show_whitespace(text) if visible else text


def decoder(tokenizer: Any, visible: bool = False) -> Callable[[Any], list[str]]:
    """A cached ``ids -> [display text]`` function (:func:`decode_token` per id).

    Args:
        tokenizer: a Hugging Face tokenizer.
        visible: show whitespace (:func:`show_whitespace`), for heatmap labels.

    Returns:
        a function taking any iterable of ids (a list, a numpy array of any shape, flattened)
        and returning one string per id.
    """
    cache: dict[int, str] = {}

    def decode(ids: Any) -> list[str]:
        if hasattr(ids, "reshape"):
            ids = ids.reshape(-1).tolist()
        out = []
        for i in ids:
            i = int(i)
            if i not in cache:
                cache[i] = decode_token(tokenizer, i, visible)
            out.append(cache[i])
        return out

    return decode


def token_words(tokenizer: Any) -> list[str]:
    """Each vocabulary token's text as a word: decoded (special tokens kept, no clean-up of
    spaces), word-start markers (:data:`WORD_START`) and surrounding spaces removed.

    Returns:
        ``[vocab]`` strings (``len(tokenizer)`` of them; index = token id).
    """
    ids = []
    for i in range(len(tokenizer)):
        ids.append([i])
    decoded = tokenizer.batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    out = []
    for text in decoded:
        for marker in WORD_START:
            text = text.replace(marker, " ")
        out.append(text.strip())
    return out


# --------------------------------------------------------------------------- offsets
def token_offsets(tokenizer: Any, texts: Sequence[str], tokens: Sequence[Sequence[int]]) -> list[list[tuple[int, int]]]:
    """Character span ``(start, end)`` in its text of each of the given tokens.

    The ids stay the caller's (the runner's tokens, with special tokens); only the character
    offsets come from the (fast) tokenizer, which is checked to give exactly those ids.

    Args:
        tokenizer: a fast Hugging Face tokenizer (character offsets).
        texts: ``[texts]`` strings.
        tokens: ``[texts][tokens]`` ids of each text, with special tokens.

    Returns:
        ``[texts][tokens]`` spans (``(0, 0)`` for special tokens).

    Raises:
        HubError: a tokenizer without character offsets (not a fast tokenizer), or ids that
            differ from the tokenizer's own for a text (e.g. image/audio prompts).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise HubError("this analysis needs a fast tokenizer (character offsets) to align words with tokens")
    encoded = tokenizer(list(texts), add_special_tokens=True, return_offsets_mapping=True)
    out = []
    for i, ids in enumerate(tokens):
        if [int(t) for t in encoded["input_ids"][i]] != [int(t) for t in ids]:
            raise HubError(f"text {i}: the tokenizer's character offsets belong to other token ids than the run's; text prompts only")
        out.append([(int(s), int(e)) for s, e in encoded["offset_mapping"][i]])
    return out
