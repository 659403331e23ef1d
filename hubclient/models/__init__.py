"""Models: the architecture table, resolving and loading ``--model``, models without weights
for remote runs.

* :mod:`hubclient.models.arch`: per-family facts as data (layers, final norm, unembedding,
  attention/MLP output sites, MLP activation point, media positions);
* :mod:`hubclient.models.loading`: :class:`HubModel` and :func:`load_model` (embedded model,
  GGUF conversion, local folders, Hub ids);
* :mod:`hubclient.models.remote`: :func:`load_remote_model` (meta-device build for NDIF).
"""

from hubclient.models.loading import (  # noqa: F401  (public re-exports)
    CHECKSUMS,
    DEFAULT_MODEL,
    DEVICES,
    DTYPES,
    EMBEDDED,
    EmbeddedModel,
    HubModel,
    cache_dir,
    convert_gguf,
    load_model,
    load_processor,
    resolve_device,
    resolve_dtype,
    sha256_file,
    wrap_model,
)

__all__ = [
    "CHECKSUMS", "DEFAULT_MODEL", "DEVICES", "DTYPES", "EMBEDDED", "EmbeddedModel", "HubModel", "cache_dir",
    "convert_gguf", "load_model", "load_processor", "resolve_device", "resolve_dtype", "sha256_file", "wrap_model",
]
