"""Token-to-language matrices ``M`` ``[vocab, n_columns]`` and their on-disk cache.

Two constructions, both cached per tokenizer:

**Token counts** (:func:`count_matrix`, :func:`corpus_matrix`): the semantic hub paper's
(Wu et al. 2024, Fig. 4; ``multilingual/compute_tokenizer_language_probabilities.py:144-178``
of its code; paper-protocols.md A3). Text of K languages is tokenized (no special tokens) and
every token occurrence counted; ``log p(v | lang) = log count(v, lang) - log total(lang)``;
with a uniform prior over the K languages,

    M[v, lang] = p(lang | v) = p(v | lang) / sum_{lang' where v was seen} p(v | lang')

and a token seen in no language gets ``1/K`` in every column (``global_language_trends.py:
76-78``). Rows cover ``tokenizer.vocab_size`` ids (added tokens dropped, as the code's
``(n_langs, tokenizer.vocab_size)`` matrix). The paper counts mC4 (101 languages x 100,000
documents); here the corpus is whatever the caller gives (FLORES-200 by default in
``hub analyze language-probs``, a folder of per-language files, or a Hugging Face dataset).

**Word frequencies** (:func:`build_matrix`, :func:`language_matrix`; this project's older
construction, kept as the named option ``--matrix wordfreq``): each token's text as a word,
looked up in ``wordfreq`` (Speer 2022) frequency lists:

    M[t, l] = f_l(w(t)) / sum_l' f_l'(w(t))      when some list knows w(t)
    M[t, unknown] = 1                             otherwise

where ``w(t)`` is the token's decoded text with the word-start marker (SentencePiece ``▁``,
byte-level ``Ġ``) and surrounding whitespace removed, case-folded. Chinese lookups go through
wordfreq's Traditional -> Simplified mapping.

Cache: ``$HUB_CACHE_DIR/token-languages`` or the user cache dir (``platformdirs``), one
``.npy`` per key (a hash of the vocabulary, the construction, the languages and the corpus
content or frequency source, and :data:`FORMAT`), written atomically.
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
#: Bump when the token-count construction changes.
COUNT_FORMAT = 1


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
        _save(path, matrix)
    return matrix, columns


# --------------------------------------------------------------------------- token counts (A3)
def count_tokens(tokenizer: Any, texts: Sequence[str], vocab_size: int | None = None) -> Any:
    """How often each token id occurs in ``texts`` tokenized without special tokens (the
    code's ``tokenizer.tokenize(text)`` then ``convert_tokens_to_ids``).

    Args:
        tokenizer: a Hugging Face tokenizer.
        texts: the texts of one language.
        vocab_size: ids counted (default ``tokenizer.vocab_size``; ids at or above it, i.e.
            added tokens, are dropped).

    Returns:
        int64 numpy array ``[vocab_size]``.
    """
    import numpy as np

    size = int(vocab_size if vocab_size is not None else tokenizer.vocab_size)
    counts = np.zeros(size, dtype=np.int64)
    texts = list(texts)
    for start in range(0, len(texts), 1000):
        encoded = tokenizer(texts[start : start + 1000], add_special_tokens=False)["input_ids"]
        for ids in encoded:
            if ids:
                arr = np.asarray(ids, dtype=np.int64)
                arr = arr[arr < size]
                counts += np.bincount(arr, minlength=size)
    return counts


def count_matrix(counts: Mapping[str, Any]) -> Any:
    """``p(lang | v)`` from per-language token counts (module docstring; A3 of
    paper-protocols.md: uniform prior, normalised over the languages where ``v`` was seen,
    ``1/K`` for a token seen in none).

    Args:
        counts: ``{language: int array [vocab]}``, column order = key order; every array the
            same length, every language with at least one token.

    Returns:
        float32 numpy array ``[vocab, K]``; rows sum to 1.

    Raises:
        HubError: no languages, arrays of different lengths, or a language without tokens.
    """
    import numpy as np

    langs = list(counts)
    if not langs:
        raise HubError("no languages to count tokens in")
    sizes = {len(counts[lang]) for lang in langs}
    if len(sizes) != 1:
        raise HubError(f"token counts of different lengths {sorted(sizes)}")
    logp = np.full((len(langs), sizes.pop()), -np.inf)
    for k, lang in enumerate(langs):
        c = np.asarray(counts[lang], dtype=np.float64)
        total = c.sum()
        if total <= 0:
            raise HubError(f"no tokens for language {lang!r}: its texts are empty")
        seen = c > 0
        logp[k, seen] = np.log(c[seen]) - np.log(total)
    seen_any = np.isfinite(logp).any(axis=0)
    top = np.where(seen_any, logp.max(axis=0, initial=-np.inf), 0.0)
    weights = np.exp(logp - top)  # exp(-inf) = 0 where unseen
    sums = weights.sum(axis=0)
    out = np.full_like(weights, 1.0 / len(langs))
    out[:, seen_any] = weights[:, seen_any] / sums[seen_any]
    return out.T.astype(np.float32)


def corpus_matrix(tokenizer: Any, corpus: Mapping[str, Sequence[str]], cache: bool = True) -> tuple[Any, list[str]]:
    """The (cached) token-count matrix of ``tokenizer`` over ``corpus``.

    Args:
        tokenizer: a Hugging Face tokenizer; rows cover ``tokenizer.vocab_size`` ids.
        corpus: ``{language: texts}``; columns in key order.
        cache: read/write the cache, keyed by the vocabulary, the languages and a hash of every
            text (the same corpus read again hits the cache).

    Returns:
        ``(M, columns)``: float32 ``[tokenizer.vocab_size, K]`` and the language names.

    Raises:
        HubError: see :func:`count_matrix`.
    """
    import numpy as np

    languages = list(corpus)
    digest = hashlib.sha256()
    for lang in languages:
        digest.update(lang.encode() + b"\0")
        for text in corpus[lang]:
            digest.update(text.encode("utf-8") + b"\n")
        digest.update(b"\1")
    vocab = token_texts(tokenizer)
    key = hashlib.sha256(
        json.dumps({"count_format": COUNT_FORMAT, "vocab": vocab, "vocab_size": int(tokenizer.vocab_size), "corpus": digest.hexdigest()}, ensure_ascii=False).encode()
    ).hexdigest()[:24]
    path = cache_root() / f"counts-{key}.npy"
    if cache and path.is_file():
        try:
            matrix = np.load(path)
            if matrix.shape == (int(tokenizer.vocab_size), len(languages)):
                return matrix, languages
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    counts = {}
    for lang in languages:
        counts[lang] = count_tokens(tokenizer, corpus[lang])
    matrix = count_matrix(counts)
    if cache:
        _save(path, matrix)
    return matrix, languages


def _save(path: Path, matrix: Any) -> None:
    """Cache ``matrix`` at ``path`` as ``.npy``, atomically; an unwritable cache is skipped."""
    import numpy as np

    from hubclient.fs import atomic_write

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.save(fh, matrix)

    try:
        atomic_write(path, write)
    except OSError:
        pass  # an unwritable cache only costs a rebuild next time
