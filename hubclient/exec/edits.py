"""Intervention mechanics shared by ``hub intervene …``: sites, steering vectors, adding a
vector inside ``generate``, activation patching inside ``trace``.

Every edit here is an nnsight edit written in an analysis' trace body, so it runs wherever the
executor runs the body (here or on NDIF, :mod:`hubclient.exec`): the trace and the generation are
opened in one place, :func:`hubclient.exec.trace.trace_batch`. Interventions are analyses
(:class:`hubclient.analysis.Analysis`): :class:`HiddenStates` reads steering vectors,
:class:`PatchCells` patches, :class:`GenerateWithEdits` generates with additive edits. Inside the
bodies only plain ``for`` loops are used (a list comprehension ends an nnsight 0.8 trace body
silently), and tensors are moved to each layer's own device.

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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.exec.batching import left_pad, right_pad, tokenize
from hubclient.models.arch import get_module

if TYPE_CHECKING:
    import torch

    from hubclient.models.loading import HubModel

SITES = ("resid", "attn", "mlp")
from hubclient.models.arch import ARCHITECTURES as _ARCHITECTURES  # noqa: E402

#: Deprecated: read ``model.arch.attention`` (``ArchSpec.attention``). The attention module
#: inside a decoder block for the families where it is not ``self_attn``, derived from the table.
ATTENTION = {family: spec.attention for family, spec in _ARCHITECTURES.items() if spec.attention != "self_attn"}


# --------------------------------------------------------------------------- parsing options


def parse_numbers(text: str, name: str, integer: bool) -> list[float] | list[int]:
    """Parse a list/range option: ``5``, ``2,4,8``, ``0:8`` (inclusive), ``0:8:2`` (inclusive,
    step 2), or a mix ``0,4:6``. Values keep their first-seen order; duplicates are dropped.
    Delegates to :func:`hubclient.inputs.ranges.parse_numbers`.

    Raises:
        HubError: an empty item, a value that is not a number (an integer where ``integer``), a
            zero or negative step.
    """
    from hubclient.inputs import ranges

    return ranges.parse_numbers(text, name, integer)


def parse_layers(text: str, model: "HubModel", site: str = "resid") -> list[int]:
    """Layers for ``site`` (:func:`hubclient.inputs.ranges.parse_layers`: ``all``, ``6``,
    ``0,4,8``, ``2-10``, ``0:8:2``, ``-1`` = the last); ``resid`` has layers ``0..L``
    (0 = embeddings), ``attn``/``mlp`` blocks ``1..L``.

    Raises:
        HubError: bad syntax or a layer outside the model's range (the message gives the range).
    """
    from hubclient.inputs import ranges

    low = 0 if site == "resid" else 1
    return ranges.parse_layers(text, low, model.n_layers, option="--layer", what=f"{site} layers")


def check_site(site: str) -> str:
    """Validate ``--site``. Raises HubError for anything but resid, attn or mlp."""
    if site not in SITES:
        raise HubError(f"unknown --site {site!r}; choose one of {', '.join(SITES)}")
    return site


# --------------------------------------------------------------------------- sites


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


def _device_tensor(value: Any, like: Any) -> Any:
    """``value`` on ``like``'s device (and dtype when floating): per-layer placement, so edits
    work on models split across devices (``device_map``)."""
    if value.is_floating_point():
        return value.to(device=like.device, dtype=like.dtype)
    return value.to(like.device)


# --------------------------------------------------------------------------- reading hidden states


class HiddenStates(Analysis):
    """Read the residual stream at some layers: the trace behind steering vectors.

    ``select="last"``: each row's hidden state at its last real token, ``[rows, d_model]``;
    ``select="diff"``: row 0 minus row 1 at every position, ``[seq, d_model]`` (ActAdd,
    Turner et al. 2023, Eq. 1). Values are float32. The forward pass stops after the last layer.

    Args:
        layers: residual layers (0 = embeddings).
        select: ``last`` or ``diff``.
    """

    name: ClassVar[str] = "hidden-states"

    def __init__(self, layers: list[int], select: str):
        super().__init__({"layers": list(layers), "select": select})
        self.layers = sorted(set(layers))
        self.select = select

    def trace(self, model: "HubModel", batch: Batch) -> dict[str, Any]:
        """Body: ``{"layer_<l>": selected float32 tensor}`` for each wanted layer."""
        out = {}
        wanted = set(self.layers)
        for layer, hidden in model.hidden_states(last=max(self.layers)):
            if layer in wanted:
                if self.select == "diff":
                    out[f"layer_{layer}"] = (hidden[0] - hidden[1]).float()
                else:
                    rows = batch.row_batch.to(hidden.device)
                    last = batch.row_position.to(hidden.device)
                    out[f"layer_{layer}"] = hidden[rows, last].float()
        return out


def _read_states(model: "HubModel", tokens: list[list[int]], layers: list[int], select: str, executor: Any = None) -> dict[int, "torch.Tensor"]:
    """Run :class:`HiddenStates` on ``tokens`` (one right-padded batch) through ``executor``
    (``None``: here) and return ``layer -> float32 CPU tensor``."""
    import torch

    from hubclient.exec.batching import make_batches
    from hubclient.exec.trace import trace_batch

    positions = []
    for ids in tokens:
        positions.append([len(ids) - 1])
    batch = make_batches(tokens, positions, len(tokens), model.tokenizer.pad_token_id)[0]
    order = batch.prompt_index
    analysis = HiddenStates(layers, select)
    saved = executor.call(model, analysis, batch) if executor is not None else trace_batch(model, analysis, batch)
    out = {}
    for layer in layers:
        value = saved[f"layer_{layer}"]
        if select == "last":  # back to input order (batches are length-sorted)
            restored = torch.empty_like(value)
            for row, prompt in enumerate(order):
                restored[prompt] = value[row]
            value = restored
        out[layer] = value
    return out


class UnembeddingRows(Analysis):
    """Read rows of ``W_U`` (the ``lm_head`` weight, ``[vocab, d_model]``): the trace behind
    unembedding steering vectors (``--vector unembed:A,B``) when the weights are not here
    (``--remote``). The body reads the weight and saves ``{"rows": [len(ids), d_model]}``
    float32; the forward pass of its one-token batch is stopped after the body.

    Args:
        ids: token ids (rows of ``W_U``).
    """

    name: ClassVar[str] = "unembedding-rows"

    def __init__(self, ids: list[int]):
        super().__init__({"ids": list(ids)})
        self.ids = list(ids)

    def trace(self, model: "HubModel", batch: Batch) -> dict[str, Any]:
        """Body: ``{"rows": W_U[ids]}`` ``[len(ids), d_model]`` float32."""
        import torch

        weight = model.lm_head.weight
        ids = torch.tensor(self.ids, dtype=torch.long).to(weight.device)
        return {"rows": weight[ids].float()}


def unembedding_rows(model: "HubModel", ids: list[int], executor: Any = None) -> "torch.Tensor":
    """``W_U[ids]`` (rows of the ``lm_head`` weight), ``[len(ids), d_model]`` float32 on the CPU:
    read here when the weights are here, else through ``executor`` (one request to NDIF).

    Raises:
        HubError: the weights are not here (``--remote``) and no executor was given.
    """
    weight = model.torch_model.get_submodule(model.arch.lm_head).weight
    if weight.device.type != "meta":
        import torch

        with torch.no_grad():
            return weight[list(ids)].float().cpu()
    if executor is None:
        raise HubError("the unembedding rows are read from the model's weights, which a --remote model does not have here; run it locally")
    from hubclient.exec.batching import make_batches

    batch = make_batches([[int(ids[0])]], [[0]], 1, model.tokenizer.pad_token_id)[0]
    return executor.call(model, UnembeddingRows(ids), batch)["rows"].float().cpu()


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
    for label, text in (("--positive", positive), ("--negative", negative)):
        if not text or not text.strip():
            raise HubError(f"{label} is empty; give a contrast prompt such as 'Good' / 'Bad'")
    pos, neg = tokenize(model, [positive, negative])
    space = model.tokenizer(" ", add_special_tokens=False)["input_ids"]
    pad = space[0] if len(space) == 1 else model.tokenizer.pad_token_id
    n = max(len(pos), len(neg))
    added = 2 * n - len(pos) - len(neg)
    return pos + [pad] * (n - len(pos)), neg + [pad] * (n - len(neg)), added


def steering_vectors(model: "HubModel", positive: str, negative: str, layers: list[int], executor: Any = None) -> dict[int, "torch.Tensor"]:
    """ActAdd steering vectors ``V_l = h_l(positive) - h_l(negative)`` for each layer.

    Both contrast prompts run in one trace (aligned and padded by :func:`contrast_tokens`);
    the difference is taken position by position (Turner et al. 2023, Eq. 1), so ``V_l`` is
    ``[k, d_model]`` (``k`` = padded token count; row 0 is BOS, usually zero).

    Args:
        executor: where the trace runs (:class:`hubclient.exec.Executor`; ``None``: here).

    Returns:
        layer -> float32 CPU tensor ``[k, d_model]``.

    Raises:
        HubError: an empty contrast prompt.
    """
    pos, neg = contrast_tokens(model, positive, negative)[:2]
    return _read_states(model, [pos, neg], layers, "diff", executor)


def last_token_states(model: "HubModel", texts: list[str], layers: list[int], executor: Any = None) -> dict[int, "torch.Tensor"]:
    """Residual stream at each text's last token, ``layer -> [len(texts), d_model]`` (float32,
    CPU), in the order of ``texts``.

    Args:
        executor: where the trace runs (:class:`hubclient.exec.Executor`; ``None``: here).
    """
    return _read_states(model, tokenize(model, texts), layers, "last", executor)


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
    """Decoded output of one generation batch.

    Attributes:
        new_tokens: generated ids per row (up to and excluding the first EOS).
        texts: decoded continuations (special tokens skipped).
        first_logprobs: ``[batch, n_sets]`` log-probability mass of each token set at the first
            generated position (``log sum_{t in set} p(t)``), or ``None`` without sets.
    """

    new_tokens: list[list[int]]
    texts: list[str]
    first_logprobs: Any = None


def edit_batch(
    model: "HubModel",
    index: int,
    tokens: list[list[int]],
    edits: list[list[AddEdit]],
    prompt_index: list[int] | None = None,
    seed: int | None = None,
    token_sets: list[list[int]] | None = None,
    rows: list[Any] | None = None,
) -> Batch:
    """One left-padded generation batch whose ``meta`` carries each row's edits as deltas
    ``coeff * vector`` (float32) at padded columns, ready for :meth:`GenerateWithEdits.trace_generate`.

    Args:
        index: the batch number (resume and job records use it).
        tokens: prompt ids per row (with BOS).
        edits: per row, the edits to apply (empty list = unsteered row).
        prompt_index: the global prompt of each row (default ``0..batch-1``).
        seed: sampling seed set inside the trace (so it holds on a server too), or ``None``.
        token_sets: token-id sets whose probability mass at the first generated position is
            returned (e.g. positive / negative sentiment words).
        rows: per row, what the analysis needs to label it (kept in ``meta["rows"]``).

    Raises:
        HubError: an edit position past the end of its prompt.
        ValueError: a batch that mixes ``every_step`` edits with prompt-position edits.
    """
    import torch

    for row, row_edits in enumerate(edits):
        for e in row_edits:
            if not e.every_step and e.start + e.vector.shape[0] > len(tokens[row]):
                raise HubError(
                    f"the steering vector covers positions {e.start}..{e.start + e.vector.shape[0] - 1}, beyond the "
                    f"prompt's {len(tokens[row])} tokens; use a later --positions, 'all', or longer prompts"
                )
    flags = set()
    for row_edits in edits:
        for e in row_edits:
            flags.add(e.every_step)
    if len(flags) > 1:
        raise ValueError("one generate batch cannot mix every_step edits with prompt-position edits")
    inputs, offsets = left_pad(tokens, model.tokenizer.pad_token_id)
    by_layer: dict[int, list[tuple[int, int, Any]]] = {}
    for row, row_edits in enumerate(edits):
        for e in row_edits:
            delta = (e.coeff * e.vector.float()).contiguous()
            by_layer.setdefault(e.layer, []).append((row, offsets[row] + e.start, delta))
    sets = []
    for ids in token_sets or []:
        sets.append(torch.tensor(ids, dtype=torch.long))
    empty = torch.zeros(0, dtype=torch.long)
    return Batch(
        index=index,
        prompt_index=list(prompt_index) if prompt_index is not None else list(range(len(tokens))),
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        lengths=[len(t) for t in tokens],
        row_batch=empty,
        row_position=empty,
        tokens=[list(t) for t in tokens],
        offsets=offsets,
        meta={"edits": by_layer, "order": sorted(by_layer), "every": flags == {True}, "seed": seed, "sets": sets, "rows": rows},
    )


class GenerateWithEdits(Analysis):
    """Generation whose rows each get their own additive edits (ActAdd-style steering).

    Edits without ``every_step`` act in the prompt's forward pass only (the model then reads the
    edited positions through its KV cache at every step, as in ActAdd); ``every_step`` edits run
    in every step through ``tracer.iter[:]``. Subclasses batch their units in
    :meth:`~hubclient.analysis.Analysis.make_batches` with :func:`edit_batch` and read the
    output in ``rows`` with :func:`decode_generation`.

    Args:
        options: the subclass' options.
        max_new_tokens: tokens to generate (>= 1).
        sample: sample (seeded per batch) instead of greedy decoding.
        temperature: sampling temperature (> 0).

    Raises:
        HubError: ``max_new_tokens`` < 1, a non-positive temperature.
    """

    name: ClassVar[str] = "generate"
    generates: ClassVar[bool] = True

    def __init__(self, options: Any, max_new_tokens: int, sample: bool = False, temperature: float = 1.0):
        super().__init__(options)
        if max_new_tokens < 1:
            raise HubError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
        if sample and not temperature > 0:
            raise HubError(f"--temperature must be positive, got {temperature}")
        self.max_new_tokens = max_new_tokens
        self.sample = sample
        self.temperature = temperature

    def generate_kwargs(self, model: "HubModel", batch: Batch) -> dict[str, Any]:
        """``max_new_tokens``, greedy or sampling (temperature; no top-k/top-p truncation)."""
        kwargs: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens, do_sample=self.sample, pad_token_id=model.tokenizer.pad_token_id)
        if self.sample:
            kwargs.update(temperature=self.temperature, top_k=0, top_p=1.0)
        else:
            kwargs.update(temperature=None, top_k=None, top_p=None)
        return kwargs

    def trace_generate(self, model: "HubModel", batch: Batch, tracer: Any, out: dict[str, Any]) -> None:
        """Body: seed, add each row's deltas at its layer (forward order), keep the token-set
        log-probabilities of the first generated position as ``out["scores"]``."""
        import torch

        meta = batch.meta
        if meta["seed"] is not None:
            torch.manual_seed(meta["seed"])
        out["scores"] = []
        if meta["every"]:
            for _step in tracer.iter[:]:
                _apply_edits(model, meta["order"], meta["edits"], every_step=True)
                out["scores"].append(_set_logprobs(model, meta["sets"]))
        else:
            _apply_edits(model, meta["order"], meta["edits"], every_step=False)
            out["scores"].append(_set_logprobs(model, meta["sets"]))


def decode_generation(model: "HubModel", batch: Batch, saved: dict[str, Any]) -> Generation:
    """The continuations of a generation batch: new ids up to the first EOS, decoded texts and
    the first position's token-set log-probabilities."""
    result = saved["generated"]
    width = batch.input_ids.shape[1]
    eos = model.tokenizer.eos_token_id
    new_tokens, texts = [], []
    for row in range(len(batch.tokens)):
        ids = []
        for t in result[row, width:].tolist():
            if t == eos:  # generate pads a finished row after its EOS
                break
            ids.append(t)
        new_tokens.append(ids)
        texts.append(model.tokenizer.decode(ids, skip_special_tokens=True))
    first = saved["scores"][0].detach().cpu() if batch.meta["sets"] else None
    return Generation(new_tokens=new_tokens, texts=texts, first_logprobs=first)


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
    executor: Any = None,
) -> Generation:
    """Generate continuations of one batch of prompts, each row with its own additive edits
    (a one-batch :class:`GenerateWithEdits`; see there and :func:`edit_batch`).

    Args:
        executor: where it runs (:class:`hubclient.exec.Executor`; ``None``: here).

    Raises:
        HubError: ``max_new_tokens`` < 1, a non-positive temperature, or an edit position past
            the end of its prompt.
    """
    from hubclient.exec.trace import trace_batch

    analysis = GenerateWithEdits({}, max_new_tokens, sample, temperature)
    batch = edit_batch(model, 0, tokens, edits, seed=seed if sample else None, token_sets=token_sets)
    saved = executor.call(model, analysis, batch) if executor is not None else trace_batch(model, analysis, batch)
    return decode_generation(model, batch, saved)


