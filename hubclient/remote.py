"""Running any analysis on NDIF (``--remote``) through nnsight's own remote backend.

What happens on ``hub analyze <name> --remote``:

1. **Configuration** follows nnsight: the host is ``nnsight.CONFIG.API.HOST`` (``NDIF_HOST`` or
   nnsight's ``config.yaml``; ``--ndif-host`` overrides it for this process), the API key is
   ``nnsight.CONFIG.API.APIKEY`` (``NDIF_API_KEY``, ``nnsight login`` or the config file). The
   key is only ever sent to the host; it is never written to results, manifests, logs or error
   messages (:func:`redact`).
2. **The model is built without weights** (meta device) from its config and tokenizer
   (:func:`load_remote_model`); it is addressed on the server by nnsight's model key.
3. **Project code is shipped with the request**: the ``hubclient`` package and the analysis'
   own package are registered with ``nnsight.register`` (serialised by value), so the server
   needs nothing but nnsight, torch and transformers.
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

from __future__ import annotations

import json
import pickle
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from hubclient.errors import HubError
from hubclient.models import HubModel

#: Retries of a request after a 5xx answer or a dropped/refused connection.
DEFAULT_RETRIES = 3
#: First backoff (seconds); doubled after each retry.
BACKOFF = 1.0
#: Seconds between polls of ``/response/{id}``.
POLL_INTERVAL = 0.5
#: Default limit (seconds) on one job, from submission to result.
DEFAULT_TIMEOUT = 3600.0
#: Folder of job records inside a run folder.
JOBS = "jobs"
ANALYSIS_PICKLE = "analysis.pkl"
KEY_HELP = "set NDIF_API_KEY (or run `nnsight login`); keys are issued at https://login.ndif.us"


# --------------------------------------------------------------------------- configuration


def configure(host: str | None = None) -> str:
    """Point nnsight at ``host`` for this process (when given) and return the host in use.

    Raises:
        HubError: a host that is not an ``http://`` or ``https://`` URL.
    """
    import nnsight

    if host:
        if not host.startswith(("http://", "https://")):
            raise HubError(f"--ndif-host {host!r} is not a URL; give e.g. https://api.ndif.us or http://127.0.0.1:8289")
        nnsight.CONFIG.API.HOST = host.rstrip("/")
    return nnsight.CONFIG.API.HOST


def api_key() -> str | None:
    """The NDIF API key nnsight will send (``NDIF_API_KEY`` or nnsight's config file), if any."""
    import nnsight

    return nnsight.CONFIG.API.APIKEY or None


def redact(text: str) -> str:
    """``text`` with the API key (if any occurs in it) replaced by ``***``."""
    key = api_key()
    return text.replace(key, "***") if key else text


def _headers() -> dict[str, str]:
    key = api_key()
    return {"ndif-api-key": key} if key else {}


# --------------------------------------------------------------------------- the model


class RemoteHubModel(HubModel):
    """A :class:`HubModel` whose module has no weights (meta device): the model lives on NDIF.

    ``device`` is the device of the module's parameters where they are real (on the server,
    where this object arrives inside a request) and ``"cpu"`` on the client, so trace code
    that writes ``tensor.to(model.device)`` runs unchanged on both sides.
    """

    def _get_device(self) -> str:
        try:
            param = next(self.torch_model.parameters())
        except (StopIteration, AttributeError):
            return self._device
        return self._device if param.device.type == "meta" else str(param.device)

    def _set_device(self, value: str) -> None:
        self._device = value

    device = property(_get_device, _set_device)  # type: ignore[assignment]

    def unembedding_weight(self, dtype: Any) -> Any:
        """``W_U`` in ``dtype``, converted inside the trace on the server (no copy is kept or
        sent: the client has no weights)."""
        return self.lm_head.weight.to(dtype)


def load_remote_model(name: str) -> RemoteHubModel:
    """Build ``--model`` without weights for remote execution.

    The embedded model and local folders read their config and tokenizer from disk (a
    ``.gguf`` file is converted once, like a local run); a Hugging Face repo id reads them from
    the Hub or its cache (no weights are downloaded). The module is built on the meta device.

    Raises:
        HubError: as :func:`hubclient.models.load_model` for names it cannot resolve, or an
            unsupported architecture.
    """
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoConfig, AutoTokenizer

    from hubclient import models as m
    from hubclient.arch import check_modules, spec_for_config

    notes: list[str] = []
    revision = None
    if name in m.EMBEDDED:
        spec = m.EMBEDDED[name]
        folder = m._embedded_folder(spec)
        path, model_id, source = str(folder), spec.repo_id, f"remote:embedded:{spec.distribution}"
        revision = "gguf-sha256:" + json.loads((folder / m.CHECKSUMS).read_text())["gguf_sha256"]
        notes.append(spec.note)
    elif m._looks_like_path(name):
        local = Path(name).expanduser()
        if not local.exists():
            raise HubError(f"model path {name!r} does not exist; pass a model folder, a .gguf file or a Hugging Face repo id")
        if local.is_file():
            if local.suffix != ".gguf":
                raise HubError(f"model file {name!r} is not a .gguf file; pass a model folder or a .gguf file")
            sha = m.sha256_file(local)
            path, revision = str(m.convert_gguf(local, sha)), f"gguf-sha256:{sha}"
        elif not (local / "config.json").is_file():
            raise HubError(f"model folder {name!r} has no config.json; is it a transformers model folder?")
        else:
            path = str(local)
        model_id, source = str(local), f"remote:directory:{local}"
    else:
        path, model_id, source = name, name, "remote:hub"
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise HubError(
            f"could not read the config and tokenizer of {name!r} ({str(exc).splitlines()[0]}); remote runs need "
            "them locally (from the Hugging Face Hub or its cache, or a local folder), not the weights"
        ) from exc
    arch = spec_for_config(config)
    processor = None
    if arch.modality is not None:  # image/audio models: media is preprocessed here, by the processor
        processor = m.load_processor(path, name)
        tokenizer = processor.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # nnsight's own meta build (config only, no weights); the key names the model by its id.
    lm = TransformersModel(path, tokenizer=tokenizer, processor=processor, task=arch.task or "text-generation")
    lm.repo_id = model_id
    check_modules(arch, lm._module)
    return RemoteHubModel(
        lm=lm, arch=arch, tokenizer=tokenizer, model_id=model_id, revision=revision, source=source,
        device="cpu", dtype="set by the server", notes=notes, processor=processor,
    )


def model_key(model: HubModel) -> str:
    """nnsight's key of ``model`` on the server (``TransformersModel:{"repo_id": …}``).

    nnsight canonicalises a repo id through the Hugging Face Hub; ids that are not Hub ids
    (local folders, the embedded model's id when the Hub is unreachable) are taken as written.
    """
    from nnsight.modeling import huggingface

    repo_id = model.lm.repo_id
    if repo_id not in huggingface._ID_CACHE:
        try:
            return model.lm.to_model_key()
        except Exception:  # offline, or not a Hub id: use the id as written
            huggingface._ID_CACHE[repo_id] = repo_id
    return model.lm.to_model_key()


def register_code(analysis: Any) -> list[str]:
    """Ship ``hubclient`` and the analysis' package with every request (``nnsight.register``).

    Returns:
        the registered top-level package names.
    """
    import nnsight

    names = ["hubclient"]
    top = type(analysis).__module__.split(".")[0]
    if top not in names and top != "__main__":
        names.append(top)
    for name in names:
        nnsight.register(sys.modules[name])
    return names


# --------------------------------------------------------------------------- errors


class JobTimeout(Exception):
    """A job gave no result within the time limit."""


class ResultVanished(Exception):
    """The result URL of a finished job answered 404/410."""


def _status_code(exc: BaseException) -> int | None:
    """HTTP status behind an nnsight/httpx/websocket error, if there is one."""
    for err in (exc, exc.__cause__):
        if err is None:
            continue
        code = getattr(err, "status_code", None)
        if isinstance(code, int):
            return code
        response = getattr(err, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _transient(exc: BaseException) -> bool:
    """True for failures worth retrying: 5xx answers and refused/dropped connections."""
    import httpx
    import websocket

    code = _status_code(exc)
    if code is not None:
        return code >= 500
    for err in (exc, exc.__cause__):
        if isinstance(err, (httpx.TransportError, websocket.WebSocketConnectionClosedException, ConnectionError, TimeoutError)):
            return True
    return False


def explain(exc: BaseException, where: str, host: str, job_id: str | None = None, run: Any = None) -> HubError:
    """Turn a failure of one request into a one-line :class:`HubError` (key redacted).

    Args:
        exc: what nnsight, httpx or websocket-client raised.
        where: which chunk, e.g. ``batch 3 (prompts 7, 12)``.
        host: the NDIF host.
        job_id: the job id, when the server had accepted the job.
        run: the run folder, for the "continue with" hint.
    """
    from nnsight.intervention.backends.remote import RemoteError

    code = _status_code(exc)
    text = str(exc).removeprefix("Failed to send request: ")
    cont = f"; finished chunks are kept: continue with --resume {run.path}" if run is not None else ""
    job = f" (job {job_id})" if job_id else ""
    if code in (401, 403):
        message = f"NDIF at {host} refused the API key ({code}): {KEY_HELP}"
    elif code == 404 and "not served" in text:
        message = f"{text}; see `hub remote status`"
    elif code == 409 or "version" in text.lower() and code is not None and 400 <= code < 500:
        message = f"{where}: {text}; compare versions with `hub remote env`"
    elif code == 413:
        message = f"{where}: {text}; use a smaller --batch-size"
    elif isinstance(exc, JobTimeout):
        message = f"{where}{job}: no result after {exc}; the job may still finish: continue with --resume (or `hub jobs collect`) later"
    elif isinstance(exc, ResultVanished):
        message = f"{where}{job}: the server no longer has the result ({exc}); rerun with --resume to send this chunk again"
    elif isinstance(exc, RemoteError) and job_id:
        message = f"{where}{job} failed on the server: {text}"
    elif code is not None and code >= 500:
        message = f"{where}: NDIF at {host} answered {code} ({text}) after {DEFAULT_RETRIES} retries; try again later"
    elif _transient(exc):
        message = f"{where}: could not reach NDIF at {host} ({type(exc).__name__}: {text}); check --ndif-host / NDIF_HOST and `hub remote status`"
    else:
        message = f"{where}{job}: {type(exc).__name__}: {text}"
    return HubError(redact(message + cont))


# --------------------------------------------------------------------------- the backend


class _StatusFeed:
    """Stands in for nnsight's ``StatusDisplay``: forwards job states, enforces the deadline."""

    def __init__(self, on_status: Callable[[str, str], None] | None, timeout: float):
        self.enabled = True  # keeps nnsight's websocket loop waking up (refresh) every 0.1 s
        self.on_status = on_status
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def update(self, response: Any) -> None:
        if self.on_status is not None:
            self.on_status(response.status.value, response.description)

    def refresh(self) -> None:
        if time.monotonic() > self.deadline:
            raise JobTimeout(f"{self.timeout:g} s")


class HubBackend:
    """Placeholder replaced below once nnsight is importable (keeps module import light)."""


def _backend_class() -> type:
    from nnsight.intervention.backends.remote import RemoteBackend, RemoteError

    class _HubBackend(RemoteBackend):
        """nnsight's ``RemoteBackend`` plus byte counts, job states, retries and timeouts.

        The request, websocket protocol, result download and decoding are nnsight's own; this
        class only wraps them (see the module docstring, step 4).
        """

        def __init__(self, key: str, *, blocking: bool = True, job_id: str | None = None, env: dict | None = None,
                     on_status: Callable[[str, str], None] | None = None, timeout: float = DEFAULT_TIMEOUT,
                     retries: int = DEFAULT_RETRIES):
            super().__init__(key, env=env, blocking=blocking, job_id=job_id)
            self.display = _StatusFeed(on_status, timeout)
            self.retries = retries
            self.bytes_sent = 0
            self.bytes_received = 0
            self.attempts = 0

        # -- instrumentation
        def _serialize(self, tracer: Any) -> bytes:
            blob = super()._serialize(tracer)
            self.bytes_sent = len(blob)
            return blob

        def _post(self, request: Any, blob: bytes) -> Any:
            response = super()._post(request, blob)
            self.job_id = response.id
            return response

        def finalize(self, content: bytes) -> Any:
            self.bytes_received = len(content)
            return super().finalize(content)

        def download_result(self, url: Any) -> Any:
            import httpx

            self.display.enabled = False  # no tqdm bar under the progress display
            try:
                return super().download_result(url)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code in (404, 410):
                    raise ResultVanished(f"{exc.response.status_code} from its result URL") from None
                raise
            finally:
                self.display.enabled = True

        # -- faults
        def __call__(self, tracer: Any = None) -> Any:
            import pydantic
            import websocket

            delay = BACKOFF
            for attempt in range(self.retries + 1):
                self.attempts = attempt + 1
                if self.blocking:
                    self.job_id = None
                try:
                    return super().__call__(tracer)
                except (JobTimeout, ResultVanished):
                    raise
                except RemoteError as exc:
                    if self.job_id is not None or not _transient(exc) or attempt == self.retries:
                        raise
                except (websocket.WebSocketException, OSError, pydantic.ValidationError) as exc:
                    if _status_code(exc) in (401, 403):
                        raise
                    if self.blocking and self.job_id is not None:
                        # The job is on the server and only the stream broke: follow it there.
                        result = self.follow()
                        self._push(result, tracer)
                        return result
                    if attempt == self.retries or not (_transient(exc) or isinstance(exc, (pydantic.ValidationError, OSError))):
                        raise
                time.sleep(delay)
                delay *= 2
            raise AssertionError("unreachable")

        def follow(self) -> Any:
            """Poll ``/response/{job_id}`` until the job's result arrives (or the deadline)."""
            import httpx

            failures = 0
            while True:
                try:
                    result = self.poll()
                    failures = 0
                except httpx.TransportError:
                    failures += 1
                    if failures > self.retries:
                        raise
                    result = None
                except httpx.HTTPStatusError as exc:
                    failures += 1
                    if exc.response.status_code < 500 or failures > self.retries:
                        raise
                    result = None
                if result is not None:
                    return result
                self.display.refresh()
                time.sleep(POLL_INTERVAL)

    return _HubBackend


def make_backend(key: str, **kwargs: Any) -> Any:
    """A :class:`HubBackend` (nnsight ``RemoteBackend`` subclass) for model key ``key``."""
    return _backend_class()(key, **kwargs)


def remote_trace(model: HubModel, analysis: Any, batch: Any, backend: Any) -> dict[str, Any] | None:
    """The runner's trace body (:func:`hubclient.runner.trace_batch`), sent with ``backend``.

    Returns:
        the saved dict of ``analysis.trace`` (blocking), or ``None`` (non-blocking: the job
        was submitted and ``backend.job_id`` is set).
    """
    from hubclient.runner import trace_batch

    return trace_batch(model, analysis, batch, backend=backend)


# --------------------------------------------------------------------------- preflight


def preflight(key: str, host: str) -> None:
    """Check before sending anything that ``host`` is reachable and serves the model.

    Uses ``GET /status`` (the deployments) and ``GET /env`` (nnsight version: a mismatch is
    warned about; the server refuses the request if it must).

    Raises:
        HubError: host unreachable, or the model is not among the running deployments (the
            message lists those that are).
    """
    import httpx

    try:
        response = httpx.get(f"{host}/status", timeout=httpx.Timeout(10.0, read=30.0))
        response.raise_for_status()
        deployments = response.json().get("deployments", {})
    except httpx.HTTPError as exc:
        raise HubError(redact(f"cannot reach NDIF at {host} ({type(exc).__name__}: {exc}); check --ndif-host / NDIF_HOST")) from None
    wanted = json.loads(key.split(":", 1)[1])
    running = []
    for name, value in deployments.items():
        if value.get("application_state", "RUNNING") != "RUNNING":
            continue
        running.append(value.get("repo_id", name))
        if value.get("repo_id", name) == wanted["repo_id"]:
            break
    else:
        served = ", ".join(sorted(running)) or "none"
        raise HubError(f"{wanted['repo_id']} is not served by NDIF at {host} now; models running there: {served}. Pick one with --model, or run locally")
    try:
        env = httpx.get(f"{host}/env", timeout=httpx.Timeout(10.0, read=30.0)).json()
        server_nnsight = env.get("packages", {}).get("nnsight")
    except (httpx.HTTPError, ValueError):
        return
    from importlib import metadata

    local = metadata.version("nnsight")
    if server_nnsight and server_nnsight != local:
        warnings.warn(f"local nnsight {local} differs from the server's {server_nnsight}; if requests fail, install nnsight=={server_nnsight} (see `hub remote env`)", stacklevel=2)


# --------------------------------------------------------------------------- job records


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
        from hubclient.store import write_json

        write_json(self.file(record["batch"]), record)

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.path.glob("batch-*.json"))] if self.path.is_dir() else []

    def save_analysis(self, analysis: Any) -> None:
        from hubclient.store import atomic_write

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


