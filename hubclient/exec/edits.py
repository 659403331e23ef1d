"""Intervention mechanics shared by ``hub intervene …``: sites, steering vectors, adding a
vector inside ``generate``, activation patching inside ``trace``, and the run folder of an
intervention.

Every edit here is an nnsight edit written inside ``model.lm.trace(...)`` or
``model.lm.generate(...)``; both are opened in exactly one place each (:func:`open_trace`,
:func:`generate_with_edits`) so that ``remote=...`` can be passed there later and the same edits run
on NDIF. Inside the bodies only plain ``for`` loops are used (a list comprehension ends an
nnsight 0.8 trace body silently).

Sites (where a hidden state is read or edited), with the project's layer convention:

* ``resid``: the residual stream; layer 0 = input of block 1 (embeddings), layer ``l`` =
  output of block ``l`` (before the final norm), ``[batch, seq, d_model]``;
* ``attn``: the output of block ``l``'s attention module (before any post-attention norm;
  BLOOM's attention module adds the residual itself, so there it includes the residual);
* ``mlp``: the output of block ``l``'s MLP down projection (the MLP's contribution, before any
  post-MLP norm such as Gemma's).

References: ActAdd, Turner et al. 2023 ("Steering Language Models With Activation
Engineering", arXiv 2308.10248); activation patching, Meng et al. 2022 (causal tracing) and
Heimersheim & Nanda 2024 ("How to use and interpret activation patching", arXiv 2404.15255);
cross-lingual steering, Wu et al. 2024 (semantic hub, Sec. 6).
"""

from __future__ import annotations

import math
import warnings
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from hubclient.models.arch import get_module
from hubclient.errors import HubError
from hubclient.exec.batching import right_pad

if TYPE_CHECKING:
    import torch

    from hubclient.analysis import Analysis
    from hubclient.models.loading import HubModel
    from hubclient.run.lifecycle import RunConfig
    from hubclient.run.folder import RunDir

SITES = ("resid", "attn", "mlp")
from hubclient.models.arch import ARCHITECTURES as _ARCHITECTURES  # noqa: E402

#: Deprecated: read ``model.arch.attention`` (``ArchSpec.attention``). The attention module
#: inside a decoder block for the families where it is not ``self_attn``, derived from the table.
ATTENTION = {family: spec.attention for family, spec in _ARCHITECTURES.items() if spec.attention != "self_attn"}


# --------------------------------------------------------------------------- parsing options


def parse_numbers(text: str, name: str, integer: bool) -> list[float] | list[int]:
    """Parse a list/range option: ``5``, ``2,4,8``, ``0:8`` (inclusive), ``0:8:2`` (inclusive,
    step 2), or a mix ``0,4:6``. Values keep their first-seen order; duplicates are dropped.

    Raises:
        HubError: an empty item, a value that is not a number (an integer where ``integer``), a
            zero or negative step.
    """
    out: list[Any] = []
    cast = int if integer else float
    kind = "an integer" if integer else "a number"
    text = str(text).strip()
    if not text:
        raise HubError(f"--{name} is empty; give {kind}, a list such as 1,2,4 or a range such as 0:8:2")
    for item in text.split(","):
        item = item.strip()
        parts = item.split(":") if ":" in item.lstrip("-") else [item]
        try:
            values = [cast(p) for p in parts]
        except ValueError:
            raise HubError(f"--{name} value {item!r} is not {kind}; use e.g. 4, 2,4,8 or 0:8:2") from None
        for v in values:
            if not integer and not math.isfinite(v):
                raise HubError(f"--{name} value {item!r} is not a finite number")
        if len(values) == 1:
            expanded = values
        elif len(values) in (2, 3):
            start, stop = values[0], values[1]
            step = values[2] if len(values) == 3 else cast(1)
            if step <= 0:
                raise HubError(f"--{name} range {item!r} needs a positive step")
            expanded, k = [], 0
            while start + k * step <= stop + (1e-9 if not integer else 0):
                expanded.append(cast(round(start + k * step, 10)) if not integer else start + k * step)
                k += 1
            if not expanded:
                raise HubError(f"--{name} range {item!r} is empty (start > stop)")
        else:
            raise HubError(f"--{name} item {item!r} is not a value or a start:stop[:step] range")
        for v in expanded:
            if v not in out:
                out.append(v)
    return out


