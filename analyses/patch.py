"""Activation patching: ``hub intervene patch``.

Traces: a source prompt and a target prompt in the same batch; for each cell (layer × target
position) a copy of the target whose hidden state at ``--site`` is replaced by the source's at
the aligned source position (:class:`hubclient.exec.edits.PatchCells`; ``--batch-size`` patched
copies per forward pass, plus the clean source and target rows). Runs locally or on NDIF
(``--remote``, ``--detach``) like every analysis.

Reduces: the next-token distribution at the target's last token to a metric per cell:
``prob`` (probability of the first ``--token``), ``logit-diff`` (logit of the first
``--token`` minus the second's; equal to the log-probability difference) or ``kl``
(``KL(p_clean || p_patched)`` in nats, the KL to the clean target run). Also the KL, the top
token and every followed token's log-probability.

Stores: ``patch.parquet`` (pair, site, layer, position, source_position, tokens, metric,
normalized, kl, top token), ``patch_tokens.parquet`` (followed tokens' log-probabilities per
cell, and for the clean/source runs), ``patch_baselines.parquet`` (clean target and source
runs), plots ``patch_heatmap`` (layer × position, colour = metric), manifest.

``normalized`` is the fraction of the source effect a cell recovers,
``(m_patched - m_clean) / (m_source - m_clean)`` (for ``kl``: ``kl_patched / KL(p_clean ||
p_source)``), the usual normalisation of patching results (Heimersheim & Nanda 2024); null
where the source and clean metrics are equal.

Alignment (which source token is patched into which target token) is the user's, never guessed:

* ``--map S:T,…`` (repeatable, one per pair or one for all pairs): explicit source → target
  position pairs (0 = BOS, negative = from the end: ``-1:-1`` is last → last);
* ``--align-word SRC=TGT`` (repeatable): for parallel prompts, the token that ends the first
  occurrence of ``SRC`` in the source (by the tokenizer's character offsets) → the token that
  ends ``TGT`` in the target (``France=法国``); combinable with ``--map``;
* ``--align start`` (same index) or ``--align end`` (same distance from the end), over the target
  positions ``--positions``;
* ``--align auto`` (the default): the same index, allowed only when source and target have the
  same number of tokens; prompts of different lengths are an error asking for one of the above.

Every cell row records ``source_position``/``source_token`` → ``position``/``target_token`` and
the ``alignment`` that produced it. Method: Meng et al. 2022 (causal tracing); Heimersheim &
Nanda 2024 (arXiv 2404.15255).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


from hubclient.errors import HubError
from hubclient.exec.edits import PatchCells, check_site, parse_layers, patch_cells_batch, patch_result
from hubclient.inputs.prompts import Positions
from hubclient.runner import RunConfig, run_analysis
from hubclient.science.tokens import decoder, follow_word

METRICS = ("auto", "prob", "logit-diff", "kl")
ALIGNS = ("auto", "start", "end")


@dataclass
class PatchOptions:
    """Options of ``hub intervene patch`` (see the module docstring)."""

    sources: list[str]
    targets: list[str]
    layers: str = "all"
    positions: str = "all"
    align: str = "auto"
    site: str = "resid"
    metric: str = "auto"
    tokens: list[str] = field(default_factory=list)
    maps: list[str] = field(default_factory=list)
    align_words: list[str] = field(default_factory=list)


def resolve_metric(metric: str, n_tokens: int) -> str:
    """``auto`` -> ``logit-diff`` with two or more tokens, ``prob`` with one, ``kl`` with none.

    Raises:
        HubError: an unknown metric, or a metric without the tokens it needs.
    """
    if metric not in METRICS:
        raise HubError(f"unknown --metric {metric!r}; choose one of {', '.join(METRICS)}")
    if metric == "auto":
        return "logit-diff" if n_tokens >= 2 else "prob" if n_tokens == 1 else "kl"
    if metric == "prob" and n_tokens < 1:
        raise HubError("--metric prob needs a --token whose probability to follow")
    if metric == "logit-diff" and n_tokens < 2:
        raise HubError("--metric logit-diff needs two --token values (logit of the first minus the second)")
    return metric


def token_id(tokenizer: Any, word: str) -> int:
    """First token id of ``word`` as written (no special tokens): rule ``first`` of spelling
    ``written``, :func:`hubclient.science.tokens.follow_word`. Warns when the word has several
    tokens or no real token of its own.

    Raises:
        HubError: a word that tokenises to nothing.
    """
    return follow_word(tokenizer, word, "--token")


def token_label(tokenizer: Any) -> Any:
    """``id -> display text`` of one token (:func:`hubclient.science.tokens.decoder`, cached)."""
    decode = decoder(tokenizer)

    def label(token_id: Any) -> str:
        return decode([int(token_id)])[0]

    return label


@dataclass
class PatchPlan:
    """What one source/target pair patches.

    Attributes:
        source / target: token ids (with BOS).
        cells: ``(layer, target_position, source_position)`` per patched copy.
        metric: the resolved ``--metric``.
        token_ids: ids of the followed ``--token`` values.
        site: ``resid``, ``attn`` or ``mlp``.
        alignment: how source positions were chosen (``map``, ``words``, ``map+words``,
            ``start``, ``end`` or ``auto (same length)``).
    """

    source: list[int]
    target: list[int]
    cells: list[tuple[int, int, int]]
    metric: str
    token_ids: list[int]
    site: str
    alignment: str = ""


class Patch(PatchCells):
    """Activation patching of ``--site`` states from source into target, layers × positions."""

    name: ClassVar[str] = "patch"
    tables: ClassVar[dict[str, list[str]]] = {
        "patch": ["pair", "layer", "position"],
        "patch_tokens": ["pair", "run", "layer", "position", "token"],
        "patch_baselines": ["pair", "run"],
    }

    def __init__(self, options: PatchOptions):
        super().__init__(options, options.site)
        self.plans: list[PatchPlan] = []

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Resolve the plans (:meth:`plan`) before anything runs."""
        self.plans = self.plan(model, tokens)

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> list[Any]:
        """One batch per ``batch_size`` cells of a pair (each batch also runs the clean source
        and target); the first batch of a pair stores its baselines."""
        batches = []
        for pair, plan in enumerate(self.plans):
            for start in range(0, len(plan.cells), batch_size):
                cells = plan.cells[start : start + batch_size]
                one_cell = []
                for cell in cells:
                    one_cell.append([cell])
                rows = {"pair": pair, "cells": cells, "first": start == 0}
                batches.append(patch_cells_batch(model, len(batches), plan.source, plan.target, one_cell, plan.token_ids, (2 * pair, 2 * pair + 1), rows))
        return batches

    def rows(self, model: Any, batch: Any, saved: dict[str, Any]) -> dict[str, Any]:
        """The batch's cells (and its pair's baselines in the pair's first batch)."""
        info = batch.meta["rows"]
        plan = self.plans[info["pair"]]
        frames = self.frames(model, info["pair"], plan, info["cells"], patch_result(batch, saved), baselines=info["first"])
        if not info["first"]:
            frames["patch_baselines"] = _empty_baselines()
        return frames

    def plan(self, model: Any, tokens: list[list[int]]) -> list[PatchPlan]:
        """Validate the options against the model and list, per pair, its tokens and cells.

        Args:
            model: the loaded model.
            tokens: the runner's token ids of the run's prompts, source then target of each
                pair (``[2 * pairs][tokens]``, with BOS; see :func:`run_patch`).

        Raises:
            HubError: unequal numbers of sources and targets, an unknown site/metric/alignment,
                a layer or position out of range, a position with no aligned source position,
                prompts of different token counts without an explicit alignment, a bad
                ``--map`` or ``--align-word`` (:func:`parse_map`, :func:`word_position`).
        """
        o = self.options
        if not o.sources or len(o.sources) != len(o.targets):
            raise HubError(f"give one --source per --target (got {len(o.sources)} sources, {len(o.targets)} targets)")
        for label, texts in (("--source", o.sources), ("--target", o.targets)):
            for i, text in enumerate(texts):
                if not text.strip():
                    raise HubError(f"{label} number {i + 1} is empty; give some text")
        if o.align not in ALIGNS:
            raise HubError(f"unknown --align {o.align!r}; choose auto, start or end (or give --map / --align-word)")
        explicit = bool(o.maps or o.align_words)
        if explicit and o.align != "auto":
            raise HubError(f"--align {o.align} and --map/--align-word both say how positions correspond; give one of them")
        if explicit and o.positions != "all":
            raise HubError("--positions selects target positions for --align auto|start|end; with --map/--align-word the map itself lists them")
        if o.maps and len(o.maps) not in (1, len(o.sources)):
            raise HubError(f"give one --map for all pairs or one per pair (got {len(o.maps)} for {len(o.sources)} pairs)")
        site = check_site(o.site)
        layers = parse_layers(o.layers, model, site)
        metric = resolve_metric(o.metric, len(o.tokens))
        ids = []
        for word in o.tokens:
            ids.append(token_id(model.tokenizer, word))
        words = parse_word_pairs(o.align_words)
        positions = Positions.parse(o.positions)
        plans = []
        for pair in range(len(o.sources)):
            src, tgt = tokens[2 * pair], tokens[2 * pair + 1]
            if explicit:
                pairs = []
                if o.maps:
                    pairs += parse_map(o.maps[0] if len(o.maps) == 1 else o.maps[pair], len(src), len(tgt), pair)
                for s_word, t_word in words:
                    pairs.append((word_position(model.tokenizer, o.sources[pair], src, s_word, "source", pair),
                                  word_position(model.tokenizer, o.targets[pair], tgt, t_word, "target", pair)))
                alignment = "map+words" if o.maps and words else "map" if o.maps else "words"
            else:
                if o.align == "auto" and len(src) != len(tgt):
                    raise HubError(
                        f"pair {pair}: the source has {len(src)} tokens and the target {len(tgt)}, so their positions do not correspond by index; "
                        "say which source token goes into which target token: --map S:T,... (e.g. --map 3:5,-1:-1), --align-word SRC=TGT "
                        "(the tokens that end two aligned words), or --align start|end (same index / same distance from the end)"
                    )
                pairs = []
                for t in positions.resolve(len(tgt), pair):
                    s = t if o.align in ("auto", "start") else t - len(tgt) + len(src)
                    if not 0 <= s < len(src):
                        raise HubError(
                            f"target position {t} of pair {pair} has no source position (--align {o.align} gives {s}; the source has "
                            f"{len(src)} tokens); choose fewer --positions, the other --align, or --map"
                        )
                    pairs.append((s, t))
                alignment = "auto (same length)" if o.align == "auto" else o.align
            cells = []
            for s, t in pairs:
                for layer in layers:
                    cells.append((layer, t, s))
            plans.append(PatchPlan(source=src, target=tgt, cells=cells, metric=metric, token_ids=ids, site=site, alignment=alignment))
        return plans

    def frames(self, model: Any, pair: int, plan: PatchPlan, cells: list[tuple[int, int, int]], result: Any, baselines: bool) -> dict[str, Any]:
        """Long tables for one traced chunk of cells (and the pair's baselines when asked)."""
        import polars as pl

        label = token_label(model.tokenizer)
        names = list(self.options.tokens)
        lp = result.token_logprobs.numpy()
        metric_all = _metric(plan.metric, lp, result.kl.numpy())
        src_m, clean_m = float(metric_all[0]), float(metric_all[1])
        denom = (float(result.kl[0]) if plan.metric == "kl" else src_m - clean_m)
        cell_rows, token_rows, base_rows = [], [], []
        for i, (layer, t, s) in enumerate(cells):
            r = 2 + i
            m = float(metric_all[r])
            norm = None if abs(denom) < 1e-12 else (m / denom if plan.metric == "kl" else (m - clean_m) / denom)
            cell_rows.append({
                "pair": pair, "site": plan.site, "alignment": plan.alignment, "layer": layer, "position": t, "source_position": s,
                "target_token": label(plan.target[t]), "source_token": label(plan.source[s]),
                "metric_name": plan.metric, "metric": m, "normalized": norm, "kl": float(result.kl[r]),
                "top_token_id": int(result.top_ids[r]), "top_token": label(result.top_ids[r]),
                "top_probability": float(result.top_probs[r]),
            })
            for j, name in enumerate(names):
                token_rows.append({"pair": pair, "run": "patched", "layer": layer, "position": t, "token": name, "token_id": plan.token_ids[j], "logprob": float(lp[r, j])})
        if baselines:
            for r, run in ((1, "clean"), (0, "source")):
                base_rows.append({
                    "pair": pair, "run": run, "text": self.options.targets[pair] if run == "clean" else self.options.sources[pair],
                    "metric_name": plan.metric, "metric": float(metric_all[r]), "kl": float(result.kl[r]),
                    "top_token_id": int(result.top_ids[r]), "top_token": label(result.top_ids[r]),
                    "top_probability": float(result.top_probs[r]),
                })
                for j, name in enumerate(names):
                    token_rows.append({"pair": pair, "run": run, "layer": None, "position": None, "token": name, "token_id": plan.token_ids[j], "logprob": float(lp[r, j])})
        token_schema = {"pair": pl.Int64, "run": pl.String, "layer": pl.Int64, "position": pl.Int64, "token": pl.String, "token_id": pl.Int64, "logprob": pl.Float64}
        out = {
            "patch": pl.DataFrame(cell_rows, schema_overrides={"normalized": pl.Float64}),
            "patch_tokens": pl.DataFrame(token_rows, schema=token_schema),
        }
        if baselines:
            out["patch_baselines"] = pl.DataFrame(base_rows)
        return out

    @classmethod
    def summary(cls, run: Any) -> str:
        """Per pair: the clean and source metric, and the cell with the largest |normalized
        effect| (layer, target position and token, the source position and token patched into
        it, the alignment, the patched top token)."""
        import polars as pl

        table = run.table("patch")
        if table.height == 0:
            return ""
        base = run.table("patch_baselines")
        lines = []
        for (pair,), rows in table.sort("pair", "layer", "position").group_by("pair", maintain_order=True):
            if len(lines) >= 12:
                lines[-1] = "  …"
                break
            scored = rows.with_columns(pl.col("normalized").fill_null(pl.col("metric")).abs().alias("_size"))
            cell = scored.row(int(scored["_size"].arg_max()), named=True)
            runs = dict(zip(*base.filter(pl.col("pair") == pair).select("run", "metric").to_dict(as_series=False).values()))
            effect = "n/a" if cell["normalized"] is None else f"{cell['normalized']:.2f}"
            lines.append(
                f"  pair {pair} ({cell['metric_name']}: clean {runs.get('clean', float('nan')):.3f}, source {runs.get('source', float('nan')):.3f}): "
                f"largest effect {effect} at {cell['site']} layer {cell['layer']}, position {cell['position']} {cell['target_token']!r} "
                f"<- source position {cell['source_position']} {cell['source_token']!r} ({cell['alignment']}) "
                f"-> top {cell['top_token']!r} ({cell['top_probability']:.2f})"
            )
        return "\n".join(lines)


    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """``patch_heatmap``: layer (y) × target position (x), colour = metric, one panel a pair."""
        import altair as alt
        import polars as pl

        table = run.table("patch")
        if table.height == 0:
            return {}
        base = run.table("patch_baselines")
        manifest = run.manifest
        panels = []
        for pair in sorted(table["pair"].unique().to_list()):
            frame = table.filter(pl.col("pair") == pair).with_columns(
                column=pl.format("{}: {} ← {}", pl.col("position"), pl.col("target_token"), pl.col("source_token"))
            ).sort("position", "layer")
            metric = frame["metric_name"][0]
            b = base.filter(pl.col("pair") == pair)
            clean = b.filter(pl.col("run") == "clean")
            src = b.filter(pl.col("run") == "source")
            title = [
                f"pair {pair}: {_short(src['text'][0])} → {_short(clean['text'][0])}",
                f"{metric}: clean target {clean['metric'][0]:.3g}, source {src['metric'][0]:.3g}",
            ]
            order = frame.unique("position").sort("position")["column"].to_list()
            scheme = alt.Scale(scheme="redblue", domainMid=0, reverse=True) if metric == "logit-diff" else alt.Scale(scheme="viridis")
            chart = alt.Chart(frame).mark_rect().encode(
                x=alt.X("column:N", sort=order, title="target position: target token ← source token", axis=alt.Axis(labelAngle=-45, labelLimit=160)),
                y=alt.Y("layer:O", sort="descending", title=f"{frame['site'][0]} layer" + (" (0 = embeddings)" if frame["site"][0] == "resid" else "")),
                color=alt.Color("metric:Q", title=metric, scale=scheme),
                tooltip=["layer", "position", "target_token", "source_token", alt.Tooltip("metric:Q", format=".4f"), alt.Tooltip("normalized:Q", format=".3f"), alt.Tooltip("kl:Q", format=".4f"), "top_token", alt.Tooltip("top_probability:Q", format=".3f")],
            ).properties(title=title, width=max(160, 36 * len(order)), height=max(150, 14 * frame["layer"].n_unique()))
            panels.append(chart)
        chart = panels[0] if len(panels) == 1 else alt.vconcat(*panels)
        return {"patch_heatmap": chart.properties(title=alt.TitleParams(f"Activation patching · {manifest['model']['model_id']}", anchor="start")) if len(panels) > 1 else chart}