def describe(config: Any, model: HubModel) -> dict[str, Any]:
    """The manifest's ``remote`` block (host, model key, mode; never the API key)."""
    host = configure(config.ndif_host)
    return {
        "host": host,
        "model": config.model,
        "model_key": model_key(model),
        "mode": "detached" if config.detach else "blocking",
        "api_key_set": api_key() is not None,
    }


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


# --------------------------------------------------------------------------- running batches


def run_batches(model: HubModel, analysis: Any, run: Any, todo: list[Any], total: int, done: int, config: Any) -> bool:
    """Send the ``todo`` batches to NDIF: blocking (rows written as each arrives) or detached.

    Args:
        model: a :class:`RemoteHubModel`.
        run: the run folder (:class:`hubclient.store.RunDir`).
        config: the :class:`hubclient.runner.RunConfig` (``detach``, ``timeout``, ``retries``…).

    Returns:
        ``True`` when every batch's rows are on disk, ``False`` when jobs were left on the
        server (detached).

    Raises:
        HubError: a chunk failed (finished chunks stay on disk; see :func:`explain`).
    """
    from hubclient.runner import progress_bar

    host = configure(config.ndif_host)
    key = model_key(model)
    register_code(analysis)
    preflight(key, host)
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
            if record and record.get("state") in ("submitted", "timeout") and record.get("job_id"):
                backend = make_backend(key, blocking=False, job_id=record["job_id"], **common)
                try:
                    result = backend.follow()
                except Exception as exc:
                    _fail(book, record, batch, exc)
                    raise explain(exc, _where(batch), host, record["job_id"], run) from None
                saved = result["saved"]
            else:
                backend = make_backend(key, blocking=not config.detach, **common)
                try:
                    saved = remote_trace(model, analysis, batch, backend)
                except HubError:
                    raise
                except Exception as exc:
                    state = "timeout" if isinstance(exc, JobTimeout) else "lost" if isinstance(exc, ResultVanished) else "error"
                    record = _record(batch, backend, host, state, started)
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


def _record(batch: Any, backend: Any, host: str, state: str, started: float) -> dict[str, Any]:
    return {
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


# --------------------------------------------------------------------------- hub jobs …


def _open_remote_run(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    from hubclient.store import RunDir

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

    from hubclient.runner import finish_run, make_batches, tokenize

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
    tokens = tokenize(model, texts)
    if [len(t) for t in tokens] != prompts_table["n_tokens"].to_list():
        raise HubError(f"the prompts of {run.path} no longer tokenise as when they were sent; was the tokenizer changed?")
    positions = [analysis.token_positions(ids, i) for i, ids in enumerate(tokens)]
    batches = make_batches(tokens, positions, manifest["batch_size"], model.tokenizer.pad_token_id)
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
        run.write_parts(batch.index, analysis.rows(model, batch, result["saved"]))
        book.put({**record, "state": "collected", "bytes_received": backend.bytes_received, "seconds_collect": round(time.time() - started, 3), "updated": _now()})
    run.update_manifest(remote={**remote, **summarize(run)})
    if pending:
        run.update_manifest(status="submitted")
        return run, pending
    started_at = datetime.fromisoformat(manifest["started"]).timestamp() if manifest.get("started") else time.time()
    return finish_run(analysis, run, started_at), []
