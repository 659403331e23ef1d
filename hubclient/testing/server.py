"""A small NDIF-compatible server, for tests and for trying ``hub … --remote`` offline.

It speaks the protocol the nnsight 0.8 client expects of NDIF (see
``nnsight/intervention/backends/remote.py``; the project's note ``ndif-protocol.md``):

- ``GET /subscribe`` (websocket, RFC 6455): first text frame ``{"session_id": …}``, then the
  job's status updates as JSON text frames, and ``COMPLETED`` as a binary frame holding
  ``ResponseModel.pickle()`` with the result bytes inline (or JSON with a result URL when the
  result is large, or when a fault asks for it);
- ``POST /request`` (multipart: form field ``data`` = the request JSON, file ``blob`` = the
  serialized trace): answers ``RECEIVED`` and queues the job;
- ``GET /response/{id}``: the job's latest status (non-blocking clients poll it; 404 while
  unknown); ``GET /results/{id}``: the result bytes;
- ``GET /status``: the deployments (the models this server was started with);
- ``GET /env``: the server's Python and package versions.

Jobs run one at a time: the blob is deserialized against the served model
(``RequestModel.deserialize`` with the model's persistent objects), the trace body is executed
under ``torch.inference_mode``, and the values it saved are ``torch.save``-d (zstd-compressed
when the request asks for it).

Two ways to execute (``strict``):

- **strict** (``--strict``, the default of the tests' server): every request runs in a separate
  execution process per model (:mod:`hubclient.testing.strict_worker`, started with
  ``python -I -S``) where ``hubclient``, ``analyses`` and the checkout cannot be imported, under
  an import allow-list modelled on NDIF's (``Module X is not whitelisted``), optionally under
  bf16 autocast (``autocast``) and with the model placed by a ``device_map`` as NDIF's
  deployments are. A request that needs hub code it did not ship fails here as on NDIF.
- **in-process** (``--no-strict``): the model is loaded with hub's own loader in the server
  process and requests run there (hub importable: misses what the strict mode catches).

Security: requests are pickled code that this server executes; the allow-list is a check of
what a request needs, not a sandbox. The server binds to 127.0.0.1 only, checks the API key
when one is set, caps request and result sizes, and must never be exposed beyond the machine.

Faults (for tests; :class:`Faults`, settable at start or with ``POST /_faults`` from loopback):
answer ``POST /request`` with 500s, end jobs in ERROR, drop the websocket mid-job, delay jobs,
make a result URL vanish, pretend to run another nnsight version, list the models as WARM/COLD
in ``/status``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from hubclient.testing.strict_worker import _to_cpu

HOST = "127.0.0.1"
#: Default caps (bytes) on an uploaded request and on a job's result.
MAX_REQUEST_BYTES = 64 << 20
MAX_RESULT_BYTES = 256 << 20
#: Results up to this size go back inline on the websocket; larger ones by URL.
INLINE_RESULT_BYTES = 4 << 20


@dataclass
class Faults:
    """Faults the server injects, counted down as they fire.

    Attributes:
        http_500: answer the next N ``POST /request`` with HTTP 500.
        error: end the next N jobs in ``ERROR`` (with the message ``injected failure``).
        drop: close the websocket of the next N blocking jobs right after ``RUNNING`` (the job
            still finishes; its result stays available at ``/response/{id}``).
        vanish: delete the result of the next N jobs before the client can download it (the
            result is sent as a URL that then answers 404).
        delay: seconds every job stays ``RUNNING`` before it executes.
        result_url: send every result as a URL instead of inline bytes.
        nnsight_version: pretend to run this nnsight version: ``/env`` reports it and requests
            from a client with another version are refused (409).
        after: jobs that pass untouched before ``error``, ``drop`` and ``vanish`` start firing
            (to fail a chunk in the middle of a run).
        ndif_jobs: NDIF's job persistence: ``/response/{id}`` of a blocking job (one with a
            websocket session) or of an unknown id answers 500, as the real service does (it
            keeps statuses and results of non-blocking jobs only).
        python_version: pretend to run this Python (``"3.12"``): ``/env`` reports it and a
            request from a client with another major.minor is refused with 400, as NDIF does.
        result_ttl: seconds a result URL stays valid after the job completes; later downloads
            answer 403, as NDIF's presigned object-store URLs do after 2 hours.
        deployment_level: list the served models in ``/status`` at this level (``"WARM"``,
            ``"COLD"``; without ``application_state`` unless ``"HOT"``), as NDIF lists models that
            are not loaded on GPUs. Only ``/status`` changes: requests still run (as when
            ``/status`` disagrees with what the host serves); the real NDIF fails a request for
            a model that really is not HOT.
    """

    http_500: int = 0
    error: int = 0
    drop: int = 0
    vanish: int = 0
    delay: float = 0.0
    result_url: bool = False
    nnsight_version: str | None = None
    after: int = 0
    ndif_jobs: bool = False
    python_version: str | None = None
    result_ttl: float | None = None
    deployment_level: str | None = None

    def take(self, name: str) -> bool:
        """Use one count of fault ``name``; True when it fires."""
        if self.after > 0 and name in ("error", "drop", "vanish"):
            return False
        left = getattr(self, name)
        if left > 0:
            setattr(self, name, left - 1)
            return True
        return False


@dataclass
class Served:
    """One served model: its name, its key, and where its requests run: the loaded
    :class:`~hubclient.models.HubModel` and its persistent objects (in-process), or a
    :class:`StrictWorker` (strict mode; ``hub`` and ``persistent`` are then ``None``)."""

    name: str
    hub: Any
    model_key: str
    persistent: dict[str, Any] | None
    worker: "StrictWorker | None" = None

    @property
    def repo_id(self) -> str:
        return json.loads(self.model_key.split(":", 1)[1])["repo_id"]


@dataclass
class Job:
    """A queued or finished job: its request, session, latest status and result bytes."""

    id: str
    served: Served
    blob: bytes
    compress: bool
    env: dict[str, Any]
    session_id: str
    latest: Any = None
    result: bytes | None = None
    drop: bool = False
    history: list[str] = field(default_factory=list)
    completed_at: float | None = None


def served_model_key(lm: Any) -> str:
    """nnsight's model key of a wrapped model, without asking the Hugging Face Hub.

    nnsight canonicalises the repo id through the Hub; the ids served here (local folders,
    embedded models) are taken as they are, by pre-seeding nnsight's id cache.
    """
    from nnsight.modeling import huggingface

    huggingface._ID_CACHE.setdefault(lm.repo_id, lm.repo_id)
    return lm.to_model_key()


def load_served(name: str, device: str = "cpu", dtype: str = "float32") -> Served:
    """Load ``name`` (anything ``--model`` accepts) the way the server runs it."""
    from hubclient.models.loading import load_model

    hub = load_model(name, device=device, dtype=dtype)
    hub.torch_model.requires_grad_(False)
    return Served(name=name, hub=hub, model_key=served_model_key(hub.lm), persistent=hub.lm._remoteable_persistent_objects())


class WorkerError(Exception):
    """A request failed in the strict execution process; the message is the job's error."""


