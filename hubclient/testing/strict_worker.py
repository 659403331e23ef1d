"""The strict test server's execution process: runs NDIF requests where hub cannot be imported.

This file is run as a *script*, never imported as part of ``hubclient``::

    python -I -S hubclient/testing/strict_worker.py '<json config>'

``-I`` (isolated: no ``PYTHON*`` variables, no script folder or current folder on ``sys.path``)
and ``-S`` (``site`` is not imported, so no ``.pth`` file runs: the editable-install finder of
``pip install -e .`` is never installed) give an interpreter with the standard library only.
The config adds the site-packages folders back as plain ``sys.path`` entries (nnsight, torch,
transformers; also when the venv lives inside the checkout, as in CI), and a finder that refuses the
project's packages (``hubclient``, ``analyses``) in case they are installed there non-editable.
So a request that needs hub code it did not ship fails here as on NDIF.

Execution follows NDIF's model actor (ndif-team/ndif ``src/ndif/services/ray/nn``: ``pre`` and
``execute``): the request is deserialised with nnsight's own ``RequestModel.deserialize`` under
the *deserialisation* allow-list, the client's environment is applied
(``_remoteable_set_env``), and the trace body runs (``tracer.execute``) under the *execution*
allow-list, optionally inside ``torch.autocast(dtype=bfloat16)``; the values the body marked
with ``nnsight.save`` are ``torch.save``-d (zstd-compressed when the request asks).

The allow-lists are modelled on NDIF's published ``whitelist.yaml``
(``src/ndif/services/ray/nn/security/whitelist.yaml``): an entry ``(name, strict)`` admits the
module ``name`` itself (strict) or ``name`` and its submodules (not strict). Checked are every
global the unpickler resolves (``find_class``) and every ``import`` executed by code that came
with the request (the trace body and functions shipped by value); imports inside installed
libraries (torch, transformers, nnsight internals) are not checked, so a library version that
differs from NDIF's cannot fail a request here. A refusal reads as on NDIF:
``ImportError: Module X is not whitelisted``. Not modelled: NDIF's builtin restrictions,
its module wrappers that hide submodules, and its attribute guards.

Protocol with the parent (:mod:`hubclient.testing.server`), on stdin / the original stdout:
frames of a 4-byte big-endian length and a pickled dict of plain values. The first frame the
worker sends is ``{"ready": True, "importable": {...}, ...}``; then, per request
``{"blob", "compress", "env"}`` it answers ``{"data": bytes}`` or ``{"error": "Type: message"}``.
Anything the executed code prints goes to stderr, never into the protocol stream.
"""

import json
import os
import struct
import sys

#: NDIF's execution allow-list (whitelist.yaml ``modules``): (name, strict).
EXECUTION = (
    ("PIL", False), ("re", False), ("dataclasses", False), ("builtins", True), ("torch", False), ("collections", False),
    ("nnsight", True), ("nnsight.intervention.envoy", False), ("nnsight.intervention.tracing.globals", False), ("time", False),
    ("numpy", False), ("sympy", False), ("nnterp", False), ("math", False), ("einops", False), ("urllib3", False),
    ("typing", False), ("_operator", True), ("operator", True), ("pandas", False), ("enum", False), ("__future__", False),
    ("diffusers", False), ("transformers", False), ("tqdm", False), ("heapq", False), ("json", False), ("warnings", False),
    ("functools", False), ("_functools", False), ("jinja2", False), ("encodings", False), ("peft", False), ("pydantic", False),
    ("argparse", False), ("datasets", False), ("tokenizers", False), ("huggingface_hub", False), ("httpcore", False),
    ("fsspec", False), ("scipy", False), ("regex", False), ("concurrent", False), ("io", False),
    ("_frozen_importlib_external", False), ("_frozen_importlib", False),
)
#: Added while a request is deserialised (whitelist.yaml ``deserialization_modules``).
DESERIALIZATION = EXECUTION + (
    ("pickle", False), ("cloudpickle", False), ("copyreg", False), ("nnsight", False), ("transformers_modules", False),
)
#: The project's own packages: never importable here.
PROJECT = ("hubclient", "analyses")


def allowed(name, entries):
    """True when module ``name`` is admitted by ``entries`` ((name, strict) pairs)."""
    for entry, strict in entries:
        if name == entry or (not strict and name.startswith(entry + ".")):
            return True
    return False


def refuse(name):
    return ImportError(f"Module {name} is not whitelisted")


