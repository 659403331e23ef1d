"""The ``hub`` command line: the Typer app (:mod:`hubclient.cli.commands`) and the options every
command shares (:mod:`hubclient.cli.options`).

``app`` and ``main`` are imported lazily: analyses import :mod:`hubclient.cli.options` while the
app is being built from their entry points.
"""

from __future__ import annotations

from typing import Any


def main() -> None:
    """Console-script entry point (``hub``)."""
    from hubclient.cli.commands import main as run

    run()


def __getattr__(name: str) -> Any:
    if not name.startswith("_"):  # every public name of the command module (app, plot, runs…)
        import importlib

        commands = importlib.import_module("hubclient.cli.commands")
        if hasattr(commands, name):
            return getattr(commands, name)
    raise AttributeError(f"module 'hubclient.cli' has no attribute {name!r}")
