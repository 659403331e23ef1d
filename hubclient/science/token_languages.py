"""The token-to-language matrix ``M`` ``[vocab, n_languages + 1]`` and its on-disk cache.

Each vocabulary token gets a distribution over languages from how often its text occurs as a
word in each language (word frequencies from ``wordfreq``, Speer 2022), as in the semantic hub
paper's language-probability plots (Wu et al. 2024, Fig. 4):

    M[t, l] = f_l(w(t)) / sum_l' f_l'(w(t))      when some list knows w(t)
    M[t, unknown] = 1                             otherwise

where ``w(t)`` is the token's decoded text with the word-start marker (SentencePiece ``▁``,
byte-level ``Ġ``, i.e. the leading space) and surrounding whitespace removed, case-folded, and
``f_l(w)`` is ``w``'s frequency as a word in language ``l`` (share of the language's running
words). Each row sums to 1. Normalising across languages treats every chosen language as
equally likely a priori; ``P(language) = p_lens · M`` then is the lens probability mass on
tokens of each language (special tokens, byte pieces, punctuation and sub-word fragments that
no list knows go to ``unknown``). Chinese lookups go through wordfreq's own Traditional ->
Simplified mapping, since its ``zh`` list is stored simplified.

Building ``M`` for Gemma's 262,144 tokens takes a few seconds (one batch decode plus one dict
lookup per token and language); the result is cached per tokenizer under the user cache dir
(``$HUB_CACHE_DIR/token-languages`` when that is set), keyed by a hash of the vocabulary, the
languages, the frequency source and this module's ``FORMAT`` version, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hubclient.errors import HubError
from hubclient.science.tokens import WORD_START, token_words  # noqa: F401 (WORD_START: old import path)

#: Name of the extra column for tokens no frequency list knows.
UNKNOWN = "unknown"
#: Bump when the construction of ``M`` changes (invalidates cached matrices).
FORMAT = 1


def supported_languages() -> list[str]:
    """Language codes with a ``wordfreq`` frequency list (ISO 639-1 where one exists), sorted."""
    import wordfreq

    return sorted(wordfreq.available_languages("best"))


def resolve_language(code: str) -> str:
    """Map a language code (``zh``, ``eng_Latn``, ``zho_Hans``, ``arb_Arab``…) to a wordfreq code.

    FLORES-200 codes are ``<ISO 639-3>_<script>``; the language part is matched to wordfreq's
    list with ``langcodes.closest_match`` (so ``arb`` -> ``ar``, ``zho`` -> ``zh``).

    Raises:
        HubError: no frequency list for that language (the message lists the supported codes).
    """
    import langcodes

    supported = supported_languages()
    base = code.strip().replace("_", "-").split("-")[0]
    match, distance = langcodes.closest_match(base, supported) if base else ("und", 1000)
    if match == "und" or distance > 10:
        raise HubError(f"no word-frequency list for language {code!r}; supported: {', '.join(supported)}")
    return match


def token_texts(tokenizer: Any) -> list[str]:
    """Each vocabulary token's text as a word: decoded, word-start marker and spaces removed
    (:func:`hubclient.science.tokens.token_words`, under its old name).

    Returns:
        ``[vocab]`` strings (``len(tokenizer)`` of them; index = token id).
    """
    return token_words(tokenizer)


def wordfreq_tables(languages: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{language: {word: frequency}}`` from wordfreq's ``best`` lists (frequencies in [0, 1])."""
    import wordfreq

    return {lang: wordfreq.get_frequency_dict(lang, "best") for lang in languages}