def _apply_edits(model: "HubModel", order: list[int], prepared: dict[int, list[tuple[int, int, Any]]], every_step: bool) -> None:
    """Inside a generate body: add each row's deltas at its layer (forward order), on the
    layer's own device and dtype."""
    for layer in order:
        hidden = site_value(model, "resid", layer)
        for row, column, delta in prepared[layer]:
            delta = _device_tensor(delta, hidden)
            if every_step:
                hidden[row, :, :] += delta
            else:
                hidden[row, column : column + delta.shape[0], :] += delta


@dataclass
class ReplaceEdit:
    """Set the residual stream of one batch row to a fixed vector at chosen prompt positions
    (pyvene ``VanillaIntervention`` with a constant source, as in Wu et al. 2024's vision
    intervention, paper-protocols.md A19), in the prompt's forward pass only.

    Attributes:
        layer: residual layer ``1..L`` (output of block ``l``; pyvene ``block_output`` of
            0-based layer ``l-1``).
        positions: unpadded prompt positions whose hidden state is replaced.
        vector: ``[d_model]``: the value written at every one of ``positions``.
    """

    layer: int
    positions: list[int]
    vector: "torch.Tensor"


def replace_meta(edits: list[list[ReplaceEdit]], offsets: list[int]) -> dict[str, Any]:
    """Batch ``meta`` for :func:`apply_replacements`: per layer, ``(row, padded columns [k]
    long, vector [d_model] float32)`` (columns = ``offsets[row] + position``), and the layers in
    forward order.

    Raises:
        HubError: a layer below 1 (layer 0 is the embeddings, not a block output).
    """
    import torch

    by_layer: dict[int, list[tuple[int, Any, Any]]] = {}
    for row, row_edits in enumerate(edits):
        for e in row_edits:
            if e.layer < 1:
                raise HubError(f"a replacement edit needs a block output, layer 1..L; got layer {e.layer}")
            columns = torch.tensor([offsets[row] + p for p in e.positions], dtype=torch.long)
            by_layer.setdefault(e.layer, []).append((row, columns, e.vector.float().reshape(-1).contiguous()))
    return {"replace": by_layer, "replace_order": sorted(by_layer)}


