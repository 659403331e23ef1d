"""Remote settings: host, API key, model key, the code shipped with requests, and the defaults
(retries, backoff, polling, timeout) every remote command shares.

Configuration follows nnsight: the host is ``nnsight.CONFIG.API.HOST`` (``NDIF_HOST`` or
nnsight's ``config.yaml``; ``--ndif-host`` overrides it for this process), the API key is
``nnsight.CONFIG.API.APIKEY`` (``NDIF_API_KEY``, ``nnsight login`` or the config file). The key
is only ever sent to the host; it is never written to results, manifests, logs or error
messages (:func:`redact`).
"""

from __future__ import annotations

import sys
from typing import Any

from hubclient.errors import HubError
from hubclient.models.loading import HubModel

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

    The dataclasses of those packages get their plain generated ``__repr__`` back
    (:func:`plain_dataclass_reprs`), so shipping them does not pull in ``_thread``, which NDIF's
    deserialisation allow-list refuses.

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
        if name not in SHIPPED:
            SHIPPED.append(name)
    plain_dataclass_reprs(names)
    return names


#: The packages registered for shipping by value in this process (:func:`register_code`);
#: :func:`hubclient.exec.remote.shipping.ndif_pickling` ships their modules as stand-ins.
SHIPPED: list[str] = []


def plain_dataclass_reprs(packages: list[str]) -> int:
    """Unwrap the ``__repr__`` that ``dataclasses`` generates for the dataclasses of ``packages``.

    ``dataclasses`` wraps every generated ``__repr__`` in a recursion guard whose globals are
    the ``dataclasses`` module's, holding ``_thread``; a class shipped by value (cloudpickle,
    ``nnsight.register``) ships that wrapper with them, and NDIF refuses the request while
    deserialising it (``Module _thread is not whitelisted``: ``_thread`` is not on its
    allow-list). The unwrapped function prints the same; it only loses the guard against a
    dataclass that contains itself, which none here does.

    Returns:
        the number of classes changed.
    """
    import dataclasses

    changed = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for value in list(vars(module).values()):
            if not (isinstance(value, type) and value.__module__ == name and dataclasses.is_dataclass(value)):
                continue
            wrapper = value.__dict__.get("__repr__")
            inner = getattr(wrapper, "__wrapped__", None)
            if inner is not None and getattr(wrapper, "__globals__", None) is vars(dataclasses):
                value.__repr__ = inner
                changed += 1
    return changed


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
