"""Cross-lingual activation steering (ActAdd): ``hub intervene steer``.

Traces: the contrast prompts (``--positive`` / ``--negative``, e.g. English "Good" / "Bad") in
one forward pass, giving the ActAdd steering vector ``V_l = h_l(positive) - h_l(negative)``
(Turner et al. 2023, Eq. 1) at every ``--layer`` (:func:`hubclient.exec.edits.steering_vectors`,
in :meth:`Steer.setup`); then generates continuations of every prompt, unsteered and steered with
each vector × layer × coefficient, ``--batch-size`` rows per ``generate`` call
(:class:`hubclient.exec.edits.GenerateWithEdits`). Both run locally or on NDIF (``--remote``,
``--detach``) like every analysis.

Other vectors: ``--vector unembed:A,B`` is ``W_U[a] − W_U[b]`` (first tokens; paper-protocols.md
A18-A20, :func:`unembedding_vector`), ``[1, d_model]``, read from the local weights (with
``--remote`` by one setup request, :func:`hubclient.exec.edits.unembedding_rows`).
``--protocol wu2024`` is the semantic hub sentiment steering (A16; the CLI builds its prompts,
pairs and defaults, :func:`paper_layer` its layer); ``--seeds`` samples every unit once per seed
through :class:`hubclient.exec.sampling.TLSampler`; ``--task range-calls`` is A18
(:mod:`hubclient.inputs.tasks.range_calls`, scored in :func:`range_call_tables`).

Pooling rule (ActAdd): ``V_l`` keeps one row per token position: the two contrast prompts are
aligned from the start (BOS included) and the shorter is padded at its end with the space
token (the pad token where a space is no single token), so ``V_l`` is ``[k, d_model]``.
``--positions first`` adds ``c · V_l[i]`` at prompt position ``i`` (``i < k``; ActAdd's
front injection, as in Wu et al. 2024 Sec. 6); ``--positions N`` adds the same rows from prompt
position ``N`` on; ``--positions last`` adds ``c · V_l[k-1]`` at each prompt's last token (A18);
``--positions all`` adds ``c · V_l[k-1]`` (the difference at the contrast
prompts' last token) at every position of the prompt and of every generated token. Prompts
shorter than the rows to add are an error.

Reduces: each continuation's text; its sentiment P(positive) from a classifier
(:mod:`hubclient.inputs.sentiment`, held-out accuracy per language in the manifest); and a
model-internal score needing no classifier, the next-token log-probability difference between
positive and negative word sets at the first generated position,
``s = log sum_{t in P} p(t) - log sum_{t in N} p(t)`` (with the steering applied; the tokens of
the steering words themselves are left out of P and N, :func:`steering_word_ids`); with
``--perplexity self`` / ``--relevance self`` the continuation's perplexity and its relevance to
the prompt under the model itself, unsteered (A16's measures with the model as reference).

Stores: ``generations.parquet`` (one row per prompt × condition: unsteered rows have
``steered = false``), ``side_by_side.parquet`` (each steered continuation next to the same
prompt's unsteered one, with the differences), ``effects.parquet`` (per language, vector,
layer, coefficient: mean score changes), plots ``steer_internal`` and ``steer_sentiment``
(layer × coefficient heatmaps of the mean change), with ``--seeds`` ``seed_summary.parquet``
(means over seeds, ``np.std``, 95% t CI) and plot ``steer_seeds``, with ``--task range-calls``
``range_items.parquet`` / ``range_calls.parquet`` and plot ``steer_range_calls``, manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


from hubclient.errors import HubError
from hubclient.exec.edits import AddEdit, GenerateWithEdits, contrast_tokens, decode_generation, edit_batch, parse_layers, parse_numbers, steering_vectors, unembedding_rows
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
    """Options of ``hub intervene steer`` (see the module docstring).

    The fields after ``classifier``: ``pair_languages`` (language of each contrast pair; then
    non-English pairs steer only prompts of their language), ``unembed`` (``"A,B"`` specs),
    ``seeds`` (e.g. ``"0:9"``: the per-row seeded sampler), ``top_p`` / ``freq_penalty`` (its
    settings), ``exclude_steering_words``, ``perplexity`` / ``relevance`` (``self`` or
    ``none``), ``task`` (``range-calls``), ``protocol`` (``wu2024``, recorded). ``layers`` may be
    ``"wu2024"`` (:func:`paper_layer`).
    """

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
    pair_languages: list[str] | None = None
    unembed: list[str] = field(default_factory=list)
    seeds: str | None = None
    top_p: float = 1.0
    freq_penalty: float = 0.0
    exclude_steering_words: bool = True
    perplexity: str = "none"
    relevance: str = "none"
    task: str | None = None
    protocol: str | None = None


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
        start: first prompt position edited (``--positions N``; 0 for ``first``/``all``;
            unused for ``last``, which edits each prompt's last token).
        pos_ids / neg_ids: single-token ids of the positive / negative words (internal score),
            without the steering words' own tokens (``excluded``).
        pos_tokens / neg_tokens: their texts (for the manifest).
        excluded: texts of the tokens left out of the internal score because they spell a
            steering word.
        seeds: sampling seeds of the per-row seeded sampler (``--seeds``), or ``[None]``.
        vectors: ``(name, layer -> [k, d_model] float32, language)`` per contrast pair, filled by
            :meth:`Steer.setup` (``language``: the pair's language, ``None`` when unknown).
    """

    tokens: list[list[int]]
    layers: list[int]
    coeffs: list[float]
    start: int
    pos_ids: list[int]
    neg_ids: list[int]
    pos_tokens: list[str]
    neg_tokens: list[str]
    excluded: list[str] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=lambda: [None])
    vectors: list[tuple[str, dict[int, Any], str | None]] = field(default_factory=list)