def apply_replacements(model: "HubModel", order: list[int], prepared: dict[int, list[tuple[int, Any, Any]]]) -> None:
    """Inside a generate body (prompt forward pass): at each layer in ``order`` (forward
    order), set ``h_l[row, columns, :] = vector`` for each prepared ``(row, columns, vector)``
    of :func:`replace_meta`, the columns and vector moved to that layer's device (and the vector
    to its dtype). Plain loops only (trace body)."""
    for layer in order:
        hidden = site_value(model, "resid", layer)
        for row, columns, vector in prepared[layer]:
            value = _device_tensor(vector, hidden)
            index = _device_tensor(columns, hidden)
            hidden[row, index, :] = value


def _set_logprobs(model: "HubModel", sets: list[Any]) -> Any:
    """Inside a trace: ``[batch, n_sets]`` log-probability mass of each token set at the last
    column of the model's logits (``log sum_{t in S} softmax(z)_t``)."""
    import torch

    if not sets:
        return torch.zeros(1)
    logprobs = model.lm.output.logits[:, -1, :].float().log_softmax(-1)
    columns = []
    for ids in sets:
        columns.append(torch.logsumexp(logprobs[:, ids.to(logprobs.device)], dim=-1))
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


def patch_cells_batch(
    model: "HubModel",
    index: int,
    source: list[int],
    target: list[int],
    cells: list[list[tuple[int, int, int]]],
    token_ids: list[int],
    prompt_index: list[int] | None = None,
    rows: Any = None,
) -> Batch:
    """One patching batch ``[source, target (clean), target patched by cells[0], …]``,
    right-padded so every token keeps its own position; ``meta`` holds the edits by layer
    ``(row, target_position, source_position)``, the followed token ids and ``rows`` (what the
    analysis needs to label the result).

    Args:
        source / target: token ids (with BOS).
        cells: per patched row, its list of ``(layer, target_position, source_position)``; one
            cell may edit several layers/positions at once.
        token_ids: tokens whose log-probabilities are returned.
        prompt_index: the global prompt index of the source and of the target.
    """
    import torch

    tokens = [source, target]
    for _ in cells:
        tokens.append(target)
    padded = right_pad(tokens, model.tokenizer.pad_token_id)
    by_layer: dict[int, list[tuple[int, int, int]]] = {}
    for i, cell in enumerate(cells):
        for layer, t, s in cell:
            by_layer.setdefault(layer, []).append((2 + i, t, s))
    src, tgt = prompt_index if prompt_index is not None else (0, 1)
    index_of = [src, tgt]
    for _ in cells:
        index_of.append(tgt)
    return Batch(
        index=index,
        prompt_index=index_of,
        input_ids=padded["input_ids"],
        attention_mask=padded["attention_mask"],
        lengths=[len(t) for t in tokens],
        row_batch=torch.arange(len(tokens)),
        row_position=torch.tensor([len(t) - 1 for t in tokens]),
        tokens=tokens,
        meta={"edits": by_layer, "order": sorted(by_layer), "token_ids": torch.tensor(list(token_ids) or [0], dtype=torch.long),
              "n_tokens": len(token_ids), "rows": rows},
    )


