"""The vision intervention of the semantic hub paper (Wu et al. 2024, paper-protocols.md A19):
``hub intervene steer --task colour-edit``.

The paper shows Chameleon-7b a two-colour image (top half one colour, bottom half another, from
red/green/blue/black), and at the image positions of one half **replaces** the block output by
``W_U[new] − W_U[old]`` (first token of each colour word) at every layer from a start layer to
the last (pyvene ``VanillaIntervention`` at ``block_output`` of layers ``i..L−1``, prompt pass
only), then greedily generates 15 tokens and checks that the answer names the new colour and
not the old one. hub runs it on the image models it supports: Chameleon (the paper's model; by
default with the paper's prompt ``What are the two colors in the image?\n<image>``, to which
the processor appends its sep token), LLaVA-style and Gemma 3 (by default with a LLaVA-1.5
prompt, :data:`DEFAULT_TEMPLATE`).

Layer convention: hub layer ``l`` is the output of block ``l`` (``hidden_states[l]``), so
pyvene ``block_output`` of 0-based layer ``i`` is hub layer ``i+1``; a start layer ``s`` (hub
convention, ``1..L``) edits hub layers ``s..L`` (pyvene ``s−1..L−1``). The paper's ``i = 0..31``
are hub ``1..32``.

Positions: the model's image-token positions in raster order (LLaVA-1.5: 576 = 24×24 patches;
Gemma 3: 256; Chameleon: 1024 = 32×32 VQ codes of 16-pixel patches, the ``<image>`` positions
between ``<racm3:break>`` and ``<eoss>``, whose embeddings are the codes' token embeddings);
``top`` = the first half of them, ``bottom`` = the second half.

Parsing (``vision/intervention.py``, as paper-protocols.md A19 states it), on the generated
continuation (lower-cased): the answer is the text up to the first ``.``; exactly one distinct
``(\\w+) and (\\w+)`` match is required; a continuation containing ``?`` fails (the paper's
decoded output, prompt included, must have exactly one ``?``, the prompt's); ``correct`` iff
``colours == (colours − {old}) ∪ {new}``. ``names_new`` / ``names_old`` say whether the
colour words occur anywhere in the continuation.

Stores: ``generations.parquet`` (one row per case × condition: ``start_layer`` null for the
unedited run), ``success_rates.parquet`` (per start layer: n, correct, rate, 95% Wilson CI),
plot ``colour_edit`` and the manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.exec.batching import left_pad
from hubclient.exec.edits import (
    ReplaceEdit,
    apply_replacements,
    replace_meta,
    unembedding_rows,
)
from hubclient.exec.multimodal import PER_TOKEN

CASE_COLUMNS = ("top", "bottom", "side", "old", "new")
SIDES = ("top", "bottom")
_PAIR = re.compile(r"(\w+) and (\w+)")


#: The paper's A19 prompt (``vision/intervention.py``, Chameleon-7b); Chameleon's processor
#: appends its sep token.
PAPER_TEMPLATE = "What are the two colors in the image?\n{media}"
#: hub's prompt on the image families the paper did not run A19 on (LLaVA-1.5's chat format).
DEFAULT_TEMPLATE = "USER: {media}\nWhat are the two colors in the image? ASSISTANT:"
#: Families whose default prompt is :data:`PAPER_TEMPLATE`.
PAPER_FAMILIES = ("chameleon",)


def default_template(family: str) -> str:
    """The colour edit's prompt when none is given: :data:`PAPER_TEMPLATE` on Chameleon (the
    paper's model), :data:`DEFAULT_TEMPLATE` on the other families."""
    return PAPER_TEMPLATE if family in PAPER_FAMILIES else DEFAULT_TEMPLATE


@dataclass
class ColourEditOptions:
    """Options of the colour edit.

    Attributes:
        starts: start layers (hub convention, ``1..L``): ``all``, ``16``, ``1:32:4``…
        max_new_tokens: greedy tokens to generate (the paper: 15).
        template: the text prompt with ``{media}`` where the image goes; ``None``: the
            model's default, :func:`default_template` (resolved by :func:`run_colour_edit`
            once the model is loaded, and recorded in the manifest).
        baseline: also generate each case without an edit (``start_layer`` null).
    """

    starts: str = "all"
    max_new_tokens: int = 15
    template: str | None = None
    baseline: bool = True


def parse_colours(text: str) -> set[str] | None:
    """The colour pair an answer names, as the paper's code parses it (module docstring), or
    ``None`` when the answer does not parse (a ``?``, no or several distinct ``X and Y``)."""
    text = text.lower()
    if "?" in text:
        return None
    answer = text.split(".", 1)[0]
    matches = set(_PAIR.findall(answer))
    if len(matches) != 1:
        return None
    return set(next(iter(matches)))


