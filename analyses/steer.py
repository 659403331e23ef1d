"""Cross-lingual activation steering (ActAdd): ``hub intervene steer``.

Traces: the contrast prompts (``--positive`` / ``--negative``, e.g. English "Good" / "Bad") in
one forward pass, giving the ActAdd steering vector ``V_l = h_l(positive) - h_l(negative)``
(Turner et al. 2023, Eq. 1) at every ``--layer`` (:func:`hubclient.exec.edits.steering_vectors`,
in :meth:`Steer.setup`); then generates continuations of every prompt, unsteered and steered with
each vector × layer × coefficient, ``--batch-size`` rows per ``generate`` call
(:class:`hubclient.exec.edits.GenerateWithEdits`). Both run locally or on NDIF (``--remote``,
``--detach``) like every analysis.

Pooling rule (ActAdd): ``V_l`` keeps one row per token position: the two contrast prompts are
aligned from the start (BOS included) and the shorter is padded at its end with the space
token (the pad token where a space is no single token), so ``V_l`` is ``[k, d_model]``.
``--positions first`` adds ``c · V_l[i]`` at prompt position ``i`` (``i < k``; ActAdd's
front injection, as in Wu et al. 2024 Sec. 6); ``--positions N`` adds the same rows from prompt
position ``N`` on; ``--positions all`` adds ``c · V_l[k-1]`` (the difference at the contrast
prompts' last token) at every position of the prompt and of every generated token. Prompts
shorter than the rows to add are an error.

Reduces: each continuation's text; its sentiment P(positive) from a classifier
(:mod:`hubclient.inputs.sentiment`, held-out accuracy per language in the manifest); and a
model-internal score needing no classifier, the next-token log-probability difference between
positive and negative word sets at the first generated position,
``s = log sum_{t in P} p(t) - log sum_{t in N} p(t)`` (with the steering applied).

Stores: ``generations.parquet`` (one row per prompt × condition: unsteered rows have
``steered = false``), ``side_by_side.parquet`` (each steered continuation next to the same
prompt's unsteered one, with the differences), ``effects.parquet`` (per language, vector,
layer, coefficient: mean score changes), plots ``steer_internal`` and ``steer_sentiment``
(layer × coefficient heatmaps of the mean change), manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


from hubclient.errors import HubError
from hubclient.exec.edits import AddEdit, GenerateWithEdits, contrast_tokens, decode_generation, edit_batch, parse_layers, parse_numbers, steering_vectors
from hubclient.runner import RunConfig, run_analysis
from hubclient.science.tokens import decoder, word_ids

#: Sentiment words whose next-token probability mass gives the model-internal score (each is
#: used only where it is one token of the model's vocabulary).
POSITIVE_WORDS = [
    " good", " great", " excellent", " happy", " love", " wonderful", " best", " nice", " amazing", " perfect",
    " bueno", " buena", " excelente", " feliz", " genial", " mejor", " encanta", " perfecto",
    "好", "喜欢", "满意", "棒", "不错", "开心", "推荐",
]
NEGATIVE_WORDS = [
    " bad", " terrible", " awful", " worst", " hate", " poor", " horrible", " sad", " disappointed", " useless",
    " malo", " mala", " peor", " odio", " triste", " pésimo", " fatal",
    "差", "坏", "失望", "糟糕", "烂", "讨厌", "退货",
]


@dataclass
class SteerOptions:
    """Options of ``hub intervene steer`` (see the module docstring)."""

    positive: list[str] = field(default_factory=lambda: ["Good"])
    negative: list[str] = field(default_factory=lambda: ["Bad"])
    layers: str = "6"
    coeffs: str = "5"
    positions: str = "first"
    max_new_tokens: int = 20
    sample: bool = False
    temperature: float = 1.0
    seed: int = 0
    positive_words: list[str] = field(default_factory=lambda: list(POSITIVE_WORDS))
    negative_words: list[str] = field(default_factory=lambda: list(NEGATIVE_WORDS))
    classifier: str = "char-ngram"


def word_set(tokenizer: Any, words: list[str]) -> tuple[list[int], list[str]]:
    """Token ids of the words that are a single token (with and without a leading space):
    rule ``single`` of spelling ``stripped+space`` (:mod:`hubclient.science.tokens`).

    Returns:
        (ids, token texts), duplicates removed, the unknown token excluded.
    """
    ids: list[int] = []
    for word in words:
        for token in word_ids(tokenizer, word, "single", "stripped+space"):
            if token not in ids:
                ids.append(token)
    return ids, decoder(tokenizer)(ids)


def sentiment_prompts(data: Path, languages: list[str], label: str, n: int, prefix_words: int) -> tuple[list[str], list[str]]:
    """Beginnings of sentences from ``<data>/<language>/test.csv`` (never used to train the
    classifier): the first ``n`` rows with ``label`` (``any`` for all), cut to their first
    ``prefix_words`` words (Chinese, written without spaces: ``2 × prefix_words`` characters).

    Returns:
        (prompts, language of each prompt).

    Raises:
        HubError: missing files, an unknown language, or no matching rows.
    """
    import polars as pl

    from hubclient.inputs.sentiment import LANGUAGES, read_split

    prompts, langs = [], []
    for language in languages:
        if language not in LANGUAGES:
            raise HubError(f"unknown --language {language!r}; choose among {', '.join(LANGUAGES)}")
        frame = read_split(data, language, "test", labels=None)
        if label != "any":
            frame = frame.filter(pl.col("label") == label)
        count = 0
        for text in frame["text"].to_list():
            words = text.split()
            if language == "chinese":
                cut = text.strip()[: 2 * prefix_words]
            else:
                if len(words) < prefix_words + 2 or words[0].startswith(("@", "#", "http")):
                    continue
                cut = " ".join(words[:prefix_words])
            if not cut.strip():
                continue
            prompts.append(cut)
            langs.append(language)
            count += 1
            if count == n:
                break
        if count == 0:
            raise HubError(f"no {label} rows in {data}/{language}/test.csv")
    return prompts, langs


@dataclass
class SteerPlan:
    """The validated sweep of one steering run.

    Attributes:
        tokens: token ids of each prompt.
        layers / coeffs: the swept layers (0 = embeddings) and coefficients.
        start: first prompt position edited (``--positions``; 0 for ``first``/``all``).
        pos_ids / neg_ids: single-token ids of the positive / negative words (internal score).
        pos_tokens / neg_tokens: their texts (for the manifest).
        vectors: ``(name, layer -> [k, d_model] float32)`` per contrast pair, filled by
            :meth:`Steer.setup`.
    """

    tokens: list[list[int]]
    layers: list[int]
    coeffs: list[float]
    start: int
    pos_ids: list[int]
    neg_ids: list[int]
    pos_tokens: list[str]
    neg_tokens: list[str]
    vectors: list[tuple[str, dict[int, Any]]] = field(default_factory=list)


class Steer(GenerateWithEdits):
    """ActAdd steering of generations, swept over layers × coefficients (module docstring).

    Args:
        options: the sweep.
        data: the sentiment data folder (trains the default classifier), or ``None``.
        languages: language of each prompt (``"unknown"`` when absent).
    """

    name: ClassVar[str] = "steer"
    tables: ClassVar[dict[str, list[str]]] = {"generations": ["prompt", "steered", "vector", "layer", "coeff"]}

    def __init__(self, options: SteerOptions, data: Path | None = None, languages: list[str] | None = None):
        super().__init__(options, options.max_new_tokens, options.sample, options.temperature)
        self.data = data
        self.languages = languages
        self.prompts: list[str] = []
        self.steer_plan: SteerPlan | None = None
        self._classifier: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # the classifier (scikit-learn) never travels with a remote request; it is rebuilt
        # from the options where rows are made
        state = dict(self.__dict__)
        state["_classifier"] = None
        return state

    def classifier(self) -> Any:
        """The sentiment classifier (loaded once from ``--classifier`` and the data folder), or
        ``None`` for ``--classifier none``."""
        from hubclient.inputs.sentiment import load_classifier

        if self._classifier is None and self.options.classifier != "none":
            self._classifier = load_classifier(self.options.classifier, self.data)
        return self._classifier

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Validate the sweep against the model (:meth:`plan`)."""
        self.prompts = list(prompts)
        if self.languages is None:
            self.languages = ["unknown"] * len(prompts)
        self.steer_plan = self.plan(model, prompts, tokens)

    def setup(self, model: Any, executor: Any) -> None:
        """Compute the steering vectors through ``executor`` (here or on NDIF).

        Raises:
            HubError: rows to add beyond a prompt's end.
        """
        o, plan = self.options, self.steer_plan
        plan.vectors = []
        for i in range(len(o.positive)):
            name = f"{o.positive[i]} - {o.negative[i]}"
            by_layer = steering_vectors(model, o.positive[i], o.negative[i], plan.layers, executor)
            k = next(iter(by_layer.values())).shape[0]
            if o.positions != "all":
                for p, ids in enumerate(plan.tokens):
                    if plan.start + k > len(ids):
                        raise HubError(
                            f"--positions {o.positions}: the vector {name!r} has {k} positions ({plan.start}..{plan.start + k - 1}), beyond prompt {p + 1}'s (counting from 1) "
                            f"{len(ids)} tokens; use --positions all, a shorter contrast pair, or longer prompts"
                        )
            plan.vectors.append((name, by_layer))

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> list[Any]:
        """Every prompt unsteered and under each vector × layer × coefficient, longest prompts
        first, ``batch_size`` rows a generation; sampling seeds ``--seed + batch``."""
        o, plan = self.options, self.steer_plan
        units = []  # (prompt, vector name, layer, coeff); vector None = unsteered
        order = sorted(range(len(plan.tokens)), key=lambda i: -len(plan.tokens[i]))
        for p in order:
            units.append((p, None, None, None))
            for name, _ in plan.vectors:
                for layer in plan.layers:
                    for coeff in plan.coeffs:
                        units.append((p, name, layer, coeff))
        vectors = dict(plan.vectors)
        batches = []
        for start in range(0, len(units), batch_size):
            chunk = units[start : start + batch_size]
            edits, rows, prompt_index = [], [], []
            for p, name, layer, coeff in chunk:
                rows.append(plan.tokens[p])
                prompt_index.append(p)
                if name is None:
                    edits.append([])
                elif o.positions == "all":
                    edits.append([AddEdit(layer, 0, vectors[name][layer][-1], coeff, every_step=True)])
                else:
                    edits.append([AddEdit(layer, plan.start, vectors[name][layer], coeff)])
            index = len(batches)
            seed = o.seed + index if o.sample else None
            batches.append(edit_batch(model, index, rows, edits, prompt_index, seed, [plan.pos_ids, plan.neg_ids], chunk))
        return batches

    def describe_run(self) -> dict[str, Any]:
        """Manifest fields: the internal score's word tokens and each vector's rows ``k``."""
        plan = self.steer_plan
        rows = {}
        for name, by_layer in plan.vectors:
            rows[name] = int(next(iter(by_layer.values())).shape[0])
        return {"internal_score_tokens": {"positive": plan.pos_tokens, "negative": plan.neg_tokens}, "vector_rows": rows}

    def rows(self, model: Any, batch: Any, saved: dict[str, Any]) -> dict[str, Any]:
        """One row per generation: continuation, classifier sentiment, internal score."""
        import polars as pl

        out = decode_generation(model, batch, saved)
        classifier = self.classifier()
        chunk = batch.meta["rows"]
        scores = classifier.positive_probability(out.texts) if classifier is not None else [None] * len(chunk)
        records = []
        for r, (p, name, layer, coeff) in enumerate(chunk):
            records.append({
                "prompt": p, "language": self.languages[p], "prompt_text": self.prompts[p], "steered": name is not None,
                "vector": name, "layer": layer, "coeff": coeff, "continuation": out.texts[r],
                "n_new_tokens": len(out.new_tokens[r]),
                "sentiment": None if scores[r] is None else float(scores[r]),
                "internal_score": float(out.first_logprobs[r, 0] - out.first_logprobs[r, 1]),
            })
        schema = {"prompt": pl.Int64, "language": pl.String, "prompt_text": pl.String, "steered": pl.Boolean, "vector": pl.String,
                  "layer": pl.Int64, "coeff": pl.Float64, "continuation": pl.String, "n_new_tokens": pl.Int64,
                  "sentiment": pl.Float64, "internal_score": pl.Float64}
        return {"generations": pl.DataFrame(records, schema=schema)}

    def plan(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> SteerPlan:
        """Validate options against the model and prompts (the vectors come in :meth:`setup`).

        Args:
            model: the loaded model.
            prompts: the prompts to steer.
            tokens: the runner's token ids of each prompt (with BOS), ``[prompts][tokens]``.

        Raises:
            HubError: unequal --positive/--negative counts, an empty contrast prompt, a layer out
                of range, a coefficient that is not a number, a bad --positions, empty word sets.
        """
        o = self.options
        if len(o.positive) != len(o.negative) or not o.positive:
            raise HubError(f"give one --negative per --positive (got {len(o.positive)} and {len(o.negative)})")
        for i in range(len(o.positive)):
            contrast_tokens(model, o.positive[i], o.negative[i])
        layers = parse_layers(o.layers, model)
        coeffs = parse_numbers(o.coeffs, "coeff", integer=False)
        if o.positions in ("first", "all"):
            start = 0
        else:
            try:
                start = int(o.positions)
            except ValueError:
                raise HubError(f"bad --positions {o.positions!r}: use first, all or a start position such as 2") from None
            if start < 0:
                raise HubError(f"--positions {start} is negative; give a start position >= 0 (0 = BOS)")
        pos_ids, pos_tokens = word_set(model.tokenizer, o.positive_words)
        neg_ids, neg_tokens = word_set(model.tokenizer, o.negative_words)
        both = set(pos_ids) & set(neg_ids)
        pos_ids = [i for i in pos_ids if i not in both]
        neg_ids = [i for i in neg_ids if i not in both]
        if not pos_ids or not neg_ids:
            raise HubError("no positive or no negative word is a single token of this model; give --positive-words/--negative-words")
        return SteerPlan(tokens=tokens, layers=layers, coeffs=coeffs, start=start, pos_ids=pos_ids, neg_ids=neg_ids, pos_tokens=pos_tokens, neg_tokens=neg_tokens)

    def finish(self, run: Any) -> dict[str, Any]:
        """``side_by_side`` (steered vs the same prompt unsteered) and ``effects`` (means)."""
        return effects_tables(run.table("generations"))

    @classmethod
    def summary(cls, run: Any) -> str:
        """Mean change of the internal score (over prompts, languages and vectors) per layer ×
        coefficient, and the cell with the largest change."""
        import polars as pl

        effects = run.table("effects")
        if effects.height == 0:
            return ""
        cells = effects.group_by("layer", "coeff").agg(
            delta=(pl.col("delta_internal") * pl.col("n")).sum() / pl.col("n").sum(),
            changed=(pl.col("changed_rate") * pl.col("n")).sum() / pl.col("n").sum(),
        ).sort("layer", "coeff")
        lines = ["mean Δ internal score (log p(pos) − log p(neg)) by layer × coefficient:"]
        if cells.height <= 9:
            for c in cells.iter_rows(named=True):
                lines.append(f"  layer {c['layer']} coeff {c['coeff']:g}: {c['delta']:+.3f} ({c['changed']:.0%} continuations changed)")
        best = cells.row(int(cells["delta"].arg_max()), named=True)
        lines.append(f"  best: layer {best['layer']} coeff {best['coeff']:g}, Δ {best['delta']:+.3f}")
        return "\n".join(lines)


    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """Layer × coefficient heatmaps of the mean change in each score (panels: vector ×
        language)."""
        effects = run.table("effects")
        if effects.height == 0:
            return {}
        charts = {"steer_internal": _heatmap(effects, "delta_internal", "mean Δ internal score (log p(pos) − log p(neg), nats)")}
        if effects["delta_sentiment"].drop_nulls().len():
            charts["steer_sentiment"] = _heatmap(effects, "delta_sentiment", "mean Δ P(positive) (classifier)")
        return charts


def effects_tables(gen: Any) -> dict[str, Any]:
    """From ``generations``: ``side_by_side`` and ``effects`` tables (see module docstring)."""
    import polars as pl

    base = gen.filter(~pl.col("steered")).select(
        "prompt", unsteered=pl.col("continuation"), unsteered_sentiment=pl.col("sentiment"), unsteered_internal=pl.col("internal_score")
    )
    side = gen.filter(pl.col("steered")).join(base, on="prompt", how="left").with_columns(
        delta_sentiment=pl.col("sentiment") - pl.col("unsteered_sentiment"),
        delta_internal=pl.col("internal_score") - pl.col("unsteered_internal"),
        changed=pl.col("continuation") != pl.col("unsteered"),
    ).sort("prompt", "vector", "layer", "coeff")
    effects = side.group_by("language", "vector", "layer", "coeff").agg(
        n=pl.len(),
        sentiment=pl.col("sentiment").mean(),
        unsteered_sentiment=pl.col("unsteered_sentiment").mean(),
        delta_sentiment=pl.col("delta_sentiment").mean(),
        positive_rate=(pl.col("sentiment") > 0.5).mean(),
        unsteered_positive_rate=(pl.col("unsteered_sentiment") > 0.5).mean(),
        internal=pl.col("internal_score").mean(),
        delta_internal=pl.col("delta_internal").mean(),
        changed_rate=pl.col("changed").mean(),
    ).sort("language", "vector", "layer", "coeff")
    return {"side_by_side": side, "effects": effects}


def _heatmap(effects: Any, value: str, title: str) -> Any:
    import altair as alt
    import polars as pl

    frame = effects.with_columns(panel=pl.format("{} · {}", pl.col("vector"), pl.col("language")), label=pl.col(value).round(2).cast(pl.String))
    base = alt.Chart(frame).encode(
        x=alt.X("coeff:O", title="coefficient c"),
        y=alt.Y("layer:O", sort="descending", title="layer"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", title="mean Δ", scale=alt.Scale(scheme="redblue", domainMid=0)),
        tooltip=["language", "vector", "layer", "coeff", "n", alt.Tooltip(f"{value}:Q", format=".3f"), alt.Tooltip("changed_rate:Q", format=".2f")],
    )
    text = base.mark_text(fontSize=10).encode(text="label:N")
    return (cells + text).properties(width=40 * frame["coeff"].n_unique() + 40, height=24 * frame["layer"].n_unique() + 20).facet(
        facet=alt.Facet("panel:N", title=None, header=alt.Header(labelLimit=300)), columns=3
    ).properties(title=f"Steering effect: {title}, steered − unsteered")


def run_steer(options: SteerOptions, prompts: list[str], config: RunConfig, languages: list[str] | None = None, data: Path | None = None, model: Any = None) -> Any:
    """Run the steering sweep and write a complete run folder; returns its ``RunDir``.

    Args:
        prompts: prompts to continue (validated).
        languages: language of each prompt (for grouping; ``"unknown"`` when absent).
        data: the sentiment data folder (trains the default classifier).

    Raises:
        HubError: see :meth:`Steer.plan` and :func:`hubclient.inputs.sentiment.load_classifier`;
            nothing is written when the input is bad.
    """
    languages = languages or ["unknown"] * len(prompts)
    analysis = Steer(options, data, languages)
    classifier = analysis.classifier()
    extra = {"classifier": classifier.describe() if classifier is not None else None}
    return run_analysis(analysis, prompts, config, model=model, prompt_columns={"language": languages}, extra=extra)

ANALYSIS = Steer