class PatchCells(Analysis):
    """Activation patching of ``site`` states from the source row into target copies.

    At each edited ``(layer, target_position, source_position)`` of a row the row's hidden
    state at ``site`` is replaced by the source row's, ``h[row, t] <- h[source, s]``, in the same
    forward pass (rows never see each other, so row 0 is the clean source run). Outputs are read
    at each row's last token: log-probabilities of the followed tokens, ``KL(p_clean || p_row)``
    (nats; row 1 is the clean target), the top token and its probability. Methods: Meng et al.
    2022 (causal tracing); Heimersheim & Nanda 2024 (arXiv 2404.15255).

    Args:
        options: the subclass' options.
        site: ``resid``, ``attn`` or ``mlp`` (see the module docstring).
    """

    name: ClassVar[str] = "patch-cells"
    needs_model_output: ClassVar[bool] = True

    def __init__(self, options: Any, site: str):
        super().__init__(options)
        self.site = check_site(site)

    def trace(self, model: "HubModel", batch: Batch) -> dict[str, Any]:
        """Body: patch, then reduce the final-position distributions (see the class docstring)."""
        meta = batch.meta
        for layer in meta["order"]:
            hidden = site_value(model, self.site, layer)
            for row, t, s in meta["edits"][layer]:
                hidden[row, t, :] = hidden[0, s, :].clone()
        logits = model.lm.output.logits
        rows = batch.row_batch.to(logits.device)
        last = batch.row_position.to(logits.device)
        logprobs = logits[rows, last].float().log_softmax(-1)
        clean = logprobs[1]
        kl = (clean.exp() * (clean - logprobs)).sum(-1)
        top = logprobs.max(-1)
        return {"tok": logprobs[:, meta["token_ids"].to(logprobs.device)], "kl": kl, "top_ids": top.indices, "top_probs": top.values.exp()}