def is_correct(text: str, old: str, new: str) -> bool:
    """``colours == (colours − {old}) ∪ {new}`` for the parsed colours (False when unparsed):
    the new colour is named and the old one is not; the untouched colour is not checked."""
    colours = parse_colours(text)
    return colours is not None and colours == (colours - {old}) | {new}


def check_cases(pairs: list[Any]) -> None:
    """Validate the case columns of a colour-edit pairs file before any model is loaded.

    Raises:
        HubError: a missing ``top``/``bottom``/``side``/``old``/``new`` cell, a side other
            than top/bottom, ``old`` not the colour of that side, or ``new`` equal to ``old``
            (file and line named).
    """
    for pair in pairs:
        missing = [c for c in CASE_COLUMNS if not pair.extra.get(c)]
        if missing:
            raise HubError(f"{pair.where()}: a colour-edit pairs file needs columns {', '.join(CASE_COLUMNS)}; missing {', '.join(missing)} (write one with the default: omit the pairs file)")
        case = pair.extra
        if case["side"] not in SIDES:
            raise HubError(f"{pair.where()}: side must be top or bottom, got {case['side']!r}")
        if case["old"] != case[case["side"]]:
            raise HubError(f"{pair.where()}: old {case['old']!r} is not the {case['side']} colour {case[case['side']]!r}")
        if case["new"] == case["old"]:
            raise HubError(f"{pair.where()}: new and old colour are both {case['new']!r}")


