"""Checks before anything is sent: is the host an NDIF server that serves this model?"""

from __future__ import annotations

import json
import warnings

from hubclient.errors import HubError
from hubclient.exec.remote.config import redact


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