def parse_layers(text: str, model: "HubModel", site: str = "resid") -> list[int]:
    """Layers for ``site``: ``all`` or a list/range (:func:`parse_numbers`); ``resid`` has
    layers ``0..L`` (0 = embeddings), ``attn``/``mlp`` blocks ``1..L``.

    Raises:
        HubError: a layer outside the model's range (the message gives the range).
    """
    low = 0 if site == "resid" else 1
    high = model.n_layers
    if str(text).strip() == "all":
        return list(range(low, high + 1))
    layers = parse_numbers(text, "layer", integer=True)
    for layer in layers:
        if not low <= layer <= high:
            raise HubError(f"--layer {layer} is out of range: this model has {site} layers {low}..{high}" + (" (0 = embeddings)" if low == 0 else ""))
    return sorted(layers)


def check_site(site: str) -> str:
    """Validate ``--site``. Raises HubError for anything but resid, attn or mlp."""
    if site not in SITES:
        raise HubError(f"unknown --site {site!r}; choose one of {', '.join(SITES)}")
    return site


# --------------------------------------------------------------------------- trace / generate


def open_trace(model: "HubModel", inputs: dict[str, Any]) -> Any:
    """The one place an intervention opens ``model.lm.trace``; use as ``with open_trace(...) as
    tracer:`` inside ``torch.inference_mode()`` (nnsight compiles the ``with`` body from the
    caller's frame, so this returns the tracer context rather than wrapping it). Generation is
    opened in one place too, :func:`generate_with_edits` (``model.lm.generate`` captures its
    body when called, so it cannot be wrapped in a helper).

    Args:
        inputs: ``input_ids`` / ``attention_mask``, ``[batch, seq]``, already on the device.
    """
    return model.lm.trace(inputs)


def site_value(model: "HubModel", site: str, layer: int) -> Any:
    """The hidden state at ``site`` / ``layer`` as an nnsight proxy, ``[batch, seq, d_model]``.

    Use inside a trace; reading and in-place slice assignment both work (for a family whose
    blocks flatten the tokens before the MLP, ``ArchSpec.mlp_flat_tokens`` (OPT), the ``mlp``
    value is a ``[batch, seq, d_model]`` view of the module's ``[batch * seq, d_model]`` output,
    so slice assignment still edits the model; its shape comes from the block's input, so read
    such a block's ``mlp`` site before anything else inside that block, or nnsight raises
    ``OutOfOrderError``). Layers follow the project convention (see the
    module docstring). Every module comes from the architecture table (``model.arch``):
    ``resid`` the decoder blocks, ``attn`` ``ArchSpec.attention``, ``mlp``
    ``ArchSpec.mlp_output`` (default the ``mlp_down`` projection).

    Raises:
        HubError: an unknown ``site`` or a ``layer`` outside the site's range (``0..L`` for
            ``resid``, ``1..L`` for ``attn``/``mlp``).
    """
    layers = model.layers
    check_site(site)
    low = 0 if site == "resid" else 1
    if not low <= layer <= len(layers):
        raise HubError(f"{site} layer {layer} is out of range: this model has {site} layers {low}..{len(layers)}")
    if site == "resid":
        value = layers[0].input if layer == 0 else layers[layer - 1].output
        return value[0] if isinstance(value, tuple) else value
    block = layers[layer - 1]
    if site == "attn":
        value = get_module(block, model.arch.attention).output
        return value[0] if isinstance(value, tuple) else value
    shape = None
    if model.arch.mlp_flat_tokens:
        block_input = block.input  # read before the MLP runs (forward order)
        block_input = block_input[0] if isinstance(block_input, tuple) else block_input
        shape = (block_input.shape[0], block_input.shape[1], -1)
    value = get_module(block, model.arch.mlp_output_path).output
    value = value[0] if isinstance(value, tuple) else value
    return value.view(shape) if shape is not None else value


# --------------------------------------------------------------------------- padding