class ColourEdit(Analysis):
    """A19: replace the image positions of one half by ``W_U[new] − W_U[old]`` at layers
    ``s..L`` and generate (module docstring).

    Args:
        options: the sweep.
        pairs: one :class:`~hubclient.inputs.media.MediaPair` per case (``extra`` holds the
            case columns, :func:`check_cases`), in prompt order.

    Raises:
        HubError: ``max_new_tokens`` < 1, bad case columns.
    """

    name: ClassVar[str] = "colour-edit"
    generates: ClassVar[bool] = True
    tables: ClassVar[dict[str, list[str]]] = {"generations": ["case", "start_layer"]}
    local_only: ClassVar[tuple[str, ...]] = ("pairs", "extras")

    def __init__(self, options: ColourEditOptions, pairs: list[Any]):
        super().__init__(options)
        if options.max_new_tokens < 1:
            raise HubError(f"--max-new-tokens must be at least 1, got {options.max_new_tokens}")
        check_cases(pairs)
        self.pairs = pairs
        self.extras: list[dict[str, Any]] = []
        self.starts: list[int] = []
        self.halves: list[list[int]] = []
        self.colour_ids: dict[str, int] = {}
        self.vectors: dict[tuple[str, str], Any] = {}

    def describe_options(self) -> dict[str, Any]:
        """The options (manifest, resume checks)."""
        from dataclasses import asdict

        return asdict(self.options)

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Resolve the start layers, each case's half of the image positions, the colour
        words' first tokens, and the processor tensors of each case.

        Raises:
            HubError: a text-only model, a start layer outside ``1..L``, a colour word without
                a token or whose first token is the unknown token, an image with fewer than 2
                image positions.
        """
        from hubclient.exec.edits import parse_layers
        from hubclient.exec.multimodal import encode, media_positions

        if model.modality != "image":
            raise HubError(f"--task colour-edit needs an image language model (Chameleon, LLaVA-style, Gemma 3); {model.model_id!r} reads {model.modality or 'text'} only")
        starts = parse_layers(self.options.starts, model)
        if 0 in starts:
            raise HubError("--layer 0 is the embeddings; the colour edit replaces block outputs, start layers 1..L (pyvene block_output i = hub layer i+1)")
        self.starts = sorted(starts)
        tok = model.tokenizer
        for pair in self.pairs:
            for colour in (pair.extra["old"], pair.extra["new"]):
                if colour in self.colour_ids:
                    continue
                found = tok(colour, add_special_tokens=False)["input_ids"]
                if not found or (tok.unk_token_id is not None and found[0] == tok.unk_token_id):
                    raise HubError(f"the colour word {colour!r} is not in this model's vocabulary")
                self.colour_ids[colour] = found[0]
        _, extras = encode(model, prompts, list(self.pairs))
        self.extras = extras
        self.halves = []
        for i, ids in enumerate(tokens):
            positions = media_positions(ids, model.media_token_id)
            if len(positions) < 2:
                raise HubError(f"{self.pairs[i].where()}: {len(positions)} image positions; the edit needs at least 2 (a top and a bottom half)")
            half = len(positions) // 2
            side = self.pairs[i].extra["side"]
            self.halves.append(positions[:half] if side == "top" else positions[half:])

    def setup(self, model: Any, executor: Any) -> None:
        """Read ``W_U`` rows of the colour words (one short request where the batches run) and
        form each (new, old) vector ``W_U[new] − W_U[old]`` ``[d_model]`` float32."""
        names = sorted(self.colour_ids)
        rows = unembedding_rows(model, [self.colour_ids[c] for c in names], executor).float()
        index = {c: i for i, c in enumerate(names)}
        for pair in self.pairs:
            key = (pair.extra["new"], pair.extra["old"])
            self.vectors[key] = (rows[index[key[0]]] - rows[index[key[1]]]).contiguous()

    def describe_run(self) -> dict[str, Any]:
        """Start layers, colour token ids and the layer convention, for the manifest."""
        return {"start_layers": self.starts, "colour_token_ids": self.colour_ids,
                "layer_convention": "start layer s edits hub layers s..L = pyvene block_output s-1..L-1"}

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> list[Batch]:
        """Units = cases × conditions (the unedited run, then each start layer), cut into
        left-padded generation batches of ``batch_size`` rows with their processor tensors
        (per-token tensors left-padded like the ids)."""
        import torch

        conditions: list[int | None] = ([None] if self.options.baseline else []) + list(self.starts)
        n_layers = model.n_layers
        units = []
        for case in range(len(tokens)):
            for start in conditions:
                units.append((case, start))
        batches = []
        for index, first in enumerate(range(0, len(units), batch_size)):
            chunk = units[first : first + batch_size]
            rows_tokens, edits, extras, labels = [], [], [], []
            for case, start in chunk:
                rows_tokens.append(tokens[case])
                extras.append(self.extras[case])
                pair = self.pairs[case]
                row_edits = []
                if start is not None:
                    vector = self.vectors[(pair.extra["new"], pair.extra["old"])]
                    for layer in range(start, n_layers + 1):
                        row_edits.append(ReplaceEdit(layer=layer, positions=self.halves[case], vector=vector))
                edits.append(row_edits)
                labels.append((case, start))
            inputs, offsets = left_pad(rows_tokens, model.tokenizer.pad_token_id)
            width = inputs["input_ids"].shape[1]
            extra: dict[str, Any] = {}
            for key in extras[0]:
                parts = []
                for value in extras:
                    part = value[key]
                    if key in PER_TOKEN:  # [1, seq] like the ids: pad on the left
                        pad = torch.zeros((part.shape[0], width - part.shape[1]), dtype=part.dtype)
                        part = torch.cat([pad, part], dim=1)
                    parts.append(part)
                extra[key] = torch.cat(parts, dim=0)
            empty = torch.zeros(0, dtype=torch.long)
            meta = replace_meta(edits, offsets)
            meta["rows"] = labels
            batches.append(Batch(
                index=index, prompt_index=[c for c, _ in chunk], input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                lengths=[len(t) for t in rows_tokens], row_batch=empty, row_position=empty, tokens=[list(t) for t in rows_tokens],
                extra=extra, meta=meta, offsets=offsets,
            ))
        return batches

    def generate_kwargs(self, model: Any, batch: Batch) -> dict[str, Any]:
        """Greedy decoding of ``max_new_tokens`` (the paper: 15)."""
        return dict(max_new_tokens=self.options.max_new_tokens, do_sample=False, temperature=None, top_k=None, top_p=None,
                    pad_token_id=model.tokenizer.pad_token_id)

    def trace_generate(self, model: Any, batch: Batch, tracer: Any, out: dict[str, Any]) -> None:
        """Body: the replacements in the prompt's forward pass (:func:`apply_replacements`)."""
        apply_replacements(model, batch.meta["replace_order"], batch.meta["replace"])

    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """One row per case × condition: the continuation (up to the first EOS, special
        tokens skipped) and its success flags."""
        import polars as pl

        result = saved["generated"]
        width = batch.input_ids.shape[1]
        eos = model.tokenizer.eos_token_id
        records = []
        for row, (case, start) in enumerate(batch.meta["rows"]):
            ids = []
            for t in result[row, width:].tolist():
                if t == eos:
                    break
                ids.append(t)
            text = model.tokenizer.decode(ids, skip_special_tokens=True)
            pair = self.pairs[case]
            c = pair.extra
            words = set(re.findall(r"\w+", text.lower()))
            parsed = parse_colours(text)
            records.append({
                "case": case, "image": pair.media.name, "top": c["top"], "bottom": c["bottom"], "side": c["side"],
                "old": c["old"], "new": c["new"], "start_layer": start, "edited": start is not None,
                "text": text, "token_ids": ids, "new_tokens": len(ids), "parsed": None if parsed is None else " and ".join(sorted(parsed)),
                "names_new": c["new"] in words, "names_old": c["old"] in words, "correct": is_correct(text, c["old"], c["new"]),
            })
        schema = {"start_layer": pl.Int64, "token_ids": pl.List(pl.Int64)}
        return {"generations": pl.DataFrame(records, schema_overrides=schema)}

    def finish(self, run: Any) -> dict[str, Any]:
        """``success_rates``: per start layer (null = unedited), n, correct, rate and 95%
        Wilson CI; also the share naming the new colour and the share naming the old one."""
        return {"success_rates": success_rates(run.table("generations"))}

    @classmethod
    def summary(cls, run: Any) -> str:
        """Success rate per start layer with its CI."""
        rates = run.table("success_rates")
        lines = ["colour edit (A19): answers naming the new colour and not the old (95% Wilson CI):"]
        for r in rates.iter_rows(named=True):
            label = "unedited" if r["start_layer"] is None else f"layers {r['start_layer']}..L"
            lines.append(f"  {label}: {r['correct']}/{r['n']} = {r['rate']:.1%} [{r['lo']:.1%}, {r['hi']:.1%}]")
        return "\n".join(lines)

    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """``colour_edit``: success rate against the start layer with its 95% Wilson band
        (the unedited rate as a rule)."""
        import altair as alt
        import polars as pl

        rates = run.table("success_rates")
        edited = rates.filter(pl.col("start_layer").is_not_null())
        if edited.height == 0:
            return {}
        base = alt.Chart(edited).encode(x=alt.X("start_layer:Q", title="start layer s (edit at hub layers s..L)"))
        band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", title="share correct", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])), y2="hi:Q")
        line = base.mark_line(point=True).encode(y="rate:Q", tooltip=["start_layer", "n", "correct", alt.Tooltip("rate:Q", format=".1%")])
        chart = band + line
        unedited = rates.filter(pl.col("start_layer").is_null())
        if unedited.height:
            chart = chart + alt.Chart(unedited).mark_rule(strokeDash=[4, 4], color="gray").encode(y="rate:Q")
        return {"colour_edit": chart.properties(width=420, height=240, title="two-colour images: replace one half by W_U[new] − W_U[old] (Wu et al. 2024 A19)")}