def patch_result(batch: Batch, saved: dict[str, Any]) -> PatchResult:
    """The saved tensors of a :class:`PatchCells` batch as a :class:`PatchResult`."""
    tok = saved["tok"]
    if not batch.meta["n_tokens"]:
        tok = tok[:, :0]
    return PatchResult(token_logprobs=tok, kl=saved["kl"], top_ids=saved["top_ids"], top_probs=saved["top_probs"])


def patch_batch(
    model: "HubModel",
    source: list[int],
    target: list[int],
    cells: list[list[tuple[int, int, int]]],
    site: str,
    token_ids: list[int],
    executor: Any = None,
) -> PatchResult:
    """Patch source activations into copies of the target prompt, one copy per cell, in one
    trace (:func:`patch_cells_batch` + :class:`PatchCells`).

    Args:
        site: ``resid``, ``attn`` or ``mlp``.
        executor: where it runs (:class:`hubclient.exec.Executor`; ``None``: here).

    Returns:
        :class:`PatchResult` with ``2 + len(cells)`` rows.
    """
    from hubclient.exec.trace import trace_batch

    analysis = PatchCells({}, site)
    batch = patch_cells_batch(model, 0, source, target, cells, token_ids)
    saved = executor.call(model, analysis, batch) if executor is not None else trace_batch(model, analysis, batch)
    return patch_result(batch, saved)
