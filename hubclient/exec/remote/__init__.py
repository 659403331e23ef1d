"""Running any analysis or intervention on NDIF (``--remote``) through nnsight's own remote backend.

Modules: :mod:`.config` (host, key, model key, defaults), :mod:`.backend` (nnsight backend with
retries, deadline, explanations), :mod:`.preflight`, :mod:`.jobs` (job records, ``hub jobs
status``), :mod:`.executor` (:class:`RemoteExecutor`), :mod:`.collect` (``hub jobs collect``).

What happens on ``hub analyze <name> --remote``:

1. **Configuration** follows nnsight: the host is ``nnsight.CONFIG.API.HOST`` (``NDIF_HOST`` or
   nnsight's ``config.yaml``; ``--ndif-host`` overrides it for this process), the API key is
   ``nnsight.CONFIG.API.APIKEY`` (``NDIF_API_KEY``, ``nnsight login`` or the config file). The
   key is only ever sent to the host; it is never written to results, manifests, logs or error
   messages (:func:`redact`).
2. **The model is built without weights** (meta device) from its config and tokenizer
   (:func:`load_remote_model`); it is addressed on the server by nnsight's model key.
3. **Project code is shipped with the request**: the ``hubclient`` package and the analysis'
   own package are registered with ``nnsight.register`` (functions and classes serialised by
   value), so the server needs nothing but nnsight, torch and transformers; only what NDIF's
   import allow-list admits is shipped (:mod:`.shipping`: modules named by shipped code travel
   as stand-ins, cached functions uncached). ``--dry-run`` sizes a request without sending it
   (:mod:`.dryrun`).
4. **One request per batch** (``--batch-size`` prompts; a "chunk"): each is the runner's trace
   body, sent with :class:`HubBackend`, a thin subclass of nnsight's ``RemoteBackend`` that
   counts bytes, shows job states in the progress bar, retries 5xx answers and dropped
   connections with backoff (a bounded number of times), follows a job whose websocket dropped
   by polling ``/response/{id}``, and enforces ``--timeout``. Only the reduced tensors the
   analysis returns from ``trace`` are saved, so results stay small.
5. **Finished chunks stay on disk**: every batch's rows are written as Parquet parts as soon as
   they arrive, and a job record (job id, state, bytes sent/received, seconds) is written to
   ``RUN_DIR/jobs/batch-NNNNNN.json``; a crash or Ctrl-C keeps both, and ``--resume RUN_DIR``
   (or ``hub jobs collect RUN_DIR``) continues, collecting submitted jobs rather than sending
   them again.
6. **Detached mode** (``--detach``) submits every batch non-blocking, records the job ids and
   exits; ``hub jobs status RUN_DIR`` shows each chunk's state and ``hub jobs collect RUN_DIR``
   downloads what is finished (idempotent: a collected batch is never fetched twice) and, once
   all are in, writes the same tables, plots and manifest as a local run.
"""

from typing import Any

from hubclient.exec.remote.backend import HubBackend, JobTimeout, ResultVanished, explain, make_backend
from hubclient.exec.remote.collect import collect
from hubclient.exec.remote.config import (
    ANALYSIS_PICKLE,
    BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    JOBS,
    KEY_HELP,
    POLL_INTERVAL,
    api_key,
    configure,
    describe,
    model_key,
    redact,
    register_code,
)
from hubclient.exec.remote.executor import RemoteExecutor
from hubclient.exec.remote.jobs import JobBook, jobs_status, poll_state, summarize
from hubclient.exec.remote.preflight import preflight
from hubclient.models.remote import RemoteHubModel, load_remote_model



def run_batches(model: Any, analysis: Any, run: Any, todo: list[Any], total: int, done: int, config: Any) -> bool:
    """Send ``todo`` batches to NDIF (the earlier name of :meth:`RemoteExecutor.run`).

    Returns:
        ``True`` when every batch's rows are on disk, ``False`` when jobs were left on the
        server (``config.detach``).

    Raises:
        HubError: a chunk failed (finished chunks stay on disk).
    """
    return RemoteExecutor(config).run(model, analysis, run, todo, total, done)


def remote_trace(model: Any, analysis: Any, batch: Any, backend: Any) -> dict[str, Any] | None:
    """The runner's trace body sent with ``backend`` (:func:`hubclient.exec.trace.trace_batch`);
    ``None`` for a non-blocking backend (the job was submitted)."""
    from hubclient.exec.trace import trace_batch

    return trace_batch(model, analysis, batch, backend=backend)


__all__ = [
    "ANALYSIS_PICKLE", "BACKOFF", "DEFAULT_RETRIES", "DEFAULT_TIMEOUT", "JOBS", "KEY_HELP", "POLL_INTERVAL",
    "HubBackend", "JobBook", "JobTimeout", "RemoteExecutor", "RemoteHubModel", "ResultVanished", "api_key",
    "collect", "configure", "describe", "explain", "jobs_status", "load_remote_model", "make_backend",
    "model_key", "poll_state", "preflight", "redact", "register_code", "remote_trace", "run_batches", "summarize",
]
