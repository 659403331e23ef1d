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

The shorter way, used by task-lens, code-lens, arithmetic-lens and media-lens: options that
inherit :class:`LensChoice`, an analysis that inherits :class:`LensBatches` (its
``make_batches``), and plot titles through :func:`lens_words`. Which analyses take which lens:
the table of docs/lenses.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hubclient.science.lens import LENS_LABELS, check_lens_choice, describe_lens, lens_spec, norm_label
from hubclient.science.patchscope import DEFAULT_PLACEHOLDER, DEFAULT_PROMPT, extend_batch, target_tokens


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


def patch_batches(analysis: Any, model: Any, tokens: list[list[int]], batch_size: int, extras: "list[Any] | None" = None) -> Any:
    """``make_batches`` for ``--lens patchscope``: the prompts' usual batches (positions from
    ``analysis.token_positions``; with image/audio ``extras``, the processor tensors joined as
    the runner joins them), each with its target-prompt copies
    (:func:`hubclient.science.patchscope.extend_batch`: per-token processor tensors get zero
    rows for the copies, per-medium ones stay); ``None`` for the other lenses (the runner's
    default batching).

    Warns (``warnings.warn``, one ``warning:`` line in the CLI) when the largest batch runs more
    than :data:`COPY_WARN_TOKENS` token positions: the copies are ``(L+1) ×`` selected rows, each
    as wide as the batch (docs/lenses.md, "cost").

    Raises:
        HubError: ``batch_size`` < 1; see :func:`hubclient.science.patchscope.target_tokens`.
    """
    o = analysis.options
    if getattr(o, "lens", "logit") != "patchscope":
        return None
    from hubclient.exec.batching import make_batches
    from hubclient.exec.multimodal import PER_TOKEN

    if getattr(analysis, "lens_patch", None) is None:
        analysis.lens_patch = target_tokens(model.tokenizer, o.patch_prompt, o.patch_placeholder)
    positions = []
    for i, ids in enumerate(tokens):
        positions.append(analysis.token_positions(ids, i))
    out = []
    n_layers = model.n_layers + 1
    for batch in make_batches(tokens, positions, batch_size, model.tokenizer.pad_token_id, extras):
        out.append(extend_batch(batch, analysis.lens_patch[0], analysis.lens_patch[1], n_layers, model.tokenizer.pad_token_id, PER_TOKEN))
    warn_copy_cost(out, n_layers)
    return out


#: Token positions (rows × width) of one patchscope forward pass above which
#: :func:`patch_batches` warns: 2^20, e.g. 1,000 copies of a 1,000-token media prompt.
COPY_WARN_TOKENS = 1 << 20


def warn_copy_cost(batches: list[Any], n_layers: int) -> None:
    """Warn when the largest patchscope batch runs more than :data:`COPY_WARN_TOKENS` token
    positions (``rows × width``, ``rows`` = prompts + ``n_layers`` × selected rows), naming its
    size and ``--batch-size``."""
    import warnings

    worst = None
    for batch in batches:
        rows, width = int(batch.input_ids.shape[0]), int(batch.input_ids.shape[1])
        if worst is None or rows * width > worst[0] * worst[1]:
            worst = (rows, width, len(batch.prompt_index), int(batch.row_batch.shape[0]))
    if worst is None or worst[0] * worst[1] <= COPY_WARN_TOKENS:
        return
    rows, width, prompts, selected = worst
    warnings.warn(
        f"--lens patchscope: the largest batch runs {rows:,} rows of {width:,} tokens ({prompts} prompt(s) and "
        f"{n_layers} layers x {selected:,} positions = {rows - prompts:,} target-prompt copies), "
        f"{rows / max(prompts, 1):,.0f} times the rows of the logit lens; lower --batch-size (1: one prompt per forward pass), "
        "or with image/audio prompts read fewer media positions with --max-positions N, if it runs out of memory (docs/lenses.md, patchscope cost)",
        stacklevel=2,
    )


def lens_manifest(analysis: Any) -> dict[str, Any]:
    """``{"lens": {...}}`` for ``describe_run`` once :func:`prepare_lens` ran (else ``{}``)."""
    block = getattr(analysis, "lens_block", None)
    return {"lens": block} if block else {}


@dataclass
class LensChoice:
    """The ``--lens`` fields of an analysis' options (recorded in its manifest); an options
    dataclass inherits them.

    Attributes:
        lens: ``logit`` (default), ``tuned`` (Belrose et al. 2023; needs ``tuned_lens``) or
            ``patchscope`` (Ghandeharioun et al. 2024); docs/lenses.md.
        tuned_lens: folder of a tuned lens (``config.json`` + ``params.pt``).
        patch_prompt / patch_placeholder: the patchscope's target prompt and the token whose
            state is replaced (:mod:`hubclient.science.patchscope`).
    """

    lens: str = "logit"
    tuned_lens: "str | None" = None
    patch_prompt: str = DEFAULT_PROMPT
    patch_placeholder: str = DEFAULT_PLACEHOLDER


class LensBatches:
    """Mixin of an :class:`~hubclient.analysis.Analysis` that takes ``--lens``: its
    ``make_batches`` and ``make_media_batches`` are :func:`patch_batches` (the runner's
    batches, with the patchscope's target-prompt copies under ``--lens patchscope``)."""

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> Any:
        """See :func:`patch_batches`."""
        return patch_batches(self, model, tokens, batch_size)

    def make_media_batches(self, model: Any, tokens: list[list[int]], batch_size: int, extras: list[Any]) -> Any:
        """See :func:`patch_batches` (image/audio prompts: ``extras`` their processor tensors)."""
        return patch_batches(self, model, tokens, batch_size, extras)


class PromptRows:
    """Mixin of an analysis that reads a list of rows per prompt: ``self.rows_of[prompt]`` holds
    objects with a ``position`` (a token index of that prompt), in reading order (repeats
    allowed). Gives the runner's ``positions`` and the batch's ``(prompt, row)`` pairs in the
    runner's row order; ``rows_name`` names the rows in the consistency error."""

    rows_name = "rows"

    def positions(self, n_tokens: int, prompt_index: int) -> list[int]:
        """Token positions of the prompt's rows, in row order."""
        out = []
        for row in self.rows_of[prompt_index]:
            out.append(row.position)
        return out

    def _batch_rows(self, batch: Any) -> list[tuple[int, Any]]:
        """``(prompt, row)`` for each selected row of ``batch``, in the runner's row order.

        Raises:
            RuntimeError: the batch selects another number of rows than ``rows_of`` lists
                (a batching bug, not bad input).
        """
        out = []
        for prompt in batch.prompt_index:
            for row in self.rows_of[prompt]:
                out.append((prompt, row))
        if len(out) != len(batch.row_position):
            raise RuntimeError(f"batch rows do not match the {self.rows_name}")
        return out


def lens_words(options: "dict[str, Any] | None", default_norm: Any = True) -> str:
    """The lens as plot titles name it, from a manifest's options: ``"logit lens, final norm"``
    (the final-norm mode, ``default_norm`` when the options lack it), ``"tuned lens"`` or
    ``"patchscope lens"``."""
    options = options or {}
    lens = options.get("lens") or "logit"
    if lens == "logit":
        return f"logit lens, {norm_label(options.get('final_norm', default_norm))}"
    return LENS_LABELS.get(lens, lens).lower()