def parse_map(spec: str, n_source: int, n_target: int, pair: int = 0) -> list[tuple[int, int]]:
    """``--map "3:5,4:6"`` -> ``[(3, 5), (4, 6)]``: source position ``S`` patched into target
    position ``T`` (0 = BOS; negative counts from the end, ``-1`` = last), resolved against the
    pair's token counts.

    Raises:
        HubError: an item that is not ``S:T`` with integers, a position outside its prompt, or
            the same target position twice.
    """
    out: list[tuple[int, int]] = []
    seen = set()
    for part in spec.split(","):
        part = part.strip()
        bits = part.split(":")
        try:
            if len(bits) != 2:
                raise ValueError
            s, t = int(bits[0]), int(bits[1])
        except ValueError:
            raise HubError(f"--map item {part!r} is not SOURCE:TARGET with integer positions (e.g. --map 3:5,-1:-1)") from None
        for label, value, n in (("source", s, n_source), ("target", t, n_target)):
            if not -n <= value < n:
                raise HubError(f"--map {part}: {label} position {value} is out of range for pair {pair} (the {label} has {n} tokens, positions 0..{n - 1} or -{n}..-1)")
        s, t = s % n_source, t % n_target
        if t in seen:
            raise HubError(f"--map {spec!r} patches target position {t} twice; give each target position one source position")
        seen.add(t)
        out.append((s, t))
    return out