def left_pad(tokens: list[list[int]], pad_id: int) -> tuple[dict[str, "torch.Tensor"], list[int]]:
    """Left-padded inputs for generation and each row's offset (pads before its first token):
    prompt position ``p`` of row ``b`` is column ``offsets[b] + p``."""
    import torch

    width = max(len(t) for t in tokens)
    ids = torch.full((len(tokens), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tokens), width), dtype=torch.long)
    offsets = []
    for b, t in enumerate(tokens):
        off = width - len(t)
        ids[b, off:] = torch.tensor(t, dtype=torch.long)
        mask[b, off:] = 1
        offsets.append(off)
    return {"input_ids": ids, "attention_mask": mask}, offsets


# --------------------------------------------------------------------------- steering vectors


def contrast_tokens(model: "HubModel", positive: str, negative: str) -> tuple[list[int], list[int], int]:
    """Token ids of two contrast prompts, the shorter padded at the end to the longer's length.

    ActAdd's rule (Turner et al. 2023, Sec. 3): the prompts are aligned token by token from the
    start (BOS included) and the shorter one is padded at its end with the space token (a
    single-token ``" "``), or with the tokenizer's pad token where a space is no single token.

    Returns:
        (positive ids, negative ids, number of pads added).

    Raises:
        HubError: an empty contrast prompt.
    """
    from hubclient.exec.batching import tokenize

    for label, text in (("--positive", positive), ("--negative", negative)):
        if not text or not text.strip():
            raise HubError(f"{label} is empty; give a contrast prompt such as 'Good' / 'Bad'")
    pos, neg = tokenize(model, [positive, negative])
    space = model.tokenizer(" ", add_special_tokens=False)["input_ids"]
    pad = space[0] if len(space) == 1 else model.tokenizer.pad_token_id
    n = max(len(pos), len(neg))
    added = 2 * n - len(pos) - len(neg)
    return pos + [pad] * (n - len(pos)), neg + [pad] * (n - len(neg)), added


def layer_states(model: "HubModel", tokens: list[list[int]], layers: list[int], select: Any) -> dict[int, "torch.Tensor"]:
    """Run ``tokens`` (right-padded) in one trace and keep ``select(hidden)`` at each of
    ``layers``; the forward pass stops after the last one.

    Args:
        select: maps the residual stream ``[batch, seq, d_model]`` of one layer to what is kept.

    Returns:
        layer -> float32 CPU tensor.
    """
    import nnsight
    import torch

    inputs = {k: v.to(model.device) for k, v in right_pad(tokens, model.tokenizer.pad_token_id).items()}
    wanted = set(layers)
    with torch.inference_mode():
        with open_trace(model, inputs) as tracer:
            saved = nnsight.save({})
            for layer, hidden in model.hidden_states(last=max(layers)):
                if layer in wanted:
                    saved[layer] = select(hidden).float()
            tracer.stop()
    return {layer: saved[layer].detach().cpu() for layer in layers}


def steering_vectors(model: "HubModel", positive: str, negative: str, layers: list[int]) -> dict[int, "torch.Tensor"]:
    """ActAdd steering vectors ``V_l = h_l(positive) - h_l(negative)`` for each layer.

    Both contrast prompts run in one trace (aligned and padded by :func:`contrast_tokens`);
    the difference is taken position by position (Turner et al. 2023, Eq. 1), so
    ``V_l`` is ``[k, d_model]`` (``k`` = padded token count; row 0 is BOS, usually zero).

    Returns:
        layer -> float32 CPU tensor ``[k, d_model]``.

    Raises:
        HubError: an empty contrast prompt.
    """
    pos, neg = contrast_tokens(model, positive, negative)[:2]
    return layer_states(model, [pos, neg], layers, lambda hidden: hidden[0] - hidden[1])


def last_token_states(model: "HubModel", texts: list[str], layers: list[int]) -> dict[int, "torch.Tensor"]:
    """Residual stream at each text's last token, ``layer -> [len(texts), d_model]`` (float32)."""
    import torch

    from hubclient.exec.batching import tokenize

    tokens = tokenize(model, texts)
    last = torch.tensor([len(t) - 1 for t in tokens], device=model.device)
    rows = torch.arange(len(tokens), device=model.device)
    return layer_states(model, tokens, layers, lambda hidden: hidden[rows, last])


# --------------------------------------------------------------------------- generation with edits


