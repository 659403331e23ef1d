"""Reading parallel corpora: K files where line ``i`` is the same meaning in every file.

Two sources, one result (:class:`ParallelCorpus`):

* :func:`read_parallel_files`: plain-text files, one sentence a line (the language is named
  after the file, ``eng_Latn.devtest`` -> ``eng_Latn``);
* :func:`read_flores`: FLORES-200 language codes (``eng_Latn zho_Hans``) looked up as
  ``<dir>/<code>.devtest`` (or ``.dev``) in a FLORES folder;
* :func:`read_languages`: what every multilingual command takes as its positional inputs, a
  mix of parallel files and FLORES codes (the folder from ``--flores-dir`` or the
  ``HUB_FLORES_DIR`` environment variable, else the data folder after ``hub data get flores200``:
  :func:`flores_folder`).

:func:`flores_file` is the one place a FLORES code becomes a file; :func:`read_flores_texts`
reads one language alone (commands whose languages need not be parallel).

Alignment is the point: lines are never stripped, and an empty line is either an error (with
its line numbers) or, with ``skip_empty``, dropped from *every* language so that line ``i``
still means the same in all of them. Every problem raises :class:`~hubclient.errors.HubError`
with one line naming the fix, before any model is loaded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hubclient.errors import HubError
from hubclient.inputs.prompts import read_lines

#: File suffixes tried, in order, for a FLORES code in a FLORES folder.
FLORES_SUFFIXES = (".devtest", ".dev")
#: What a FLORES-200 code looks like (ISO 639-3 + ISO 15924 script), e.g. ``zho_Hans``.
FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
#: Environment variable naming the FLORES folder when ``--flores-dir`` is not given.
FLORES_ENV = "HUB_FLORES_DIR"
#: Line numbers quoted in an error message before "…".
MAX_QUOTED = 8


@dataclass(frozen=True)
class ParallelCorpus:
    """K aligned languages of N sentences each.

    Attributes:
        languages: one name per language (file stem or FLORES code), in input order, unique.
        texts: ``texts[k][i]`` is sentence ``i`` in language ``k``; ``[K][N]``.
        sentences: the 0-based line index (in the source files) of each of the N sentences;
            with ``skip_empty`` some indices are missing, otherwise it is ``0..N-1``.
        sources: the file each language was read from.
    """

    languages: list[str]
    texts: list[list[str]]
    sentences: list[int]
    sources: list[Path]

    @property
    def n(self) -> int:
        """Sentences per language (N)."""
        return len(self.sentences)

    def flat(self) -> tuple[list[str], list[str], list[int]]:
        """All K×N texts language by language, with each text's language and sentence index.

        Returns:
            ``(texts, languages, sentences)``, three lists of length K×N; prompt
            ``k * N + i`` is sentence ``i`` of language ``k``.
        """
        texts: list[str] = []
        languages: list[str] = []
        sentences: list[int] = []
        for name, lines in zip(self.languages, self.texts):
            texts.extend(lines)
            languages.extend([name] * len(lines))
            sentences.extend(self.sentences)
        return texts, languages, sentences


def read_parallel_files(paths: list[Path], n: int | None = None, skip_empty: bool = False) -> ParallelCorpus:
    """Read two or more aligned plain-text files (UTF-8, one sentence a line).

    Args:
        paths: the files; each language is named after its file's stem (``eng_Latn.devtest``
            -> ``eng_Latn``; ``zh.txt`` -> ``zh``).
        n: use only the first ``n`` sentences (after dropping empty lines with ``skip_empty``).
        skip_empty: drop every line index that is empty (or whitespace) in any file, from all
            files, instead of failing.

    Raises:
        HubError: fewer than 2 files, a missing or non-UTF-8 file, two files with the same
            name, files of different lengths (naming both files and their line counts), empty
            lines (with their line numbers) without ``skip_empty``, ``n`` < 2 or larger than
            the data, or fewer than 2 sentences left.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise HubError(f"need at least 2 parallel files (languages), got {len(paths)}; pass two or more")
    names = [_language_name(p) for p in paths]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise HubError(f"two inputs are both named {name!r} ({paths[names.index(name)]} and {paths[i]}); rename one file")
    texts = [_read_lines(p) for p in paths]
    return _align(names, texts, paths, n, skip_empty)


