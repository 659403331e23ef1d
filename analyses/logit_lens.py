"""``hub analyze logit-lens``: what each layer's residual stream would predict as the next token.

Traces: the residual stream ``h_l`` at every layer ``l = 0..L`` (0 = embeddings) at the asked
positions.
Reduces (inside the trace): ``softmax(W_U · norm(h_l))`` (Eq. 2 of the semantic hub paper,
Wu et al. 2024; final norm optional) to its top-k tokens, its entropy, and the probability and
rank of the ``--target`` tokens; the ``[rows, vocab]`` logits never leave the trace.
Stores: ``logit_lens.parquet`` (one row per prompt, position, layer, rank) and, with targets,
``targets.parquet`` (one row per prompt, position, layer, target); the runner adds
``prompts.parquet``.
Draws: the lens heatmap (layer × position, top-1 token, colour = its probability) and the target
probability by layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.inputs.prompts import Positions
from analyses.lenses import LensChoice, init_lens, lens_manifest, patch_batches, prepare_lens
from hubclient.science.lens import check_lens_dtype, decode_layers, lens_label, norm_label, reduce_logits
from hubclient.science.tokens import decoder, follow_word

#: Top-k tokens kept per (prompt, position, layer) when --top-k is not given.
DEFAULT_TOP_K = 10
#: Prompts drawn in the heatmap when each prompt has several positions (one panel each).
MAX_PANELS = 6


@dataclass
class LensOptions(LensChoice):
    """Options of the logit lens; the ``--lens`` fields (``lens``, ``tuned_lens``,
    ``patch_prompt``, ``patch_placeholder``) of :class:`analyses.lenses.LensChoice`.

    Attributes:
        positions: ``last``, ``all`` or indices such as ``0,3,-1`` (BOS counts as position 0).
        top_k: tokens kept per (prompt, position, layer).
        targets: words whose probability and rank are followed. A word is tokenised exactly as
            written, without special tokens; when that gives several tokens the first one is
            followed (and a warning says so). Write ``" Paris"`` for the mid-sentence form of
            BPE/SentencePiece vocabularies.
        final_norm: apply the model's final norm before ``W_U`` (the field's convention; the
            semantic hub paper's code did not).
        lens_dtype: ``model`` (the model's own ``lm_head``) or a dtype for ``W_U · h`` such as
            ``bfloat16``: about 3× faster on CPUs with bf16 instructions, at bf16 precision of
            the logits (relative error ~1e-3; see benchmarks/results.md).
    """

    positions: str = "last"
    top_k: int = DEFAULT_TOP_K
    targets: list[str] = field(default_factory=list)
    final_norm: "bool | str" = True
    lens_dtype: str = "model"


class LogitLens(Analysis):
    """The logit lens over all layers (see the module docstring)."""

    name = "logit-lens"
    tables = {"logit_lens": ["prompt", "position", "layer", "rank"]}

    def __init__(self, options: LensOptions):
        super().__init__(options)
        if options.top_k < 1:
            raise HubError(f"--top-k must be at least 1, got {options.top_k}")
        init_lens(self)
        self._positions = Positions.parse(options.positions)
        if options.targets:
            self.tables = {**self.tables, "targets": ["prompt", "position", "layer", "target"]}
        self.target_ids: list[int] = []
        self._lens_dtype: Any = None

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Check ``top_k`` against the vocabulary and turn ``--target`` words into token ids.

        Raises:
            HubError: ``top_k`` larger than the vocabulary, a target that tokenises to nothing,
                or a ``lens_dtype`` that does not fit (see :func:`hubclient.science.lens.check_lens_dtype`).
        """
        self._lens_dtype = check_lens_dtype(model, self.options.lens_dtype)
        prepare_lens(self, model)
        if self.options.top_k > model.vocab_size:
            raise HubError(f"--top-k {self.options.top_k} exceeds the vocabulary size {model.vocab_size}")
        self.target_ids = []
        for word in self.options.targets:
            self.target_ids.append(follow_word(model.tokenizer, word, "--target"))

    def positions(self, n_tokens: int, prompt_index: int) -> list[int]:
        return self._positions.resolve(n_tokens, prompt_index)

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> Any:
        """The usual prompt batches; with ``--lens patchscope`` each carries one copy of the
        target prompt per (selected row, layer) (:func:`hubclient.science.patchscope.extend_batch`),
        so the patchscope of every layer runs in the batch's one forward pass."""
        return patch_batches(self, model, tokens, batch_size)

    def describe_run(self) -> dict[str, Any]:
        """The lens (and the tuned lens' folder and hash, or the patchscope's target tokens)."""
        return lens_manifest(self)

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """Lens of every layer at the selected rows; returns ``[layers+1, rows, …]`` tensors
        (top-k ids, logits and probabilities, entropy, target logits/probabilities/ranks)."""
        import torch

        targets = torch.tensor(self.target_ids, dtype=torch.long, device=model.device) if self.target_ids else None
        top_k = self.options.top_k

        def reduce(logits: Any, rows: Any) -> dict[str, Any]:
            return reduce_logits(logits, top_k, targets)

        return decode_layers(model, batch, reduce, self.options.final_norm, self._lens_dtype, self.lens_spec)

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        import polars as pl

        n_layers, n_rows, k = saved["top_ids"].shape
        row_prompt = np.asarray(batch.row_prompt, dtype=np.int64)
        row_pos = batch.row_position.numpy()
        input_ids = batch.input_ids[batch.row_batch, batch.row_position].numpy()
        decode = _decoder(model.tokenizer)

        # logit_lens: [layer, row, rank] flattened in that order
        layer = np.repeat(np.arange(n_layers), n_rows * k)
        row = np.tile(np.repeat(np.arange(n_rows), k), n_layers)
        top_ids = saved["top_ids"].numpy().reshape(-1)
        lens_rows = pl.DataFrame(
            {
                "prompt": row_prompt[row],
                "position": row_pos[row],
                "input_token": decode(input_ids)[row],
                "layer": layer,
                "rank": np.tile(np.arange(1, k + 1), n_layers * n_rows),
                "token_id": top_ids,
                "token": decode(top_ids),
                "probability": saved["top_probs"].numpy().reshape(-1),
                "logit": saved["top_logits"].numpy().reshape(-1),
                "entropy": np.repeat(saved["entropy"].numpy().reshape(-1), k),
            },
            schema_overrides={"layer": pl.Int32, "rank": pl.Int32, "position": pl.Int32},
        )
        out = {"logit_lens": lens_rows}
        if "targets" in self.tables:
            t = len(self.target_ids)
            layer_t = np.repeat(np.arange(n_layers), n_rows * t)
            row_t = np.tile(np.repeat(np.arange(n_rows), t), n_layers)
            out["targets"] = pl.DataFrame(
                {
                    "prompt": row_prompt[row_t],
                    "position": row_pos[row_t],
                    "input_token": decode(input_ids)[row_t],
                    "layer": layer_t,
                    "target": np.tile(np.asarray(self.options.targets, dtype=object), n_layers * n_rows).astype(str),
                    "token_id": np.tile(np.asarray(self.target_ids), n_layers * n_rows),
                    "probability": saved["target_probs"].numpy().reshape(-1),
                    "logit": saved["target_logits"].numpy().reshape(-1),
                    "rank": saved["target_ranks"].numpy().reshape(-1),
                },
                schema_overrides={"layer": pl.Int32, "position": pl.Int32, "rank": pl.Int64},
            )
        return out

    # ------------------------------------------------------------------ summary
    @classmethod
    def summary(cls, run: Any) -> str:
        """Per prompt (at its last position read), the top-1 token at four layers spread over
        the depth and, with ``--target``, the layer where each target's probability peaks."""
        import polars as pl

        table = run.table("logit_lens").filter(pl.col("rank") == 1)
        if table.height == 0:
            return ""
        table = table.filter(pl.col("position") == pl.col("position").max().over("prompt"))
        layers = sorted(table["layer"].unique().to_list())
        picks = sorted({layers[round(i * (len(layers) - 1) / 3)] for i in range(4)})
        targets = run.table("targets") if "targets" in run.manifest.get("rows", {}) else None
        blocks = []
        for (prompt,), rows in table.sort("prompt", "layer").group_by("prompt", maintain_order=True):
            by_layer = dict(zip(rows["layer"].to_list(), rows["token"].to_list()))
            first = rows.row(0, named=True)
            tops = " · ".join(f"L{layer} {by_layer[layer]!r}" for layer in picks if layer in by_layer)
            block = [f"  prompt {prompt} @ {first['input_token']!r}: {tops}"]
            if targets is not None:
                mine = targets.filter((pl.col("prompt") == prompt) & (pl.col("position") == first["position"]))
                peaks = []
                for (target,), t in mine.sort("layer").group_by("target", maintain_order=True):
                    peak = t.row(int(t["probability"].arg_max()), named=True)
                    peaks.append(f"{target!r} peaks at layer {peak['layer']} (p={peak['probability']:.3f})")
                if peaks:
                    block.append("    " + "; ".join(peaks))
            blocks.append(block)
        return "\n".join(_fit(["top-1 token by layer (last position):"], blocks, "prompts"))


    # ------------------------------------------------------------------ plots
    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        import altair as alt
        import polars as pl

        from hubclient.plots import by_layer, lens_heatmap

        if run.manifest["options"].get("modality", "text") != "text":  # image/audio pairs
            from analyses.media_plots import media_lens_plots

            return media_lens_plots(run)
        norm = norm_label(run.manifest["options"].get("final_norm", True))
        lens = lens_label(run.manifest["options"])
        model_id = run.manifest["model"]["model_id"]
        prompts = run.table("prompts")
        top1 = run.table("logit_lens").filter(pl.col("rank") == 1)
        per_prompt = top1.group_by("prompt").agg(pl.col("position").n_unique().alias("n")).get_column("n")
        charts: dict[str, Any] = {}
        if per_prompt.max() == 1:
            frame = top1.with_columns(column=pl.format("{}: {}", pl.col("prompt"), pl.col("input_token"))).sort("prompt", "layer")
            charts["lens_heatmap"] = lens_heatmap(frame, "column", "prompt: input token (last position)", f"{lens} ({norm}) · {model_id}")
        else:
            panels = []
            for row in prompts.sort("prompt").head(MAX_PANELS).iter_rows(named=True):
                frame = (
                    top1.filter(pl.col("prompt") == row["prompt"])
                    .sort("position", "layer")
                    .with_columns(column=pl.format("{}: {}", pl.col("position"), pl.col("input_token")))
                )
                panels.append(lens_heatmap(frame, "column", "position: input token", f"prompt {row['prompt']}: {_short(row['text'])}"))
            charts["lens_heatmap"] = alt.vconcat(*panels).properties(title=f"{lens} ({norm}) · {model_id}")
        if (run.path / "targets.parquet").is_file():
            targets = run.table("targets")
            last = targets.group_by("prompt").agg(pl.col("position").max().alias("last"))
            at_last = targets.join(last, on="prompt").filter(pl.col("position") == pl.col("last"))
            at_last = at_last.join(prompts.select("prompt", "text"), on="prompt").with_columns(
                panel=pl.format("{}: {}", pl.col("prompt"), pl.col("text").map_elements(_short, return_dtype=pl.String))
            )
            if at_last["prompt"].n_unique() <= 12:
                charts["target_probability"] = by_layer(
                    at_last.sort("prompt", "target", "layer"), "probability", "target",
                    f"Target probability by layer, last position ({lens}, {norm})", "lens probability", facet="panel",
                )
            else:
                mean = at_last.group_by("target", "layer").agg(pl.col("probability").mean()).sort("target", "layer")
                charts["target_probability"] = by_layer(
                    mean, "probability", "target", f"Mean target probability over {at_last['prompt'].n_unique()} prompts ({lens}, {norm})", "lens probability"
                )
        return charts


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decoder(tokenizer: Any) -> Any:
    """Vectorised id -> token text (decoded, so SentencePiece '▁' shows as a space): a numpy
    string array of :func:`hubclient.science.tokens.decoder`'s texts."""
    import numpy as np

    decode_ids = decoder(tokenizer)

    def decode(ids: Any) -> Any:
        return np.asarray(decode_ids(np.asarray(ids)), dtype=object).astype(str)

    return decode


ANALYSIS = LogitLens


def _fit(head: list[str], blocks: list[list[str]], what: str, limit: int = 12) -> list[str]:
    """``head`` then whole ``blocks`` while they fit in ``limit`` lines; a last line counts the
    blocks left out."""
    lines = list(head)
    for i, block in enumerate(blocks):
        if len(lines) + len(block) > limit - (1 if i < len(blocks) - 1 else 0):
            lines.append(f"  … {len(blocks) - i} more {what}")
            break
        lines.extend(block)
    return lines