@dataclass
class AddEdit:
    """Add ``coeff * vector`` to the residual stream of one batch row at one layer.

    Attributes:
        layer: residual layer (0 = embeddings, ``l`` = output of block ``l``).
        start: first prompt position edited (unpadded, 0 = BOS); ignored when ``every_step``.
        vector: ``[k, d_model]``: row ``i`` is added at prompt position ``start + i`` in the
            prompt's forward pass; with ``every_step``, ``[d_model]`` added at every position
            of the prompt and of every generated token.
        coeff: the coefficient ``c``.
        every_step: add at all positions, prompt and generated tokens alike.
    """

    layer: int
    start: int
    vector: "torch.Tensor"
    coeff: float
    every_step: bool = False


@dataclass
class Generation:
    """Output of :func:`generate_with_edits` for one batch.

    Attributes:
        new_tokens: generated ids per row (up to and excluding the first EOS).
        texts: decoded continuations (special tokens skipped).
        first_logprobs: ``[batch, n_sets]`` log-probability mass of each token set at the first
            generated position (``log sum_{t in set} p(t)``), or ``None`` without sets.
    """

    new_tokens: list[list[int]]
    texts: list[str]
    first_logprobs: Any = None


def generate_with_edits(
    model: "HubModel",
    tokens: list[list[int]],
    edits: list[list[AddEdit]],
    *,
    max_new_tokens: int,
    sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    token_sets: list[list[int]] | None = None,
) -> Generation:
    """Generate continuations of a batch of prompts, each row with its own additive edits.

    The prompts are left-padded (generation needs the last column to be every row's last
    token); edits address unpadded prompt positions and are shifted by each row's padding.
    Edits without ``every_step`` act in the prompt's forward pass only (the model then reads
    the edited positions through its KV cache at every step, as in ActAdd); ``every_step``
    edits run in every step through ``tracer.iter[:]``.

    Args:
        tokens: prompt ids per row (with BOS).
        edits: per row, the edits to apply (empty list = unsteered row).
        max_new_tokens: tokens to generate (>= 1).
        sample: sample (``torch.manual_seed(seed)`` first) instead of greedy decoding; with
            ``sample`` off, generation is deterministic.
        temperature: sampling temperature (> 0).
        token_sets: token-id sets whose probability mass at the first generated position is
            returned (e.g. positive / negative sentiment words).

    Raises:
        HubError: ``max_new_tokens`` < 1, a non-positive temperature, or an edit position past
            the end of its prompt.
    """
    import nnsight
    import torch

    if max_new_tokens < 1:
        raise HubError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if sample and not temperature > 0:
        raise HubError(f"--temperature must be positive, got {temperature}")
    for row, row_edits in enumerate(edits):
        for e in row_edits:
            if not e.every_step and e.start + e.vector.shape[0] > len(tokens[row]):
                raise HubError(
                    f"the steering vector covers positions {e.start}..{e.start + e.vector.shape[0] - 1}, beyond the "
                    f"prompt's {len(tokens[row])} tokens; use a later --positions, 'all', or longer prompts"
                )
    pad = model.tokenizer.pad_token_id
    inputs, offsets = left_pad(tokens, pad)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    width = inputs["input_ids"].shape[1]
    flags = {e.every_step for row_edits in edits for e in row_edits}
    if len(flags) > 1:
        raise ValueError("one generate batch cannot mix every_step edits with prompt-position edits")
    every = flags == {True}
    by_layer: dict[int, list[tuple[int, AddEdit]]] = {}
    for row, row_edits in enumerate(edits):
        for e in row_edits:
            by_layer.setdefault(e.layer, []).append((row, e))
    order = sorted(by_layer)
    dtype = next(model.torch_model.parameters()).dtype
    prepared: dict[int, list[tuple[int, int, Any]]] = {}
    for layer in order:
        prepared[layer] = []
        for row, e in by_layer[layer]:
            delta = (e.coeff * e.vector.float()).to(device=model.device, dtype=dtype)
            prepared[layer].append((row, offsets[row] + e.start, delta))
    sets = [torch.tensor(s, dtype=torch.long, device=model.device) for s in (token_sets or [])]
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=pad)
    if sample:
        kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
        torch.manual_seed(seed)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)

    with torch.inference_mode(), warnings.catch_warnings():
        # an open tracer.iter[:] loop ends at the last step by design; nnsight warns about it
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        with model.lm.generate(**kwargs) as tracer:  # the one generate call of hub intervene
            with tracer.invoke(inputs):
                scores = nnsight.save([])
                if every:
                    for _step in tracer.iter[:]:
                        _apply_edits(model, order, prepared, every_step=True)
                        scores.append(_set_logprobs(model, sets))
                else:
                    _apply_edits(model, order, prepared, every_step=False)
                    scores.append(_set_logprobs(model, sets))
            with tracer.invoke():
                result = nnsight.save(tracer.result)

    result = result.detach().cpu()
    eos = model.tokenizer.eos_token_id
    new_tokens, texts = [], []
    for row in range(len(tokens)):
        ids = []
        for t in result[row, width:].tolist():
            if t == eos:  # generate pads a finished row after its EOS
                break
            ids.append(t)
        new_tokens.append(ids)
        texts.append(model.tokenizer.decode(ids, skip_special_tokens=True))
    first = scores[0].detach().cpu() if sets else None
    return Generation(new_tokens=new_tokens, texts=texts, first_logprobs=first)