def success_rates(gen: Any) -> Any:
    """Per ``start_layer`` (null = unedited): ``n``, ``correct`` (count), ``rate``, ``lo``/``hi``
    (95% Wilson, Wilson 1927, its rounding at 0 and n clipped), ``names_new`` / ``names_old`` (shares)."""
    import polars as pl

    from analyses.steer import _wilson

    out = []
    grouped = gen.group_by("start_layer").agg(n=pl.len(), correct=pl.col("correct").sum(), names_new=pl.col("names_new").mean(), names_old=pl.col("names_old").mean())
    for r in grouped.sort("start_layer", nulls_last=False).iter_rows(named=True):
        lo, hi = _wilson(int(r["correct"]), int(r["n"]))
        rate = r["correct"] / r["n"]
        out.append({**r, "correct": int(r["correct"]), "rate": rate, "lo": max(0.0, min(lo, rate)), "hi": min(1.0, max(hi, rate))})
    return pl.DataFrame(out, schema_overrides={"start_layer": pl.Int64})


def run_colour_edit(options: ColourEditOptions, pairs: list[Any], config: Any, model: Any = None) -> Any:
    """Run the colour edit over ``pairs`` (one per case) and write a run folder.

    Without ``options.template`` the model is loaded first (by the executor ``config`` asks
    for, or ``model``) and the prompt is its family's :func:`default_template`.

    Raises:
        HubError: bad cases or template (before loading a model), see :meth:`ColourEdit.prepare`.
    """
    from hubclient.exec.multimodal import check_template
    from hubclient.runner import run_analysis

    if options.template is not None:
        check_template(options.template)
    analysis = ColourEdit(options, pairs)
    if options.template is None:
        if model is None:
            from hubclient.exec import executor_for

            model = executor_for(config).load_model(config)
        options.template = default_template(model.arch.family)
    prompts = [options.template] * len(pairs)
    columns = {}
    for c in CASE_COLUMNS:
        columns[c] = [p.extra[c] for p in pairs]
    return run_analysis(analysis, prompts, config, model=model, prompt_columns=columns, media=list(pairs))
