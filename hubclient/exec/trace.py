"""The one place an analysis' trace body is opened: ``with model.lm.trace(...)``.

Local and remote execution differ only in the ``backend`` handed to :func:`trace_batch` (see
:mod:`hubclient.exec.local` and :mod:`hubclient.exec.remote`).
"""

from __future__ import annotations

import warnings
from typing import Any

from hubclient.analysis import Analysis, Batch


def trace_batch(model: Any, analysis: Analysis, batch: Batch, backend: Any = None) -> dict[str, Any] | None:
    """Run the analysis' trace body on one batch and return what it saved.

    This is the one ``with model.lm.trace(...)`` block of every analysis, and the one
    ``with model.lm.generate(...)`` block of every generating intervention, local or remote.
    The forward pass is stopped as soon as a trace body returns, unless the analysis declares
    ``needs_model_output``, so layers after the last one read and the ``lm_head`` are skipped.
    A generating analysis (``generates``) fills ``out`` in :meth:`Analysis.trace_generate`;
    the generated ids ``[batch, seq + new]`` are added as ``generated``.

    Args:
        backend: ``None`` runs locally on ``model.device``; an nnsight backend (e.g.
            :func:`hubclient.exec.remote.backend.make_backend`) sends the same body to NDIF.

    Returns:
        the saved dict (tensors on the CPU), or ``None`` when a non-blocking backend only
        submitted the job.
    """
    import nnsight
    import torch

    if backend is None:
        inputs = {k: v.to(model.device) for k, v in batch.inputs.items()}
        dtype = getattr(torch, str(model.dtype), None)
        for key in batch.extra:  # media tensors (pixel_values…) in the weights' dtype
            if inputs[key].is_floating_point() and isinstance(dtype, torch.dtype):
                inputs[key] = inputs[key].to(dtype)
        kwargs = {}
    else:
        inputs, kwargs = batch.inputs, {"backend": backend}
        analysis = shippable(analysis)
    if analysis.generates:
        with torch.inference_mode(), warnings.catch_warnings():
            # an open tracer.iter[:] loop ends at the last step by design; nnsight warns about it
            warnings.filterwarnings("ignore", message=".*was never reached.*")
            with model.lm.generate(**analysis.generate_kwargs(model, batch), **kwargs) as tracer:
                with tracer.invoke(inputs):
                    saved = nnsight.save({})
                    analysis.trace_generate(model, batch, tracer, saved)
                with tracer.invoke():  # one saved dict: a detached job's result holds only "saved"
                    saved["generated"] = tracer.result
        if backend is not None and not backend.blocking:
            return None
        return {k: _to_cpu(v) for k, v in saved.items()}
    compact = transfer_plan(analysis, backend)
    with torch.inference_mode():
        with model.lm.trace(inputs, **kwargs) as tracer:
            out = analysis.trace(model, batch)
            for key, dtype in compact:  # vector-valued results travel in --transfer-dtype
                out[key] = out[key].to(dtype)
            saved = nnsight.save(out)
            if not analysis.needs_model_output:
                tracer.stop()
    if backend is not None and not backend.blocking:
        return None
    return restore_dtypes({k: _to_cpu(v) for k, v in saved.items()})


def shippable(analysis: Analysis) -> Analysis:
    """The analysis as a request ships it: a shallow copy without the attributes its class
    names in ``local_only`` (data used only before or after the trace, e.g. translation-lens'
    dictionaries: 2.2 MB of CC-CEDICT in every request otherwise), or the analysis itself."""
    import copy

    names = getattr(type(analysis), "local_only", ())
    if not names:
        return analysis
    slim = copy.copy(analysis)
    for name in names:
        setattr(slim, name, None)
    return slim


#: ``--transfer-dtype`` choices.
TRANSFER_DTYPES = ("float16", "bfloat16", "float32")


def transfer_plan(analysis: Analysis, backend: Any) -> list[tuple[str, Any]]:
    """``[(saved key, torch dtype)]``: the analysis' vector-valued results (its class attribute
    ``transfer_keys``, e.g. similarity's ``vectors``) to cast inside the trace before they
    travel back from NDIF, in the backend's ``transfer_dtype`` (``--transfer-dtype``; float16
    halves the bytes of float32). Empty for local runs and for ``float32``.

    Raises:
        HubError: an unknown ``transfer_dtype``.
    """
    import torch

    name = getattr(backend, "transfer_dtype", None) if backend is not None else None
    if name is None or name == "float32":
        return []
    if name not in TRANSFER_DTYPES:
        from hubclient.errors import HubError

        raise HubError(f"--transfer-dtype {name!r}: choose {', '.join(TRANSFER_DTYPES)}")
    dtype = getattr(torch, name)
    return [(key, dtype) for key in getattr(analysis, "transfer_keys", ())]


def restore_dtypes(saved: dict[str, Any]) -> dict[str, Any]:
    """Results that travelled in float16/bfloat16 back to float32 (rows are built from float32
    as in a local run; the values keep the rounding of the transfer dtype: relative error at
    most 2^-11 for float16, 2^-8 for bfloat16)."""
    import torch

    out = {}
    for key, value in saved.items():
        if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
            value = value.float()
        out[key] = value
    return out


def _to_cpu(value: Any) -> Any:
    import torch

    return value.detach().cpu() if isinstance(value, torch.Tensor) else value
