"""Local execution: trace bodies run in this process, on the model's own device(s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubclient.exec.trace import trace_batch
from hubclient.run.progress import progress_bar

if TYPE_CHECKING:
    from hubclient.analysis import Analysis, Batch
    from hubclient.models.loading import HubModel
    from hubclient.run.folder import RunDir
    from hubclient.run.lifecycle import RunConfig


class LocalExecutor:
    """Runs every batch here (see :class:`hubclient.exec.Executor`).

    Args:
        config: the run's options (``device``, ``dtype``, ``progress``).
    """

    remote = False

    def __init__(self, config: "RunConfig"):
        self.config = config

    def load_model(self, config: "RunConfig") -> "HubModel":
        """The model with its weights (:func:`hubclient.models.load_model`), at ``config.revision``,
        spread over devices by ``config.device_map`` when given.

        Raises:
            HubError: as :func:`hubclient.models.load_model` (a ``--revision`` with a local path or
                the embedded model is one).
        """
        from hubclient.models.loading import load_model

        return load_model(config.model, device=config.device, dtype=config.dtype, revision=config.revision, device_map=config.device_map)

    def describe(self, model: "HubModel") -> dict[str, Any] | None:
        """Local runs add nothing to the manifest (the model block says where it ran)."""
        return None

    def check(self, model: "HubModel", analysis: "Analysis") -> None:
        """Nothing to check: the model is loaded."""

    def call(self, model: "HubModel", analysis: "Analysis", batch: "Batch") -> dict[str, Any]:
        """One trace of ``batch`` here; returns the saved dict."""
        saved = trace_batch(model, analysis, batch)
        assert saved is not None
        return saved

    def run(self, model: "HubModel", analysis: "Analysis", run: "RunDir", todo: list["Batch"], total: int, done: int) -> bool:
        """Trace each batch and write its rows at once (a progress bar counts batches)."""
        with progress_bar(f"{analysis.name} batches", total, self.config.progress, completed=done) as (bar, task):
            for batch in todo:
                saved = self.call(model, analysis, batch)
                run.write_parts(batch.index, analysis.rows(model, batch, saved))
                bar.advance(task)
        return True