def _apply_edits(model: "HubModel", order: list[int], prepared: dict[int, list[tuple[int, int, Any]]], every_step: bool) -> None:
    """Inside a generate body: add each row's deltas at its layer (forward order)."""
    for layer in order:
        hidden = site_value(model, "resid", layer)
        for row, column, delta in prepared[layer]:
            if every_step:
                hidden[row, :, :] += delta
            else:
                hidden[row, column : column + delta.shape[0], :] += delta


def _set_logprobs(model: "HubModel", sets: list[Any]) -> Any:
    """Inside a trace: ``[batch, n_sets]`` log-probability mass of each token set at the last
    column of the model's logits (``log sum_{t in S} softmax(z)_t``)."""
    import torch

    if not sets:
        return torch.zeros(1)
    logprobs = model.lm.output.logits[:, -1, :].float().log_softmax(-1)
    columns = []
    for ids in sets:
        columns.append(torch.logsumexp(logprobs[:, ids], dim=-1))
    return torch.stack(columns, dim=-1)


# --------------------------------------------------------------------------- activation patching


@dataclass
class PatchResult:
    """Reduced final-position outputs of one patching batch (rows: source, clean target, cells).

    Attributes:
        token_logprobs: ``[rows, n_tokens]`` log-probabilities of the followed tokens.
        kl: ``[rows]`` ``KL(p_clean || p_row)`` in nats at the measured position.
        top_ids / top_probs: ``[rows]`` the row's most likely next token and its probability.
    """

    token_logprobs: "torch.Tensor"
    kl: "torch.Tensor"
    top_ids: "torch.Tensor"
    top_probs: "torch.Tensor"


def patch_batch(
    model: "HubModel",
    source: list[int],
    target: list[int],
    cells: list[list[tuple[int, int, int]]],
    site: str,
    token_ids: list[int],
) -> PatchResult:
    """Patch source activations into copies of the target prompt, one copy per cell, in one trace.

    The batch is ``[source, target (clean), target patched by cells[0], …]``, right-padded so
    every token keeps its own position. At each edited ``(layer, target_position,
    source_position)`` of a cell, the row's hidden state at ``site`` is replaced by the source
    row's: ``h[row, t] <- h[source, s]`` (in the same forward pass: rows never see each other, so
    the source row is the clean source run). The outputs are read at each row's last token.

    Args:
        source / target: token ids (with BOS).
        cells: per patched row, its list of ``(layer, target_position, source_position)``; one
            cell may edit several layers/positions at once.
        site: ``resid``, ``attn`` or ``mlp`` (see the module docstring).
        token_ids: tokens whose log-probabilities are returned.

    Returns:
        :class:`PatchResult` with ``2 + len(cells)`` rows.
    """
    import nnsight
    import torch

    tokens = [source, target]
    for _ in cells:
        tokens.append(target)
    inputs = {k: v.to(model.device) for k, v in right_pad(tokens, model.tokenizer.pad_token_id).items()}
    by_layer: dict[int, list[tuple[int, int, int]]] = {}
    for i, cell in enumerate(cells):
        for layer, t, s in cell:
            by_layer.setdefault(layer, []).append((2 + i, t, s))
    order = sorted(by_layer)
    last = torch.tensor([len(t) - 1 for t in tokens], device=model.device)
    rows = torch.arange(len(tokens), device=model.device)
    ids = torch.tensor(token_ids or [0], dtype=torch.long, device=model.device)

    with torch.inference_mode():
        with open_trace(model, inputs):
            for layer in order:
                hidden = site_value(model, site, layer)
                for row, t, s in by_layer[layer]:
                    hidden[row, t, :] = hidden[0, s, :].clone()
            logprobs = model.lm.output.logits[rows, last].float().log_softmax(-1)
            clean = logprobs[1]
            kl = (clean.exp() * (clean - logprobs)).sum(-1)
            top = logprobs.max(-1)
            saved = nnsight.save({"tok": logprobs[:, ids], "kl": kl, "top_ids": top.indices, "top_probs": top.values.exp()})
    out = {k: v.detach().cpu() for k, v in saved.items()}
    if not token_ids:
        out["tok"] = out["tok"][:, :0]
    return PatchResult(token_logprobs=out["tok"], kl=out["kl"], top_ids=out["top_ids"], top_probs=out["top_probs"])


