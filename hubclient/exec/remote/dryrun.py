"""``--remote --dry-run``: what a remote run would send and get back, without sending anything.

The model is built without weights (meta device, from its config and tokenizer only), so this
works for a 70B model on a laptop. For the first batch, the request is serialised exactly as
it would be sent (:class:`hubclient.exec.remote.backend.HubBackend` up to the upload, NDIF
shipping rules included) and its bytes counted; the trace body is then run under nnsight's
``scan`` (fake tensors: shapes and dtypes only, no weights, no compute) to size what it saves,
in the dtypes that would travel (``--transfer-dtype``). The result estimate counts the raw
tensor bytes (the ``torch.save`` container adds about 1-2 KB per request).
"""

from __future__ import annotations

import sys
from typing import Any

from hubclient.errors import HubError


def request_bytes(model: Any, analysis: Any, batch: Any, key: str, transfer_dtype: str) -> int:
    """Bytes of the request of ``batch`` as it would be uploaded (nothing is sent)."""
    from hubclient.exec.remote.backend import make_backend
    from hubclient.exec.trace import trace_batch

    backend = make_backend(key, blocking=False, env=model.lm._remoteable_get_env())
    backend.transfer_dtype = transfer_dtype

    def serialize_only(self: Any, tracer: Any = None) -> None:
        self._serialize(tracer)  # counts bytes_sent; no upload

    backend.__class__ = type("DryRunBackend", (type(backend),), {"__call__": serialize_only})
    trace_batch(model, analysis, batch, backend=backend)
    return int(backend.bytes_sent)


def result_shapes(model: Any, analysis: Any, batch: Any, transfer_dtype: str) -> dict[str, tuple[tuple[int, ...], Any]]:
    """``{saved key: (shape, dtype)}`` of what the trace body saves for ``batch``, from a scan
    (fake tensors) of the weightless model; vector-valued results in ``transfer_dtype``.

    Raises:
        HubError: a generating analysis (its results are not sized by a scan).
    """
    import torch

    from hubclient.exec.trace import transfer_plan

    if analysis.generates:
        raise HubError(f"--dry-run sizes the requests of {analysis.name}, not its generated results")
    found: dict[str, tuple[tuple[int, ...], Any]] = {}
    compact = dict(transfer_plan(analysis, type("B", (), {"transfer_dtype": transfer_dtype})()))
    previous = model.device
    model.device = "meta"  # tensors the trace code makes go where the fake activations are
    try:
        with torch.no_grad():  # not inference_mode: fake tensors refuse its in-place detach
            with model.lm.scan(batch.inputs):
                out = analysis.trace(model, batch)
                for name in list(out):
                    value = out[name]
                    if isinstance(value, torch.Tensor):
                        found[name] = (tuple(value.shape), compact.get(name, value.dtype))
    finally:
        model.device = previous
    return found


def nbytes(shapes: dict[str, tuple[tuple[int, ...], Any]]) -> int:
    """Raw bytes of tensors of these shapes and dtypes."""
    import math

    import torch

    total = 0
    for shape, dtype in shapes.values():
        total += math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return total


def dry_run(config: Any, model: Any, analysis: Any, batches: list[Any]) -> dict[str, Any]:
    """Size the first batch's request and result, print the report, and return it.

    Returns:
        ``{"analysis", "model", "prompts_per_batch", "request_bytes", "result_bytes",
        "request_bytes_per_prompt", "result_bytes_per_prompt", "batches"}`` (``result_*`` are
        ``None`` for generating analyses and models whose forward a fake-tensor scan cannot
        follow, ``result_not_estimated`` says which).
    """
    from hubclient.exec.remote.config import model_key, register_code

    if not batches:
        raise HubError("--dry-run: there is no batch to size (no prompts)")
    register_code(analysis)
    key = model_key(model)
    batch = batches[0]
    n = int(batch.input_ids.shape[0])
    sent = request_bytes(model, analysis, batch, key, config.transfer_dtype)
    why = "a generating analysis"
    try:
        shapes = result_shapes(model, analysis, batch, config.transfer_dtype)
        back: int | None = nbytes(shapes)
    except HubError:
        shapes, back = {}, None
    except Exception as exc:  # noqa: BLE001 - the scan runs the model's own forward on fake tensors
        # e.g. Qwen2-Audio's forward branches on tensor values (GuardOnDataDependentSymNode),
        # which a fake-tensor scan cannot follow; the request size above does not need it
        shapes, back = {}, None
        why = f"the fake-tensor scan of the {model.arch.family} forward failed ({type(exc).__name__}: it branches on tensor values); the request size is exact"
    report = {
        "analysis": analysis.name, "model": config.model, "prompts_per_batch": n, "tokens_per_prompt": int(batch.input_ids.shape[1]),
        "request_bytes": sent, "request_bytes_per_prompt": sent / n, "result_bytes": back,
        "result_bytes_per_prompt": None if back is None else back / n, "batches": len(batches),
        "result_not_estimated": None if back is not None else why,
        "results": {k: [list(s), str(d).removeprefix("torch.")] for k, (s, d) in shapes.items()},
    }
    lines = [
        f"dry run of {analysis.name} on {config.model} (nothing was sent)",
        f"  request of batch 0 ({n} prompts, {report['tokens_per_prompt']} tokens each after padding): {sent:,} bytes ({sent / n:,.0f} per prompt)",
    ]
    if back is None:
        lines.append(f"  result: not estimated ({why})")
    else:
        lines.append(f"  result of batch 0 (expected, raw tensors): {back:,} bytes ({back / n:,.0f} per prompt); --transfer-dtype {config.transfer_dtype}")
        for name, (shape, dtype) in shapes.items():
            lines.append(f"    {name}: {list(shape)} {str(dtype).removeprefix('torch.')}")
    lines.append(f"  the run: {len(batches)} batch(es) of --batch-size {config.batch_size}")
    print("\n".join(lines), file=sys.stdout, flush=True)
    return report