def steering_word_ids(tokenizer: Any, words: list[str]) -> set[int]:
    """Every token id that spells part of a steering word: the tokens of ``word``, ``" word"``,
    their lower-case and capitalised forms (``add_special_tokens=False``). The internal score
    leaves these out, so it never counts the steering words themselves (e.g. ``好``/``坏`` or
    ``" good"`` for the ``Good`` − ``Bad`` vector)."""
    ids: set[int] = set()
    for word in words:
        word = word.strip()
        if not word:
            continue
        for form in {word, word.lower(), word.capitalize()}:
            for text in (form, " " + form):
                ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids


def unembedding_vector(model: Any, word_a: str, word_b: str, executor: Any = None) -> tuple[Any, tuple[int, int]]:
    """``W_U[a] − W_U[b]``, ``[1, d_model]`` float32 (CPU), with ``a``/``b`` the first token of
    ``tokenizer(word, add_special_tokens=False)`` (``lib/logit_lens.py`` ``get_unembedding`` of
    ZhaofengWu/semantic-hub; paper-protocols.md A18-A20). ``W_U`` is the ``lm_head`` weight
    ``[vocab, d_model]`` (tied to the embeddings for Gemma); the logit soft-cap and the final norm
    play no part.

    Args:
        executor: where ``W_U`` is read when the weights are not here (``--remote``: one
            request, :func:`hubclient.exec.edits.unembedding_rows`).

    Returns:
        (vector, (a, b) token ids).

    Raises:
        HubError: an empty word, a word whose first token is the unknown token, or a model
            without local weights and no executor.
    """
    import torch

    tok = model.tokenizer
    ids = []
    for word in (word_a, word_b):
        found = tok(word, add_special_tokens=False)["input_ids"] if word else []
        if not found:
            raise HubError(f"--vector unembed: the word {word!r} has no token; give two words such as unembed:start,end")
        if tok.unk_token_id is not None and found[0] == tok.unk_token_id:
            raise HubError(f"--vector unembed: {word!r} is not in this model's vocabulary (its first token is {tok.unk_token!r})")
        ids.append(found[0])
    rows = unembedding_rows(model, ids, executor)
    with torch.no_grad():
        vector = (rows[0] - rows[1]).unsqueeze(0)
    return vector, (ids[0], ids[1])


