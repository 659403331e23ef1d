"""What an analysis is: a trace body, the rows it stores and the charts it draws.

An analysis module in ``analyses/`` subclasses :class:`Analysis` and says three things:

* :meth:`Analysis.trace` runs *inside* ``with model.lm.trace(batch.inputs):`` (locally or, later,
  on NDIF). It reads (or edits) hidden states through the :class:`~hubclient.models.HubModel`
  accessors, reduces them in the trace and returns a dict of small tensors. Only that dict
  leaves the trace. Inside it use plain ``for`` loops: with nnsight 0.8 a list comprehension in
  a trace body silently ends the body.
* Analyses that generate (``generates = True``: steering, the arithmetic intervention) write
  :meth:`Analysis.trace_generate` instead, the body of ``model.lm.generate(...)``.
* :meth:`Analysis.rows` turns one batch's saved tensors into long-format polars tables.
* :meth:`Analysis.plots` draws altair charts from the finished run's Parquet alone.

Everything else (tokenising, batching, progress, device, storage, manifest, resume, local or
remote execution) is the runner's (:mod:`hubclient.runner`) and the executor's
(:mod:`hubclient.exec`). Interventions are analyses too: their edits live in the same trace
bodies, so ``--remote`` and ``--detach`` work for them unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from hubclient.models.loading import HubModel
    from hubclient.run.folder import RunDir


@dataclass
class Batch:
    """One forward pass worth of prompts, right-padded.

    Right padding keeps every real token at the position it has when the prompt runs alone
    (causal attention never looks at the pads that follow), so batched results equal
    unbatched ones for every positional scheme (learned, rotary, ALiBi).

    Attributes:
        index: batch number; stable for the same prompts and batch size (resume relies on it).
        prompt_index: global index of each prompt in the input, ``[batch]``.
        input_ids: token ids, ``[batch, seq]`` (long), pads after the real tokens.
        attention_mask: ``[batch, seq]`` (long), 1 on real tokens.
        lengths: real tokens per prompt, ``[batch]``.
        row_batch: for each selected (prompt, position) "row", its batch index, ``[rows]``.
        row_position: the row's token position within its prompt, ``[rows]``.
        tokens: each prompt's token ids (unpadded), for labelling rows.
        extra: further model inputs of image/audio prompts (the processor's
            ``pixel_values``, ``input_features``…, see :func:`hubclient.exec.multimodal.collate`);
            empty for text.
        meta: what an intervention's trace body needs besides the inputs (patching cells,
            steering deltas, …; plain data and tensors, shipped with a remote request).
        offsets: per row, the pads before its first token (left-padded generation batches;
            all 0 for right padding): prompt position ``p`` of row ``b`` is column
            ``offsets[b] + p``.
    """

    index: int
    prompt_index: list[int]
    input_ids: "torch.Tensor"
    attention_mask: "torch.Tensor"
    lengths: list[int]
    row_batch: "torch.Tensor"
    row_position: "torch.Tensor"
    tokens: list[list[int]]
    extra: dict[str, "torch.Tensor"] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    offsets: list[int] | None = None

    @property
    def inputs(self) -> dict[str, "torch.Tensor"]:
        """Keyword inputs of the model's forward (``input_ids``, ``attention_mask`` and any
        media tensors in ``extra``)."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, **self.extra}

    def token_weights(self, bos_id: int | None) -> "torch.Tensor":
        """``[batch, seq]`` float32: 1 on each prompt's real tokens except a leading BOS (kept
        when it is the prompt's only token), 0 on padding: the tokens a mean over "the input"
        pools (similarity ``--pool mean``, neuron activations, captions). Rows are not
        normalised. Plain tensor code: usable inside trace bodies."""
        import torch

        weights = self.attention_mask.to(torch.float32).clone()
        if bos_id is not None:
            drop = (self.input_ids[:, 0] == bos_id) & (torch.tensor(self.lengths) > 1)
            weights[drop, 0] = 0.0
        return weights

    @property
    def row_prompt(self) -> list[int]:
        """Global prompt index of each selected row, ``[rows]``."""
        out = []
        for b in self.row_batch.tolist():
            out.append(self.prompt_index[b])
        return out


