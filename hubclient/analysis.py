"""What an analysis is: a trace body, the rows it stores and the charts it draws.

An analysis module in ``analyses/`` subclasses :class:`Analysis` and says three things:

* :meth:`Analysis.trace` runs *inside* ``with model.lm.trace(batch.inputs):`` (locally or, later,
  on NDIF). It reads (or edits) hidden states through the :class:`~hubclient.models.HubModel`
  accessors, reduces them in the trace and returns a dict of small tensors. Only that dict
  leaves the trace. Inside it use plain ``for`` loops: with nnsight 0.8 a list comprehension in
  a trace body silently ends the body.
* :meth:`Analysis.rows` turns one batch's saved tensors into long-format polars tables.
* :meth:`Analysis.plots` draws altair charts from the finished run's Parquet alone.

Everything else (tokenising, batching, progress, device, storage, manifest, resume) is the
runner's (:mod:`hubclient.runner`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from hubclient.models import HubModel
    from hubclient.store import RunDir


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
            ``pixel_values``, ``input_features``…, see :func:`hubclient.multimodal.collate`);
            empty for text.
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
    """

    name: ClassVar[str] = ""
    tables: ClassVar[dict[str, list[str]]] = {}
    needs_model_output: ClassVar[bool] = False

    def __init__(self, options: Any):
        self.options = options

    def describe_options(self) -> dict[str, Any]:
        """The options as JSON-serialisable data, for the manifest and for resume checks."""
        return asdict(self.options) if is_dataclass(self.options) else dict(self.options)

    def prepare(self, model: "HubModel", prompts: list[str]) -> None:
        """Resolve what needs the tokenizer (e.g. target token ids) before any batch runs.

        Raises:
            HubError: options that do not fit this model.
        """

    def positions(self, n_tokens: int, prompt_index: int) -> list[int]:
        """Token positions of one prompt that the trace reads (default: the last token)."""
        return [n_tokens - 1]

    def token_positions(self, tokens: list[int], prompt_index: int) -> list[int]:
        """Positions to read, given the prompt's token ids; the runner calls this.

        Default: :meth:`positions` of the length. Analyses of image/audio prompts override it
        to find the media positions (:func:`hubclient.multimodal.media_positions`).
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
