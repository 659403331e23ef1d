"""``--lens logit|tuned|patchscope`` for any lens analysis: the few calls an analysis makes
(docs/lenses.md).

An analysis whose options carry ``lens``, ``tuned_lens``, ``patch_prompt`` and
``patch_placeholder`` (see :class:`analyses.logit_lens.LensOptions`) calls

* :func:`init_lens` in ``__init__`` (checks the choice, raises :class:`HubError`),
* :func:`prepare_lens` in ``prepare`` (loads the tuned lens / tokenises the target prompt),
* :func:`patch_batches` from ``make_batches`` (``None`` unless ``--lens patchscope``),
* passes ``analysis.lens_spec`` as ``lens=`` to :func:`hubclient.science.lens.decode_layers`
  (or :func:`hubclient.science.probes.group_probabilities`) in its trace,
* and adds :func:`lens_manifest` to ``describe_run``.
"""

from __future__ import annotations

from typing import Any

from hubclient.science.lens import check_lens_choice, describe_lens, lens_spec
from hubclient.science.patchscope import extend_batch, target_tokens


def init_lens(analysis: Any) -> None:
    """Check the analysis' ``--lens`` options (:func:`hubclient.science.lens.check_lens_choice`)
    and reset its lens state.

    Raises:
        HubError: see :func:`hubclient.science.lens.check_lens_choice`.
    """
    o = analysis.options
    check_lens_choice(getattr(o, "lens", "logit"), getattr(o, "tuned_lens", None), o.final_norm,
                      getattr(o, "patch_prompt", None), getattr(o, "patch_placeholder", None))
    analysis.lens_spec = None
    analysis.lens_patch = None
    analysis.lens_block = {}


def prepare_lens(analysis: Any, model: Any) -> None:
    """Load what the lens needs from the model: the tuned lens' tensors (checked against the
    model) or the patchscope's target tokens; fill the manifest block.

    Raises:
        HubError: a tuned lens for another model, a placeholder that is not one token.
    """
    o = analysis.options
    lens = getattr(o, "lens", "logit")
    analysis.lens_spec = lens_spec(model, lens, getattr(o, "tuned_lens", None))
    if lens == "patchscope":
        analysis.lens_patch = target_tokens(model.tokenizer, o.patch_prompt, o.patch_placeholder)
    analysis.lens_block = describe_lens(model, lens, getattr(o, "tuned_lens", None), analysis.lens_patch)


def patch_batches(analysis: Any, model: Any, tokens: list[list[int]], batch_size: int) -> Any:
    """``make_batches`` for ``--lens patchscope``: the prompts' usual batches (positions from
    ``analysis.token_positions``), each with its target-prompt copies
    (:func:`hubclient.science.patchscope.extend_batch`); ``None`` for the other lenses (the
    runner's default batching)."""
    o = analysis.options
    if getattr(o, "lens", "logit") != "patchscope":
        return None
    from hubclient.exec.batching import make_batches

    if getattr(analysis, "lens_patch", None) is None:
        analysis.lens_patch = target_tokens(model.tokenizer, o.patch_prompt, o.patch_placeholder)
    positions = []
    for i, ids in enumerate(tokens):
        positions.append(analysis.token_positions(ids, i))
    out = []
    for batch in make_batches(tokens, positions, batch_size, model.tokenizer.pad_token_id):
        out.append(extend_batch(batch, analysis.lens_patch[0], analysis.lens_patch[1], model.n_layers + 1, model.tokenizer.pad_token_id))
    return out


def lens_manifest(analysis: Any) -> dict[str, Any]:
    """``{"lens": {...}}`` for ``describe_run`` once :func:`prepare_lens` ran (else ``{}``)."""
    block = getattr(analysis, "lens_block", None)
    return {"lens": block} if block else {}