def parse_word_pairs(specs: list[str]) -> list[tuple[str, str]]:
    """``--align-word "France=法国"`` values -> ``[("France", "法国")]``.

    Raises:
        HubError: a value without ``=`` or with an empty side.
    """
    out = []
    for spec in specs:
        src, sep, tgt = spec.partition("=")
        if not sep or not src.strip() or not tgt.strip():
            raise HubError(f"--align-word {spec!r} is not SOURCE_WORD=TARGET_WORD (e.g. --align-word France=法国)")
        out.append((src, tgt))
    return out


def word_position(tokenizer: Any, text: str, ids: list[int], word: str, role: str, pair: int = 0) -> int:
    """Position of the token that ends the first occurrence of ``word`` in ``text``: the last
    token whose character span (the tokenizer's ``offset_mapping``) overlaps the word's.

    Args:
        ids: the run's token ids of ``text`` (with BOS); the offsets must belong to the same ids.

    Raises:
        HubError: ``word`` not in ``text``, a tokenizer without offsets (not a fast tokenizer), or
            offsets that belong to other ids than the run's.
    """
    start = text.find(word)
    if start < 0:
        raise HubError(f"--align-word: {word!r} does not occur in the {role} of pair {pair} ({text!r})")
    end = start + len(word)
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError) as err:
        raise HubError(f"--align-word needs a tokenizer with character offsets (a fast tokenizer); use --map instead ({err})") from None
    if list(enc["input_ids"]) != list(ids):
        raise HubError(f"--align-word: the tokenizer's offsets for the {role} of pair {pair} do not belong to the run's tokens; use --map instead")
    found = None
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and b > start and a < end:
            found = i
    if found is None:
        raise HubError(f"--align-word: no token of the {role} of pair {pair} covers {word!r}; use --map instead")
    return found


