"""Formal semantics: COGS sentences and their logical forms (Kim & Linzen 2020; Wu et al. 2024 §4, Fig. 7).

COGS files are TSV: ``English sentence TAB logical form TAB generalization type`` (the third
column is optional here). The similarity task compares each sentence with its own logical form
(two aligned "languages" ``sentence`` and ``logical_form``; Eq. 1 with bootstrap CI), e.g.

    ``A rose was helped by a dog .`` vs
    ``rose ( x _ 1 ) AND help . theme ( x _ 3 , x _ 1 ) AND help . agent ( x _ 3 , x _ 6 ) AND dog ( x _ 6 )``

The first ``n`` lines of the split are used, in file order (COGS splits are already shuffled);
the paper's code reads ``train.tsv`` (the default here), up to 10,000 lines, primitives included
(``paper-protocols.md`` A9).

Also here: the paper's name-swap baselines (A9, :func:`read_cogs_baseline`: a third aligned
"language", the logical form with its two proper names swapped, optionally with shuffled
conjuncts) and the role lens data (A10, :func:`role_items`: names re-sampled, read before
each name).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from hubclient.errors import HubError
from hubclient.inputs.prompts import read_lines
from hubclient.inputs.parallel import ParallelCorpus
from hubclient.inputs.tasks.sites import Site, SiteItem

LANGUAGES = ["sentence", "logical_form"]


def read_cogs(folder: Path, split: str = "train", n: int | None = None) -> ParallelCorpus:
    """Read ``<folder>/<split>.tsv`` as a two-"language" parallel corpus.

    Args:
        folder: the COGS folder (``train.tsv``, ``dev.tsv``, ``test.tsv``, ``gen.tsv``…); a
            ``.tsv`` file is accepted too (then ``split`` is ignored).
        split: file stem to read.
        n: first ``n`` lines (``None``: all).

    Returns:
        ``ParallelCorpus(languages=["sentence", "logical_form"], …)``; ``sentences`` are the
        0-based line indices.

    Raises:
        HubError: a missing folder or split (listing the splits present), a non-UTF-8 file, a
            line with fewer than 2 tab-separated fields or an empty sentence / logical form
            (with its line number), ``n < 2`` or more than the lines.
    """
    folder = Path(folder)
    if folder.is_file():
        path = folder
    else:
        if not folder.is_dir():
            raise HubError(f"--cogs-dir {str(folder)!r} is not a folder; pass the COGS folder holding {split}.tsv")
        path = folder / f"{split}.tsv"
        if not path.is_file():
            available = sorted(p.stem for p in folder.glob("*.tsv"))
            raise HubError(f"no COGS split {split!r}: {path} does not exist; available: {', '.join(available) or 'none'}")
    if n is not None and n < 2:
        raise HubError(f"--n must be at least 2 (the baseline needs non-matching pairs), got {n}")
    lines = read_lines(path, "COGS file")
    sentences, forms, index = [], [], []
    for number, line in enumerate(lines, start=1):
        if n is not None and len(index) == n:
            break
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 2:
            raise HubError(f"{path} line {number}: expected 'sentence TAB logical form [TAB type]', found {len(fields)} field(s): {line[:60]!r}")
        sentence, form = fields[0].strip(), fields[1].strip()
        if not sentence or not form:
            column = "sentence" if not sentence else "logical form"
            raise HubError(f"{path} line {number}: the {column} is empty")
        sentences.append(sentence)
        forms.append(form)
        index.append(number - 1)
    if n is not None and len(index) < n:
        raise HubError(f"--n {n} is more than the {len(index)} lines of {path}; use --n {len(index)} or fewer")
    if len(index) < 2:
        raise HubError(f"{path} has {len(index)} line(s); Eq. 1 needs at least 2 pairs")
    return ParallelCorpus(languages=list(LANGUAGES), texts=[sentences, forms], sentences=index, sources=[path, path])


# --------------------------------------------------------------------------- COGS rows and proper names
@dataclass(frozen=True)
class CogsRow:
    """One line of a COGS TSV: ``sentence TAB logical form TAB type`` (``line``: 1-based)."""

    line: int
    sentence: str
    form: str
    kind: str


def cogs_path(folder: Path, split: str = "train") -> Path:
    """``<folder>/<split>.tsv`` (or ``folder`` itself when it is a ``.tsv`` file).

    Raises:
        HubError: a missing folder or split (listing the splits present).
    """
    folder = Path(folder)
    if folder.is_file():
        return folder
    if not folder.is_dir():
        raise HubError(f"--cogs-dir {str(folder)!r} is not a folder; pass the COGS folder holding {split}.tsv")
    path = folder / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in folder.glob("*.tsv"))
        raise HubError(f"no COGS split {split!r}: {path} does not exist; available: {', '.join(available) or 'none'}")
    return path


def read_rows(path: Path) -> list[CogsRow]:
    """Every line of a COGS TSV with exactly three tab-separated fields, as the paper's
    ``read_cogs`` takes them (``semantics/similarity.py:19-31``: other lines are passed over).

    Raises:
        HubError: a missing or non-UTF-8 file, or no line with three fields.
    """
    rows = []
    for number, line in enumerate(read_lines(Path(path), "COGS file"), start=1):
        fields = line.rstrip("\r").split("\t")
        if len(fields) == 3:
            rows.append(CogsRow(number, fields[0], fields[1], fields[2]))
    if not rows:
        raise HubError(f"{path} has no 'sentence TAB logical form TAB type' line")
    return rows


def parse_names(sentence: str, form: str, ignore_start: bool = True) -> dict[str, str]:
    """Proper name -> semantic role in a COGS logical form (``semantics/logit_lens.py:18-50``).

    Walks the logical form: after a ``.`` the next word is the current role (``eat . agent``
    -> ``agent``; in ``cake . nmod . beside`` the last one, ``beside``, wins); after ``(`` or
    ``,`` a word that is not a variable (``x _ 1``) is a proper name and takes the current
    role. With ``ignore_start``, a name the sentence starts with is left out.

    Raises:
        HubError: a name with two different roles (the paper's code asserts), or a logical
            form that ends inside a role or name.
    """
    out: dict[str, str] = {}
    role = None
    i = 0
    try:
        while i < len(form):
            c = form[i]
            if c == ".":
                i += 1
                while form[i] == " ":
                    i += 1
                end = form[i:].index(" ")
                role = form[i : i + end]
                i += end
            elif c in "(,":
                i += 1
                while form[i] == " ":
                    i += 1
                if form[i] == "x":
                    i += 1
                    continue
                end = form[i:].index(" ")
                name = form[i : i + end]
                i += end
                if role is None or out.get(name) not in (None, role):
                    raise HubError(f"COGS logical form {form!r}: name {name!r} has no role or two roles")
                if not (ignore_start and sentence.startswith(name)):
                    out[name] = role
                role = None
            else:
                i += 1
    except (IndexError, ValueError):
        raise HubError(f"COGS logical form {form!r} ends inside a role or name") from None
    return out


# --------------------------------------------------------------------------- A9: name-swap baselines
#: ``--seed`` of the paper's ``semantics/similarity.py`` (``random.seed(42)``), which orders the
#: shuffled conjuncts.
SHUFFLE_SEED = 42
#: Baselines of A9: name (the third "language") -> whether the conjuncts are shuffled too.
BASELINES = {"swap": False, "swap-shuffle": True}


def swap_names(form: str, first: str, second: str) -> str:
    """Swap two names in a logical form by string replacement through ``__temp__``, as
    ``semantics/similarity.py:45-50`` does (substrings are replaced too)."""
    return form.replace(first, "__temp__").replace(second, first).replace("__temp__", second)


def shuffle_conjuncts(form: str, rng: random.Random) -> str:
    """Shuffle the ``" AND "`` conjuncts right of the last ``" ; "`` (``shuffle_formal``,
    ``semantics/similarity.py:66-76``; ``rng.shuffle`` is ``random.shuffle`` of a seeded
    global generator)."""
    if ";" in form:
        lhs, rhs = form.rsplit(" ; ", 1)
    else:
        lhs, rhs = "", form
    parts = rhs.split(" AND ")
    rng.shuffle(parts)
    return " AND ".join(parts) if not lhs else lhs + " ; " + " AND ".join(parts)


def read_cogs_baseline(folder: Path, split: str = "train", n: int | None = None, baseline: str = "swap", seed: int = SHUFFLE_SEED) -> ParallelCorpus:
    """A9's data (``paper-protocols.md`` A9, ``--filter_data [--shuffle_data]``): sentence,
    logical form and the name-swapped logical form, aligned.

    Lines of ``<split>.tsv`` in file order, primitives dropped, kept when their logical form
    names exactly two proper names (:func:`parse_names` with ``ignore_start=False``); the
    third column swaps those two names (:func:`swap_names`, names in logical-form order) and,
    for ``swap-shuffle``, then shuffles its conjuncts (:func:`shuffle_conjuncts`, one
    ``random.Random(seed)`` drawn item by item in file order). The paper prints the paired
    ``mean_i [cos(h(s_i), h(LF_i)) − cos(h(s_i), h(swapped_i))]``.

    Args:
        folder / split: as :func:`cogs_path` (the paper: ``train``).
        n: first ``n`` kept items (the paper: up to 10,000); ``None``: all.
        baseline: ``swap`` (Fig. 9b) or ``swap-shuffle`` (Fig. 9c).
        seed: the shuffle seed (the paper's ``--seed 42``).

    Returns:
        ``ParallelCorpus(languages=["sentence", "logical_form", "swapped_logical_form"])``
        (``shuffled_swapped_logical_form`` for ``swap-shuffle``); ``sentences`` are 0-based
        line indices.

    Raises:
        HubError: an unknown baseline, ``n < 2``, fewer kept items than ``n``, and the errors
            of :func:`cogs_path` / :func:`read_rows` / :func:`parse_names`.
    """
    if baseline not in BASELINES:
        raise HubError(f"unknown COGS baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    if n is not None and n < 2:
        raise HubError(f"--n must be at least 2, got {n}")
    path = cogs_path(folder, split)
    rng = random.Random(seed)
    sentences, forms, swapped, index = [], [], [], []
    for row in read_rows(path):
        if n is not None and len(index) == n:
            break
        if row.kind == "primitive":
            continue
        names = list(parse_names(row.sentence, row.form, ignore_start=False))
        if len(names) != 2:
            continue
        other = swap_names(row.form, names[0], names[1])
        if BASELINES[baseline]:
            other = shuffle_conjuncts(other, rng)
        sentences.append(row.sentence)
        forms.append(row.form)
        swapped.append(other)
        index.append(row.line - 1)
    if n is not None and len(index) < n:
        raise HubError(f"--n {n} is more than the {len(index)} items of {path} with exactly two proper names; use --n {len(index)} or fewer")
    if len(index) < 2:
        raise HubError(f"{path} has {len(index)} item(s) with exactly two proper names; need at least 2")
    third = "shuffled_swapped_logical_form" if BASELINES[baseline] else "swapped_logical_form"
    return ParallelCorpus(languages=["sentence", "logical_form", third], texts=[sentences, forms, swapped], sentences=index, sources=[path, path, path])


# --------------------------------------------------------------------------- A10: the role lens
def shuffle_names(rows: list[CogsRow], seed: int = 0) -> tuple[list[tuple[CogsRow, str, str, dict[str, str]]], int]:
    """Re-sample every proper name (``shuffle_names``, ``semantics/logit_lens.py:63-92``).

    ``rows``: the split's non-primitive rows. Each row with at least one name gets, for its
    names, distinct random names drawn (``rng.sample``) from all names of the corpus minus
    its own, substituted by string replacement in sentence and logical form; a draw is
    repeated while the new sentence or logical form already occurs in the data. The pool is
    **sorted** (the paper draws from ``list(set)``, whose order depends on Python's string
    hash seed, so its exact draw cannot be repeated); the generator is
    ``random.Random(seed)`` (the paper: ``random.seed(0)``).

    Returns:
        ``(items, dropped)``: ``(row, new sentence, new logical form, name -> role)`` per
        row with a name; ``dropped`` counts rows whose new sentence repeats a capitalised
        word (the paper's code asserts there).
    """
    rng = random.Random(seed)
    parsed = []
    names: set[str] = set()
    for row in rows:
        roles = parse_names(row.sentence, row.form, ignore_start=False)
        parsed.append((row, roles))
        names.update(roles)
    texts = {row.sentence for row in rows}
    forms = {row.form for row in rows}
    pool_all = sorted(names)
    out = []
    dropped = 0
    for row, roles in parsed:
        if not roles:
            continue
        pool = [name for name in pool_all if name not in roles]
        while True:
            new_names = rng.sample(pool, len(roles))
            sentence, form = row.sentence, row.form
            for old, new in zip(roles, new_names):
                sentence = sentence.replace(old, new)
                form = form.replace(old, new)
            if sentence in texts or form in forms:
                continue
            break
        capitalised = [word for word in sentence.split() if word[0].isupper()]
        if len(capitalised) != len(set(capitalised)):
            dropped += 1
            continue
        out.append((row, sentence, form, {new: roles[old] for old, new in zip(roles, new_names)}))
    return out, dropped


def role_items(folder: Path, split: str = "train", n: int | None = None, seed: int = 0) -> tuple[list[SiteItem], list[str], dict[str, int]]:
    """A10's prompts (``paper-protocols.md`` A10, ``semantics/logit_lens.py:123-170``).

    Non-primitive rows of ``<split>.tsv``, names re-sampled (:func:`shuffle_names`), names at
    the sentence start dropped, rows with no name left dropped; the first ``n`` remaining
    sentences are the prompts. Each name is one site (``match="before-word"``: the lens is
    read at the token before the name's token; the name must be exactly one token and occur
    once, checked with the tokenizer). Targets: every role of ``all_roles`` (the sorted roles
    of all kept rows, before ``n`` is applied, as in the paper), each the first token of
    ``" " + role``.

    Returns:
        ``(items, all_roles, counts)``: counts ``rows`` (non-primitive), ``with_names``,
        ``dropped_capitals`` (see :func:`shuffle_names`), ``kept`` (rows with a name not at
        the start), ``names`` (sites in the returned items).

    Raises:
        HubError: ``n < 1`` or more than the kept rows, and the errors of :func:`cogs_path`,
            :func:`read_rows`, :func:`parse_names`.
    """
    if n is not None and n < 1:
        raise HubError(f"--n must be at least 1, got {n}")
    path = cogs_path(folder, split)
    rows = [row for row in read_rows(path) if row.kind != "primitive"]
    shuffled, dropped = shuffle_names(rows, seed)
    kept = []
    for row, sentence, form, roles in shuffled:
        roles = {name: role for name, role in roles.items() if not sentence.startswith(name)}
        if roles:
            kept.append((row, sentence, form, roles))
    all_roles = sorted({role for *_, roles in kept for role in roles.values()})
    if n is not None and n > len(kept):
        raise HubError(f"--n {n} is more than the {len(kept)} COGS {split} sentences with a proper name not at the start; use --n {len(kept)} or fewer")
    targets = tuple((role, role) for role in all_roles)
    items = []
    for row, sentence, form, roles in kept[: n if n is not None else len(kept)]:
        sites = []
        for name, role in roles.items():
            sites.append(Site("name", "before-word", targets, word=name, info={"name": name, "gold_role": role}))
        items.append(SiteItem(sentence, sites, {"line": row.line, "logical_form": form}))
    counts = {"rows": len(rows), "with_names": len(shuffled) + dropped, "dropped_capitals": dropped, "kept": len(kept), "names": sum(len(i.sites) for i in items)}
    return items, all_roles, counts
