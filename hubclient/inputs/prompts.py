"""Reading prompts and parsing token positions, with errors that name the fix.

Prompt files: ``.jsonl`` (one JSON object a line), ``.csv`` and ``.parquet`` are read by
column (``--column``, default ``text``); any other file is plain text, one prompt a line
(FLORES ``*.devtest`` files are read this way). ``--dataset NAME[:CONFIG][:SPLIT]`` reads a
column of a Hugging Face dataset instead (:func:`read_dataset`, the optional ``datasets`` library). Prompts are never stripped or skipped: line
``i`` stays prompt ``i``, so parallel files stay aligned.

Text files are read as UTF-8 with an optional byte-order mark (dropped, never part of line 1)
and split on newlines only (``\n`` or ``\r\n``): other characters that
:meth:`str.splitlines` also breaks on (U+2028/U+2029, ``\x0b``, ``\x0c``, ``\x1c``–``\x1e``,
``\x85``) stay inside their line, as an editor shows them. Errors count lines and prompts from 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hubclient.errors import HubError

TABLE_SUFFIXES = (".jsonl", ".csv", ".parquet")


def read_prompts(
    prompts: list[str] | None = None,
    file: Path | None = None,
    column: str | None = None,
    n: int | None = None,
    dataset: str | None = None,
) -> list[str]:
    """Collect prompts from ``--prompt`` values and/or a ``--prompts`` file or ``--dataset``.

    Args:
        prompts: prompts given on the command line (kept first, in order).
        file: a prompt file (see module docstring for formats).
        column: column to read from ``.jsonl``/``.csv``/``.parquet`` files or the dataset
            (default ``text``).
        n: keep only the first ``n`` prompts.
        dataset: a Hugging Face dataset, ``NAME[:CONFIG][:SPLIT]`` (see :func:`read_dataset`).

    Returns:
        the prompts, in input order.

    Raises:
        HubError: no prompts at all, a missing/unreadable/empty file, a missing column (the
            message lists the columns the file has), an empty prompt (with its line number),
            or ``n < 1``.
    """
    out = list(prompts or [])
    for i, text in enumerate(out):
        if not text.strip():
            raise HubError(f"--prompt number {i + 1} is empty; give some text")
    if file is not None and dataset is not None:
        raise HubError("give --prompts FILE or --dataset NAME, not both")
    if file is not None:
        out.extend(_read_file(Path(file), column))
    elif dataset is not None:
        out.extend(read_dataset(dataset, column))
    elif column is not None:
        raise HubError("--column only applies to --prompts FILE (.jsonl, .csv or .parquet) or --dataset NAME")
    if not out:
        raise HubError("no prompts: pass --prompt TEXT (repeatable), --prompts FILE or --dataset NAME")
    return take_first(out, n, "prompts")


def read_dataset(spec: str, column: str | None = None) -> list[str]:
    """The prompts in one column of a Hugging Face dataset (the ``datasets`` library, the
    ``hf`` extra, imported here only).

    Args:
        spec: ``NAME``, ``NAME:SPLIT``, ``NAME:CONFIG`` or ``NAME:CONFIG:SPLIT``. ``NAME`` is a
            Hub id or a local folder (``datasets.load_dataset(NAME)``: e.g. a folder with
            ``train.csv``). With two parts the second is the split when the default
            configuration has a split of that name, else the configuration. Without a split
            the dataset's only split is read; several are an error that lists them.
        column: the column of the prompts (default ``text``).

    Returns:
        the column's values, in dataset order.

    Raises:
        HubError: ``datasets`` missing (names ``pip install 'hub[hf]'``), a dataset that does
            not load, an unknown split (listing the splits), a missing column (listing the
            columns), a value that is not text or an empty one (with its row number).
    """
    try:
        import datasets
    except ImportError:
        raise HubError("--dataset needs the datasets library: pip install 'hub[hf]'") from None
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise HubError(f"bad --dataset {spec!r}; use NAME, NAME:SPLIT, NAME:CONFIG or NAME:CONFIG:SPLIT")
    name, config, split = parts[0], None, None
    if len(parts) == 3:
        config, split = parts[1] or None, parts[2] or None
    loaded = _load_dataset(datasets, name, None if len(parts) == 2 else config, spec)
    if len(parts) == 2 and parts[1]:
        if parts[1] in loaded:
            split = parts[1]
        else:
            try:
                loaded = _load_dataset(datasets, name, parts[1], spec)
            except HubError as error:
                raise HubError(f"dataset {name!r} has no split or configuration {parts[1]!r}; its splits: {', '.join(loaded)} ({error})") from None
    splits = list(loaded)
    if split is None:
        if len(splits) != 1:
            raise HubError(f"dataset {name!r} has several splits ({', '.join(splits)}); name one: --dataset {name}:SPLIT")
        split = splits[0]
    if split not in loaded:
        raise HubError(f"dataset {name!r} has no split {split!r}; its splits: {', '.join(splits)}")
    table = loaded[split]
    column = column or "text"
    if column not in table.column_names:
        raise HubError(f"dataset {name!r} ({split}) has no column {column!r}; its columns: {', '.join(table.column_names)} (choose one with --column)")
    values = list(table[column])
    if not values:
        raise HubError(f"dataset {name!r} ({split}) is empty")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise HubError(f"dataset {name!r} ({split}): row {i + 1} of column {column!r} is not text: {value!r}")
        if not value.strip():
            raise HubError(f"dataset {name!r} ({split}): row {i + 1} of column {column!r} is an empty prompt")
    return values


def _load_dataset(datasets: object, name: str, config: str | None, spec: str) -> dict:
    """``datasets.load_dataset(name, config)`` (a ``DatasetDict``), failures as ``HubError``."""
    try:
        return datasets.load_dataset(name, config)  # type: ignore[attr-defined]
    except Exception as error:  # noqa: BLE001 - the library raises many kinds; the message says which
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HubError(f"--dataset {spec!r} does not load: {first}") from None


def take_first(items: list, n: int | None, what: str) -> list:
    """The first ``n`` items (all when ``n`` is ``None``): the one ``--n`` rule of every command.

    Raises:
        HubError: ``n < 1``, or ``n`` larger than the items there are (asking for 50 prompts
            of a 20-line file is a mistake worth a message, not a silent 20).
    """
    if n is None:
        return items
    if n < 1:
        raise HubError(f"--n must be at least 1, got {n}")
    if n > len(items):
        raise HubError(f"--n {n} is more than the {len(items)} {what} there are; give --n {len(items)} or less, or leave --n out for all")
    return items[:n]


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` as an editor shows them: split on ``\n`` (a ``\r`` before it is
    part of the line break), a leading byte-order mark dropped, no empty item after a final
    newline. Unlike :meth:`str.splitlines`, U+2028/U+2029, ``\x0b``, ``\x0c``, ``\x1c``–``\x1e``
    and ``\x85`` do not end a line."""
    text = text.removeprefix("\ufeff")
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    out = []
    for line in lines:
        out.append(line[:-1] if line.endswith("\r") else line)
    return out