def _metric(metric: str, logprobs: Any, kl: Any) -> Any:
    import numpy as np

    if metric == "prob":
        return np.exp(logprobs[:, 0])
    if metric == "logit-diff":
        return logprobs[:, 0] - logprobs[:, 1]
    return kl


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_patch(options: PatchOptions, config: RunConfig, model: Any = None) -> Any:
    """Run a patching sweep and write a complete run folder; returns its ``RunDir``.

    Cells are traced ``config.batch_size`` at a time (each trace also runs the clean source
    and target), so a sweep of ``C`` cells costs ``ceil(C / batch_size)`` forward passes, here
    or on NDIF (``config.remote``; ``config.detach`` leaves them there for ``hub jobs collect``).

    Raises:
        HubError: see :meth:`Patch.plan`; nothing is written when the input is bad.
    """
    analysis = Patch(options)
    metric = resolve_metric(options.metric, len(options.tokens))
    if not options.sources or len(options.sources) != len(options.targets):
        raise HubError(f"give one --source per --target (got {len(options.sources)} sources, {len(options.targets)} targets)")
    prompts, pairs, roles = [], [], []
    for pair in range(len(options.sources)):
        prompts += [options.sources[pair], options.targets[pair]]
        pairs += [pair, pair]
        roles += ["source", "target"]
    return run_analysis(analysis, prompts, config, model=model, prompt_columns={"pair": pairs, "role": roles}, extra={"metric": metric})


def _empty_baselines() -> Any:
    import polars as pl

    return pl.DataFrame(schema={"pair": pl.Int64, "run": pl.String, "text": pl.String, "metric_name": pl.String, "metric": pl.Float64, "kl": pl.Float64, "top_token_id": pl.Int64, "top_token": pl.String, "top_probability": pl.Float64})

ANALYSIS = Patch