# --------------------------------------------------------------------------- run folders


def load_for(config: "RunConfig", model: Any = None) -> "HubModel":
    """The model for an intervention run (``model`` when given, else ``config.model`` loaded).

    Raises:
        HubError: ``--remote`` (interventions run locally for now).
    """
    from hubclient.models.loading import load_model

    if getattr(config, "remote", False):
        raise HubError("hub intervene runs locally for now (its edits are remote-ready nnsight edits); drop --remote")
    return model if model is not None else load_model(config.model, device=config.device, dtype=config.dtype)


@dataclass
class InterventionRun:
    """A run folder for an intervention's own loop: manifest, prompts, per-chunk parts, finish.

    Uses the runner's pieces (``RunDir`` parts, ``write_prompts``, ``finish_run``) so the
    folder looks like every analysis run, ``--resume`` skips finished chunks and ``hub plot``
    redraws its charts.
    """

    analysis: "Analysis"
    run: "RunDir"
    started: float
    done: set[int] = field(default_factory=set)
    plots: bool = True

    @classmethod
    def start(
        cls,
        analysis: "Analysis",
        config: "RunConfig",
        model: "HubModel",
        prompts: list[str],
        prompt_columns: dict[str, list[Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> "InterventionRun":
        """Create (or, with ``config.resume``, reopen) the run folder and write its manifest.

        Raises:
            HubError: an existing folder, or a resume whose inputs/options differ.
        """
        from hubclient.runner import _check_resume, hash_inputs, start_run, tokenize

        started = time.time()
        if config.resume:
            options = analysis.describe_options()
            run = _check_resume(config, analysis, options, hash_inputs(prompts))
            return cls(analysis, run, started, run.done_batches(list(analysis.tables)), getattr(config, "plots", True))
        run = start_run(analysis, prompts, tokenize(model, prompts), config, model, prompt_columns, extra)
        return cls(analysis, run, started, plots=getattr(config, "plots", True))

    def write(self, chunk: int, frames: dict[str, Any]) -> None:
        """Store one chunk's rows (one Parquet part per table)."""
        self.run.write_parts(chunk, frames)

    def finish(self) -> "RunDir":
        """Merge parts, add ``finish`` tables, draw plots (unless ``--no-plots``), mark the
        manifest complete."""
        from hubclient.runner import finish_run

        return finish_run(self.analysis, self.run, self.started, plots=self.plots)

    def fail(self, exc: BaseException) -> None:
        """Mark the manifest failed/interrupted (finished chunks are kept for ``--resume``)."""
        self.run.update_manifest(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Around an intervention's loop: on an exception mark the manifest failed (or
        interrupted) and re-raise; Ctrl-C becomes a :class:`HubError` saying how to resume.
        Finished chunks stay on disk either way."""
        try:
            yield
        except BaseException as exc:
            self.fail(exc)
            if isinstance(exc, KeyboardInterrupt):
                raise HubError(f"interrupted; finished {what} are kept: continue with --resume {self.run.path}") from None
            raise


def progress_bar(total: int, label: str, enabled: bool) -> Any:
    """The runner's progress display (:func:`hubclient.runner.progress_bar`), yielding ``(bar, task)``."""
    from hubclient.runner import progress_bar as runner_bar

    return runner_bar(label, total, enabled)
