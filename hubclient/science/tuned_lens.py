"""The tuned lens (Belrose et al. 2023): per-layer affine translators before the logit lens.

Definition (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned
Lens", arXiv 2303.08112, Eq. 3, in the residual form of the ``tuned-lens`` package,
``tuned_lens/nn/lenses.py::TunedLens.transform_hidden``)::

    TunedLens_l(h) = softmax(W_U · norm(h + A_l h + b_l))      l = 0..L-1
    TunedLens_L(h) = softmax(W_U · norm(h))                     (the model's own output)

``A_l`` (``[d_model, d_model]``) and ``b_l`` (``[d_model]``) start at zero, so an untrained
tuned lens is the logit lens with the final norm (the package's ``TunedLens.__init__`` zeroes
``translator.weight`` and ``translator.bias``). Layer ``l`` follows hub's convention (0 =
embeddings, ``l`` = output of block ``l``), which is the package's ``idx`` into
``hidden_states[:-1]`` of transformers (``scripts/train_loop.py::Train.execute``).

Training (``tuned_lens/scripts/train_loop.py`` and ``scripts/ingredients.py`` of
AlignmentResearch/tuned-lens, read at commit ``abdac0c``; wheel 0.2.0 is the same code):

* loss per layer: ``KL(p_final || p_lens) = sum_v p_final(v) (log p_final(v) - log p_lens(v))``,
  mean over every token of the batch (``LossChoice.KL``, ``token_shift = 0``: the lens at a
  position matches the model's output at the same position), each layer's loss backpropagated
  separately, under ``torch.autocast(bfloat16)``;
* data: texts joined with the EOS token (one EOS first) and cut into chunks of exactly
  ``max_length`` tokens, the last partial chunk dropped, the chunks shuffled (``data.py::
  chunk_and_tokenize``; with a fast tokenizer every chunk starts with the special tokens, BOS
  for Gemma/Llama); ``tokens_per_step / max_length`` chunks per optimiser step (gradient
  accumulation over micro-batches of ``batch_size`` chunks);
* optimiser: SGD with Nesterov momentum 0.9, ``lr = lr_scale * (1 - momentum)`` (lr_scale 1),
  weight decay 1e-3; linear decay to 0 (``transformers.get_linear_schedule_with_warmup(opt,
  warmup, num_steps - warmup)``, warmup 0 for SGD); gradient norm clipped to 1 over all
  translators; defaults ``num_steps = 250``, ``tokens_per_step = 2**18``, ``max_length = 2048``.
  Adam (amsgrad, betas (momentum, 0.999), lr ``lr_scale * 1e-3``) is the package's other choice.

Saved format (``TunedLens.save``): a folder with ``config.json`` (``TunedLensConfig``:
``base_model_name_or_path``, ``d_model``, ``num_hidden_layers``, ``bias``,
``base_model_revision``, ``unembed_hash``, ``lens_type`` = ``"linear_tuned_lens"``) and
``params.pt``, ``torch.save`` of ``layer_translators.state_dict()``: keys ``"{l}.weight"``
(``[d_model, d_model]``, ``torch.nn.Linear`` layout: ``y = x W^T + b``) and ``"{l}.bias"`` for
``l = 0..L-1``. hub writes and reads exactly that; what hub adds (training history, held-out
KL) goes to a separate ``training.json`` so the package reads hub's lenses without warnings.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hubclient.errors import HubError

if TYPE_CHECKING:
    import torch

    from hubclient.models.loading import HubModel

#: ``lens_type`` of the package's ``TunedLensConfig`` (the only type it defines).
LENS_TYPE = "linear_tuned_lens"
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.pt"
TRAINING_FILE = "training.json"
CHECKPOINTS = "checkpoints"


# --------------------------------------------------------------------------- the lens itself


@dataclass
class TunedLensConfig:
    """The package's ``TunedLensConfig`` (``tuned_lens/nn/lenses.py``), field for field."""

    base_model_name_or_path: str
    d_model: int
    num_hidden_layers: int
    bias: bool = True
    base_model_revision: str | None = None
    unembed_hash: str | None = None
    lens_type: str = LENS_TYPE


