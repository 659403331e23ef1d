"""hub's client library: model loading, tracing runner, storage, plotting and the CLI.

The package is layered; each layer imports only from the layers below it (checked by
``tests/test_layers.py``; ``docs/developing.md`` explains them):

==========================  =====================================================================
``errors``, ``fs``          errors with a fix in the message; atomic file writes
``models``                  architecture table, loading ``--model``, models without weights
``inputs``                  prompts, parallel corpora, media pairs, task data (no torch)
``science``                 lens, probes, statistics, neuron scores (tensor/array maths only)
``run``, ``plots``,         run folders and their lifecycle; altair charts; what an analysis is
``analysis``
``exec``                    batching, the one trace opening, edits, local and remote executors
``runner``                  the one run loop every command goes through
``cli``                     the Typer app and shared options
==========================  =====================================================================

Analyses (``analyses/``) build on it; see :mod:`hubclient.analysis` for what an analysis is.
Module paths of earlier versions (``hubclient.runner``'s neighbours such as ``hubclient.arch``,
``hubclient.remote``, ``hubclient.store``…) keep working as aliases of their new homes, so
pickled analyses of detached runs and user code still import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from hubclient.errors import HubError

__all__ = ["HubError"]
__version__ = "0.1.0"

#: Old module path -> new module path (the flat layout before the layered sub-packages).
LEGACY_MODULES = {
    "hubclient.arch": "hubclient.models.arch",
    "hubclient.parallel": "hubclient.inputs.parallel",
    "hubclient.media": "hubclient.inputs.media",
    "hubclient.dictionary": "hubclient.inputs.dictionary",
    "hubclient.sentiment": "hubclient.inputs.sentiment",
    "hubclient.tasks": "hubclient.inputs.tasks",
    "hubclient.lens": "hubclient.science.lens",
    "hubclient.probes": "hubclient.science.probes",
    "hubclient.stats": "hubclient.science.stats",
    "hubclient.neurons": "hubclient.science.neurons",
    "hubclient.token_languages": "hubclient.science.token_languages",
    "hubclient.store": "hubclient.run.folder",
    "hubclient.multimodal": "hubclient.exec.multimodal",
    "hubclient.edits": "hubclient.exec.edits",
    "hubclient.remote": "hubclient.exec.remote",
    "hubclient.options": "hubclient.cli.options",
}


def _legacy_target(name: str) -> str | None:
    for old, new in LEGACY_MODULES.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _LegacyAliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module at its new path (the same module object)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if _legacy_target(name) is None:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(_legacy_target(spec.name))

    def exec_module(self, module: Any) -> None:
        return None


if not any(isinstance(finder, _LegacyAliases) for finder in sys.meta_path):
    sys.meta_path.insert(0, _LegacyAliases())