class Analysis:
    """Base class of all analyses (see the module docstring).

    Class attributes:
        name: the CLI name (``hub analyze <name>``) and the manifest's ``analysis``.
        tables: table name -> sort keys of its rows; each becomes ``<table>.parquet``.
        needs_model_output: ``False`` lets the runner stop the forward pass right after the
            trace body finishes reading (skipping later layers and the ``lm_head``).
        generates: ``True`` when the body is :meth:`trace_generate` inside
            ``model.lm.generate`` (with :meth:`generate_kwargs`) instead of :meth:`trace`.
    """

    name: ClassVar[str] = ""
    tables: ClassVar[dict[str, list[str]]] = {}
    needs_model_output: ClassVar[bool] = False
    generates: ClassVar[bool] = False

    def __init__(self, options: Any):
        self.options = options

    def describe_options(self) -> dict[str, Any]:
        """The options as JSON-serialisable data, for the manifest and for resume checks."""
        return asdict(self.options) if is_dataclass(self.options) else dict(self.options)

    def prepare(self, model: "HubModel", prompts: list[str], tokens: list[list[int]]) -> None:
        """Resolve what needs the tokenizer (e.g. target token ids) before any batch runs.

        Args:
            model: the loaded model.
            prompts: the input texts, ``[prompts]``.
            tokens: the runner's token ids of each prompt, ``[prompts][tokens]``, with special
                tokens (BOS), exactly the ids the batches run (for image/audio prompts: the
                processor's ids from :func:`hubclient.exec.multimodal.encode`, media tokens
                expanded). Use these instead of tokenising the prompts again.

        Raises:
            HubError: options that do not fit this model.
        """

    def setup(self, model: "HubModel", executor: Any) -> None:
        """Run the short traces the batches depend on (e.g. steering vectors), through
        ``executor.call`` so they run where the batches run (here or on NDIF). Called once
        after :meth:`prepare`; default: nothing.

        Raises:
            HubError: a failed request or options that do not fit the results.
        """

    def prompt_limit(self, model: "HubModel") -> int | None:
        """The most tokens one prompt may have (default: the model's context, so a prompt that
        cannot run is an error before anything runs); ``None`` for an analysis whose
        :meth:`make_batches` cuts long prompts into windows (``hub intervene ablate``'s
        windowed perplexity)."""
        return model.max_length

    def make_batches(self, model: "HubModel", tokens: list[list[int]], batch_size: int) -> list[Batch] | None:
        """Cut the work into batches; ``None`` (the default) means the prompts themselves,
        length-sorted and right-padded, reading :meth:`token_positions`
        (:func:`hubclient.exec.batching.batches_for`). Interventions override it to batch their
        own units (patching cells, steering conditions). Must depend only on the inputs, the
        options and ``batch_size``: ``--resume`` and ``hub jobs collect`` rebuild the same
        batches.
        """
        return None

    def make_media_batches(self, model: "HubModel", tokens: list[list[int]], batch_size: int, extras: list[dict[str, Any] | None]) -> list[Batch] | None:
        """:meth:`make_batches` for a run with image/audio prompts: ``extras`` holds, per
        prompt, its processor tensors (``None`` for a text prompt), which the batches must carry
        (:func:`hubclient.exec.batching.make_batches` joins them). The default is
        :meth:`make_batches` (``None``: the runner's batches, with the media tensors). A lens
        analysis overrides it for ``--lens patchscope`` (:class:`analyses.lenses.LensBatches`).
        Same rules as :meth:`make_batches`.
        """
        return self.make_batches(model, tokens, batch_size)

    def dropped_tables(self) -> dict[str, str]:
        """Tables to delete once ``finish`` and the plots have used them (table -> why, for the
        manifest), e.g. large per-input vectors the user chose not to keep. Default none."""
        return {}

    def describe_run(self) -> dict[str, Any]:
        """Further manifest fields known once :meth:`prepare` and :meth:`setup` ran (e.g. the
        tokens a score follows); default none."""
        return {}

    def generate_kwargs(self, model: "HubModel", batch: Batch) -> dict[str, Any]:
        """Keyword arguments of ``model.lm.generate`` for a generating analysis
        (``max_new_tokens``, sampling settings)."""
        return {}

    def trace_generate(self, model: "HubModel", batch: Batch, tracer: Any, out: dict[str, Any]) -> None:
        """Body of ``model.lm.generate`` for one batch (``generates = True``): apply edits, and
        put what leaves the trace in ``out`` (already saved; a ``tracer.iter[:]`` loop ends the
        body, so nothing after it would run). The generated ids are added as
        ``out["generated"]`` ``[batch, seq + new]`` by the executor."""
        raise NotImplementedError

    def positions(self, n_tokens: int, prompt_index: int) -> list[int]:
        """Token positions of one prompt that the trace reads (default: the last token)."""
        return [n_tokens - 1]

    def token_positions(self, tokens: list[int], prompt_index: int) -> list[int]:
        """Positions to read, given the prompt's token ids; the runner calls this.

        Default: :meth:`positions` of the length. Analyses of image/audio prompts override it
        to find the media positions (:func:`hubclient.exec.multimodal.media_positions`).
        """
        return self.positions(len(tokens), prompt_index)

    def trace(self, model: "HubModel", batch: Batch) -> dict[str, Any]:
        """Body of the nnsight trace: read/edit hidden states, return small reduced tensors."""
        raise NotImplementedError

    def rows(self, model: "HubModel", batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """Long-format polars tables (one per name in ``tables``) for one batch."""
        raise NotImplementedError

    def finish(self, run: "RunDir") -> dict[str, Any]:
        """Tables computed from the finished per-batch tables (e.g. statistics over all prompts).

        Called once, after every batch's rows are merged into ``<table>.parquet``; returns
        table name -> polars DataFrame, each written atomically as ``<name>.parquet``.
        """
        return {}

    @classmethod
    def plots(cls, run: "RunDir") -> dict[str, Any]:
        """Altair charts drawn from the run's Parquet tables alone: file stem -> chart."""
        return {}

    def summary(self, run: "RunDir") -> str:
        """A few lines printed after the run (default: nothing)."""
        return ""
