"""Data tasks beyond languages: arithmetic, code and formal semantics (Wu et al. 2024, §4).

The semantic hub paper (arXiv 2411.04986) runs the same two measurements on other data types
(Fig. 5–7). Here each data type is a small, model-free data module that feeds the existing
analyses:

* a **similarity task** returns a :class:`~hubclient.inputs.parallel.ParallelCorpus` of two aligned
  "languages" (``digits``/``words``, ``sentence``/``logical_form``), which
  ``hub analyze similarity`` consumes exactly like FLORES (Eq. 1 with bootstrap CI);
* a **lens task** returns :class:`LensItem` prompts, each with :class:`Probe` character spans
  and, per probe, named groups of words whose lens probability is read at the span's last
  token (``hub analyze logit-lens --task …``, :mod:`analyses.task_lens`).

=============  ==========  =====  ==============================================================
task           similarity  lens   data
=============  ==========  =====  ==============================================================
``arithmetic`` yes         yes    generated, seeded (:mod:`hubclient.inputs.tasks.arithmetic`)
``cogs``       yes         yes    COGS TSV (:mod:`hubclient.inputs.tasks.cogs`); lens: A10
``code``       no          yes    MBPP JSONL (:mod:`hubclient.inputs.tasks.code`); A7
``code-roles`` no          yes    MBPP JSONL, no tests; A8
=============  ==========  =====  ==============================================================

The code and COGS lenses are the paper's experiments A7, A8, A10 (``paper-protocols.md``):
their prompts are :class:`~hubclient.inputs.tasks.sites.SiteItem` (:func:`site_items`), run by
:mod:`analyses.code_lens`; arithmetic's lens prompts are :class:`LensItem` (:func:`lens_items`),
run by :mod:`analyses.task_lens`.

Nothing here imports torch or needs a model; every bad input raises
:class:`~hubclient.errors.HubError` (with file and line number) before a model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hubclient.errors import HubError
from hubclient.inputs.parallel import ParallelCorpus
from hubclient.inputs.tasks.items import LensItem, Probe  # noqa: F401  (public re-export)
from hubclient.inputs.tasks.sites import Site, SiteItem  # noqa: F401  (public re-export)

#: task -> the analyses it feeds.
TASKS: dict[str, tuple[str, ...]] = {"arithmetic": ("similarity", "lens"), "cogs": ("similarity", "lens"), "code": ("lens",), "code-roles": ("lens",)}
#: Lens tasks whose prompts are :class:`SiteItem` (the paper's A7, A8, A10; :mod:`analyses.code_lens`).
SITE_TASKS = ("code", "code-roles", "cogs")


@dataclass
class TaskOptions:
    """What a ``--task`` run reads or generates (recorded in the manifest).

    Attributes:
        task: ``arithmetic``, ``cogs``, ``code`` or ``code-roles``.
        n: arithmetic: expressions (each in two forms); cogs: sentences (similarity: the
            first n lines, or the first n kept items with ``cogs_baseline``; lens: the first n
            sentences with a name); code: programs (``None``: all; arithmetic: every distinct
            expression).
        data_seed: seed of the generated expressions; cogs lens: of the name re-sampling
            (the paper: 0).
        max_operand / operators: arithmetic operands ``0..max_operand`` and operators.
        cogs_dir / cogs_split: the COGS folder and split (``<dir>/<split>.tsv``; the paper: train).
        cogs_baseline: cogs similarity: ``None`` (Eq. 1 over sentence/logical form), ``swap``
            or ``swap-shuffle`` (A9: items with exactly two proper names and a third, aligned
            "language", the name-swapped logical form, conjuncts shuffled with seed 42 for
            ``swap-shuffle``). ``code-roles`` never appends the tests (A8).
        mbpp / with_tests: the MBPP JSONL file; append each program's test asserts.
        protocol: arithmetic only: ``hub`` (the generated ``3+5=`` data above) or ``wu2024``
            (the paper's 1,123 expressions, :func:`hubclient.inputs.tasks.arithmetic.paper_items`;
            ``operators`` then picks among ``+*`` and ``n`` draws a seeded subset).
    """

    task: str
    n: int | None = None
    data_seed: int = 0
    max_operand: int = 9
    operators: str = "+-*"
    cogs_dir: str | None = None
    cogs_split: str = "train"
    cogs_baseline: str | None = None
    mbpp: str | None = None
    with_tests: bool = True
    protocol: str = "hub"

    def describe(self) -> dict[str, Any]:
        """The options that matter for this task (for the manifest)."""
        out = asdict(self)
        keep = {"task", "n", "data_seed"}
        keep |= {"arithmetic": {"max_operand", "operators"} | ({"protocol"} if self.protocol != "hub" else set()), "cogs": {"cogs_dir", "cogs_split"}, "code": {"mbpp", "with_tests"}}.get(self.task, set())
        keep |= {"cogs": {"cogs_baseline"}, "code-roles": {"mbpp"}}.get(self.task, set())
        return {k: v for k, v in out.items() if k in keep}


def check_task(task: str, analysis: str) -> None:
    """Raise :class:`HubError` unless ``task`` exists and feeds ``analysis`` (``similarity``
    or ``lens``), naming the tasks that do."""
    if task not in TASKS:
        raise HubError(f"unknown --task {task!r}; choose one of {', '.join(TASKS)}")
    if analysis not in TASKS[task]:
        fitting = [name for name, uses in TASKS.items() if analysis in uses]
        command = "similarity" if analysis == "similarity" else "logit-lens"
        raise HubError(f"--task {task} has no {command} form; hub analyze {command} takes --task {' or '.join(fitting)}")


def similarity_corpus(options: TaskOptions) -> ParallelCorpus:
    """The two aligned "languages" of a similarity task (see the module table).

    Raises:
        HubError: an unknown task or one without a similarity form, and the data errors of
            the task's module.
    """
    check_task(options.task, "similarity")
    if options.task == "arithmetic":
        from hubclient.inputs.tasks import arithmetic

        if options.protocol == "wu2024":  # paper-protocols.md §A4: 5+3 vs five plus three
            return arithmetic.paper_corpus(arithmetic.sample_paper_items(arithmetic.paper_items(options.operators), options.n, options.data_seed))
        return arithmetic.corpus(arithmetic.generate(options.n, options.max_operand, options.operators, options.data_seed))
    from hubclient.inputs.tasks import cogs

    folder = _need(_cogs_folder(options), "--cogs-dir", f"the COGS folder holding {options.cogs_split}.tsv", "cogs")
    if options.cogs_baseline is not None:
        return cogs.read_cogs_baseline(folder, options.cogs_split, options.n, options.cogs_baseline)
    return cogs.read_cogs(folder, options.cogs_split, options.n)


def lens_items(options: TaskOptions) -> list[LensItem]:
    """The prompts and probes of a lens task (see the module table).

    Raises:
        HubError: an unknown task or one without a lens form, and the data errors of the
            task's module.
    """
    check_task(options.task, "lens")
    if options.task in SITE_TASKS:
        raise HubError(f"--task {options.task} is a site-lens task: use site_items (analyses.code_lens)")
    from hubclient.inputs.tasks import arithmetic

    return arithmetic.lens_items(arithmetic.generate(options.n, options.max_operand, options.operators, options.data_seed))


def site_items(options: TaskOptions) -> tuple[list[SiteItem], list[str], dict[str, Any]]:
    """The prompts, target names and data counts of a site-lens task (``code``: A7;
    ``code-roles``: A8; ``cogs``: A10; see :mod:`analyses.code_lens`).

    Returns:
        ``(items, targets, counts)``: the prompts with their sites (prompts without a site
        are left out), the target names in column order, and what the data step kept and
        dropped (for the manifest).

    Raises:
        HubError: a task that is not a site-lens task, missing data, and the data errors of
            the task's module.
    """
    check_task(options.task, "lens")
    if options.task not in SITE_TASKS:
        raise HubError(f"--task {options.task} is not a site-lens task; choose one of {', '.join(SITE_TASKS)}")
    if options.task == "cogs":
        from hubclient.inputs.tasks import cogs

        folder = _need(_cogs_folder(options), "--cogs-dir", f"the COGS folder holding {options.cogs_split}.tsv", "cogs")
        items, roles, counts = cogs.role_items(folder, options.cogs_split, options.n, options.data_seed)
        return items, roles, counts
    from hubclient.inputs.tasks import code

    from hubclient.inputs.data import mbpp_file

    path = mbpp_file(options.mbpp)
    with_tests = options.with_tests if options.task == "code" else False
    programs = code.read_mbpp(_need(str(path) if path else None, "--mbpp", "the MBPP mbpp.jsonl file", "mbpp"), options.n, with_tests)
    if options.task == "code":
        items = code.and_items(programs)
        if not items:
            raise HubError(f"none of the {len(programs)} programs has a list of two or more elements with a comma after an element; use more programs (--n)")
        return items, [name for name, _ in code.AND_TARGETS], {"programs": len(programs), "programs_with_sites": len(items), "sites": sum(len(i.sites) for i in items)}
    items, dropped = code.role_items(programs)
    if not items:
        raise HubError(f"none of the {len(programs)} programs calls a builtin or a function it defines with a usable positional argument; use more programs (--n)")
    return items, ["role", "surface"], {"programs": len(programs), "programs_with_sites": len(items), "sites": sum(len(i.sites) for i in items), "dropped": dropped}


def _cogs_folder(options: TaskOptions) -> str | None:
    from hubclient.inputs.data import cogs_folder

    folder = cogs_folder(options.cogs_dir)
    return str(folder) if folder else None


def _need(value: str | None, option: str, what: str, dataset: str) -> Path:
    if value is None:
        raise HubError(f"this task reads {what}; pass {option} PATH, or run hub data get {dataset}")
    return Path(value)


# --------------------------------------------------------------------------- CLI options
PANEL = "Task (arithmetic, code, formal semantics)"
Task = Annotated[Optional[str], typer.Option("--task", help="Data task instead of text input: arithmetic (generated digits vs English words); cogs (similarity: COGS sentence vs logical form; logit-lens: the paper's role lens before proper names, A10); code (logit-lens: ' and' vs ' or', ' not', the next token at MBPP list commas, A7); code-roles (logit-lens: parameter name vs argument at each call argument, A8).", rich_help_panel=PANEL)]
DataSeed = Annotated[int, typer.Option("--data-seed", help="Seed of the generated arithmetic expressions; --task cogs (logit-lens): of the re-sampled proper names (the paper: 0).", rich_help_panel=PANEL)]
MaxOperand = Annotated[int, typer.Option("--max-operand", min=0, max=999, help="--task arithmetic: operands are drawn from 0..MAX_OPERAND.", rich_help_panel=PANEL)]
Operators = Annotated[str, typer.Option("--operators", help="--task arithmetic: operators to use, any of + - * (× and − are accepted), e.g. '+*'. Subtraction keeps a >= b (answers are never negative).", rich_help_panel=PANEL)]
CogsDir = Annotated[Optional[Path], typer.Option("--cogs-dir", envvar="HUB_COGS_DIR", help="--task cogs: the COGS folder holding SPLIT.tsv (sentence TAB logical form TAB type) [default: the data folder's cogs/ after `hub data get cogs`].", rich_help_panel=PANEL)]
CogsSplit = Annotated[str, typer.Option("--cogs-split", help="--task cogs: which COGS file to read (train, dev, test, gen, …; the paper: train).", rich_help_panel=PANEL)]
Mbpp = Annotated[Optional[Path], typer.Option("--mbpp", envvar="HUB_MBPP", help="--task code: the MBPP mbpp.jsonl file (one JSON object a line with 'code' and 'test_list') [default: the data folder's mbpp/mbpp.jsonl after `hub data get mbpp`].", rich_help_panel=PANEL)]
WithTests = Annotated[bool, typer.Option("--with-tests/--no-tests", help="--task code: append each program's test asserts (as the paper's A7; most list literals of MBPP are in its tests). --task code-roles never appends them (A8).", rich_help_panel=PANEL)]
CogsBaseline = Annotated[Optional[str], typer.Option("--cogs-baseline", help="--task cogs (similarity): swap or swap-shuffle: keep items with exactly two proper names and add a third aligned input, the logical form with the two names swapped (swap-shuffle: its conjuncts also shuffled, seed 42), the paper's Fig. 9b/9c baselines (A9).", rich_help_panel=PANEL)]
