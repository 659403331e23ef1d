"""Models built without weights for remote execution (NDIF): the module lives on the server.

The client needs the config and tokenizer only (from a local folder, the embedded model's
converted copy or the Hugging Face Hub cache); nnsight builds the module on the meta device and
addresses the served model by its model key (:func:`hubclient.exec.remote.config.model_key`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hubclient.errors import HubError
from hubclient.models.loading import HubModel


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


def load_remote_model(name: str, revision: str | None = None) -> RemoteHubModel:
    """Build ``--model`` without weights for remote execution.

    The embedded model and local folders read their config and tokenizer from disk (a
    ``.gguf`` file is converted once, like a local run); a Hugging Face repo id reads them from
    the Hub or its cache (no weights are downloaded), at ``revision`` (branch, tag or commit;
    ``None``: the default branch), and nnsight's model key carries that revision, so the server
    runs the same checkpoint. The module is built on the meta device.

    Raises:
        HubError: as :func:`hubclient.models.load_model` for names it cannot resolve (a
            ``revision`` with the embedded model or a local path is one), or an unsupported
            architecture.
    """
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoConfig, AutoTokenizer

    from hubclient.models import loading as m
    from hubclient.models.arch import check_modules, spec_for_config

    path, model_id, source, revision, notes = resolve_source(name, revision)
    wanted = None if name in m.EMBEDDED or m._looks_like_path(name) else revision
    try:
        config = AutoConfig.from_pretrained(path, revision=wanted)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=wanted)
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
    lm = TransformersModel(path, tokenizer=tokenizer, processor=processor, task=arch.task or "text-generation", revision=wanted)
    lm.repo_id = model_id
    check_modules(arch, lm._module)
    return RemoteHubModel(
        lm=lm, arch=arch, tokenizer=tokenizer, model_id=model_id, revision=revision, source=source,
        device="cpu", dtype="set by the server", notes=notes, processor=processor,
    )


def resolve_source(name: str, revision: str | None = None) -> tuple[str, str, str, str | None, list[str]]:
    """Where the config and tokenizer of ``--model`` are read from, without loading anything.

    Returns:
        ``(path, model_id, source, revision, notes)``: the folder or repo id ``from_pretrained``
        reads, the id that names the model (and goes into nnsight's model key), the manifest's
        source, the revision (a weights checksum for the embedded model and GGUF files) and the
        caveats to record.

    Raises:
        HubError: a ``revision`` with the embedded model or a local path, a path that does not
            exist, a file that is not ``.gguf``, a folder without ``config.json``.
    """
    from hubclient.models import loading as m

    notes: list[str] = []
    if revision is not None and (name in m.EMBEDDED or m._looks_like_path(name)):
        raise HubError(f"--revision {revision!r} applies to a Hugging Face repo id, not to {name!r}; pass each local checkpoint folder as --model")
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
            m.check_gguf(local)
            sha = m.sha256_file(local)
            path, revision = str(m.convert_gguf(local, sha)), f"gguf-sha256:{sha}"
        elif not (local / "config.json").is_file():
            raise HubError(f"model folder {name!r} has no config.json; is it a transformers model folder?")
        else:
            path = str(local)
        model_id, source = str(local), f"remote:directory:{local}"
    else:
        path, model_id, source = name, name, "remote:hub"
    return path, model_id, source, revision, notes
