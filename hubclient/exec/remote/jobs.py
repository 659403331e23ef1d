"""Job records of remote runs (``RUN_DIR/jobs/batch-NNNNNN.json``, one per chunk) and the
server's view of them (``hub jobs status``)."""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hubclient.errors import HubError
from hubclient.exec.remote.backend import JobTimeout, ResultVanished
from hubclient.exec.remote.config import JOBS, ANALYSIS_PICKLE, KEY_HELP, _headers, configure, redact


@dataclass
class JobBook:
    """The job records of a run: ``RUN_DIR/jobs/batch-NNNNNN.json`` (one per chunk)."""

    path: Path

    @classmethod
    def of(cls, run: Any) -> "JobBook":
        return cls(Path(run.path) / JOBS)

    def file(self, batch: int) -> Path:
        return self.path / f"batch-{batch:06d}.json"

    def get(self, batch: int) -> dict[str, Any] | None:
        f = self.file(batch)
        return json.loads(f.read_text()) if f.is_file() else None

    def put(self, record: dict[str, Any]) -> None:
        from hubclient.run.folder import write_json

        write_json(self.file(record["batch"]), record)

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.path.glob("batch-*.json"))] if self.path.is_dir() else []

    def save_analysis(self, analysis: Any) -> None:
        from hubclient.run.folder import atomic_write

        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / ANALYSIS_PICKLE, lambda tmp: tmp.write_bytes(pickle.dumps(analysis)))

    def load_analysis(self) -> Any:
        f = self.path / ANALYSIS_PICKLE
        if not f.is_file():
            raise HubError(f"{self.path.parent} has no {JOBS}/{ANALYSIS_PICKLE}: it was not a remote run")
        return pickle.loads(f.read_bytes())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _where(batch: Any) -> str:
    prompts = ", ".join(str(i) for i in batch.prompt_index[:6]) + (", …" if len(batch.prompt_index) > 6 else "")
    return f"batch {batch.index} (prompts {prompts})"


def summarize(run: Any) -> dict[str, Any]:
    """Per-request byte counts for the manifest, from the job records."""
    records = JobBook.of(run).all()
    requests = [
        {k: r.get(k) for k in ("batch", "job_id", "state", "n_prompts", "bytes_sent", "bytes_received", "seconds", "attempts")}
        for r in records
    ]
    return {
        "requests": requests,
        "bytes_sent": sum(r.get("bytes_sent") or 0 for r in records),
        "bytes_received": sum(r.get("bytes_received") or 0 for r in records),
    }


def _open_remote_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    from hubclient.run.folder import RunDir

    run = RunDir.open(run_dir)
    remote = run.manifest.get("remote")
    if not remote:
        raise HubError(f"{run_dir} is not a remote run (its manifest has no 'remote' block)")
    return run, remote


def poll_state(host: str, job_id: str) -> tuple[str, str]:
    """(state, description) of a job from ``GET /response/{id}`` (``UNKNOWN`` on 404)."""
    import httpx

    response = httpx.get(f"{host}/response/{job_id}", headers=_headers(), timeout=httpx.Timeout(10.0, read=30.0))
    if response.status_code == 404:
        return "UNKNOWN", "the server has no such job (expired?)"
    if response.status_code in (401, 403):
        raise HubError(f"NDIF at {host} refused the API key ({response.status_code}): {KEY_HELP}")
    response.raise_for_status()
    body = response.json()
    return str(body.get("status")), str(body.get("description") or "")


def jobs_status(run_dir: Path, host: str | None = None) -> list[dict[str, Any]]:
    """Each chunk's state: ``collected`` (rows on disk) or the server's job state.

    Returns:
        one dict per job record: ``batch``, ``job_id``, ``state``, ``description``.
    """
    import httpx

    run, remote = _open_remote_run(run_dir)
    host = configure(host) if host else remote["host"]
    rows = []
    for record in JobBook.of(run).all():
        state, description = record.get("state", "?"), record.get("error", "")
        if state == "submitted" and record.get("job_id"):
            try:
                state, description = poll_state(host, record["job_id"])
            except httpx.HTTPError as exc:
                state, description = "UNREACHABLE", f"{type(exc).__name__}: {exc}"
        rows.append({"batch": record["batch"], "n_prompts": record.get("n_prompts"), "job_id": record.get("job_id"), "state": state, "description": redact(description)})
    return rows


def _record(batch: Any, backend: Any, host: str, state: str, started: float, blocking: bool | None = None) -> dict[str, Any]:
    """A job record: the chunk, its job id and state, bytes, timing; ``blocking`` tells a
    resumed run whether the server may have kept the job (NDIF keeps non-blocking jobs only);
    ``completed_at`` is set once the rows are on disk (NDIF deletes unfetched results after
    about a day)."""
    return {
        "blocking": blocking if blocking is not None else bool(getattr(backend, "blocking", True)),
        "completed_at": _now() if state == "collected" else None,
        "batch": batch.index,
        "prompts": list(batch.prompt_index),
        "n_prompts": len(batch.prompt_index),
        "job_id": backend.job_id,
        "state": state,
        "host": host,
        "bytes_sent": backend.bytes_sent or None,
        "bytes_received": backend.bytes_received or None,
        "seconds": round(time.time() - started, 3),
        "attempts": backend.attempts,
        "updated": _now(),
    }


def _fail(book: JobBook, record: dict[str, Any], batch: Any, exc: BaseException) -> None:
    state = "lost" if isinstance(exc, ResultVanished) else "timeout" if isinstance(exc, JobTimeout) else "error"
    book.put({**record, "state": state, "error": redact(str(exc))[:500], "updated": _now()})
