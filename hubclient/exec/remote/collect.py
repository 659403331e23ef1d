"""``hub jobs collect``: download the finished jobs of a detached run and finish it."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from hubclient.errors import HubError
from hubclient.exec.remote.backend import make_backend
from hubclient.exec.remote.config import configure, model_key, redact
from hubclient.exec.remote.jobs import JobBook, _fail, _now, _open_remote_run, summarize
from hubclient.exec.trace import restore_dtypes


def collect(run_dir: Path, host: str | None = None, progress: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    """Download the finished jobs of a detached run; finish the run once all are in.

    Idempotent: a batch whose rows are on disk is never fetched again, so re-running adds no
    duplicate rows. Jobs still queued or running are left for a later call.

    Returns:
        ``(run, pending)``: the run folder and the records still not collected (empty when
        the run is complete).

    Raises:
        HubError: the folder is not a remote run, or its prompts no longer tokenise the same.
    """
    import polars as pl

    from hubclient.exec.batching import batches_for, tokenize
    from hubclient.models.remote import load_remote_model
    from hubclient.run.lifecycle import finish_run

    run, remote = _open_remote_run(run_dir)
    manifest = run.manifest
    if manifest.get("status") == "complete":
        return run, []
    host = configure(host or remote["host"])
    book = JobBook.of(run)
    analysis = book.load_analysis()
    model = load_remote_model(remote["model"])
    key = model_key(model)
    prompts_table = pl.read_parquet(run.path / "prompts.parquet").sort("prompt")
    texts = prompts_table["text"].to_list()
    tokens = tokenize(model, texts, limit=analysis.prompt_limit(model))
    if [len(t) for t in tokens] != prompts_table["n_tokens"].to_list():
        raise HubError(f"the prompts of {run.path} no longer tokenise as when they were sent; was the tokenizer changed?")
    batches = batches_for(analysis, model, tokens, manifest["batch_size"])
    done = run.done_batches(list(analysis.tables))
    pending = []
    for batch in batches:
        if batch.index in done:
            continue
        record = book.get(batch.index)
        if record is None or not record.get("job_id") or record.get("state") not in ("submitted", "collected", "timeout"):
            pending.append(record or {"batch": batch.index, "state": "not submitted"})
            continue
        backend = make_backend(key, blocking=False, job_id=record["job_id"])
        started = time.time()
        try:
            result = backend.poll()
        except Exception as exc:  # ERROR, vanished result…: record it, keep going
            _fail(book, record, batch, exc)
            pending.append({**record, "state": "error", "error": redact(str(exc))[:300]})
            continue
        if result is None:
            pending.append({**record, "state": str(backend.status.value if backend.status else "UNKNOWN")})
            continue
        run.write_parts(batch.index, analysis.rows(model, batch, restore_dtypes(result["saved"])))
        book.put({**record, "state": "collected", "bytes_received": backend.bytes_received, "seconds_collect": round(time.time() - started, 3), "updated": _now()})
    run.update_manifest(remote={**remote, **summarize(run)})
    if pending:
        run.update_manifest(status="submitted")
        return run, pending
    started_at = datetime.fromisoformat(manifest["started"]).timestamp() if manifest.get("started") else time.time()
    return finish_run(analysis, run, started_at, plots=manifest.get("plots_requested", True)), []
