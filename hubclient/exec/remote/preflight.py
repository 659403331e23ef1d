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


def preflight(key: str, host: str, timeout: float = 30.0) -> None:
    """Check before sending anything that ``host`` is reachable and serves the model.

    Uses ``GET /status`` (the deployments) and ``GET /env`` (nnsight version: a mismatch is
    warned about; the server refuses the request if it must).

    A deployment serves the model when it is ``HOT`` with ``application_state`` ``RUNNING``
    (NDIF lists WARM and COLD entries too, which would accept the request and then fail it) and
    its ``model_key`` is the request's (entries without a ``model_key`` are matched on
    ``repo_id``).

    Args:
        timeout: seconds for each of the two requests (``--timeout`` caps it).

    Raises:
        HubError: host unreachable, a host that does not answer like NDIF (HTML, 404), or the
            model is not among the running deployments (the message lists those that are, and
            names the model's state there when it is WARM/COLD).
    """
    import httpx

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
    deployments = body["deployments"]
    wanted = json.loads(key.split(":", 1)[1])
    running, states = [], []
    for name, value in deployments.items():
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
            "Pick one with --model, or run locally"
        )
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
