"""Execution: how a trace body reaches a model, here or on NDIF.

An :class:`Executor` runs an analysis' trace body (:meth:`hubclient.analysis.Analysis.trace`,
or ``trace_generate`` for analyses that generate) over batches, and nothing else: it does not
know what the body computes. Two implementations, in the spirit of nnsight's own ``Backend``
objects, are chosen once per run by :func:`executor_for`:

* :class:`~hubclient.exec.local.LocalExecutor`: the model's weights are in this process;
* :class:`~hubclient.exec.remote.executor.RemoteExecutor`: the model is built without weights
  and every batch is one NDIF request (blocking, or submitted and collected later with
  ``--detach``).

Both open the trace in the same function, :func:`hubclient.exec.trace.trace_batch`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from hubclient.errors import HubError

if TYPE_CHECKING:
    from hubclient.analysis import Analysis, Batch
    from hubclient.models.loading import HubModel
    from hubclient.run.folder import RunDir
    from hubclient.run.lifecycle import RunConfig


class Executor(Protocol):
    """What the runner needs from an execution strategy.

    Attributes:
        remote: ``True`` when trace bodies run on a server (the model here has no weights).
    """

    remote: bool

    def load_model(self, config: "RunConfig") -> "HubModel":
        """The model named by ``config.model``: with weights (local) or without (remote).

        Raises:
            HubError: a model that cannot be resolved or loaded.
        """
        ...

    def describe(self, model: "HubModel") -> dict[str, Any] | None:
        """The manifest block of this execution (``remote``: host, model key, mode), or ``None``."""
        ...

    def check(self, model: "HubModel", analysis: "Analysis") -> None:
        """Raise before the run folder is made when the batches cannot run (remote: the host is
        not reachable, is not an NDIF server, or does not serve the model).

        Raises:
            HubError: what is wrong and how to fix it.
        """
        ...

    def call(self, model: "HubModel", analysis: "Analysis", batch: "Batch") -> dict[str, Any]:
        """Run one batch now and return what the body saved (CPU tensors). Used for the short
        traces an analysis needs before its batches (e.g. steering vectors in ``setup``).

        Raises:
            HubError: the request failed (remote).
        """
        ...

    def run(self, model: "HubModel", analysis: "Analysis", run: "RunDir", todo: list["Batch"], total: int, done: int) -> bool:
        """Run the ``todo`` batches and write each one's rows as Parquet parts in ``run``.

        Returns:
            ``True`` when every batch's rows are on disk; ``False`` when jobs were left on the
            server to collect later (``--detach``).

        Raises:
            HubError: a batch failed; finished batches stay on disk.
        """
        ...


def executor_for(config: "RunConfig") -> Executor:
    """The executor ``config`` asks for: remote with ``--remote``, else local.

    Raises:
        HubError: ``--detach`` or ``--no-preflight`` without ``--remote``.
    """
    if config.detach and not config.remote:
        raise HubError("--detach needs --remote (it leaves jobs on NDIF); add --remote")
    if not getattr(config, "preflight", True) and not config.remote:
        raise HubError("--no-preflight skips the check of NDIF's /status before a --remote run; a local run has none: drop --no-preflight or add --remote")
    if config.remote:
        from hubclient.exec.remote.executor import RemoteExecutor

        return RemoteExecutor(config)
    from hubclient.exec.local import LocalExecutor

    return LocalExecutor(config)


__all__ = ["Executor", "executor_for"]
