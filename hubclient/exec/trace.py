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
    with torch.inference_mode():
        with model.lm.trace(inputs, **kwargs) as tracer:
            saved = nnsight.save(analysis.trace(model, batch))
            if not analysis.needs_model_output:
                tracer.stop()
    if backend is not None and not backend.blocking:
        return None
    return {k: _to_cpu(v) for k, v in saved.items()}


def _to_cpu(value: Any) -> Any:
    import torch

    return value.detach().cpu() if isinstance(value, torch.Tensor) else value