class Steer(GenerateWithEdits):
    """ActAdd / unembedding-vector steering of generations, swept over layers × coefficients
    (and seeds) (module docstring).

    Args:
        options: the sweep.
        data: the sentiment data folder (trains the default classifier), or ``None``.
        languages: language of each prompt (``"unknown"`` when absent).
    """

    name: ClassVar[str] = "steer"
    tables: ClassVar[dict[str, list[str]]] = {"generations": ["prompt", "seed", "steered", "vector", "layer", "coeff"]}
    #: --remote: the sentiment data folder (a ``pathlib.Path``, which NDIF's allow-list refuses
    #: to unpickle) trains the classifier here; it is not shipped with requests.
    local_only: ClassVar[tuple[str, ...]] = ("data",)

    def __init__(self, options: SteerOptions, data: Path | None = None, languages: list[str] | None = None):
        sample = options.sample or options.seeds is not None
        super().__init__(options, options.max_new_tokens, sample, options.temperature)
        if options.seeds is not None and not 0 < options.top_p <= 1:
            raise HubError(f"--top-p must be in (0, 1], got {options.top_p}")
        if options.freq_penalty < 0:
            raise HubError(f"--freq-penalty must be >= 0, got {options.freq_penalty}")
        for label, value in (("--perplexity", options.perplexity), ("--relevance", options.relevance)):
            if value not in ("none", "self"):
                raise HubError(f"unknown {label} {value!r}; use self (the steered model itself, unsteered) or none")
        self.data = data
        self.languages = languages
        self.prompts: list[str] = []
        self.steer_plan: SteerPlan | None = None
        self._classifier: Any = None
        self._prompt_embeddings: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # the classifier (scikit-learn) never travels with a remote request; it is rebuilt
        # from the options where rows are made
        state = dict(self.__dict__)
        state["_classifier"] = None
        state["_prompt_embeddings"] = {}
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
        """Compute the steering vectors through ``executor`` (here or on NDIF); unembedding
        vectors (``--vector unembed:A,B``) come from the local ``W_U``.

        Raises:
            HubError: rows to add beyond a prompt's end; ``--perplexity self`` or ``--relevance
                self`` on a remote executor (both read the model's weights here, which a
                ``--remote`` model does not have; refused before anything is sent); see
                :func:`unembedding_vector`.
        """
        o, plan = self.options, self.steer_plan
        if getattr(executor, "remote", False):
            local = [f"--{name} self" for name in ("perplexity", "relevance") if getattr(o, name) == "self"]
            if local:
                raise HubError(
                    f"{' and '.join(local)} score continuations with the model's weights on this machine, which a --remote model does not have; "
                    "add --perplexity none --relevance none (generations, sampling and the internal score run on NDIF), or run locally"
                )
        plan.vectors = []
        for i in range(len(o.positive)):
            name = f"{o.positive[i]} - {o.negative[i]}"
            language = o.pair_languages[i] if o.pair_languages else None
            by_layer = steering_vectors(model, o.positive[i], o.negative[i], plan.layers, executor)
            k = next(iter(by_layer.values())).shape[0]
            if o.positions not in ("all", "last"):
                for p, ids in enumerate(plan.tokens):
                    if plan.start + k > len(ids):
                        raise HubError(
                            f"--positions {o.positions}: the vector {name!r} has {k} positions ({plan.start}..{plan.start + k - 1}), beyond prompt {p + 1}'s (counting from 1) "
                            f"{len(ids)} tokens; use --positions all, a shorter contrast pair, or longer prompts"
                        )
            plan.vectors.append((name, by_layer, language))
        for spec in o.unembed:
            word_a, word_b = _unembed_words(spec)
            vector, _ = unembedding_vector(model, word_a, word_b, executor)
            by_layer = {}
            for layer in plan.layers:
                by_layer[layer] = vector
            plan.vectors.append((f"unembed:{word_a} - {word_b}", by_layer, None))

    def applies(self, prompt: int, language: str | None) -> bool:
        """Whether a vector of pair language ``language`` steers prompt ``prompt``: always,
        unless ``--protocol wu2024`` pairs are tagged with languages; then English pairs steer
        every prompt and the others only prompts of their own language (paper-protocols.md A16:
        target-language and English vectors)."""
        if language is None or language == "english":
            return True
        return self.languages[prompt] == language

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> list[Any]:
        """Every prompt unsteered and under each vector × layer × coefficient (× seed with
        ``--seeds``), longest prompts first, ``batch_size`` rows a generation; sampling seeds
        ``--seed + batch`` (``--sample``) or the row's own seed (``--seeds``)."""
        o, plan = self.options, self.steer_plan
        units = []  # (prompt, vector name, layer, coeff, seed); vector None = unsteered
        order = sorted(range(len(plan.tokens)), key=lambda i: -len(plan.tokens[i]))
        for p in order:
            for seed in plan.seeds:
                units.append((p, None, None, None, seed))
                for name, _, language in plan.vectors:
                    if not self.applies(p, language):
                        continue
                    for layer in plan.layers:
                        for coeff in plan.coeffs:
                            units.append((p, name, layer, coeff, seed))
        vectors = {}
        for name, by_layer, _ in plan.vectors:
            vectors[name] = by_layer
        batches = []
        for start in range(0, len(units), batch_size):
            chunk = units[start : start + batch_size]
            edits, rows, prompt_index, seeds = [], [], [], []
            for p, name, layer, coeff, seed in chunk:
                rows.append(plan.tokens[p])
                prompt_index.append(p)
                seeds.append(seed)
                if name is None:
                    edits.append([])
                elif o.positions == "all":
                    edits.append([AddEdit(layer, 0, vectors[name][layer][-1], coeff, every_step=True)])
                elif o.positions == "last":
                    edits.append([AddEdit(layer, len(plan.tokens[p]) - 1, vectors[name][layer][-1:], coeff)])
                else:
                    edits.append([AddEdit(layer, plan.start, vectors[name][layer], coeff)])
            index = len(batches)
            seed = o.seed + index if (o.sample and o.seeds is None) else None
            batch = edit_batch(model, index, rows, edits, prompt_index, seed, [plan.pos_ids, plan.neg_ids], chunk)
            batch.meta["row_seeds"] = seeds if o.seeds is not None else None
            batches.append(batch)
        return batches

    def generate_kwargs(self, model: Any, batch: Any) -> dict[str, Any]:
        """With ``--seeds``: greedy ``generate`` over a :class:`hubclient.exec.sampling.TLSampler`
        (temperature, frequency penalty, top-p and a draw from each row's own seeded generator,
        TransformerLens' order); otherwise as :meth:`GenerateWithEdits.generate_kwargs`."""
        if batch.meta.get("row_seeds") is None:
            return super().generate_kwargs(model, batch)
        from transformers import LogitsProcessorList

        from hubclient.exec.sampling import TLSampler

        o = self.options
        sampler = TLSampler(batch.meta["row_seeds"], o.temperature, o.top_p, o.freq_penalty, model.tokenizer.pad_token_id)
        return dict(max_new_tokens=self.max_new_tokens, do_sample=False, temperature=None, top_k=None, top_p=None,
                    pad_token_id=model.tokenizer.pad_token_id, logits_processor=LogitsProcessorList([sampler]))

    def describe_run(self) -> dict[str, Any]:
        """Manifest fields: the internal score's word tokens (and the steering-word tokens left
        out), each vector's rows ``k``, the sampler and the quality measures."""
        plan, o = self.steer_plan, self.options
        rows = {}
        for name, by_layer, _ in plan.vectors:
            rows[name] = int(next(iter(by_layer.values())).shape[0])
        sampler = None
        if o.seeds is not None:
            sampler = {"rule": "TransformerLens sample_logits order: temperature, frequency penalty (counts over prompt+generated, pad excluded), top-p (TL rule), one torch.Generator per row seeded with the row's seed",
                       "temperature": o.temperature, "top_p": o.top_p, "freq_penalty": o.freq_penalty, "seeds": list(plan.seeds)}
        return {"internal_score_tokens": {"positive": plan.pos_tokens, "negative": plan.neg_tokens, "excluded_steering_tokens": plan.excluded},
                "vector_rows": rows, "protocol": o.protocol, "sampler": sampler,
                "perplexity": None if o.perplexity == "none" else "the model itself, unsteered: exp(-mean log p(continuation token | prompt, previous tokens)), BOS included",
                "relevance": None if o.relevance == "none" else "cosine of L2-normalised mean final hidden states (after the final norm, all tokens, BOS included) of the prompt and of the continuation, each encoded alone by the model itself, unsteered"}

    def rows(self, model: Any, batch: Any, saved: dict[str, Any]) -> dict[str, Any]:
        """One row per generation: continuation, classifier sentiment (P(pos) and
        P(pos) − P(neg)), internal score, and (``--perplexity/--relevance self``) perplexity and
        relevance."""
        import polars as pl

        from hubclient.inputs.sentiment import sentiment_difference

        out = decode_generation(model, batch, saved)
        classifier = self.classifier()
        chunk = batch.meta["rows"]
        stripped = []
        for text in out.texts:
            stripped.append(text.strip())
        scores = classifier.positive_probability(stripped) if classifier is not None else [None] * len(chunk)
        diffs = sentiment_difference(classifier, stripped) if classifier is not None else [None] * len(chunk)
        ppl = self._perplexities(model, batch.tokens, out.new_tokens) if self.options.perplexity == "self" else [None] * len(chunk)
        rel = self._relevances(model, batch, out.texts) if self.options.relevance == "self" else [None] * len(chunk)
        records = []
        for r, (p, name, layer, coeff, seed) in enumerate(chunk):
            records.append({
                "prompt": p, "language": self.languages[p], "prompt_text": self.prompts[p], "seed": seed, "steered": name is not None,
                "vector": name, "layer": layer, "coeff": coeff, "continuation": out.texts[r],
                "n_new_tokens": len(out.new_tokens[r]),
                "sentiment": None if scores[r] is None else float(scores[r]),
                "sentiment_diff": None if diffs[r] is None else float(diffs[r]),
                "internal_score": float(out.first_logprobs[r, 0] - out.first_logprobs[r, 1]),
                "perplexity": ppl[r], "relevance": rel[r],
            })
        schema = {"prompt": pl.Int64, "language": pl.String, "prompt_text": pl.String, "seed": pl.Int64, "steered": pl.Boolean, "vector": pl.String,
                  "layer": pl.Int64, "coeff": pl.Float64, "continuation": pl.String, "n_new_tokens": pl.Int64,
                  "sentiment": pl.Float64, "sentiment_diff": pl.Float64, "internal_score": pl.Float64, "perplexity": pl.Float64, "relevance": pl.Float64}
        return {"generations": pl.DataFrame(records, schema=schema)}

    def _local(self, model: Any) -> Any:
        """The wrapped transformers model when its weights are here, else ``None`` (remote)."""
        hf = model.torch_model
        return None if next(hf.parameters()).device.type == "meta" else hf

    def _perplexities(self, model: Any, prompts: list[list[int]], conts: list[list[int]]) -> list[float | None]:
        """Per row ``exp(-(1/n) Σ_i log p(c_i | prompt, c_<i))`` under the unsteered model (the
        released code's ``exp((logp(prompt) − logp(prompt+cont)) / n)`` with the reference
        model's own tokens; ``intervention_add_perplexity.py``); ``NaN`` for an empty
        continuation, ``None`` without local weights."""
        import math

        import torch

        hf = self._local(model)
        if hf is None:
            return [None] * len(prompts)
        pad = model.tokenizer.pad_token_id or 0
        full = []
        for ids, new in zip(prompts, conts):
            full.append(list(ids) + list(new))
        width = max(len(f) for f in full)
        input_ids = torch.full((len(full), width), pad, dtype=torch.long)
        mask = torch.zeros((len(full), width), dtype=torch.long)
        for r, f in enumerate(full):
            input_ids[r, : len(f)] = torch.tensor(f)
            mask[r, : len(f)] = 1
        rows, columns, targets = [], [], []
        for r, (ids, new) in enumerate(zip(prompts, conts)):
            for i, t in enumerate(new):
                rows.append(r)
                columns.append(len(ids) - 1 + i)
                targets.append(t)
        totals = [0.0] * len(prompts)
        if rows:
            with torch.no_grad():
                # logits only where a continuation token is predicted ([n, vocab], not [rows, seq, vocab])
                hidden = hf(input_ids=input_ids.to(hf.device), attention_mask=mask.to(hf.device), output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
                picked = hidden[torch.tensor(rows), torch.tensor(columns)]
                logits = hf.get_output_embeddings()(picked).float()
                cap = getattr(hf.config, "final_logit_softcapping", None)
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                logprobs = logits.log_softmax(-1).cpu()
            for j, (r, t) in enumerate(zip(rows, targets)):
                totals[r] += float(logprobs[j, t])
        out: list[float | None] = []
        for r, (ids, new) in enumerate(zip(prompts, conts)):
            if not new:
                out.append(float("nan"))
                continue
            total = totals[r]
            out.append(math.exp(-total / len(new)))
        return out

    def _embed(self, hf: Any, model: Any, token_lists: list[list[int]]) -> Any:
        """L2-normalised mean (over all tokens, BOS included) of the final hidden state (after
        the final norm: transformers' last ``hidden_states``), ``[rows, d_model]`` float32."""
        import torch

        pad = model.tokenizer.pad_token_id or 0
        width = max(1, max(len(t) for t in token_lists))
        input_ids = torch.full((len(token_lists), width), pad, dtype=torch.long)
        mask = torch.zeros((len(token_lists), width), dtype=torch.long)
        for r, t in enumerate(token_lists):
            if t:
                input_ids[r, : len(t)] = torch.tensor(t)
                mask[r, : len(t)] = 1
        with torch.no_grad():
            hidden = hf(input_ids=input_ids.to(hf.device), attention_mask=mask.to(hf.device), output_hidden_states=True).hidden_states[-1].float().cpu()
        m = mask.unsqueeze(-1).float()
        mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(mean, dim=-1)

    def _relevances(self, model: Any, batch: Any, texts: list[str]) -> list[float | None]:
        """Per row the cosine of the prompt's and the continuation's embeddings (:meth:`_embed`;
        the released code uses multilingual-e5-large the same way, ``intervention_add_relevance.py``);
        ``NaN`` for an empty continuation, ``None`` without local weights."""
        hf = self._local(model)
        if hf is None:
            return [None] * len(texts)
        chunk = batch.meta["rows"]
        missing = []
        for r, unit in enumerate(chunk):
            if unit[0] not in self._prompt_embeddings and unit[0] not in missing:
                missing.append(unit[0])
        if missing:
            token_lists = []
            for p in missing:
                token_lists.append(self.steer_plan.tokens[p])
            emb = self._embed(hf, model, token_lists)
            for i, p in enumerate(missing):
                self._prompt_embeddings[p] = emb[i]
        conts = []
        for text in texts:
            conts.append(model.tokenizer(text)["input_ids"] if text.strip() else [])
        cont_emb = self._embed(hf, model, conts)
        out: list[float | None] = []
        for r, unit in enumerate(chunk):
            out.append(float("nan") if not texts[r].strip() else float(self._prompt_embeddings[unit[0]] @ cont_emb[r]))
        return out

    def plan(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> SteerPlan:
        """Validate options against the model and prompts (the vectors come in :meth:`setup`).

        Args:
            model: the loaded model.
            prompts: the prompts to steer.
            tokens: the runner's token ids of each prompt (with BOS), ``[prompts][tokens]``.

        Raises:
            HubError: unequal --positive/--negative counts, no vector at all, an empty contrast
                prompt, a bad ``--vector``, a layer out of range, a coefficient that is not a
                number, a bad --positions or --seeds, empty word sets.
        """
        o = self.options
        if len(o.positive) != len(o.negative):
            raise HubError(f"give one --negative per --positive (got {len(o.positive)} and {len(o.negative)})")
        if not o.positive and not o.unembed:
            raise HubError("no steering vector: give --positive/--negative pairs or --vector unembed:WORD_A,WORD_B")
        if o.pair_languages is not None and len(o.pair_languages) != len(o.positive):
            raise HubError(f"pair_languages has {len(o.pair_languages)} entries for {len(o.positive)} pairs")
        for i in range(len(o.positive)):
            contrast_tokens(model, o.positive[i], o.negative[i])
        for spec in o.unembed:
            _unembed_words(spec)
        layers = [paper_layer(model.n_layers)] if o.layers == "wu2024" else parse_layers(o.layers, model)
        coeffs = parse_numbers(o.coeffs, "coeff", integer=False)
        seeds: list[int | None] = [None]
        if o.seeds is not None:
            seeds = list(parse_numbers(o.seeds, "seeds", integer=True))
        if o.positions in ("first", "all", "last"):
            start = 0
        else:
            try:
                start = int(o.positions)
            except ValueError:
                raise HubError(f"bad --positions {o.positions!r}: use first, last, all or a start position such as 2") from None
            if start < 0:
                raise HubError(f"--positions {start} is negative; give a start position >= 0 (0 = BOS)")
        pos_ids, pos_tokens = word_set(model.tokenizer, o.positive_words)
        neg_ids, neg_tokens = word_set(model.tokenizer, o.negative_words)
        both = set(pos_ids) & set(neg_ids)
        excluded_ids: set[int] = set()
        if o.exclude_steering_words:
            words = list(o.positive) + list(o.negative)
            for spec in o.unembed:
                words.extend(_unembed_words(spec))
            excluded_ids = steering_word_ids(model.tokenizer, words)
        keep_pos, keep_neg, excluded = [], [], []
        for ids, keep in ((pos_ids, keep_pos), (neg_ids, keep_neg)):
            for i in ids:
                if i in both:
                    continue
                if i in excluded_ids:
                    excluded.append(i)
                    continue
                keep.append(i)
        if not keep_pos or not keep_neg:
            raise HubError("no positive or no negative word is a single token of this model (other than the steering words); give --positive-words/--negative-words")
        text = decoder(model.tokenizer)
        return SteerPlan(tokens=tokens, layers=layers, coeffs=coeffs, start=start, pos_ids=keep_pos, neg_ids=keep_neg,
                         pos_tokens=text(keep_pos), neg_tokens=text(keep_neg), excluded=text(excluded), seeds=seeds)

    def finish(self, run: Any) -> dict[str, Any]:
        """``side_by_side`` (steered vs the same prompt and seed unsteered), ``effects`` (means),
        with ``--seeds`` ``seed_summary`` (A16's report: means over seeds with a 95% CI), and
        for ``--task range-calls`` ``range_calls`` (A18's outcome rates per strength)."""
        gen = run.table("generations")
        tables = effects_tables(gen)
        if self.options.seeds is not None:
            tables["seed_summary"] = seed_summary(gen)
        if self.options.task == "range-calls":
            tables.update(range_call_tables(gen))
        return tables

    @classmethod
    def summary(cls, run: Any) -> str:
        """Mean change of the internal score per layer × coefficient and the cell with the
        largest change; A16's seed summary and A18's outcome rates where the run has them."""
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
        if (run.path / "seed_summary.parquet").is_file():
            seeds = run.table("seed_summary")
            lines.append("P(pos) − P(neg) over seeds (mean [95% CI]; steered rows: Δ vs unsteered, paired by seed):")
            for r in seeds.iter_rows(named=True):
                delta = "" if r["delta_sentiment_diff"] is None else f"; Δ {r['delta_sentiment_diff']:+.3f} [{r['delta_sentiment_diff_lo']:+.3f}, {r['delta_sentiment_diff_hi']:+.3f}]"
                lines.append(f"  {r['language']} {r['condition']}: {r['sentiment_diff']:+.3f} [{r['sentiment_diff_lo']:+.3f}, {r['sentiment_diff_hi']:+.3f}]{delta} (n={r['n_prompts']}, {r['n_seeds']} seeds)")
        if (run.path / "range_calls.parquet").is_file():
            rates = run.table("range_calls")
            if rates.height == 0:
                lines.append("range(x) -> range(0, x): no item kept (no unsteered continuation has exactly one argument)")
            else:
                lines.append("range(x) -> range(0, x) by strength (% of kept items):")
            for r in rates.iter_rows(named=True) if rates.height else []:
                lines.append(f"  {r['vector']} layer {r['layer']} c {r['coeff']:g}: correct {r['correct']:.1%} [{r['correct_lo']:.1%}, {r['correct_hi']:.1%}], unchanged {r['unchanged']:.1%}, other {r['other']:.1%} (n={r['n']})")
        return "\n".join(lines)

    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """Layer × coefficient heatmaps of the mean change in each score (panels: vector ×
        language); A16's per-condition means with CIs; A18's outcome rates by strength."""
        effects = run.table("effects")
        if effects.height == 0:
            return {}
        charts = {"steer_internal": _heatmap(effects, "delta_internal", "mean Δ internal score (log p(pos) − log p(neg), nats)")}
        if effects["delta_sentiment"].drop_nulls().len():
            charts["steer_sentiment"] = _heatmap(effects, "delta_sentiment", "mean Δ P(positive) (classifier)")
        if (run.path / "seed_summary.parquet").is_file():
            charts["steer_seeds"] = _seed_chart(run.table("seed_summary"))
        if (run.path / "range_calls.parquet").is_file() and run.table("range_calls").height:
            charts["steer_range_calls"] = _range_chart(run.table("range_calls"))
        return charts


def paper_layer(n_layers: int) -> int:
    """The A16 layer scaled to a model of ``n_layers`` blocks: ``round(17 · L / 32)``. The paper
    adds at TransformerLens ``blocks.17.hook_resid_pre`` of 32-layer models, which is
    transformers' ``hidden_states[17]`` and hub's layer 17 (paper-protocols.md §0); Gemma-3-270m
    (18 layers) gets ``round(9.5625) = 10``."""
    return int(round(17 * n_layers / 32))


def _unembed_words(spec: str) -> tuple[str, str]:
    """``"A,B"`` (or ``"unembed:A,B"``) -> ``("A", "B")``.

    Raises:
        HubError: not exactly two comma-separated words.
    """
    body = spec[len("unembed:"):] if spec.startswith("unembed:") else spec
    parts = body.split(",")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise HubError(f"bad --vector {spec!r}: use unembed:WORD_A,WORD_B (e.g. unembed:start,end)")
    return parts[0], parts[1]


#: Student's t 0.975 quantiles for 1..30 degrees of freedom (beyond: the normal 1.96).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def _t_interval(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, population std as the released reporter's ``np.std``, 95% CI low, high) of
    ``values``; the CI is Student's t over the values (``ddof=1``), ``NaN`` for fewer than 2."""
    import numpy as np

    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    mean = float(a.mean())
    if a.size < 2:
        return mean, 0.0, float("nan"), float("nan")
    df = a.size - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.959963984540054
    half = float(t * a.std(ddof=1) / np.sqrt(a.size))
    return mean, float(a.std()), mean - half, mean + half


#: The measures of the A16 report.
MEASURES = ("sentiment_diff", "perplexity", "relevance", "internal_score")


def seed_summary(gen: Any) -> Any:
    """A16's report (``intervention_organize.py``): per language × condition (unsteered = the
    c=0 baseline, each vector × layer × coefficient) and seed, the mean over prompts of
    P(pos) − P(neg), perplexity and relevance, after dropping empty continuations (and, for
    perplexity, non-finite values); then over seeds the mean, ``np.std`` (the paper's ±) and a
    95% Student-t CI over the per-seed means.

    Returns:
        polars rows ``language, condition, vector, layer, coeff, n_prompts, n_seeds`` and for
        each measure ``m`` in ``sentiment_diff, perplexity, relevance, internal_score``:
        ``m, m_std, m_lo, m_hi``, and ``delta_m, delta_m_lo, delta_m_hi``: the mean over seeds
        of (steered − unsteered) per-seed means of the same language, with its 95% t CI (the
        paired comparison; ``None`` for the unsteered row). The internal score is read before
        anything is sampled, so it does not vary over seeds (its CI has width 0).
    """
    import math

    import polars as pl

    frame = gen.with_columns(
        condition=pl.when(pl.col("steered")).then(pl.format("{} · layer {} · c={}", pl.col("vector"), pl.col("layer"), pl.col("coeff"))).otherwise(pl.lit("unsteered (c=0)")),
        nonempty=pl.col("continuation").str.strip_chars().str.len_chars() > 0,
    )
    keys = ["language", "condition", "vector", "layer", "coeff"]
    records = []
    by_seed: dict[tuple[Any, Any], dict[str, dict[Any, float]]] = {}
    for key, group in frame.group_by(keys, maintain_order=True):
        record = dict(zip(keys, key))
        kept = group.filter(pl.col("nonempty"))
        record["n_prompts"] = int(group["prompt"].n_unique())
        record["n_seeds"] = int(group["seed"].n_unique())
        means: dict[str, dict[Any, float]] = {}
        for measure in MEASURES:
            per_seed = {}
            source = group if measure == "internal_score" else kept
            for (seed,), g in source.group_by("seed", maintain_order=True):
                values = []
                for v in g[measure].to_list():
                    if v is not None and math.isfinite(v):
                        values.append(v)
                if values:
                    per_seed[seed] = sum(values) / len(values)
            means[measure] = per_seed
            mean, std, lo, hi = _t_interval(list(per_seed.values()))
            record.update({measure: mean, f"{measure}_std": std, f"{measure}_lo": lo, f"{measure}_hi": hi})
        by_seed[(record["language"], record["vector"])] = means
        records.append(record)
    for record in records:  # paired by seed: steered − unsteered of the same language
        base = by_seed.get((record["language"], None))
        for measure in MEASURES:
            deltas = []
            if record["vector"] is not None and base is not None:
                mine = by_seed[(record["language"], record["vector"])][measure]
                for seed, value in mine.items():
                    if seed in base[measure]:
                        deltas.append(value - base[measure][seed])
            mean, _, lo, hi = _t_interval(deltas) if deltas else (None, None, None, None)
            record.update({f"delta_{measure}": mean, f"delta_{measure}_lo": lo, f"delta_{measure}_hi": hi})
    return pl.DataFrame(records).sort("language", "vector", "layer", "coeff", nulls_last=False)


def range_call_tables(gen: Any) -> dict[str, Any]:
    """A18's scoring (:mod:`hubclient.inputs.tasks.range_calls`): per item, the unsteered
    continuation's arguments; items kept when it has exactly one; each steered continuation
    classified correct / unchanged / other. Rates per layer × coefficient with 95% Wilson CIs
    over items.

    Returns:
        ``range_items`` (one row per kept item × condition) and ``range_calls`` (rates).
    """
    import polars as pl

    from hubclient.inputs.tasks.range_calls import arguments, classify

    base = {}
    for r in gen.filter(~pl.col("steered")).iter_rows(named=True):
        base[r["prompt"]] = arguments(r["continuation"])
    records = []
    for r in gen.filter(pl.col("steered")).iter_rows(named=True):
        default = base.get(r["prompt"])
        if default is None or len(default) != 1:
            continue
        args = arguments(r["continuation"])
        records.append({"prompt": r["prompt"], "vector": r["vector"], "layer": r["layer"], "coeff": r["coeff"],
                        "unsteered_args": "|".join(default), "steered_args": "|".join(args), "outcome": classify(default, args),
                        "continuation": r["continuation"]})
    schema = {"prompt": pl.Int64, "vector": pl.String, "layer": pl.Int64, "coeff": pl.Float64, "unsteered_args": pl.String,
              "steered_args": pl.String, "outcome": pl.String, "continuation": pl.String}
    items = pl.DataFrame(records, schema=schema)
    rates = []
    for key, g in items.group_by(["vector", "layer", "coeff"], maintain_order=True):
        n = g.height
        row = {"vector": key[0], "layer": key[1], "coeff": key[2], "n": n}
        for outcome in ("correct", "unchanged", "other"):
            k = int((g["outcome"] == outcome).sum())
            lo, hi = _wilson(k, n)
            row.update({outcome: k / n, f"{outcome}_lo": lo, f"{outcome}_hi": hi})
        rates.append(row)
    table = pl.DataFrame(rates) if rates else pl.DataFrame(schema={"vector": pl.String, "layer": pl.Int64, "coeff": pl.Float64, "n": pl.Int64})
    if rates:
        table = table.sort("vector", "layer", "coeff")
    return {"range_items": items.sort("prompt", "vector", "layer", "coeff"), "range_calls": table}


def _wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of ``k`` successes in ``n`` (Wilson 1927)."""
    import math

    if n == 0:
        return float("nan"), float("nan")
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def effects_tables(gen: Any) -> dict[str, Any]:
    """From ``generations``: ``side_by_side`` and ``effects`` tables (see module docstring);
    steered rows are paired with the unsteered row of the same prompt and seed."""
    import polars as pl

    gen = gen.with_columns(seed_key=pl.col("seed").fill_null(-1))
    base = gen.filter(~pl.col("steered")).select(
        "prompt", "seed_key", unsteered=pl.col("continuation"), unsteered_sentiment=pl.col("sentiment"), unsteered_internal=pl.col("internal_score")
    )
    side = gen.filter(pl.col("steered")).join(base, on=["prompt", "seed_key"], how="left").with_columns(
        delta_sentiment=pl.col("sentiment") - pl.col("unsteered_sentiment"),
        delta_internal=pl.col("internal_score") - pl.col("unsteered_internal"),
        changed=pl.col("continuation") != pl.col("unsteered"),
    ).drop("seed_key").sort("prompt", "seed", "vector", "layer", "coeff")

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


def _seed_chart(summary: Any) -> Any:
    """A16: mean P(pos) − P(neg) per condition (points) with the 95% CI over seeds (rules),
    one panel per language."""
    import altair as alt

    base = alt.Chart(summary).encode(y=alt.Y("condition:N", title=None, sort=None))
    rules = base.mark_rule().encode(x=alt.X("sentiment_diff_lo:Q", title="P(pos) − P(neg) (classifier), mean over seeds, 95% CI"), x2="sentiment_diff_hi:Q")
    points = base.mark_point(filled=True, size=60).encode(
        x="sentiment_diff:Q",
        tooltip=["language", "condition", "n_prompts", "n_seeds", alt.Tooltip("sentiment_diff:Q", format=".3f"),
                 alt.Tooltip("perplexity:Q", format=".2f"), alt.Tooltip("relevance:Q", format=".3f")],
    )
    return (rules + points).properties(width=320, height=alt.Step(22)).facet(row=alt.Row("language:N", title=None)).properties(
        title="Steering (ActAdd, Wu et al. 2024 protocol): sentiment of continuations"
    )


def _range_chart(rates: Any) -> Any:
    """A18: share of kept items per outcome (correct / unchanged / other) against the
    coefficient, with 95% Wilson CIs, one panel per vector × layer."""
    import altair as alt
    import polars as pl

    long = []
    for outcome in ("correct", "unchanged", "other"):
        long.append(rates.select("vector", "layer", "coeff", "n", share=pl.col(outcome), lo=pl.col(f"{outcome}_lo"), hi=pl.col(f"{outcome}_hi"), outcome=pl.lit(outcome)))
    frame = pl.concat(long).with_columns(panel=pl.format("{} · layer {}", pl.col("vector"), pl.col("layer")))
    colours = alt.Scale(domain=["correct", "unchanged", "other"], range=["#2ca02c", "#7f7f7f", "#d62728"])
    base = alt.Chart(frame).encode(x=alt.X("coeff:Q", title="coefficient c (log scale)", scale=alt.Scale(type="log")), color=alt.Color("outcome:N", scale=colours, title=None))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", title="share of items", axis=alt.Axis(format="%")), y2="hi:Q")
    line = base.mark_line(point=True).encode(y="share:Q", tooltip=["panel", "coeff", "outcome", "n", alt.Tooltip("share:Q", format=".1%")])
    return (band + line).properties(width=320, height=200).facet(facet=alt.Facet("panel:N", title=None), columns=2).properties(
        title="range(x) → range(0, x) under the unembedding vector (Wu et al. 2024 A18)"
    )


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