def _isolate(config):
    """``sys.path``: the standard library (already there) plus the site-packages folders of the
    config (not the checkout root); a meta-path finder refusing the project's packages."""
    import importlib.abc
    import importlib.machinery

    # Site-packages folders are kept even inside the checkout (CI's ``.venv`` lives there): with
    # ``-S`` no ``.pth`` runs, so an editable install's finder is not installed, and NoProject
    # refuses the project's packages by name. Only the checkout root itself is left out.
    checkout = os.path.realpath(config["checkout"])
    for path in config["site_packages"]:
        if os.path.realpath(path) == checkout:
            continue
        if path not in sys.path:
            sys.path.append(path)

    class NoProject(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in PROJECT:
                raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
            return None

    sys.meta_path.insert(0, NoProject())


class Guard:
    """Within ``with Guard(entries):``, imports run by code that came with the request must be
    admitted by ``entries`` (see the module docstring)."""

    def __init__(self, entries):
        self.entries = entries

    def __enter__(self):
        import builtins

        self.original = builtins.__import__
        original, entries = self.original, self.entries

        def guarded(name, globals=None, locals=None, fromlist=(), level=0):
            if _shipped(globals):
                full = name
                if level > 0:
                    import importlib._bootstrap as bootstrap

                    full = bootstrap._resolve_name(name, (globals or {}).get("__package__") or "", level)
                if not allowed(full, entries):
                    raise refuse(full)
            return original(name, globals, locals, fromlist, level)

        builtins.__import__ = guarded
        return self

    def __exit__(self, *exc):
        import builtins

        builtins.__import__ = self.original
        return False


def _shipped(globals):
    """True when the importing code came with the request: its globals are not those of a
    module installed here (a by-value function keeps its module's ``__name__``, which does not
    exist on this side; the trace body's globals are a plain dict)."""
    if globals is None:
        return True
    module = sys.modules.get(globals.get("__name__", ""))
    return module is None or getattr(module, "__dict__", None) is not globals


def _unpickler_class(entries):
    from nnsight.intervention.serialization import CustomCloudUnpickler

    class AllowListUnpickler(CustomCloudUnpickler):
        def find_class(self, module, name):
            if not allowed(module, entries):
                raise refuse(module)
            return super().find_class(module, name)

    return AllowListUnpickler


def load(config):
    """The served model, built as NDIF builds a deployment (``from_pretrained`` of the auto
    class, ``device_map`` when given) and wrapped in nnsight's ``TransformersModel``."""
    import torch
    import transformers
    from nnsight.modeling.transformers import TransformersModel

    kwargs = {"dtype": getattr(torch, config["dtype"])}
    if config.get("device_map") is not None:
        kwargs["device_map"] = config["device_map"]
    model = getattr(transformers, config["auto_class"]).from_pretrained(config["path"], **kwargs)
    if config.get("device_map") is None:
        model.to(config["device"])
    model.eval()
    model.requires_grad_(False)
    model.name_or_path = config["model_id"]
    processor = None
    if config.get("processor"):
        processor = transformers.AutoProcessor.from_pretrained(config["path"])
        tokenizer = processor.tokenizer
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(config["path"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TransformersModel(model, tokenizer=tokenizer, processor=processor, task=config.get("task"))


def execute(lm, persistent, request, autocast):
    """Run one request (see the module docstring); return the result bytes."""
    import io

    import torch
    from nnsight.schema.request import RequestModel
    from nnsight.tracing.tracer import _saves, dec, inc

    with Guard(DESERIALIZATION):
        tracer = RequestModel.deserialize(request["blob"], persistent, request["compress"], unpickler=_unpickler_class(DESERIALIZATION))
    lm._remoteable_set_env(request.get("env") or {})
    frame = tracer.info.frame
    device = next(lm._module.parameters()).device
    inc()
    try:
        with Guard(EXECUTION), torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            tracer.execute(tracer.info.code)
        marked = _saves()
        result = {k: _to_cpu(v) for k, v in frame.f_locals.items() if id(v) in marked}
    finally:
        dec()
    buffer = io.BytesIO()
    torch.save(result, buffer)
    data = buffer.getvalue()
    if request["compress"]:
        import zstandard

        data = zstandard.ZstdCompressor(level=6).compress(data)
    return data


def _to_cpu(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _read(stream):
    import pickle

    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    return pickle.loads(stream.read(size))


def _write(stream, message):
    import pickle

    body = pickle.dumps(message, protocol=4)
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


def main():
    config = json.loads(sys.argv[1])
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints of executed code go to stderr, not into the protocol
    sys.stdout = sys.stderr
    _isolate(config)
    import importlib.util

    importable = {}
    for name in PROJECT:
        try:
            importable[name] = importlib.util.find_spec(name) is not None
        except ImportError:
            importable[name] = False
    try:
        lm = load(config)
    except BaseException as exc:  # the parent reports it and stops
        _write(out, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    persistent = lm._remoteable_persistent_objects()
    devices = sorted({str(p.device) for p in lm._module.parameters()})
    _write(out, {"ready": True, "importable": importable, "sys_path": list(sys.path), "devices": devices,
                 "python": sys.version, "autocast": bool(config.get("autocast"))})
    stdin = sys.stdin.buffer
    while True:
        request = _read(stdin)
        if request is None:
            return
        try:
            _write(out, {"data": execute(lm, persistent, request, bool(config.get("autocast")))})
        except BaseException as exc:  # the job's failure goes to the client
            _write(out, {"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