class StrictWorker:
    """The execution process of one model in strict mode (:mod:`hubclient.testing.strict_worker`).

    The process is started with ``python -I -S`` and the site-packages folders only, so neither
    ``hubclient`` nor ``analyses`` nor the checkout is importable there (checked at start: the
    process reports ``importable`` and a worker where either is importable is refused). It loads
    the model itself with transformers (``device_map`` when given) and answers one request at
    a time.

    Args:
        name: anything ``--model`` accepts; its config and tokenizer are resolved here with
            :func:`hubclient.models.remote.load_remote_model`, which also gives the model key the
            client computes.
        device: where the weights go without a ``device_map`` (``cpu``, ``cuda``…).
        dtype: the weights' dtype name.
        device_map: a transformers ``device_map`` (``"auto"``, ``"balanced"`` or a dict of module
            name -> device), as NDIF loads deployments with ``device_map="auto"``.
        autocast: run requests under ``torch.autocast(dtype=bfloat16)``, as NDIF does.
        timeout: seconds to wait for the process to load the model.

    Raises:
        RuntimeError: the process could not load the model, or hub is importable in it.
    """

    SCRIPT = str(Path(__file__).with_name("strict_worker.py"))

    def __init__(self, name: str, device: str = "cpu", dtype: str = "float32", device_map: Any = None,
                 autocast: bool = False, timeout: float = 600):
        import site
        import subprocess
        import tempfile

        from hubclient.models.remote import load_remote_model, resolve_source

        meta = load_remote_model(name)
        self.model_key = served_model_key(meta.lm)
        path, model_id, *_ = resolve_source(name)
        checkout = str(Path(__file__).resolve().parents[2])
        folders = [p for p in [*site.getsitepackages(), *sys.path] if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
        config = {
            "path": path, "model_id": model_id, "auto_class": meta.arch.auto_class, "task": meta.arch.task,
            "processor": meta.processor is not None, "dtype": dtype, "device": device, "device_map": device_map,
            "autocast": autocast, "checkout": checkout, "site_packages": list(dict.fromkeys(folders)),
        }
        self.log = tempfile.TemporaryFile()
        self._cwd = tempfile.TemporaryDirectory(prefix="hub-strict-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", self.SCRIPT, json.dumps(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, cwd=self._cwd.name, env=env,
        )
        self.lock = threading.Lock()
        self.info = self._read(timeout)
        if not self.info.get("ready"):
            self.stop()
            raise RuntimeError(f"the strict execution process could not load {name}: {self.info.get('error')}\n{self.tail()}")
        if any(self.info["importable"].values()):
            self.stop()
            raise RuntimeError(f"the strict execution process can import {self.info['importable']}; it must not")

    def _read(self, timeout: float | None = None) -> dict[str, Any]:
        import pickle
        import struct

        head = self.proc.stdout.read(4)
        if len(head) < 4:
            raise WorkerError(f"the strict execution process ended (exit status {self.proc.poll()}): {self.tail()}")
        (size,) = struct.unpack(">I", head)
        return pickle.loads(self.proc.stdout.read(size))

    def tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters the process wrote to stderr."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def run(self, blob: bytes, compress: bool, env: dict[str, Any]) -> bytes:
        """Execute one request there; return its result bytes.

        Raises:
            WorkerError: the request failed there (the message is the job's error).
        """
        import pickle
        import struct

        with self.lock:
            body = pickle.dumps({"blob": blob, "compress": compress, "env": env}, protocol=4)
            self.proc.stdin.write(struct.pack(">I", len(body)) + body)
            self.proc.stdin.flush()
            answer = self._read()
        if "error" in answer:
            raise WorkerError(answer["error"])
        return answer["data"]

    def stop(self) -> None:
        """End the process (closes its stdin; kills it after 10 s)."""
        import subprocess

        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def load_strict(name: str, device: str = "cpu", dtype: str = "float32", device_map: Any = None, autocast: bool = False) -> Served:
    """Serve ``name`` in strict mode (see :class:`StrictWorker`)."""
    worker = StrictWorker(name, device=device, dtype=dtype, device_map=device_map, autocast=autocast)
    return Served(name=name, hub=None, model_key=worker.model_key, persistent=None, worker=worker)


def execute(served: Served, blob: bytes, compress: bool, env: dict[str, Any]) -> bytes:
    """Run one request against ``served``; return the ``torch.save`` bytes of what it saved.

    The inverse of the client's ``RequestModel.serialize``: rebuild the tracer against the live
    model, run its body, keep the values the body marked with ``nnsight.save``. In strict mode
    this happens in the model's :class:`StrictWorker`.

    Raises:
        WorkerError: strict mode, the request failed in the execution process.
    """
    if served.worker is not None:
        return served.worker.run(blob, compress, env)
    import torch
    from nnsight.schema.request import RequestModel
    from nnsight.tracing.tracer import _saves, dec, inc

    tracer = RequestModel.deserialize(blob, served.persistent, compress)
    if env:
        served.hub.lm._remoteable_set_env(env)
    frame = tracer.info.frame
    inc()
    try:
        with torch.inference_mode():
            tracer.execute(tracer.info.code)
        marked = _saves()
        result = {k: v for k, v in frame.f_locals.items() if id(v) in marked}
    finally:
        dec()
    result = _to_cpu(result)
    buffer = io.BytesIO()
    torch.save(result, buffer)
    data = buffer.getvalue()
    if compress:
        import zstandard

        data = zstandard.ZstdCompressor(level=6).compress(data)
    return data


class NdifTestServer:
    """An NDIF-compatible server on ``127.0.0.1`` serving some models (see the module docstring).

    Args:
        models: names to load (anything ``--model`` accepts), or already-built :class:`Served`.
        api_key: when set, requests must carry it (header ``ndif-api-key``): none or another
            -> 401 as on NDIF (the websocket upgrade is refused with 403).
        faults: faults to inject (:class:`Faults`).
        max_request_bytes / max_result_bytes: size caps (413 / job ERROR when exceeded).
        inline_result_bytes: results up to this size go back on the websocket.
        device / dtype: where and in which dtype the models' weights are loaded.
        strict: run requests in an execution process per model where hub is not importable,
            under NDIF's import allow-list (:class:`StrictWorker`); ``False``: in this process.
        device_map: strict mode, a transformers ``device_map`` for loading the models.
        autocast: strict mode, execute under bf16 autocast.
    """

    def __init__(
        self,
        models: list[Any],
        api_key: str | None = None,
        faults: Faults | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_result_bytes: int = MAX_RESULT_BYTES,
        inline_result_bytes: int = INLINE_RESULT_BYTES,
        device: str = "cpu",
        dtype: str = "float32",
        strict: bool = False,
        device_map: Any = None,
        autocast: bool = False,
    ):
        self.served: dict[str, Served] = {}
        for model in models:
            if isinstance(model, Served):
                served = model
            elif strict:
                served = load_strict(model, device, dtype, device_map=device_map, autocast=autocast)
            else:
                served = load_served(model, device, dtype)
            self.served[served.model_key] = served
        self.api_key = api_key
        self.faults = faults or Faults()
        self.max_request_bytes = max_request_bytes
        self.max_result_bytes = max_result_bytes
        self.inline_result_bytes = inline_result_bytes
        self.jobs: dict[str, Job] = {}
        self.sessions: dict[str, Any] = {}
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._queue: asyncio.Queue | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ app
    def _check_key(self, headers: Any) -> None:
        if not self.api_key:
            return
        given = headers.get("ndif-api-key")
        if not given:
            raise HTTPException(401, "no NDIF API key was sent; set NDIF_API_KEY (or nnsight's config file)")
        if given != self.api_key:
            raise HTTPException(401, "Missing or invalid API key; check NDIF_API_KEY")

    def _versions(self) -> dict[str, str]:
        packages = {}
        for dist in ("nnsight", "torch", "transformers", "numpy"):
            try:
                packages[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        if self.faults.nnsight_version:
            packages["nnsight"] = self.faults.nnsight_version
        return packages

    def _build_app(self) -> Any:
        from contextlib import asynccontextmanager

        from nnsight.schema.response import ResponseModel, Status

        @asynccontextmanager
        async def lifespan(app: Any):
            self._queue = asyncio.Queue()
            worker = asyncio.create_task(self._worker())
            try:
                yield
            finally:
                worker.cancel()

        app = FastAPI(title="hub NDIF test server", lifespan=lifespan)

        @app.websocket("/subscribe")
        async def subscribe(websocket: WebSocket) -> None:
            key = websocket.headers.get("ndif-api-key")
            if self.api_key and key != self.api_key:
                await websocket.close(code=1008)  # before accept: the upgrade is refused (403)
                return
            await websocket.accept()
            session = uuid.uuid4().hex
            self.sessions[session] = websocket
            await websocket.send_text(json.dumps({"session_id": session}))
            try:
                while True:
                    await websocket.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                pass
            finally:
                self.sessions.pop(session, None)

        @app.post("/request")
        async def request(request: Request) -> Any:
            self._check_key(request.headers)
            size = int(request.headers.get("content-length") or 0)
            if size > self.max_request_bytes:
                raise HTTPException(413, f"request is {size} bytes, over this server's cap of {self.max_request_bytes}; send fewer prompts per request")
            if self.faults.take("http_500"):
                return JSONResponse({"detail": "injected server error"}, status_code=500)
            client_version = request.headers.get("nnsight-version", "")
            server_version = self._versions().get("nnsight", "")
            if self.faults.python_version:
                client_python = ".".join(request.headers.get("python-version", "").split()[0].split(".")[:2]) if request.headers.get("python-version") else ""
                if client_python != self.faults.python_version:
                    raise HTTPException(400, f"Client python version {client_python or 'unknown'} does not match server version: {self.faults.python_version}")
            if self.faults.nnsight_version and client_version != server_version:
                raise HTTPException(409, f"nnsight version mismatch: client has {client_version or 'unknown'}, server runs {server_version}; install nnsight=={server_version}")
            form = await request.form()
            data = json.loads(form["data"])
            blob = await form["blob"].read()
            if len(blob) > self.max_request_bytes:
                raise HTTPException(413, f"request is {len(blob)} bytes, over this server's cap of {self.max_request_bytes}")
            served = self.served.get(data["model_key"])
            if served is None:
                names = ", ".join(s.repo_id for s in self.served.values())
                raise HTTPException(404, f"model {data['model_key']} is not served here; served models: {names}")
            job = Job(
                id=uuid.uuid4().hex, served=served, blob=blob, compress=bool(data.get("compress")),
                env=data.get("env") or {}, session_id=data.get("session_id") or "",
            )
            self.jobs[job.id] = job
            received = ResponseModel(id=job.id, status=Status.RECEIVED, description="Your job has been received.")
            job.latest = received
            job.history.append(received.status.value)
            await self._queue.put(job)
            return json.loads(received.model_dump_json())

        @app.get("/response/{job_id}")
        async def response(job_id: str, request: Request) -> Any:
            self._check_key(request.headers)
            job = self.jobs.get(job_id)
            if self.faults.ndif_jobs and (job is None or job.session_id):
                raise HTTPException(500, "Internal Server Error")
            if job is None or job.latest is None:
                raise HTTPException(404, f"no job {job_id}")
            return json.loads(job.latest.model_dump_json())

        @app.get("/results/{job_id}")
        async def results(job_id: str) -> Any:
            job = self.jobs.get(job_id)
            if job is None or job.result is None:
                raise HTTPException(404, f"no result for job {job_id} (expired or never made)")
            if self.faults.result_ttl is not None and job.completed_at is not None and time.time() - job.completed_at > self.faults.result_ttl:
                return Response("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", status_code=403, media_type="application/xml")
            return Response(job.result, media_type="application/octet-stream")

        @app.get("/status")
        async def status() -> Any:
            deployments = {}
            for served in self.served.values():
                level = self.faults.deployment_level or "HOT"
                deployments[served.repo_id] = {
                    "model_key": served.model_key, "repo_id": served.repo_id, "revision": None,
                    "task": "text-generation", "deployment_level": level,
                    **({"application_state": "RUNNING"} if level == "HOT" else {}),
                }
            return {"deployments": deployments}

        @app.get("/env")
        async def env() -> Any:
            return {"python_version": self.faults.python_version or sys.version, "packages": self._versions()}

        @app.get("/_jobs")
        async def list_jobs(request: Request) -> Any:
            if request.client is None or request.client.host != HOST:
                raise HTTPException(403, "jobs can only be listed from loopback")
            return {job.id: {"history": job.history, "blocking": bool(job.session_id)} for job in self.jobs.values()}

        @app.get("/_sandbox")
        async def sandbox(request: Request) -> Any:
            if request.client is None or request.client.host != HOST:
                raise HTTPException(403, "loopback only")
            return {s.repo_id: (s.worker.info if s.worker is not None else None) for s in self.served.values()}

        @app.post("/_faults")
        async def set_faults(request: Request) -> Any:
            if request.client is None or request.client.host != HOST:
                raise HTTPException(403, "faults can only be set from loopback")
            self.faults = Faults(**(await request.json()))
            return asdict(self.faults)

        return app

    # ------------------------------------------------------------------ jobs
    async def _send(self, job: Job, response: Any, binary: bool = False) -> None:
        job.latest = response if not binary else response.model_copy(update={"data": f"{self.url}/results/{job.id}"})
        job.history.append(response.status.value)
        websocket = self.sessions.get(job.session_id) if job.session_id and not job.drop else None
        if websocket is None:
            return
        try:
            if binary:
                await websocket.send_bytes(response.pickle())
            else:
                await websocket.send_text(response.model_dump_json())
        except Exception:  # the client went away; the job's status stays pollable
            self.sessions.pop(job.session_id, None)

    async def _worker(self) -> None:
        from nnsight.schema.response import ResponseModel, Status

        while True:
            job = await self._queue.get()
            try:
                await self._send(job, ResponseModel(id=job.id, status=Status.QUEUED, description="Queued."))
                await self._send(job, ResponseModel(id=job.id, status=Status.RUNNING, description="Running."))
                if job.session_id and self.faults.take("drop"):
                    websocket = self.sessions.pop(job.session_id, None)
                    job.drop = True
                    if websocket is not None:
                        await websocket.close(code=1011)
                if self.faults.delay:
                    await asyncio.sleep(self.faults.delay)
                if self.faults.take("error"):
                    raise RuntimeError("injected failure")
                started = time.time()
                data = await asyncio.to_thread(execute, job.served, job.blob, job.compress, job.env)
                if len(data) > self.max_result_bytes:
                    raise RuntimeError(f"result is {len(data)} bytes, over this server's cap of {self.max_result_bytes}; save less inside the trace")
                job.result = data
                job.completed_at = time.time()
                meta = {"seconds": round(time.time() - started, 4), "result_bytes": len(data)}
                vanish = self.faults.take("vanish")
                if vanish or self.faults.result_url or len(data) > self.inline_result_bytes or not job.session_id:
                    done = ResponseModel(id=job.id, status=Status.COMPLETED, description="Completed.", data=f"{self.url}/results/{job.id}", meta=meta)
                    if vanish:
                        job.result = None
                    await self._send(job, done)
                else:
                    done = ResponseModel(id=job.id, status=Status.COMPLETED, description="Completed.", data=data, meta=meta)
                    await self._send(job, done, binary=True)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the job's failure goes to the client, the server goes on
                text = str(exc) if isinstance(exc, WorkerError) else f"{type(exc).__name__}: {exc}"
                await self._send(job, ResponseModel(id=job.id, status=Status.ERROR, description=text))
            finally:
                job.blob = b""
                if self.faults.after > 0:
                    self.faults.after -= 1

    # ------------------------------------------------------------------ lifecycle
    def start(self, port: int = 0) -> str:
        """Serve in a background thread on ``127.0.0.1:port`` (0 = a free port); return the URL."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        self.url = f"http://{HOST}:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", ws="websockets-sansio", ws_max_size=self.max_request_bytes)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="ndif-test-server")
        self._thread.start()
        deadline = time.time() + 30
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError("the NDIF test server did not start")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        """Stop serving (waits for the thread, at most 10 s)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for served in self.served.values():
            if served.worker is not None:
                served.worker.stop()

    def __enter__(self) -> "NdifTestServer":
        if not self.url:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m hubclient.testing.server --model gemma-3-270m --port 0``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m hubclient.testing.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=None, help="model to serve (repeatable; anything hub's --model accepts) [gemma-3-270m]")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = a free one, printed)")
    parser.add_argument("--api-key-env", default=None, help="require the API key held in this environment variable (e.g. NDIF_API_KEY)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-request-mb", type=float, default=MAX_REQUEST_BYTES / 2**20)
    parser.add_argument("--max-result-mb", type=float, default=MAX_RESULT_BYTES / 2**20)
    parser.add_argument("--delay", type=float, default=0.0, help="fault: seconds each job stays RUNNING")
    parser.add_argument("--fail-jobs", type=int, default=0, help="fault: end the first N jobs in ERROR")
    parser.add_argument("--http-500", type=int, default=0, help="fault: answer the first N requests with 500")
    parser.add_argument("--drop", type=int, default=0, help="fault: drop the websocket of the first N jobs mid-job")
    parser.add_argument("--nnsight-version", default=None, help="fault: pretend to run this nnsight version")
    parser.add_argument("--deployment-level", default=None, help="fault: list the served models in /status at this level (WARM, COLD) instead of HOT; requests still run")
    parser.add_argument("--strict", action=argparse.BooleanOptionalAction, default=True,
                        help="run requests in a process where hub is not importable, under NDIF's import allow-list (default); --no-strict: in this process")
    parser.add_argument("--device-map", default=None, help="strict mode: transformers device_map for the models (auto, balanced, or JSON such as '{\"\": \"cpu\"}')")
    parser.add_argument("--autocast-bf16", action="store_true", help="strict mode: execute requests under torch.autocast(bfloat16), as NDIF does")
    args = parser.parse_args(argv)
    import os

    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not key:
        parser.error(f"--api-key-env {args.api_key_env}: that environment variable is empty")
    faults = Faults(http_500=args.http_500, error=args.fail_jobs, drop=args.drop, delay=args.delay, nnsight_version=args.nnsight_version,
                    deployment_level=args.deployment_level)
    server = NdifTestServer(
        args.model or ["gemma-3-270m"], api_key=key, faults=faults, device=args.device, dtype=args.dtype,
        max_request_bytes=int(args.max_request_mb * 2**20), max_result_bytes=int(args.max_result_mb * 2**20),
        strict=args.strict, device_map=_device_map(args.device_map), autocast=args.autocast_bf16,
    )
    url = server.start(args.port)
    for served in server.served.values():
        where = f" (strict: execution process on {', '.join(served.worker.info['devices'])})" if served.worker is not None else ""
        print(f"serving {served.repo_id}{where}", flush=True)
    print(f"NDIF test server on {url}  (use: NDIF_HOST={url} hub analyze … --remote)", flush=True)
    try:
        while server._thread is not None and server._thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _device_map(value: str | None) -> Any:
    """``--device-map``: ``None``, ``auto``/``balanced``/…, or a JSON object."""
    if value is None or not value.strip().startswith("{"):
        return value
    return json.loads(value)


if __name__ == "__main__":
    main()
