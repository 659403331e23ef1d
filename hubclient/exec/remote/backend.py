"""nnsight's remote backend with what a long remote run needs: byte counts, job states in the
progress bar, retries with backoff, following a job whose websocket dropped, a deadline, and
one-line explanations of every failure (:func:`explain`)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from hubclient.errors import HubError
from hubclient.exec.remote import config
from hubclient.exec.remote.config import KEY_HELP, redact
from hubclient.run.lifecycle import RESUME_HINT


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
    cont = f"{RESUME_HINT} {run.path}" if run is not None else ""
    job = f" (job {job_id})" if job_id else ""
    if code in (401, 403):
        message = f"NDIF at {host} refused the API key ({code}): {KEY_HELP}"
    elif code == 404 and "not served" in text:
        message = f"{text}; see `hub remote status`"
    elif code == 400 and "python" in text.lower():
        message = f"{where}: {text}; NDIF runs requests only from the Python version it runs itself: use a matching environment for --remote (see `hub remote env`)"
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
        message = f"{where}: NDIF at {host} answered {code} ({text}) after the retries (--retries); try again later"
    elif _transient(exc):
        message = f"{where}: could not reach NDIF at {host} ({type(exc).__name__}: {text}); check --ndif-host / NDIF_HOST and `hub remote status`"
    else:
        message = f"{where}{job}: {type(exc).__name__}: {text}"
    return HubError(redact(message + cont))


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


@contextmanager
def _deadline_timeouts(deadline: float) -> Iterator[None]:
    """Within ``--timeout`` from the first byte: nnsight's HTTP connect/read timeouts (module
    constants, 10 s / 600 s) and websocket-client's default socket timeout (none) are capped
    at the time left, so a server that accepts the connection and never answers cannot hold a
    request past its deadline."""
    import nnsight.intervention.backends.remote as nn_remote
    import websocket

    left = max(0.5, deadline - time.monotonic())
    saved = (nn_remote._CONNECT_TIMEOUT, nn_remote._READ_TIMEOUT, websocket.getdefaulttimeout())
    nn_remote._CONNECT_TIMEOUT = min(saved[0], left)
    nn_remote._READ_TIMEOUT = min(saved[1], left)
    websocket.setdefaulttimeout(left if saved[2] is None else min(saved[2], left))
    try:
        yield
    finally:
        nn_remote._CONNECT_TIMEOUT, nn_remote._READ_TIMEOUT = saved[0], saved[1]
        websocket.setdefaulttimeout(saved[2])


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
                     on_status: Callable[[str, str], None] | None = None, timeout: float = config.DEFAULT_TIMEOUT,
                     retries: int = config.DEFAULT_RETRIES):
            super().__init__(key, env=env, blocking=blocking, job_id=job_id)
            self.display = _StatusFeed(on_status, timeout)
            self.retries = retries
            self.bytes_sent = 0
            self.bytes_received = 0
            self.attempts = 0

        # -- instrumentation
        def _serialize(self, tracer: Any) -> bytes:
            from hubclient.exec.remote.shipping import ndif_pickling

            with ndif_pickling(config.SHIPPED or ["hubclient"]):  # only what NDIF's sandbox admits
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
                if exc.response.status_code == 403:  # a presigned URL past its lifetime (NDIF: 2 h)
                    raise ResultVanished("its result URL expired (403); NDIF keeps result links about 2 hours") from None
                raise
            finally:
                self.display.enabled = True

        # -- faults
        def __call__(self, tracer: Any = None) -> Any:
            import pydantic
            import websocket

            delay = config.BACKOFF
            for attempt in range(self.retries + 1):
                self.attempts = attempt + 1
                if self.blocking:
                    self.job_id = None
                try:
                    with _deadline_timeouts(self.display.deadline):
                        return super().__call__(tracer)
                except (JobTimeout, ResultVanished):
                    raise
                except RemoteError as exc:
                    self._check_deadline()
                    if self.job_id is not None or not _transient(exc) or attempt == self.retries:
                        raise
                except (websocket.WebSocketException, OSError, pydantic.ValidationError) as exc:
                    self._check_deadline()
                    if _status_code(exc) in (401, 403):
                        raise
                    if self.blocking and self.job_id is not None:
                        # The job is on the server and only the stream broke: follow it there.
                        try:
                            result = self.follow()
                        except Exception as lost:
                            if _status_code(lost) in (404, 500):  # NDIF keeps no record of blocking jobs
                                raise ResultVanished(
                                    "its websocket dropped while the job ran, and the server keeps no record of blocking jobs "
                                    f"(/response answered {_status_code(lost)}); use --detach for long jobs"
                                ) from None
                            raise
                        self._push(result, tracer)
                        return result
                    if attempt == self.retries or not (_transient(exc) or isinstance(exc, (pydantic.ValidationError, OSError))):
                        raise
                time.sleep(min(delay, max(0.0, self.display.deadline - time.monotonic())))
                delay *= 2
            raise AssertionError("unreachable")

        def _check_deadline(self) -> None:
            if time.monotonic() > self.display.deadline:
                raise JobTimeout(f"{self.display.timeout:g} s")

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
                time.sleep(config.POLL_INTERVAL)

    return _HubBackend


def make_backend(key: str, **kwargs: Any) -> Any:
    """A :class:`HubBackend` (nnsight ``RemoteBackend`` subclass) for model key ``key``."""
    return _backend_class()(key, **kwargs)