def _read_file(path: Path, column: str | None) -> list[str]:
    if not path.is_file():
        raise HubError(f"prompt file {str(path)!r} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        values = _read_table(path, suffix, column or "text")
    else:
        if column is not None:
            raise HubError(f"--column needs a .jsonl, .csv or .parquet file; {path.name} is read as plain text")
        values = read_lines(path)
    if not values:
        raise HubError(f"prompt file {path} is empty")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise HubError(f"{path}: row {i + 1} of column {column or 'text'!r} is not text: {value!r}")
        if not value.strip():
            raise HubError(f"{path}: line {i + 1} is an empty prompt; remove it or fill it in")
    return values


def read_lines(path: Path, what: str = "prompt file", hint: str = "") -> list[str]:
    """The lines of a UTF-8 text file (line ``i`` stays item ``i``; nothing stripped or skipped;
    split as :func:`split_lines`).

    Args:
        what: how errors name the file (``prompt file``, ``parallel file``…).
        hint: appended to the "does not exist" error.

    Raises:
        HubError: a missing file, or one that is not UTF-8 (with the byte offset).
    """
    if not path.is_file():
        raise HubError(f"{what} {str(path)!r} does not exist (or is not a file){hint}")
    try:
        return split_lines(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise HubError(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); convert it to UTF-8") from exc


def iter_jsonl(path: Path, lines: list[str] | None = None) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file (1-based numbers).

    Args:
        path: the file (named in errors; read as UTF-8 unless ``lines`` is given).
        lines: the file's lines, when the caller has read them already (e.g. with
            :func:`read_lines`).

    Raises:
        HubError: a line that is not valid JSON, or JSON that is not an object; the message
            names the file and the line.
    """
    if lines is None:
        lines = read_lines(path, "JSON-lines file")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HubError(f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); write one JSON object a line") from None
        if not isinstance(record, dict):
            raise HubError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}; write one JSON object a line")
        yield number, record


def _read_table(path: Path, suffix: str, column: str) -> list:
    import polars as pl

    if suffix == ".jsonl":
        rows = []
        for lineno, record in iter_jsonl(path):
            if column not in record:
                raise HubError(f"{path}: line {lineno} has no column {column!r} (it has {sorted(record)}); choose one with --column")
            rows.append(record[column])
        return rows
    try:
        frame = pl.read_csv(path, infer_schema=False) if suffix == ".csv" else pl.read_parquet(path)
    except Exception as exc:  # polars raises its own error zoo for malformed files
        raise HubError(f"could not read {path}: {str(exc).splitlines()[0]}") from exc
    if column not in frame.columns:
        raise HubError(f"{path} has no column {column!r} (it has {frame.columns}); choose one with --column")
    return frame[column].to_list()


@dataclass(frozen=True)
class Positions:
    """Which token positions of each prompt an analysis reads.

    ``last`` (the last token), ``all``, or explicit indices into the prompt's tokens (special
    tokens such as BOS included; negative counts from the end, ``-1`` = last).
    """

    spec: str
    indices: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Positions":
        """Parse ``last``, ``all`` or a comma-separated list such as ``0,3,-1``.

        Raises:
            HubError: anything else, with the accepted forms.
        """
        text = text.strip()
        if text in ("last", "all"):
            return cls(text)
        try:
            indices = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise HubError(f"bad --positions {text!r}: use 'last', 'all' or integers like '0,3,-1'") from None
        return cls("list", indices)

    def resolve(self, n_tokens: int, prompt_index: int) -> list[int]:
        """Positions (non-negative, ascending, unique) for a prompt of ``n_tokens`` tokens.

        Raises:
            HubError: an index outside ``-n_tokens..n_tokens-1``, naming the prompt.
        """
        if self.spec == "last":
            return [n_tokens - 1]
        if self.spec == "all":
            return list(range(n_tokens))
        out = set()
        for index in self.indices:
            if not -n_tokens <= index < n_tokens:
                raise HubError(
                    f"position {index} is out of range for prompt {prompt_index + 1} (counting prompts from 1, positions from 0 = BOS) "
                    f"({n_tokens} tokens: valid positions are {-n_tokens}..{n_tokens - 1})"
                )
            out.add(index % n_tokens)
        return sorted(out)
