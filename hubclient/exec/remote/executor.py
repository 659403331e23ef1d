"""Remote execution on NDIF: every batch is one request (see :mod:`hubclient.exec.remote`)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from hubclient.errors import HubError
from hubclient.exec.remote import config as settings
from hubclient.exec.remote.backend import JobTimeout, ResultVanished, _status_code, explain, make_backend
from hubclient.exec.remote.config import configure, describe, model_key, redact, register_code
from hubclient.exec.remote.jobs import JobBook, _fail, _now, _record, _where, summarize
from hubclient.exec.remote.preflight import preflight
from hubclient.exec.trace import restore_dtypes, trace_batch
from hubclient.run.progress import progress_bar

if TYPE_CHECKING:
    from hubclient.analysis import Analysis, Batch
    from hubclient.models.loading import HubModel
    from hubclient.run.folder import RunDir
    from hubclient.run.lifecycle import RunConfig


class RemoteExecutor:
    """Runs every batch on NDIF through nnsight's remote backend (see
    :class:`hubclient.exec.Executor`).

    Args:
        config: the run's options (``ndif_host``, ``detach``, ``timeout``, ``retries``,
            ``progress``, ``preflight``).
    """

    remote = True

    def __init__(self, config: "RunConfig"):
        self.config = config
        self._checked: str | None = None

    def load_model(self, config: "RunConfig") -> "HubModel":
        """The model without weights (:func:`hubclient.models.remote.load_remote_model`)."""
        from hubclient.models.remote import load_remote_model

        if config.device_map is not None:
            raise HubError("--device-map applies to local runs; NDIF places its models over its GPUs itself: drop --device-map with --remote")
        return load_remote_model(config.model, revision=config.revision)

    def describe(self, model: "HubModel") -> dict[str, Any] | None:
        """The manifest's ``remote`` block (host, model key, mode; never the API key)."""
        return describe(self.config, model)

    def _prepare(self, model: "HubModel", analysis: "Analysis") -> tuple[str, str]:
        host = configure(self.config.ndif_host)
        key = model_key(model)
        register_code(analysis)
        if self._checked != key:
            preflight(key, host, timeout=min(30.0, self.config.timeout), deployments=getattr(self.config, "preflight", True))
            self._checked = key
        return host, key

    def check(self, model: "HubModel", analysis: "Analysis") -> None:
        """Preflight (:func:`hubclient.exec.remote.preflight.preflight`) before any file is written.

        Raises:
            HubError: host unreachable, not an NDIF server, or the model is not served.
        """
        self._prepare(model, analysis)

    def call(self, model: "HubModel", analysis: "Analysis", batch: "Batch") -> dict[str, Any]:
        """One blocking request for ``batch`` (retries, timeout and errors as for every batch).

        Raises:
            HubError: the request failed (one line, see :func:`explain`).
        """
        if self.config.dry_run:  # a setup request (steering vectors…): sized, not sent; zeros of the right shapes
            import torch

            from hubclient.exec.remote.dryrun import request_bytes, result_shapes

            register_code(analysis)
            size = request_bytes(model, analysis, batch, model_key(model), self.config.transfer_dtype)
            print(f"dry run: {analysis.name} setup request: {size:,} bytes (not sent; its results are zeros here)", file=sys.stdout)
            return {k: torch.zeros(shape, dtype=dtype) for k, (shape, dtype) in result_shapes(model, analysis, batch, "float32").items()}
        host, key = self._prepare(model, analysis)
        backend = make_backend(key, blocking=True, env=model.lm._remoteable_get_env(), timeout=self.config.timeout, retries=self.config.retries)
        backend.transfer_dtype = self.config.transfer_dtype
        try:
            saved = trace_batch(model, analysis, batch, backend=backend)
        except HubError:
            raise
        except Exception as exc:
            raise explain(exc, f"{analysis.name} setup request", host, backend.job_id) from None
        assert saved is not None
        return saved

    def run(self, model: "HubModel", analysis: "Analysis", run: "RunDir", todo: list["Batch"], total: int, done: int) -> bool:
        """Send the ``todo`` batches: blocking (rows written as each arrives) or detached (job
        ids recorded in ``RUN_DIR/jobs``; ``hub jobs collect`` finishes the run).

        A batch whose job was submitted before (a detached run continued with ``--resume``, or a
        blocking one that timed out) is followed, not sent again.

        Raises:
            HubError: a chunk failed (finished chunks stay on disk; see :func:`explain`).
        """
        config = self.config
        host, key = self._prepare(model, analysis)
        book = JobBook.of(run)
        book.save_analysis(analysis)
        env = model.lm._remoteable_get_env()
        verb = "submitting" if config.detach else "running on NDIF"
        submitted = 0
        with progress_bar(f"{analysis.name} ({verb})", total, config.progress, completed=done, state=True) as (bar, task):

            def on_status(state: str, description: str) -> None:
                bar.update(task, state=state.lower())

            for batch in todo:
                record = book.get(batch.index)
                if config.detach and record and record.get("state") in ("submitted",):
                    bar.advance(task)
                    continue
                common = dict(env=env, on_status=on_status, timeout=config.timeout, retries=config.retries)
                started = time.time()
                saved = None
                if record and record.get("state") in ("submitted", "timeout") and record.get("job_id"):
                    backend = make_backend(key, blocking=False, job_id=record["job_id"], **common)
                    try:
                        saved = restore_dtypes(backend.follow()["saved"])
                    except Exception as exc:
                        if not (record.get("blocking") and _status_code(exc) in (404, 500)):
                            _fail(book, record, batch, exc)
                            raise explain(exc, _where(batch), host, record["job_id"], run) from None
                        # NDIF keeps no record of blocking jobs (/response answers 500): the job
                        # is lost with its stream, so the batch is sent again below.
                        book.put({**record, "state": "lost", "error": "blocking job not kept by the server; sent again", "updated": _now()})
                if saved is None:
                    backend = make_backend(key, blocking=not config.detach, **common)
                    backend.transfer_dtype = config.transfer_dtype
                    try:
                        saved = trace_batch(model, analysis, batch, backend=backend)
                    except HubError:
                        raise
                    except KeyboardInterrupt:
                        if backend.job_id:  # keep the job id: --resume follows it instead of sending it again
                            book.put(_record(batch, backend, host, "submitted", started, blocking=not config.detach))
                        raise
                    except Exception as exc:
                        state = "timeout" if isinstance(exc, JobTimeout) else "lost" if isinstance(exc, ResultVanished) else "error"
                        record = _record(batch, backend, host, state, started, blocking=not config.detach)
                        record["error"] = redact(str(exc))[:500]
                        if backend.job_id:
                            book.put(record)
                        raise explain(exc, _where(batch), host, backend.job_id, run) from None
                if config.detach:
                    book.put(_record(batch, backend, host, "submitted", started))
                    submitted += 1
                    bar.update(task, state="submitted")
                else:
                    run.write_parts(batch.index, analysis.rows(model, batch, saved))
                    previous = record or {}
                    rec = _record(batch, backend, host, "collected", started)
                    rec["bytes_sent"] = rec["bytes_sent"] or previous.get("bytes_sent")
                    book.put(rec)
                bar.advance(task)
        run.update_manifest(remote={**run.manifest.get("remote", {}), **summarize(run)})
        if config.detach:
            print(
                f"submitted {submitted} job(s) to {host}; the run is {run.path}\n"
                f"  check:   hub jobs status {run.path}\n  collect: hub jobs collect {run.path}",
                file=sys.stderr,
            )
            return False
        return True


__all__ = ["RemoteExecutor", "settings"]