def make_translators(d_model: int, n_layers: int, bias: bool = True, dtype: Any = None) -> "torch.nn.ModuleList":
    """``n_layers`` zero-initialised ``torch.nn.Linear(d_model, d_model)`` translators: the
    identity lens (``h + 0 h + 0``), as the package's ``TunedLens.__init__``.

    Returns:
        a ``ModuleList`` whose ``state_dict`` keys are the package's (``"0.weight"``, ``"0.bias"``…).
    """
    import torch

    out = torch.nn.ModuleList()
    for _ in range(n_layers):
        layer = torch.nn.Linear(d_model, d_model, bias=bias, dtype=dtype or torch.float32)
        with torch.no_grad():
            layer.weight.zero_()
            if bias:
                layer.bias.zero_()
        out.append(layer)
    return out


def unembed_hash(weight: "torch.Tensor") -> str:
    """The package's hash of ``W_U`` (``tuned_lens/utils.py::tensor_hash``): sha256 of numpy's
    summarised ``array_str`` at precision 1 of the float32 matrix ``[vocab, d_model]``."""
    import hashlib

    import numpy as np

    array = weight.detach().cpu().float().numpy()
    return hashlib.sha256(str.encode(np.array_str(array, precision=1))).hexdigest()


def model_config(model: "HubModel", bias: bool = True) -> TunedLensConfig:
    """The :class:`TunedLensConfig` of a fresh lens for ``model`` (with its ``W_U`` hash)."""
    d_model = int(model.describe()["d_model"])
    head = model.torch_model.get_submodule(model.arch.lm_head)
    return TunedLensConfig(
        base_model_name_or_path=model.model_id, d_model=d_model, num_hidden_layers=model.n_layers,
        bias=bias, base_model_revision=model.revision, unembed_hash=None if head.weight.is_meta else unembed_hash(head.weight),
    )


def save_lens(folder: Path | str, translators: "torch.nn.ModuleList", config: TunedLensConfig) -> Path:
    """Write ``config.json`` + ``params.pt`` as the package's ``TunedLens.save`` does (atomic
    per file). Returns the folder."""
    import torch

    from hubclient.fs import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in translators.state_dict().items()}
    atomic_write(folder / PARAMS_FILE, lambda tmp: torch.save(state, tmp))
    atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(asdict(config))))
    return folder


def check_lens_folder(folder: Path | str) -> Path:
    """``folder`` when it holds a tuned lens (``config.json`` and ``params.pt``).

    Raises:
        HubError: a missing folder or file, naming ``hub lens train``.
    """
    path = Path(folder)
    if not path.is_dir():
        raise HubError(f"--tuned-lens {str(folder)!r} is not a folder; give a folder with config.json and params.pt (hub lens train writes one)")
    for name in (CONFIG_FILE, PARAMS_FILE):
        if not (path / name).is_file():
            raise HubError(f"--tuned-lens {str(folder)!r} has no {name}; a tuned lens folder holds config.json and params.pt (hub lens train, or the tuned-lens package's TunedLens.save)")
    return path


