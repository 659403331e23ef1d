"""The semantic hub's arithmetic intervention (experiment A17): ``hub intervene arithmetic``.

Wu et al. 2024 (arXiv 2411.04986, Sec. 6), as the released ``arithmetic/intervention.py``
computes it (``paper-protocols.md`` §A17, §0, E.2, E.7). The model sees a digit prompt with
the second operand missing, ``{result}={other}+`` (``8=5+``, BOS included), and would continue
with ``target`` (``3``). A vector built from *English words* says "the first operand is one
larger": ``v = h_l("eight equals to six plus") − h_l("eight equals to five plus")`` at the last
token. Added at the digit prompt's last token, it should turn the answer ``3`` into
``2+1`` (the model keeps the result and compensates for the larger operand).

Items (``--protocol wu2024``, the only protocol): the 846 "+" items of ``create_data``
(``arithmetic/logit_lens.py:18-31``): ``target`` in 1..9, ``other`` in 1..99−target,
``result = other + target`` (< 100), in that order (``--n`` takes a seeded subset).

Vector, per item and read layer ``l`` (``paper-protocols.md`` §A17)::

    pos = f"{words(result)} equals to {words(other + 1)} plus"   # "eight equals to six plus"
    neg = f"{words(result)} equals to {words(other)} plus"       # "eight equals to five plus"
    v_l = h_l(pos)[last] − h_l(neg)[last]                         # [d_model], float32

``h_l`` = transformers' ``hidden_states[l]`` = our residual layer ``l`` (output of block ``l``;
0 = embeddings), BOS included. Number words are :func:`number_words` (``inflect``'s spelling for
0..99: ``twenty-one``).

Where it is added (``--add-at``):

* ``next`` (default, the released code): pyvene ``AdditionIntervention`` at ``block_output``
  of ``model.layers[l]`` (0-based), i.e. our residual layer ``l + 1`` (HF ``hidden_states[l+1]``):
  the vector is *read* at ``l`` and *added* at ``l + 1`` (30 → 31 for Llama-2-7b, 25 → 26 for
  Llama-3-8B; ``paper-protocols.md`` §0 table and E.7);
* ``same`` (our variant, not the paper's): added where it is read, residual layer ``l``.

``strength · v_l`` is added at the prompt's last position, in the prompt's forward pass only
(pyvene ``intervene_on_prompt=True``; generated tokens read it through the KV cache), for each
strength in ``--strength`` (default ``0,0.5,1,1.5,2,2.5,3``). Strength 0 is the unsteered
generation (adding ``0 · v`` changes no number), run once per item. Greedy decoding,
``--max-new-tokens`` 16.

Scoring (``arithmetic/intervention.py:71-76``), on ``decode(prompt + new tokens)`` with special
tokens skipped, against the prompt text:

* ``unchanged``: starts with ``prompt + str(target)`` (``8=5+3``);
* ``correct``: starts with ``prompt + str(target − 1) + "+1"`` (``8=5+2+1``);
* ``other``: anything else (a bare ``8=5+2`` followed by other text included).

Reported: the % of each per read layer and strength, with a 95% Wilson interval over items
(:func:`wilson_interval`; the released code prints means only).

Layers (``--layer``): ``auto`` = the paper's layer for its models (read layer 30 on a 32-layer
Llama-2, 25 on a 32-layer Llama-3), else the two proportional layers ``round(30/32 · L)`` and
``round(25/32 · L)`` (Gemma-3-270m, L = 18: 17 and 14), capped so that the add layer exists.
Read layers run ``0..L−1`` with ``--add-at next`` and ``0..L`` with ``same`` (our layer ``L`` is
before the final norm, HF's ``hidden_states[L]`` after it, so reading at ``L`` is not the
paper's quantity).

Stores: ``answers.parquet`` (one row per item × read layer × strength: prompt, target,
continuation, decoded text, category, the vector's L2 norm, ``decided``: the category can no
longer change with more tokens, i.e. at least 3 characters follow the prompt or generation
stopped at EOS; greedy decoding makes the first tokens independent of ``--max-new-tokens``,
so a run with fewer tokens whose rows are all decided scores exactly as one with 16), ``accuracy.parquet`` (per read
layer and strength: n, % correct / unchanged / other with Wilson 95% bounds, and % whose text
changed from the item's strength-0 text, our measure of whether the vector does anything), plot
``arithmetic_correct`` (% correct by strength, one line per read layer, with the intervals),
manifest (read and add layers, the convention, the items used).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar

from hubclient.errors import HubError
from hubclient.exec.edits import AddEdit, GenerateWithEdits, decode_generation, edit_batch, last_token_states, parse_layers, parse_numbers
from hubclient.runner import RunConfig, run_analysis

PROTOCOLS = ("wu2024",)
ADD_AT = ("next", "same")
#: The released code's strength sweep (``arithmetic/intervention.py``).
STRENGTHS = "0,0.5,1,1.5,2,2.5,3"
#: The released code's read layers for its two 32-layer models (``paper-protocols.md`` §A17).
PAPER_LAYERS = {"llama-2": 30, "llama-3": 25}
#: Texts per trace when reading the vectors.
VECTOR_CHUNK = 128
CATEGORIES = ("correct", "unchanged", "other")

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(value: int) -> str:
    """English cardinal of ``0 <= value <= 99`` as ``inflect.number_to_words`` spells it (the
    released code's ``words``): ``7`` -> ``seven``, ``40`` -> ``forty``, ``21`` -> ``twenty-one``.

    Raises:
        HubError: a value outside 0..99.
    """
    if not 0 <= value <= 99:
        raise HubError(f"number_words covers 0..99, got {value}")
    if value < 20:
        return _ONES[value]
    tens, ones = divmod(value, 10)
    return _TENS[tens] if ones == 0 else f"{_TENS[tens]}-{_ONES[ones]}"


@dataclass(frozen=True)
class Item:
    """One "+" item of the released code's ``create_data``: ``result = other + target``.

    Attributes:
        other: the given operand, ``1..99 − target``.
        target: the missing operand the model should produce, ``1..9``.
    """

    other: int
    target: int

    @property
    def result(self) -> int:
        """``other + target`` (at most 99)."""
        return self.other + self.target

    @property
    def prompt(self) -> str:
        """The digit prompt ``{result}={other}+`` (``8=5+``)."""
        return f"{self.result}={self.other}+"

    @property
    def positive(self) -> str:
        """``"{words(result)} equals to {words(other + 1)} plus"`` (``eight equals to six plus``)."""
        return f"{number_words(self.result)} equals to {number_words(self.other + 1)} plus"

    @property
    def negative(self) -> str:
        """``"{words(result)} equals to {words(other)} plus"`` (``eight equals to five plus``)."""
        return f"{number_words(self.result)} equals to {number_words(self.other)} plus"


def paper_items() -> list[Item]:
    """The 846 "+" items in the released code's order (target 1..9, then other 1..99−target)."""
    out = []
    for target in range(1, 10):
        for other in range(1, 100 - target):
            out.append(Item(other=other, target=target))
    return out


def select_items(n: int | None, seed: int) -> list[Item]:
    """All 846 items (``n`` None) or a seeded subset of ``n`` of them, kept in the code's order
    (``random.Random(seed).sample`` of the indices; a smaller ``n`` is not a prefix of a larger).

    Raises:
        HubError: ``n`` outside 1..846.
    """
    items = paper_items()
    if n is None:
        return items
    if not 1 <= n <= len(items):
        raise HubError(f"--n must be between 1 and {len(items)} (the paper's '+' items), got {n}")
    chosen = sorted(random.Random(seed).sample(range(len(items)), n))
    out = []
    for i in chosen:
        out.append(items[i])
    return out


def score(decoded: str, prompt: str, target: int) -> str:
    """The released code's category of one generation (``arithmetic/intervention.py:71-76``).

    Args:
        decoded: ``decode(prompt ids + generated ids, skip_special_tokens=True)``.
        prompt: the prompt text (``8=5+``).
        target: the missing operand (``3``).

    Returns:
        ``unchanged`` (starts with ``prompt + str(target)``), ``correct`` (starts with
        ``prompt + str(target − 1) + "+1"``) or ``other``.
    """
    if decoded.startswith(prompt + str(target)):
        return "unchanged"
    if decoded.startswith(prompt + str(target - 1) + "+1"):
        return "correct"
    return "other"


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% with the default ``z``).

    ``(p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = successes / n``
    (Wilson 1927; Brown, Cai & DasGupta 2001, Eq. 4). Returns fractions in [0, 1].

    Raises:
        HubError: ``n < 1`` or ``successes`` outside ``0..n``.
    """
    if n < 1 or not 0 <= successes <= n:
        raise HubError(f"a proportion needs 0 <= successes <= n and n >= 1, got {successes}/{n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass
class ArithmeticOptions:
    """Options of ``hub intervene arithmetic`` (see the module docstring).

    Attributes:
        protocol: ``wu2024`` (the released code's experiment).
        layers: read layers (``auto`` or the usual layer syntax).
        add_at: ``next`` (the paper's code: add at read layer + 1) or ``same``.
        strengths: the strength sweep.
        n: a seeded subset of the 846 items (``None``: all).
        seed: the subset's seed.
        max_new_tokens: greedy tokens generated (16 in the paper's code).
    """

    protocol: str = "wu2024"
    layers: str = "auto"
    add_at: str = "next"
    strengths: str = STRENGTHS
    n: int | None = None
    seed: int = 0
    max_new_tokens: int = 16


def auto_layers(model_id: str, n_layers: int, add_at: str) -> list[int]:
    """``--layer auto``: the paper's read layer for a 32-layer Llama-2 (30) or Llama-3 (25),
    else ``round(30/32 · L)`` and ``round(25/32 · L)`` (the same depth fractions), capped at
    ``L − 1`` with ``add_at == "next"`` (the add layer ``l + 1`` must exist)."""
    name = model_id.lower()
    if n_layers == 32:
        for key, layer in PAPER_LAYERS.items():
            if key in name:
                return [layer]
    top = n_layers - 1 if add_at == "next" else n_layers
    out = set()
    for fraction in (30 / 32, 25 / 32):
        out.add(min(top, round(fraction * n_layers)))
    return sorted(out)


class ArithmeticIntervention(GenerateWithEdits):
    """A17: add the per-item "operand + 1" word vector at the digit prompt's last token.

    Raises:
        HubError: ``max_new_tokens`` < 1, an unknown protocol or ``--add-at``, a bad ``--n``.
    """

    name: ClassVar[str] = "arithmetic"
    tables: ClassVar[dict[str, list[str]]] = {"answers": ["item", "layer", "strength"]}

    def __init__(self, options: ArithmeticOptions):
        super().__init__(options, options.max_new_tokens)
        if options.protocol not in PROTOCOLS:
            raise HubError(f"unknown --protocol {options.protocol!r}; choose {', '.join(PROTOCOLS)}")
        if options.add_at not in ADD_AT:
            raise HubError(f"unknown --add-at {options.add_at!r}; choose next (the paper's code: read at l, add at l+1) or same")
        self.items = select_items(options.n, options.seed)
        self.layers: list[int] = []
        self.strengths: list[float] = []
        self.tokens: list[list[int]] = []
        self.vectors: dict[int, Any] = {}

    def add_layer(self, layer: int) -> int:
        """The residual layer the vector read at ``layer`` is added at (``l + 1`` or ``l``)."""
        return layer + 1 if self.options.add_at == "next" else layer

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Resolve read layers and strengths against the model.

        Raises:
            HubError: a layer out of range (with ``next``: above ``L − 1``), a strength that is
                not a number.
        """
        o = self.options
        self.tokens = [list(t) for t in tokens]
        if o.layers == "auto":
            self.layers = auto_layers(model.model_id, model.n_layers, o.add_at)
        else:
            self.layers = parse_layers(o.layers, model)
        for layer in self.layers:
            if self.add_layer(layer) > model.n_layers:
                raise HubError(
                    f"--layer {layer}: with --add-at next the vector read at layer {layer} is added at layer {layer + 1}, but this model's "
                    f"residual layers end at {model.n_layers}; choose a layer up to {model.n_layers - 1} or --add-at same"
                )
        self.strengths = parse_numbers(o.strengths, "strength", integer=False)

    def setup(self, model: Any, executor: Any) -> None:
        """Per item and read layer, ``v = h_l(positive)[last] − h_l(negative)[last]``
        (``[n_items, d_model]`` float32 per layer), ``VECTOR_CHUNK`` texts per trace."""
        import torch

        texts = []
        for item in self.items:
            texts += [item.positive, item.negative]
        parts: dict[int, list[Any]] = {}
        for start in range(0, len(texts), VECTOR_CHUNK):
            states = last_token_states(model, texts[start : start + VECTOR_CHUNK], self.layers, executor)
            for layer in self.layers:
                parts.setdefault(layer, []).append(states[layer])
        self.vectors = {}
        for layer in self.layers:
            both = torch.cat(parts[layer])
            self.vectors[layer] = both[0::2] - both[1::2]

    def describe_run(self) -> dict[str, Any]:
        """Manifest fields: read and add layers, the convention, the number of items."""
        add = []
        for layer in self.layers:
            add.append(self.add_layer(layer))
        return {
            "read_layers": list(self.layers), "add_layers": add, "n_items": len(self.items),
            "layer_convention": "residual layer l = output of block l = transformers hidden_states[l] (0 = embeddings); "
            + ("--add-at next: added at layer l+1 = pyvene block_output l (the released code)" if self.options.add_at == "next" else "--add-at same: added at the read layer (not the released code)"),
        }

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> list[Any]:
        """Every item unsteered (strength 0) and at each read layer × nonzero strength,
        ``batch_size`` rows per greedy generation; the vector goes at the prompt's last token."""
        units = []
        for i in range(len(self.items)):
            units.append((i, None, 0.0))
            for layer in self.layers:
                for strength in self.strengths:
                    if strength != 0:
                        units.append((i, layer, strength))
        batches = []
        for start in range(0, len(units), batch_size):
            chunk = units[start : start + batch_size]
            edits, rows, prompt_index = [], [], []
            for i, layer, strength in chunk:
                rows.append(tokens[i])
                prompt_index.append(i)
                if layer is None:
                    edits.append([])
                else:
                    edits.append([AddEdit(self.add_layer(layer), len(tokens[i]) - 1, self.vectors[layer][i][None, :], strength)])
            batches.append(edit_batch(model, len(batches), rows, edits, prompt_index, None, None, chunk))
        return batches

    def rows(self, model: Any, batch: Any, saved: dict[str, Any]) -> dict[str, Any]:
        """One row per generation (strength-0 rows once per read layer): texts and category."""
        import polars as pl

        out = decode_generation(model, batch, saved)
        records = []
        for r, (i, layer, strength) in enumerate(batch.meta["rows"]):
            item = self.items[i]
            decoded = model.tokenizer.decode(list(batch.tokens[r]) + out.new_tokens[r], skip_special_tokens=True)
            category = score(decoded, item.prompt, item.target)
            decided = not decoded.startswith(item.prompt) or len(decoded) >= len(item.prompt) + 3 or len(out.new_tokens[r]) < self.max_new_tokens
            for read in (self.layers if layer is None else [layer]):
                records.append({
                    "item": i, "prompt": item.prompt, "other": item.other, "target": item.target, "result": item.result,
                    "layer": read, "add_layer": self.add_layer(read), "strength": float(strength),
                    "vector_norm": float(self.vectors[read][i].norm()), "continuation": out.texts[r], "decoded": decoded, "category": category,
                    "decided": decided,
                })
        schema = {"item": pl.Int64, "prompt": pl.String, "other": pl.Int64, "target": pl.Int64, "result": pl.Int64, "layer": pl.Int64,
                  "add_layer": pl.Int64, "strength": pl.Float64, "vector_norm": pl.Float64, "continuation": pl.String, "decoded": pl.String,
                  "category": pl.String, "decided": pl.Boolean}
        return {"answers": pl.DataFrame(records, schema=schema)}

    def finish(self, run: Any) -> dict[str, Any]:
        """``accuracy``: per read layer and strength, n and the % of each category with its
        Wilson 95% interval (:func:`wilson_interval`)."""
        return {"accuracy": accuracy_table(run.table("answers"))}

    @classmethod
    def summary(cls, run: Any) -> str:
        """Per read layer: % correct (95% CI) and % unchanged at every strength."""
        acc = run.table("accuracy")
        if acc.height == 0:
            return ""
        lines = []
        answers = run.table("answers")
        if "decided" in answers.columns and not answers["decided"].all():
            lines.append(f"  warning: {int((~answers['decided']).sum())} generations are too short to decide their category; raise --max-new-tokens")
        for row in acc.sort("layer", "strength").iter_rows(named=True):
            lines.append(
                f"  layer {row['layer']}→{row['add_layer']} strength {row['strength']:g}: correct {row['correct']:.1f}% "
                f"[{row['correct_low']:.1f}, {row['correct_high']:.1f}], unchanged {row['unchanged']:.1f}%, other {row['other']:.1f}%, "
                f"text changed {row['changed']:.1f}% (n={row['n']})"
            )
        return "\n".join(lines)

    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """``arithmetic_correct``: % correct (``{target−1}+1``), % unchanged and % whose text
        changed, by strength, one colour per read layer, with Wilson 95% intervals."""
        import altair as alt
        import polars as pl

        acc = run.table("accuracy")
        if acc.height == 0:
            return {}
        frame = pl.concat([
            acc.select("layer", "add_layer", "strength", "n", value=pl.col(c), low=pl.col(f"{c}_low"), high=pl.col(f"{c}_high"), outcome=pl.lit(label))
            for c, label in (("correct", "correct: {target−1}+1"), ("unchanged", "unchanged: {target}"), ("changed", "text changed vs strength 0 (ours)"))
        ]).with_columns(series=pl.format("read {} → add {}", pl.col("layer"), pl.col("add_layer")))
        base = alt.Chart(frame).encode(
            x=alt.X("strength:Q", title="strength"),
            color=alt.Color("series:N", title="layer"),
        )
        scale = alt.Scale(domain=[0, 100])
        line = base.mark_line(point=True).encode(y=alt.Y("value:Q", title="% of items", scale=scale),
                                                 tooltip=["series", "strength", alt.Tooltip("value:Q", format=".1f"), "n"])
        band = base.mark_errorbar().encode(y=alt.Y("low:Q", title="% of items", scale=scale), y2="high:Q")
        n = int(acc["n"].max())
        model = run.manifest.get("model", {}).get("model_id", "")
        chart = (band + line).properties(width=260, height=220).facet(column=alt.Column("outcome:N", title=None, sort=["correct: {target−1}+1", "unchanged: {target}", "text changed vs strength 0 (ours)"])).properties(
            title=[f"Arithmetic intervention (Wu et al. A17) · {model}", f"v = h(words, other+1) − h(words, other) added at the last token of {{result}}={{other}}+; n = {n} items, 95% Wilson CI"]
        )
        return {"arithmetic_correct": chart}


def accuracy_table(answers: Any) -> Any:
    """Per ``(layer, add_layer, strength)``: ``n`` and, for each category, its % and Wilson 95%
    bounds (``correct``, ``correct_low``, ``correct_high``, …), in percent; also ``changed``
    (our measure, not the paper's): the % of items whose decoded text differs from the same
    item's strength-0 text, with its Wilson bounds."""
    import polars as pl

    base = answers.filter(pl.col("strength") == 0).select("item", "layer", base=pl.col("decoded"))
    joined = answers.join(base, on=["item", "layer"], how="left")
    records = []
    for (layer, add, strength), rows in joined.group_by("layer", "add_layer", "strength", maintain_order=True):
        n = rows.height
        rec = {"layer": layer, "add_layer": add, "strength": strength, "n": n}
        counts = {}
        for cat in CATEGORIES:
            counts[cat] = int((rows["category"] == cat).sum())
        counts["changed"] = int(rows["decoded"].ne_missing(rows["base"]).sum())
        for name, k in counts.items():
            low, high = wilson_interval(k, n)
            rec.update({name: 100.0 * k / n, f"{name}_low": 100.0 * low, f"{name}_high": 100.0 * high})
        records.append(rec)
    return pl.DataFrame(records).sort("layer", "strength")


def run_arithmetic(options: ArithmeticOptions, config: RunConfig, model: Any = None) -> Any:
    """Run the A17 arithmetic intervention and write a complete run folder; returns its
    ``RunDir`` (here or on NDIF with ``config.remote``).

    Raises:
        HubError: an unknown protocol or ``--add-at``, a bad ``--n``, a layer out of range, a
            strength that is not a number, ``--max-new-tokens`` < 1; nothing is written then.
    """
    analysis = ArithmeticIntervention(options)
    texts, others, targets = [], [], []
    for item in analysis.items:
        texts.append(item.prompt)
        others.append(item.other)
        targets.append(item.target)
    return run_analysis(analysis, texts, config, model=model, prompt_columns={"other": others, "target": targets})


__all__ = ["ANALYSIS", "ArithmeticIntervention", "ArithmeticOptions", "Item", "number_words", "paper_items", "run_arithmetic", "score", "select_items", "wilson_interval"]

ANALYSIS = ArithmeticIntervention