def build_matrix(texts: Sequence[str], frequencies: Mapping[str, Mapping[str, float]]) -> Any:
    """The token-to-language matrix from token texts and frequency tables.

    Args:
        texts: ``[vocab]`` token texts as words (see :func:`token_texts`).
        frequencies: ``{language: {word: frequency}}``; the column order is the key order.

    Returns:
        float32 numpy array ``[vocab, len(frequencies) + 1]``; the last column is ``unknown``.
        Rows sum to 1.
    """
    import numpy as np

    langs = list(frequencies)
    simplify = _chinese_simplifier()
    counts = np.zeros((len(texts), len(langs) + 1), dtype=np.float64)
    folded = []
    for text in texts:
        folded.append(text.casefold())
    for j, lang in enumerate(langs):
        table = frequencies[lang]
        column = counts[:, j]
        chinese = lang == "zh" and simplify is not None
        for i, word in enumerate(folded):
            if not word:
                continue
            f = table.get(simplify(word) if chinese else word)
            if f:
                column[i] = f
    total = counts.sum(axis=1)
    known = total > 0
    counts[known] /= total[known, None]
    counts[~known, -1] = 1.0
    return counts.astype(np.float32)


def _chinese_simplifier() -> Any:
    try:
        from wordfreq.chinese import simplify_chinese
    except ImportError:  # pragma: no cover - wordfreq without its Chinese module
        return None
    return simplify_chinese


def cache_root() -> Path:
    """Folder for cached matrices: ``$HUB_CACHE_DIR/token-languages`` or the user cache dir."""
    env = os.environ.get("HUB_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "token-languages"
    import platformdirs

    return platformdirs.user_cache_path("hub", appauthor=False) / "token-languages"


def _source_tag(frequencies: Mapping[str, Mapping[str, float]] | None) -> str:
    if frequencies is None:
        from importlib import metadata

        return f"wordfreq-best-{metadata.version('wordfreq')}"
    digest = hashlib.sha256(json.dumps({k: sorted(v.items()) for k, v in frequencies.items()}, ensure_ascii=False).encode())
    return "custom-" + digest.hexdigest()[:16]


def language_matrix(
    tokenizer: Any,
    languages: Sequence[str],
    frequencies: Mapping[str, Mapping[str, float]] | None = None,
    cache: bool = True,
) -> tuple[Any, list[str]]:
    """The (cached) token-to-language matrix of ``tokenizer`` for ``languages``.

    Args:
        tokenizer: a Hugging Face tokenizer (its full vocabulary, ``len(tokenizer)`` tokens).
        languages: wordfreq language codes (see :func:`resolve_language`), in column order.
        frequencies: ``{language: {word: frequency}}`` to use instead of wordfreq (tests, custom
            lists); must have every language in ``languages``.
        cache: read/write the cache (see the module docstring).

    Returns:
        ``(M, columns)``: float32 ``[vocab, len(languages) + 1]`` and the column names
        (``languages`` then ``"unknown"``).

    Raises:
        HubError: no languages, duplicates, or a language without a frequency table.
    """
    import numpy as np

    languages = list(languages)
    if not languages:
        raise HubError("no languages for the token-to-language matrix; give at least one with --languages")
    if len(set(languages)) != len(languages):
        raise HubError(f"duplicate languages in {languages}; give each once")
    if frequencies is not None:
        missing = [lang for lang in languages if lang not in frequencies]
        if missing:
            raise HubError(f"no frequency table for {missing}; tables exist for {sorted(frequencies)}")
        frequencies = {lang: frequencies[lang] for lang in languages}
    texts = token_texts(tokenizer)
    key = hashlib.sha256(
        json.dumps({"format": FORMAT, "vocab": texts, "languages": languages, "source": _source_tag(frequencies)}, ensure_ascii=False).encode()
    ).hexdigest()[:24]
    columns = languages + [UNKNOWN]
    path = cache_root() / f"{key}.npy"
    if cache and path.is_file():
        try:
            matrix = np.load(path)
            if matrix.shape == (len(texts), len(columns)):
                return matrix, columns
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    matrix = build_matrix(texts, frequencies if frequencies is not None else wordfreq_tables(languages))
    if cache:
        from hubclient.fs import atomic_write

        def write(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                np.save(fh, matrix)

        try:
            atomic_write(path, write)
        except OSError:
            pass  # an unwritable cache only costs a rebuild next time
    return matrix, columns