def flores_folder(folder: Path | str | None = None) -> Path | None:
    """The FLORES folder: ``folder`` (``--flores-dir``) when given, else ``$HUB_FLORES_DIR``
    when set and not empty, else the FLORES-200 devtest folder in the data folder when present
    (``hub data get flores200``; :func:`hubclient.inputs.data.flores_default`), else ``None``."""
    if folder is not None and str(folder) != "":
        return Path(folder)
    env = os.environ.get(FLORES_ENV, "").strip()
    if env:
        return Path(env)
    from hubclient.inputs.data import flores_default

    return flores_default()


def flores_file(code: str, folder: Path | str | None) -> Path:
    """The file of FLORES code ``code``: ``<folder>/<code>.devtest``, else ``<code>.dev``.

    Args:
        code: a FLORES-200 code such as ``eng_Latn``.
        folder: the FLORES folder; ``None`` reads :func:`flores_folder` (``HUB_FLORES_DIR``).

    Raises:
        HubError: no folder (naming ``--flores-dir`` and ``HUB_FLORES_DIR``), a folder that does
            not exist, or no file for ``code`` there (listing the codes available).
    """
    resolved = flores_folder(folder)
    if resolved is None:
        raise HubError(f"FLORES code {code!r} needs a FLORES folder: pass --flores-dir DIR or set {FLORES_ENV} (the folder holding <code>.devtest files), or run hub data get flores200")
    if not resolved.is_dir():
        raise HubError(f"--flores-dir {str(resolved)!r} is not a folder; pass the folder holding <code>.devtest files (or set {FLORES_ENV})")
    for suffix in FLORES_SUFFIXES:
        if (resolved / f"{code}{suffix}").is_file():
            return resolved / f"{code}{suffix}"
    listed = " ".join(flores_codes(resolved)) or "none"
    raise HubError(f"unknown FLORES code {code!r}: no {code}.devtest in {resolved}; available: {listed}")


def read_flores_texts(code: str, folder: Path | str | None, n: int | None = None) -> list[str]:
    """The first ``n`` sentences (all when ``None``) of one FLORES language (:func:`flores_file`).

    Raises:
        HubError: see :func:`flores_file`; ``n < 1``, ``n`` larger than the file, an empty line
            (with its line number; :func:`hubclient.inputs.prompts.read_prompts`).
    """
    from hubclient.inputs.prompts import read_prompts

    path = flores_file(code, folder)
    from hubclient.inputs.prompts import take_first

    return take_first(read_prompts(file=path), n, f"texts in {path}")


def read_flores(codes: list[str], folder: Path | None, n: int | None = None, skip_empty: bool = False) -> ParallelCorpus:
    """Read FLORES-200 languages by code from a FLORES folder (``<folder>/<code>.devtest``).

    Args:
        codes: FLORES-200 codes such as ``eng_Latn``, ``zho_Hans``, ``spa_Latn`` (2 or more).
        folder: the folder holding ``<code>.devtest`` (or ``<code>.dev``) files; ``None``:
            ``$HUB_FLORES_DIR`` (:func:`flores_folder`).
        n, skip_empty: as in :func:`read_parallel_files`.

    Raises:
        HubError: no folder given or it does not exist, a code with no file there (the message
            lists the codes available), a code given twice, and every error of
            :func:`read_parallel_files`.
    """
    if flores_folder(folder) is None:
        raise HubError(f"FLORES codes ({' '.join(codes)}) need --flores-dir DIR (or {FLORES_ENV}), the folder holding <code>.devtest files, or run hub data get flores200")
    if len(codes) < 2:
        raise HubError(f"need at least 2 languages, got {len(codes)}; pass two or more FLORES codes")
    paths = [flores_file(code, folder) for code in codes]
    corpus = read_parallel_files(paths, n=n, skip_empty=skip_empty)
    return ParallelCorpus(languages=list(codes), texts=corpus.texts, sentences=corpus.sentences, sources=corpus.sources)


