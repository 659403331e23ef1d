"""Reading parallel corpora: K files where line ``i`` is the same meaning in every file.

Two sources, one result (:class:`ParallelCorpus`):

* :func:`read_parallel_files`: plain-text files, one sentence a line (the language is named
  after the file, ``eng_Latn.devtest`` -> ``eng_Latn``);
* :func:`read_flores`: FLORES-200 language codes (``eng_Latn zho_Hans``) looked up as
  ``<dir>/<code>.devtest`` (or ``.dev``) in a FLORES folder.

Alignment is the point: lines are never stripped, and an empty line is either an error (with
its line numbers) or, with ``skip_empty``, dropped from *every* language so that line ``i``
still means the same in all of them. Every problem raises :class:`~hubclient.errors.HubError`
with one line naming the fix, before any model is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hubclient.errors import HubError
from hubclient.inputs.prompts import read_lines

#: File suffixes tried, in order, for a FLORES code in a FLORES folder.
FLORES_SUFFIXES = (".devtest", ".dev")
#: What a FLORES-200 code looks like (ISO 639-3 + ISO 15924 script), e.g. ``zho_Hans``.
FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
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


def read_flores(codes: list[str], folder: Path | None, n: int | None = None, skip_empty: bool = False) -> ParallelCorpus:
    """Read FLORES-200 languages by code from a FLORES folder (``<folder>/<code>.devtest``).

    Args:
        codes: FLORES-200 codes such as ``eng_Latn``, ``zho_Hans``, ``spa_Latn`` (2 or more).
        folder: the folder holding ``<code>.devtest`` (or ``<code>.dev``) files.
        n, skip_empty: as in :func:`read_parallel_files`.

    Raises:
        HubError: no folder given or it does not exist, a code with no file there (the message
            lists the codes available), a code given twice, and every error of
            :func:`read_parallel_files`.
    """
    if folder is None:
        raise HubError(f"FLORES codes ({' '.join(codes)}) need --flores-dir DIR, the folder holding <code>.devtest files")
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"--flores-dir {str(folder)!r} is not a folder; pass the folder holding <code>.devtest files")
    if len(codes) < 2:
        raise HubError(f"need at least 2 languages, got {len(codes)}; pass two or more FLORES codes")
    available = flores_codes(folder)
    paths = []
    for code in codes:
        found = [folder / f"{code}{suffix}" for suffix in FLORES_SUFFIXES if (folder / f"{code}{suffix}").is_file()]
        if not found:
            listed = " ".join(available) if available else "none"
            raise HubError(f"unknown FLORES code {code!r}: no {code}.devtest in {folder}; available: {listed}")
        paths.append(found[0])
    corpus = read_parallel_files(paths, n=n, skip_empty=skip_empty)
    return ParallelCorpus(languages=list(codes), texts=corpus.texts, sentences=corpus.sentences, sources=corpus.sources)


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
    hint = "; FLORES codes need --flores-dir DIR" if looks_like_flores_code(str(path)) else ""
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