def load_lens(folder: Path | str, model: "HubModel | None" = None) -> tuple["torch.nn.ModuleList", TunedLensConfig]:
    """Read a tuned lens saved by hub or by the ``tuned-lens`` package.

    Unknown config keys are ignored (as ``TunedLensConfig.from_dict`` does). With ``model``,
    the sizes must match it; a different ``W_U`` hash is a warning on stderr, as in the package.

    Returns:
        (translators ``ModuleList`` of ``num_hidden_layers`` ``Linear(d, d)``, config).

    Raises:
        HubError: missing files, an unreadable config or parameter file, a ``lens_type`` other
            than ``linear_tuned_lens``, parameter names or shapes that do not fit the config, or
            a lens for another model size.
    """
    import sys

    import torch

    path = check_lens_folder(folder)
    try:
        raw = json.loads((path / CONFIG_FILE).read_text())
        known = {k: v for k, v in raw.items() if k in TunedLensConfig.__dataclass_fields__}
        config = TunedLensConfig(**known)
    except (ValueError, TypeError) as exc:
        raise HubError(f"{path / CONFIG_FILE}: not a tuned-lens config ({exc}); it needs base_model_name_or_path, d_model and num_hidden_layers") from None
    if config.lens_type != LENS_TYPE:
        raise HubError(f"{path / CONFIG_FILE}: lens_type {config.lens_type!r} is not supported; only {LENS_TYPE!r} (affine translators)")
    try:
        state = torch.load(path / PARAMS_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one error for the user
        raise HubError(f"{path / PARAMS_FILE}: cannot read the lens parameters ({type(exc).__name__}: {exc})") from None
    translators = make_translators(config.d_model, config.num_hidden_layers, config.bias)
    expected = set(translators.state_dict())
    if set(state) != expected:
        missing = sorted(expected - set(state))[:4]
        extra = sorted(set(state) - expected)[:4]
        raise HubError(f"{path / PARAMS_FILE}: parameter names do not fit a {config.num_hidden_layers}-layer lens (missing {missing}, unexpected {extra})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(translators.state_dict()[key].shape):
            raise HubError(f"{path / PARAMS_FILE}: {key} has shape {tuple(value.shape)}, config.json says d_model {config.d_model}")
    translators.load_state_dict({k: v.float() for k, v in state.items()})
    if model is not None:
        d_model = int(model.describe()["d_model"])
        if (config.d_model, config.num_hidden_layers) != (d_model, model.n_layers):
            raise HubError(
                f"the tuned lens at {path} is for d_model {config.d_model} and {config.num_hidden_layers} layers "
                f"({config.base_model_name_or_path}); this model has d_model {d_model} and {model.n_layers} layers: train one with hub lens train --model {model.model_id}"
            )
        head = model.torch_model.get_submodule(model.arch.lm_head)
        if config.unembed_hash and not head.weight.is_meta and config.unembed_hash != unembed_hash(head.weight):  # a remote model has no weights here
            print(f"warning: the tuned lens at {path} was trained with another unembedding (W_U hash differs; lens for {config.base_model_name_or_path})", file=sys.stderr)
    return translators, config


def lens_tensors(translators: "torch.nn.ModuleList") -> dict[str, Any]:
    """The lens as plain tensors for trace code (:func:`hubclient.science.lens.decode_layers`):
    ``{"kind": "tuned", "weight": [L, d, d], "bias": [L, d]}`` (float32, CPU; a lens without
    bias gets zeros). Plain tensors travel with a remote request; no hub class is needed."""
    import torch

    weights, biases = [], []
    for layer in translators:
        weights.append(layer.weight.detach().float().cpu())
        biases.append(layer.bias.detach().float().cpu() if layer.bias is not None else torch.zeros(layer.weight.shape[0]))
    return {"kind": "tuned", "weight": torch.stack(weights), "bias": torch.stack(biases)}


def translate(hidden: "torch.Tensor", weight: "torch.Tensor", bias: "torch.Tensor") -> "torch.Tensor":
    """``h + h A^T + b`` (the package's ``h + Linear(h)``), plain torch, in ``hidden``'s dtype
    on ``hidden``'s device. ``hidden`` ``[..., d]``, ``weight`` ``[d, d]``, ``bias`` ``[d]``."""
    w = weight.to(device=hidden.device, dtype=hidden.dtype)
    b = bias.to(device=hidden.device, dtype=hidden.dtype)
    return hidden + hidden @ w.T + b


# --------------------------------------------------------------------------- outside traces


def torch_unembed(model: "HubModel", hidden: "torch.Tensor", vocab: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Logits of ``hidden`` ``[..., d_model]`` through the model's final norm, any extra
    unembedding modules, ``lm_head`` and the family's soft-cap, with the torch modules (no
    trace; differentiable): the same maths as :func:`hubclient.science.lens.unembed` with
    ``final_norm=True``. ``vocab``: only these token ids' rows of ``W_U`` (``[n]`` long).
    Returns ``[..., vocab]`` (or ``[..., n]``) in the computation's dtype."""
    import torch

    root = model.torch_model
    h = root.get_submodule(model.arch.final_norm)(hidden)
    for path in model.arch.extra_unembed:
        try:
            module = root.get_submodule(path)
        except AttributeError:
            module = None
        if module is not None:
            h = module(h)
    head = root.get_submodule(model.arch.lm_head)
    if vocab is None:
        logits = head(h)
    else:
        bias = head.bias[vocab] if getattr(head, "bias", None) is not None else None
        logits = torch.nn.functional.linear(h, head.weight[vocab], bias)
    cap = model.logit_softcap
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def chunk_ids(tokenizer: Any, texts: list[str], max_length: int) -> "torch.Tensor":
    """The package's ``chunk_and_tokenize`` on ``texts``: EOS + texts joined by EOS, cut into
    chunks of ``max_length`` tokens each led by the tokenizer's special prefix (BOS where it
    has one, as a fast tokenizer adds to every overflow chunk), the last partial chunk dropped.

    Texts are tokenised one by one without special tokens and joined with the EOS id (the
    package tokenises the joined string; special tokens split the text, so the ids agree).

    Returns:
        ``[chunks, max_length]`` long (possibly zero chunks).

    Raises:
        HubError: a tokenizer without EOS, or ``max_length`` not above the prefix length.
    """
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise HubError("the tokenizer has no EOS token to join the texts with (the tuned-lens package's separator)")
    prefix = tokenizer("", add_special_tokens=True)["input_ids"]
    width = max_length - len(prefix)
    if width < 1:
        raise HubError(f"--max-length {max_length} leaves no room after the {len(prefix)} special token(s) of each chunk")
    stream = [eos]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    for ids in encoded:
        stream.extend(ids)
        stream.append(eos)
    stream = stream[:-1] if len(stream) > 1 else stream
    n = len(stream) // width
    rows = []
    for i in range(n):
        rows.append(prefix + stream[i * width : (i + 1) * width])
    if not rows:
        return torch.zeros((0, max_length), dtype=torch.long)
    return torch.tensor(rows, dtype=torch.long)


def read_text_folder(folder: Path | str) -> dict[str, list[str]]:
    """Every text file of ``folder`` (not hidden, not ``LICENSE``/``README*``), sorted by
    name: name -> its non-empty lines.

    Raises:
        HubError: not a folder, or no text in it.
    """
    path = Path(folder)
    if not path.is_dir():
        raise HubError(f"--text {str(folder)!r} is not a folder; give a folder of text files (one text a line), e.g. a FLORES-200 folder")
    out: dict[str, list[str]] = {}
    for file in sorted(path.iterdir()):
        if not file.is_file() or file.name.startswith(".") or file.name.upper().startswith(("LICENSE", "README")):
            continue
        try:
            lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError:
            continue
        lines = [line for line in lines if line]
        if lines:
            out[file.name] = lines
    if not out:
        raise HubError(f"--text {str(folder)!r} holds no UTF-8 text files with text in them")
    return out


def split_texts(files: dict[str, list[str]], held_out: float) -> tuple[list[str], list[str]]:
    """(train, held-out) texts: the last ``held_out`` fraction of each file's lines is held
    out (for FLORES, the same sentence ids in every language, so no translation of a held-out
    sentence is trained on); files are interleaved line by line so every language is spread
    over the shuffled chunks. ``held_out`` in ``[0, 1)``.

    Raises:
        HubError: ``held_out`` outside ``[0, 1)``.
    """
    if not 0 <= held_out < 1:
        raise HubError(f"--held-out {held_out} must be in [0, 1): the fraction of each file's last lines kept for evaluation")
    train_parts, test_parts = [], []
    for lines in files.values():
        cut = len(lines) - int(round(len(lines) * held_out))
        train_parts.append(lines[:cut])
        test_parts.append(lines[cut:])
    return _interleave(train_parts), _interleave(test_parts)


def _interleave(parts: list[list[str]]) -> list[str]:
    out = []
    longest = max((len(p) for p in parts), default=0)
    for i in range(longest):
        for part in parts:
            if i < len(part):
                out.append(part[i])
    return out


@dataclass
class TrainOptions:
    """Training options; defaults are the tuned-lens package's (``Train`` in
    ``scripts/train_loop.py``, ``Optimizer`` in ``scripts/ingredients.py``).

    Attributes:
        steps: optimiser steps (package ``num_steps`` 250).
        tokens_per_step: tokens per optimiser step (package ``2**18``); a multiple of
            ``max_length``.
        max_length: tokens per chunk (package ``max_length`` 2048).
        batch_size: chunks per forward pass (package ``per_gpu_batch_size`` 1); gradients are
            accumulated over ``tokens_per_step / (max_length * batch_size)`` micro-batches.
        optimizer: ``sgd`` (Nesterov) or ``adam`` (amsgrad).
        lr_scale: SGD lr is ``lr_scale * (1 - momentum)``, Adam's ``lr_scale * 1e-3``.
        momentum: SGD momentum / Adam beta1 (0.9).
        weight_decay: 1e-3.
        warmup_steps: linear warmup steps (package: 0 for SGD; its Adam default of
            ``min(1000, steps // 5)`` never fires because it compares the enum with a string,
            so 0 there too).
        clip: gradient-norm clip over all translators (1.0).
        autocast: ``bfloat16`` (the package's ``torch.autocast`` dtype) or ``off`` (float32).
        seed: chunk shuffling (package ``seed`` 42).
        held_out: fraction of each text file's last lines held out for the KL evaluation
            (hub's; the package trains on a named split and evaluates separately).
        checkpoint_every: steps between snapshots (package ``checkpoint_freq``; 0 = only at
            the end and on interruption).
        vocab_sample: 0 (the package: the KL over the whole vocabulary) or hub's CPU variant:
            per micro-batch, the KL over a sampled vocabulary of this many ids
            (:func:`sample_vocab`), both distributions renormalised there. The unembedding is
            most of the cost (Gemma-3's 262k × 640 ``W_U`` per layer and token), so 8192
            makes a step ~30× cheaper. Evaluation always uses the whole vocabulary.
    """

    steps: int = 250
    tokens_per_step: int = 2**18
    max_length: int = 2048
    batch_size: int = 1
    optimizer: str = "sgd"
    lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    warmup_steps: int = 0
    clip: float = 1.0
    autocast: str = "bfloat16"
    seed: int = 42
    held_out: float = 0.1
    checkpoint_every: int = 0
    vocab_sample: int = 0

    def check(self) -> None:
        """Raises HubError for values that cannot train (naming the option)."""
        if self.steps < 1:
            raise HubError(f"--steps must be at least 1, got {self.steps}")
        if self.max_length < 2:
            raise HubError(f"--max-length must be at least 2, got {self.max_length}")
        if self.batch_size < 1:
            raise HubError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.tokens_per_step < self.max_length or self.tokens_per_step % self.max_length:
            raise HubError(f"--tokens-per-step {self.tokens_per_step} must be a positive multiple of --max-length {self.max_length} (the package's rule: whole chunks per step)")
        if self.optimizer not in ("sgd", "adam"):
            raise HubError(f"--optimizer {self.optimizer!r}: choose sgd (the package's default, Nesterov momentum) or adam")
        if self.autocast not in ("bfloat16", "off"):
            raise HubError(f"--autocast {self.autocast!r}: choose bfloat16 (the package's) or off")
        if not 0 <= self.warmup_steps < self.steps:
            raise HubError(f"--warmup-steps {self.warmup_steps} must be in [0, --steps)")
        if self.lr_scale <= 0:
            raise HubError(f"--lr-scale must be positive, got {self.lr_scale}")
        if not 0 <= self.held_out < 1:
            raise HubError(f"--held-out {self.held_out} must be in [0, 1)")
        if self.vocab_sample < 0:
            raise HubError(f"--vocab-sample must be 0 (whole vocabulary) or a number of token ids, got {self.vocab_sample}")

    @property
    def chunks_per_step(self) -> int:
        return self.tokens_per_step // self.max_length

    @property
    def accumulation(self) -> int:
        """Micro-batches per step: ``ceil(chunks_per_step / batch_size)`` (the package rounds up
        too)."""
        return math.ceil(self.chunks_per_step / self.batch_size)


def make_optimizer(params: list[Any], options: TrainOptions) -> tuple[Any, Any]:
    """(optimiser, scheduler) as the package's ``Optimizer.create_optim`` /
    ``create_scheduler``."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    beta = options.momentum
    if options.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=options.lr_scale * (1 - beta), momentum=beta, nesterov=True, weight_decay=options.weight_decay)
    else:
        opt = torch.optim.Adam(params, amsgrad=True, betas=(beta, 0.999), lr=options.lr_scale * 1e-3, weight_decay=options.weight_decay)
    scheduler = get_linear_schedule_with_warmup(opt, options.warmup_steps, options.steps - options.warmup_steps)
    return opt, scheduler


def _final_and_hidden(model: "HubModel", ids: "torch.Tensor") -> tuple["torch.Tensor", tuple[Any, ...]]:
    """One plain transformers forward: (log p_final ``[b, t, vocab]`` float32, hidden states
    ``0..L-1``, each ``[b, t, d]``)."""
    import torch

    with torch.no_grad():
        out = model.torch_model(input_ids=ids.to(model.device), output_hidden_states=True)
    return out.logits.float().log_softmax(-1), out.hidden_states[:-1]


def layer_kl(model: "HubModel", hidden: "torch.Tensor", final_logp: "torch.Tensor", translator: Any = None, vocab: "torch.Tensor | None" = None) -> "torch.Tensor":
    """``KL(p_final || p_lens)`` in nats per token, ``[b, t]``: the package's loss before the
    mean. ``translator``: a ``Linear`` (tuned lens ``h + Linear(h)``) or ``None`` (logit lens).
    ``vocab``: hub's sampled-vocabulary variant (``--vocab-sample``): both distributions
    restricted to these ids and renormalised there (``final_logp`` is then ``[b, t, n]``,
    already renormalised)."""
    import torch

    h = hidden if translator is None else hidden + translator(hidden)
    logp = torch_unembed(model, h, vocab).float().log_softmax(-1)
    return torch.sum(final_logp.exp() * (final_logp - logp), dim=-1)


def sample_vocab(final_logp: "torch.Tensor", size: int, generator: "torch.Generator", per_position: int = 32) -> "torch.Tensor":
    """hub's sampled vocabulary for one micro-batch (``--vocab-sample``, not the package's):
    the union of each position's ``per_position`` most probable final tokens, filled up to
    ``size`` ids with uniformly drawn others. Returns sorted unique ids ``[<= size]``."""
    import torch

    vocab = final_logp.shape[-1]
    top = final_logp.reshape(-1, vocab).topk(min(per_position, vocab), dim=-1).indices.reshape(-1).unique().cpu()
    if top.numel() >= size:
        return top[:size].to(final_logp.device)
    mask = torch.ones(vocab, dtype=torch.bool)
    mask[top] = False
    rest = mask.nonzero().reshape(-1)
    extra = rest[torch.randperm(rest.numel(), generator=generator)[: size - top.numel()]]
    return torch.cat([top, extra]).sort().values.to(final_logp.device)


@dataclass
class TrainResult:
    """What :func:`train` did: ``steps_done`` of ``steps``, tokens seen, the mean training
    loss per layer of each step (``[steps][layers]``, nats), seconds spent, and whether it
    resumed from a snapshot."""

    steps_done: int
    steps: int
    tokens: int
    losses: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


def latest_snapshot(folder: Path) -> Path | None:
    """The ``snapshot_{step}.pth`` with the highest step in ``folder`` (the package's
    ``load_recent_snapshot`` rule), or ``None``."""
    import re

    best, best_step = None, -1
    if folder.is_dir():
        for path in folder.glob("snapshot_*.pth"):
            match = re.match(r".*snapshot_(\d+)\.pth$", str(path))
            if match and int(match.group(1)) > best_step:
                best, best_step = path, int(match.group(1))
    return best


def train(
    model: "HubModel",
    translators: "torch.nn.ModuleList",
    chunks: "torch.Tensor",
    options: TrainOptions,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_step: Callable[[int, list[float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``translators`` in place on ``chunks`` as the package's ``Train.execute`` does
    (see the module docstring): per micro-batch one no-grad forward, then per layer
    ``KL(p_final || p_lens)`` (mean over tokens) / accumulation, backpropagated layer by layer;
    per step clip, optimiser and scheduler step.

    Args:
        chunks: ``[n, max_length]`` token ids (:func:`chunk_ids`), shuffled here with ``seed``.
        checkpoint_dir: where ``snapshot_{step}.pth`` files go (``lens``, ``optim``,
            ``scheduler``, ``dataloader``, ``step``, ``wandb_id`` as the package's
            ``State.save``; ``lens`` holds the translators only); ``None``: no snapshots.
        resume: continue from the latest snapshot there (its options must be these).
        on_step: called after each step with (step, mean loss per layer).
        should_stop: polled after each step; ``True`` snapshots and returns early.

    Returns:
        :class:`TrainResult`.

    Raises:
        HubError: too few chunks for ``steps * tokens_per_step`` (the newer package's check),
            or a snapshot made with other options.
    """
    import time

    import torch

    options.check()
    needed = options.steps * options.chunks_per_step
    if chunks.shape[0] < needed:
        raise HubError(
            f"{chunks.shape[0]} chunks of {options.max_length} tokens are too few for --steps {options.steps} × "
            f"--tokens-per-step {options.tokens_per_step} ({needed} chunks); lower them or give more text"
        )
    generator = torch.Generator().manual_seed(options.seed)
    order = torch.randperm(chunks.shape[0], generator=generator)[:needed]
    translators.to(model.device)
    params = [p for p in translators.parameters() if p.requires_grad]
    opt, scheduler = make_optimizer(params, options)
    start = 0
    if resume and checkpoint_dir is not None:
        snap_path = latest_snapshot(checkpoint_dir)
        if snap_path is not None:
            snap = torch.load(snap_path, map_location="cpu", weights_only=False)
            if snap.get("options") != asdict(options):
                raise HubError(f"{snap_path} was made with other options; resume with the same options or start a new --out")
            translators.load_state_dict(snap["lens"])
            opt.load_state_dict(snap["optim"])
            scheduler.load_state_dict(snap["scheduler"])
            start = int(snap["step"])
    result = TrainResult(steps_done=start, steps=options.steps, tokens=start * options.tokens_per_step, resumed_from=start)
    device_type = "cuda" if str(model.device).startswith("cuda") else "cpu"
    began = time.monotonic()

    def snapshot(step: int) -> None:
        if checkpoint_dir is None:
            return
        from hubclient.fs import atomic_write

        state = {
            "lens": translators.state_dict(), "optim": opt.state_dict(), "scheduler": scheduler.state_dict(),
            "dataloader": {"chunks_done": step * options.chunks_per_step}, "step": step, "wandb_id": None,
            "options": asdict(options),
        }
        atomic_write(checkpoint_dir / f"snapshot_{step}.pth", lambda tmp: torch.save(state, tmp))
        for old in checkpoint_dir.glob("snapshot_*.pth"):  # keep the newest only
            if old.name != f"snapshot_{step}.pth":
                old.unlink(missing_ok=True)

    frozen = []
    for p in model.torch_model.parameters():  # the package's model.requires_grad_(False): no W_U gradient
        if p.requires_grad:
            frozen.append(p)
            p.requires_grad_(False)
    try:
        _loop(model, translators, chunks, options, order, opt, scheduler, start, result, snapshot, on_step, should_stop, device_type)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    translators.eval()
    result.seconds = time.monotonic() - began
    return result


def _loop(model: Any, translators: Any, chunks: Any, options: TrainOptions, order: Any, opt: Any, scheduler: Any, start: int,
          result: TrainResult, snapshot: Callable[[int], None], on_step: Any, should_stop: Any, device_type: str) -> None:
    """The step loop of :func:`train`."""
    import torch

    translators.train()
    for step in range(start, options.steps):
        step_chunks = order[step * options.chunks_per_step : (step + 1) * options.chunks_per_step]
        sums = [0.0] * len(translators)
        for micro in range(options.accumulation):
            ids = chunks[step_chunks[micro * options.batch_size : (micro + 1) * options.batch_size]]
            if ids.shape[0] == 0:
                continue
            final_logp, hidden = _final_and_hidden(model, ids)
            vocab = None
            if options.vocab_sample and options.vocab_sample < final_logp.shape[-1]:
                draws = torch.Generator().manual_seed(options.seed * 1_000_003 + step * 1009 + micro)  # resume draws the same
                vocab = sample_vocab(final_logp, options.vocab_sample, draws)
                final_logp = final_logp[..., vocab].log_softmax(-1)
            for i, h in enumerate(hidden):
                with torch.autocast(device_type, dtype=torch.bfloat16, enabled=options.autocast == "bfloat16"):
                    loss = layer_kl(model, h.detach(), final_logp, translators[i], vocab).mean()
                    sums[i] += float(loss.detach()) / options.accumulation
                    scaled = loss / options.accumulation
                scaled.backward()
        torch.nn.utils.clip_grad_norm_(translators.parameters(), options.clip)
        opt.step()
        opt.zero_grad(set_to_none=False)
        scheduler.step()
        result.steps_done = step + 1
        result.tokens += options.tokens_per_step
        result.losses.append(sums)
        if on_step is not None:
            on_step(step + 1, sums)
        if options.checkpoint_every and (step + 1) % options.checkpoint_every == 0 and step + 1 < options.steps:
            snapshot(step + 1)
        if should_stop is not None and should_stop() and step + 1 < options.steps:
            snapshot(step + 1)
            break


def evaluate(model: "HubModel", translators: "torch.nn.ModuleList", chunks: "torch.Tensor", batch_size: int = 1) -> dict[str, Any]:
    """Held-out ``KL(p_final || p_lens)`` of the tuned and the logit lens (final norm on), per
    chunk and layer ``0..L-1`` (nats per token, mean over the chunk's tokens), in float32.

    Returns:
        ``{"tuned": ndarray [chunks, L], "logit": ndarray [chunks, L]}``.
    """
    import numpy as np
    import torch

    tuned, logit = [], []
    translators.to(model.device).eval()
    with torch.no_grad():
        for start in range(0, chunks.shape[0], batch_size):
            ids = chunks[start : start + batch_size]
            final_logp, hidden = _final_and_hidden(model, ids)
            t_rows, l_rows = [], []
            for i, h in enumerate(hidden):
                t_rows.append(layer_kl(model, h, final_logp, translators[i]).mean(-1))
                l_rows.append(layer_kl(model, h, final_logp, None).mean(-1))
            tuned.append(torch.stack(t_rows, -1).cpu().numpy())
            logit.append(torch.stack(l_rows, -1).cpu().numpy())
    width = len(translators)
    return {
        "tuned": np.concatenate(tuned) if tuned else np.zeros((0, width)),
        "logit": np.concatenate(logit) if logit else np.zeros((0, width)),
    }