def language_sources(inputs: list[str], folder: Path | str | None = None) -> list[tuple[str, Path]]:
    """``(language name, file)`` of each input: an existing file is read as it is (named after
    its stem, ``zh.txt`` -> ``zh``); anything else must be a FLORES code, read from the FLORES
    folder (``folder`` or ``$HUB_FLORES_DIR``; :func:`flores_file`).

    Raises:
        HubError: an input that is neither an existing file nor a FLORES-shaped code, a FLORES
            code with no folder or no file, or a language given twice.
    """
    out: list[tuple[str, Path]] = []
    for text in inputs:
        path = Path(text)
        if path.is_file():
            out.append((_language_name(path), path))
        elif looks_like_flores_code(text):
            out.append((text, flores_file(text, folder)))
        else:
            raise HubError(f"input {text!r} is neither a file nor a FLORES code (such as eng_Latn); check the path")
    names = [name for name, _ in out]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise HubError(f"language {name!r} is given twice ({out[names.index(name)][1]} and {out[i][1]}); give each language once")
    return out


def read_languages(inputs: list[str], folder: Path | str | None = None, n: int | None = None, skip_empty: bool = False) -> ParallelCorpus:
    """The parallel corpus of a multilingual command's inputs: parallel files and/or FLORES
    codes, mixed freely (:func:`language_sources`), aligned line by line.

    Raises:
        HubError: fewer than 2 inputs, and the errors of :func:`language_sources` and
            :func:`read_parallel_files`.
    """
    if len(inputs) < 2:
        raise HubError(f"need at least 2 parallel files or FLORES codes (languages), got {len(inputs)}; pass two or more")
    sources = language_sources(inputs, folder)
    corpus = read_parallel_files([path for _, path in sources], n=n, skip_empty=skip_empty)
    return ParallelCorpus(languages=[name for name, _ in sources], texts=corpus.texts, sentences=corpus.sentences, sources=corpus.sources)


def flores_codes(folder: Path) -> list[str]:
    """The FLORES codes that have a ``.devtest`` (or ``.dev``) file in ``folder``, sorted."""
    codes = set()
    for suffix in FLORES_SUFFIXES:
        for path in Path(folder).glob(f"*{suffix}"):
            codes.add(path.name[: -len(suffix)])
    return sorted(codes)


def looks_like_flores_code(text: str) -> bool:
    """True for strings shaped like a FLORES-200 code (``eng_Latn``), not like a path."""
    return bool(FLORES_CODE.match(text))


def _language_name(path: Path) -> str:
    name = path.name
    return name.split(".")[0] or name


def _read_lines(path: Path) -> list[str]:
    hint = f"; FLORES codes need --flores-dir DIR (or {FLORES_ENV})" if looks_like_flores_code(str(path)) else ""
    lines = read_lines(path, "parallel file", hint)
    if not lines:
        raise HubError(f"parallel file {path} is empty")
    return lines


def _quote_lines(numbers: list[int]) -> str:
    shown = ", ".join(str(i) for i in numbers[:MAX_QUOTED])
    return shown + (f", … ({len(numbers)} in all)" if len(numbers) > MAX_QUOTED else "")


def _align(names: list[str], texts: list[list[str]], paths: list[Path], n: int | None, skip_empty: bool) -> ParallelCorpus:
    for k in range(1, len(texts)):
        if len(texts[k]) != len(texts[0]):
            raise HubError(
                f"parallel files differ in length: {paths[0]} has {len(texts[0])} lines, {paths[k]} has {len(texts[k])}; "
                "line i must be the same sentence in every file"
            )
    if n is not None and n < 2:
        raise HubError(f"--n must be at least 2 (the baseline needs non-matching pairs), got {n}")
    total = len(texts[0])
    if skip_empty:
        keep = [i for i in range(total) if all(lines[i].strip() for lines in texts)]
    else:
        keep = list(range(total if n is None else min(n, total)))
        for name, path, lines in zip(names, paths, texts):
            empty = [i + 1 for i in keep if not lines[i].strip()]
            if empty:
                raise HubError(f"{path}: empty line(s) {_quote_lines(empty)}; fill them in or pass --skip-empty to drop those lines from every language")
    available = len(keep)
    if n is not None:
        if n > available:
            what = "non-empty lines in every file" if skip_empty else "lines"
            raise HubError(f"--n {n} is larger than the data: {paths[0]} has {available} {what}; use --n {available} or less")
        keep = keep[:n]
    if len(keep) < 2:
        raise HubError(f"need at least 2 sentences (the baseline compares non-matching pairs), got {len(keep)}; add lines")
    return ParallelCorpus(
        languages=list(names),
        texts=[[lines[i] for i in keep] for lines in texts],
        sentences=keep,
        sources=list(paths),
    )
