"""Checks before anything is sent: is the host an NDIF server that serves this model?"""

from __future__ import annotations

import json
import warnings

from hubclient.errors import HubError
from hubclient.exec.remote.config import redact


def check_python(server_python: str, host: str) -> None:
    """NDIF refuses requests from a client whose Python major.minor differs from its own
    (HTTP 400; nnsight issue #572): say so before sending anything.

    Args:
        server_python: the server's ``python_version`` from ``/env`` (e.g. ``"3.12.4 (main…)"``).

    Raises:
        HubError: the major.minor versions differ.
    """
    import sys

    theirs = ".".join(server_python.split()[0].split(".")[:2]) if server_python.strip() else ""
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    if theirs and theirs != ours:
        raise HubError(
            f"NDIF at {host} runs Python {theirs} and refuses requests from Python {ours}; "
            f"run hub --remote from a Python {theirs} environment (e.g. `uv venv --python {theirs}`)"
        )


def preflight(key: str, host: str, timeout: float = 30.0, deployments: bool = True) -> None:
    """Check before sending anything that ``host`` is reachable and serves the model.

    Uses ``GET /status`` (the deployments) and ``GET /env`` (:func:`check_env`: the Python
    major.minor must match, an nnsight mismatch is warned about).

    ``deployments=False`` (``--no-preflight``) skips ``/status`` and prints one line saying so
    (stderr); the ``/env`` check still runs, because NDIF refuses a request from another Python
    anyway and an unreachable ``/env`` is not an error.

    A deployment serves the model when it is ``HOT`` with ``application_state`` ``RUNNING``
    (NDIF lists WARM and COLD entries too, which would accept the request and then fail it) and
    its ``model_key`` is the request's (entries without a ``model_key`` are matched on
    ``repo_id``).

    Args:
        timeout: seconds for each of the two requests (``--timeout`` caps it).
        deployments: check ``/status`` (default); ``False`` skips it (``--no-preflight``).

    Raises:
        HubError: host unreachable, a host that does not answer like NDIF (HTML, 404), or the
            model is not among the running deployments (the message lists those that are, and
            names the model's state there when it is WARM/COLD).
    """
    import httpx

    if not deployments:
        import sys

        wanted = json.loads(key.split(":", 1)[1])["repo_id"]
        print(f"preflight skipped (--no-preflight): not checking that {wanted} is HOT and RUNNING at {host}; "
              "if it is not, the server fails the job", file=sys.stderr)
        check_env(host, timeout)
        return
    try:
        response = httpx.get(f"{host}/status", timeout=httpx.Timeout(min(10.0, timeout), read=timeout))
    except httpx.HTTPError as exc:
        raise HubError(redact(f"cannot reach NDIF at {host} ({type(exc).__name__}: {exc}); check --ndif-host / NDIF_HOST")) from None
    try:
        body = response.json() if response.status_code == 200 else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("deployments"), dict):
        kind = response.headers.get("content-type", "?").split(";")[0]
        raise HubError(f"{host} is not an NDIF server (HTTP {response.status_code} {kind} from /status); check --ndif-host / NDIF_HOST")
    listed = body["deployments"]
    wanted = json.loads(key.split(":", 1)[1])
    running, states = [], []
    for name, value in listed.items():
        repo = value.get("repo_id", name)
        same = value.get("model_key") == key if value.get("model_key") else repo == wanted["repo_id"]
        hot = value.get("deployment_level", "HOT") == "HOT" and value.get("application_state") == "RUNNING"
        if hot:
            running.append(repo)
        if same and hot:
            break
        if same:
            states.append(f"{value.get('deployment_level', '?')}/{value.get('application_state', 'not running')}")
    else:
        served = ", ".join(sorted(running)) or "none"
        state = f" (it is {', '.join(states)} there: not loaded on GPUs)" if states else ""
        raise HubError(
            f"{wanted['repo_id']} is not served by NDIF at {host} now{state}; models running there: {served}. "
            "Pick one with --model, or run locally (--no-preflight sends the request without this check)"
        )
    check_env(host, timeout)


def check_env(host: str, timeout: float = 30.0) -> None:
    """``GET /env``: refuse a Python major.minor that differs from the server's
    (:func:`check_python`) and warn about an nnsight version that differs. A host without a
    usable ``/env`` passes (the server has the last word).

    Raises:
        HubError: the server runs another Python major.minor.
    """
    import httpx

    try:
        env = httpx.get(f"{host}/env", timeout=httpx.Timeout(min(10.0, timeout), read=timeout)).json()
        server_nnsight = env.get("packages", {}).get("nnsight")
    except (httpx.HTTPError, ValueError, AttributeError):
        return
    check_python(str(env.get("python_version") or ""), host)
    from importlib import metadata

    local = metadata.version("nnsight")
    if server_nnsight and server_nnsight != local:
        warnings.warn(f"local nnsight {local} differs from the server's {server_nnsight}; if requests fail, install nnsight=={server_nnsight} (see `hub remote env`)", stacklevel=2)
