"""The audio intervention of the semantic hub paper (Wu et al. 2024, paper-protocols.md A20):
``hub intervene steer --task animal-class``.

The paper plays SALMONN a VGGSound animal clip, asks "Is this animal a mammal?" and, in the
forward pass of the prompt (no generation), **adds** ``s · (W_U[new] − W_U[old])`` to the
block output of LLM layer 13 (0-based; pyvene ``block_output``) at the 88 speech positions,
where ``old`` is the clip's animal word and ``new`` a random animal word of the opposite class
(mammal ↔ non-mammal), drawn per clip and per strength ``s ∈ {10, 20, …, 100}``. It reads
``P(Yes) / (P(Yes) + P(No))`` at the last position; the baseline has no intervention. If the
speech positions carry the animal's *word* (the semantic hub), steering them toward a word of
the other class should lower the normalised P(Yes) for mammal clips and raise it for the others.

What this module traces, reduces and stores:

* **Units.** Clip × condition: the unedited prompt (``strength`` null) and one row per strength.
  A batch holds rows of one clip only, so the clip's processor tensors are shared (an
  ``expand``ed view, no copy) rather than repeated per row.
* **Edit.** Hub layer ``l`` = output of block ``l`` (= HF ``hidden_states[l]``), so the paper's
  pyvene layer 13 is hub layer **14**. ``h_l[b, p] += s · (W_U[new] − W_U[old])`` at every audio
  position ``p`` (the positions whose input id is the audio token: Qwen2-Audio's ``<|AUDIO|>``
  frames), on that layer's device. ``W_U`` rows are those of the first token of each word's word-initial form
  ``" " + word`` (:func:`first_token`; the paper's ``get_unembedding`` takes
  ``tokenizer(word)[0]``, which for its Llama tokenizer is that form, ``▁fox``). Default layer for a model with ``L`` blocks: ``floor(14·L/40 + 0.5)``
  (SALMONN's Vicuna-13B has 40 layers; 11 on Qwen2-Audio-7B's 32), ``--layer`` overrides.
* **Readout, inside the trace.** ``softmax(z_last)`` over the vocabulary at each row's last real
  position, and only ``[P(Yes), P(No)]`` per row leave the trace (``Yes`` and ``No``, each one token: `` Yes`` after
  the default ``ASSISTANT:`` prompt, as the paper's ``▁Yes``; ``Yes`` in a ``chat:`` template,
  where the assistant turn starts on a new line; :func:`readout_spelling`).
* **Draws.** ``numpy.random.default_rng(seed)``; for each clip in file order, for each strength
  in ``--coeff`` order, ``new = words[rng.integers(len(words))]`` over the **sorted** words of
  the other class. (The authors draw with Python ``random`` over a set, whose order is not
  reproducible; the draw order here is.)

Tables: ``scores`` (one row per clip × condition: ``p_yes``, ``p_no``, ``p_yes_norm``),
``clip_strengths`` (one row per clip × strength: baseline and steered ``p_yes_norm`` side by
side and their difference), ``class_strengths`` (per class × strength, strength 0 = the unedited
baseline: n, mean normalised P(Yes), 95% percentile-bootstrap CI over clips (1000 resamples,
seed 0), and for strengths > 0 the mean paired change from the baseline with its bootstrap CI);
plot ``animal_class``; manifest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.exec.edits import _device_tensor, site_value, unembedding_rows

#: VGGSound label → animal word (``audio/intervention.py`` lines 19-76 of the authors' code).
ANIMAL_LABELS: dict[str, str] = {
    "fox barking": "fox", "zebra braying": "zebra", "penguins braying": "penguins", "crow cawing": "crow",
    "mouse pattering": "mouse", "cat caterwauling": "cat", "bull bellowing": "bull", "sheep bleating": "sheep",
    "chimpanzee pant-hooting": "chimpanzee", "owl hooting": "owl", "frog croaking": "frog", "snake hissing": "snake",
    "cattle mooing": "cattle", "chinchilla barking": "chinchilla", "ferret dooking": "ferret", "parrot talking": "parrot",
    "turkey gobbling": "turkey", "cat meowing": "cat", "elephant trumpeting": "elephant", "pig oinking": "pig",
    "chipmunk chirping": "chipmunk", "whale calling": "whale", "dog whimpering": "dog", "duck quacking": "duck",
    "cow lowing": "cow", "goat bleating": "goat", "canary calling": "canary", "eagle screaming": "eagle",
    "bird chirping, tweeting": "bird", "pheasant crowing": "pheasant", "dog growling": "dog", "warbler chirping": "warbler",
    "lions roaring": "lions", "cat hissing": "cat", "cat growling": "cat", "francolin calling": "francolin",
    "magpie calling": "magpie", "chicken clucking": "chicken", "dog howling": "dog", "coyote howling": "coyote",
    "mosquito buzzing": "mosquito", "dog bow-wow": "dog", "dog baying": "dog", "snake rattling": "snake",
    "mouse squeaking": "mouse", "otter growling": "otter", "horse neighing": "horse", "elk bugling": "elk",
    "gibbon howling": "gibbon", "dog barking": "dog", "cricket chirping": "cricket", "goose honking": "goose",
    "lions growling": "lions", "dinosaurs bellowing": "dinosaurs", "cheetah chirrup": "cheetah", "chicken crowing": "chicken",
}
#: The 24 mammal words (``MAMMALS`` of the authors' code); every other animal word is a non-mammal.
MAMMALS: frozenset[str] = frozenset({
    "pig", "otter", "cow", "chipmunk", "horse", "chimpanzee", "gibbon", "cat", "cattle", "ferret", "cheetah", "chinchilla",
    "elk", "mouse", "bull", "whale", "coyote", "sheep", "goat", "lions", "elephant", "zebra", "fox", "dog",
})
ANIMALS: tuple[str, ...] = tuple(sorted(set(ANIMAL_LABELS.values())))
MAMMAL_WORDS: tuple[str, ...] = tuple(sorted(MAMMALS))
NON_MAMMAL_WORDS: tuple[str, ...] = tuple(w for w in ANIMALS if w not in MAMMALS)
CLASSES = ("mammal", "non-mammal")
#: SALMONN's template with the medium where ``<Speech><SpeechHere></Speech>`` stands.
DEFAULT_TEMPLATE = "USER: {media} Is this animal a mammal?\nASSISTANT:"
#: Layers of SALMONN's LLM (Vicuna-13B v1.1) and the paper's layer in hub's convention.
PAPER_LAYERS, PAPER_LAYER = 40, 14
READOUT = ("Yes", "No")
N_BOOTSTRAP = 1000


@dataclass
class AnimalClassOptions:
    """Options of the audio intervention.

    Attributes:
        layer: hub layer (``1..L``, output of block ``l``) to add at, or ``None`` for
            :func:`default_layer` (the paper's layer scaled to the model's depth).
        strengths: the strengths ``s``: ``10:100:10`` (inclusive range), ``20``, ``10,50``.
        seed: seed of the new-word draws (``numpy.random.default_rng``).
        template: the text prompt, ``{media}`` where the audio goes (``chat:…`` uses the
            model's chat template).
    """

    layer: int | None = None
    strengths: str = "10:100:10"
    seed: int = 0
    template: str = DEFAULT_TEMPLATE


def animal_class(word: str) -> str:
    """``"mammal"`` or ``"non-mammal"`` for an animal word of :data:`ANIMAL_LABELS`."""
    return "mammal" if word in MAMMALS else "non-mammal"


def default_layer(n_layers: int) -> int:
    """The paper's layer scaled to ``n_layers`` blocks: ``floor(14·L/40 + 0.5)`` (round half
    up; at least 1). SALMONN's LLM has 40 layers and the paper adds at pyvene layer 13 = hub
    layer 14 (paper-protocols.md A20): 14 for ``L = 40``, 11 for 32 (Qwen2-Audio-7B), 1 for 3."""
    return max(1, min(n_layers, math.floor(PAPER_LAYER * n_layers / PAPER_LAYERS + 0.5)))


def parse_strengths(text: str) -> list[float]:
    """The strengths of ``--coeff`` (``10:100:10`` inclusive, ``20``, ``10,50``), in order.

    Raises:
        HubError: bad syntax, a non-finite value, or no value.
    """
    from hubclient.exec.edits import parse_numbers

    values = [float(v) for v in parse_numbers(text, "--coeff", integer=False)]
    if not values:
        raise HubError("--coeff needs at least one strength, e.g. 10:100:10")
    for v in values:
        if not math.isfinite(v):
            raise HubError(f"--coeff values must be finite numbers, got {v}")
    return values


def animal_clips(pairs: list[Any], n: int | None = 1000) -> tuple[list[Any], int]:
    """The pairs whose caption is one of the 56 animal labels (:data:`ANIMAL_LABELS`), the
    first ``n`` in file order (the paper: the first 1000), and how many rows were skipped for
    a non-animal label (counted over the whole file).

    Raises:
        HubError: no row has an animal label (naming the file and a few labels it has), or
            ``n < 1``.
    """
    if n is not None and n < 1:
        raise HubError(f"--n must be at least 1, got {n}")
    kept = []
    skipped = 0
    for pair in pairs:
        if pair.caption in ANIMAL_LABELS:
            kept.append(pair)
        else:
            skipped += 1
    if not kept:
        source = pairs[0].source if pairs else "the pairs file"
        seen = sorted({p.caption for p in pairs})[:5]
        raise HubError(
            f"{source}: no row has one of the 56 VGGSound animal labels as its caption (e.g. 'dog barking', "
            f"'owl hooting'); it has {', '.join(repr(s) for s in seen)}{'…' if len(pairs) > 5 else ''}. Write the pairs "
            "with hubclient.inputs.media.vggsound_pairs (caption = the VGGSound label)"
        )
    if n is not None:
        kept = kept[:n]
    return kept, skipped


def draw_new_words(animals: list[str], strengths: list[float], seed: int) -> list[list[str]]:
    """The new word of every clip × strength: ``numpy.random.default_rng(seed)``, clips in
    order, strengths in order within a clip, ``words[rng.integers(len(words))]`` over the sorted
    words of the other class (:data:`NON_MAMMAL_WORDS` for a mammal, :data:`MAMMAL_WORDS`
    otherwise).

    Returns:
        ``[clip][strength]`` words.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for animal in animals:
        words = NON_MAMMAL_WORDS if animal in MAMMALS else MAMMAL_WORDS
        row = []
        for _ in strengths:
            row.append(words[int(rng.integers(len(words)))])
        out.append(row)
    return out


def first_token(tokenizer: Any, word: str, single: bool = False, spelling: str = "space+written") -> int:
    """The token of ``word`` that the edit and the readout use: the first token of its
    word-initial form ``" " + word`` (``spelling="space+written"``, the rule of the media lenses'
    :func:`analyses.media_runs.word_token`), which for the paper's Llama tokenizer is its
    ``tokenizer(word, add_special_tokens=False)[0]`` (SentencePiece adds the ``▁``: ``▁fox``,
    ``▁Yes``); with ``spelling="written"`` the word as written (``Yes``, the first token of an
    assistant turn in a chat template). A bare space token is skipped
    (:func:`hubclient.science.tokens.word_ids`, rule ``first-real``; ``single``: the spelling
    must be exactly one token).

    Raises:
        HubError: no real token, the unknown token, or (``single``) more than one token.
    """
    from hubclient.science.tokens import word_ids

    ids = word_ids(tokenizer, word, "single" if single else "first-real", spelling)
    if ids:
        return int(ids[0])
    raw = tokenizer(word, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if single and len(raw) > 1 and unk not in raw:
        raise HubError(f"{word!r} is {len(raw)} tokens for this tokenizer; the Yes/No readout needs one token each ({raw})")
    raise HubError(f"the word {word!r} is not in this model's vocabulary (its first token is {'missing' if not raw else 'the unknown token'})")


def readout_spelling(template: str) -> str:
    """How the answer word is spelled after the prompt: ``"written"`` (``Yes``) when the
    template is a chat turn (``chat:…``: the assistant turn starts on a new line), else
    ``"space+written"`` (`` Yes`` after SALMONN's ``ASSISTANT:``, the paper's ``▁Yes``)."""
    from hubclient.exec.multimodal import CHAT_PREFIX

    return "written" if template.startswith(CHAT_PREFIX) else "space+written"


class AnimalClass(Analysis):
    """A20: add ``s · (W_U[new] − W_U[old])`` at the audio positions of hub layer ``l`` and
    read the normalised P(Yes) at the last position (module docstring).

    Args:
        options: layer, strengths, seed, template.
        pairs: the animal clips (:class:`~hubclient.inputs.media.MediaPair`, caption = an
            animal label), in prompt order (:func:`animal_clips`).
        skipped: rows of the pairs file left out for a non-animal label (manifest).

    Raises:
        HubError: bad strengths, a caption that is not an animal label, no clips.
    """

    name: ClassVar[str] = "animal-class"
    tables: ClassVar[dict[str, list[str]]] = {"scores": ["clip", "strength"]}
    needs_model_output: ClassVar[bool] = True
    local_only: ClassVar[tuple[str, ...]] = ("pairs", "extras")

    def __init__(self, options: AnimalClassOptions, pairs: list[Any], skipped: int = 0):
        super().__init__(options)
        self.strengths = parse_strengths(options.strengths)
        if not pairs:
            raise HubError("no animal clips to run")
        for pair in pairs:
            if pair.caption not in ANIMAL_LABELS:
                raise HubError(f"{pair.where()}: {pair.caption!r} is not one of the 56 VGGSound animal labels")
        self.pairs = pairs
        self.skipped = skipped
        self.animals = [ANIMAL_LABELS[p.caption] for p in pairs]
        self.new_words = draw_new_words(self.animals, self.strengths, options.seed)
        self.layer = options.layer
        self.readout: list[int] = []
        self.word_ids: dict[str, int] = {}
        self.positions: list[list[int]] = []
        self.extras: list[dict[str, Any]] = []
        self.vectors: dict[tuple[str, str], Any] = {}

    def describe_options(self) -> dict[str, Any]:
        """The options (manifest, resume checks)."""
        return asdict(self.options)

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Resolve the layer, the Yes/No and animal-word token ids, each clip's audio positions
        and processor tensors.

        Raises:
            HubError: not an audio language model; a layer outside ``1..L``; ``Yes`` or ``No``
                not one token; an animal word with no token or the unknown token as its first.
        """
        from hubclient.exec.multimodal import encode, media_positions

        if model.modality != "audio":
            raise HubError(f"--task animal-class needs an audio language model (Qwen2-Audio, e.g. Qwen/Qwen2-Audio-7B-Instruct); {model.model_id!r} reads {model.modality or 'text'} only")
        n_layers = model.n_layers
        if self.options.layer is None:
            self.layer = default_layer(n_layers)
        elif not 1 <= self.options.layer <= n_layers:
            raise HubError(f"--layer {self.options.layer}: the audio intervention adds at a block output, hub layers 1..{n_layers} (the paper's pyvene layer 13 = hub layer 14; 0 is the embeddings)")
        tok = model.tokenizer
        spelling = readout_spelling(self.options.template)
        self.readout = [first_token(tok, w, single=True, spelling=spelling) for w in READOUT]
        if self.readout[0] == self.readout[1]:
            raise HubError("'Yes' and 'No' are the same token for this tokenizer")
        needed = set(self.animals)
        for row in self.new_words:
            needed.update(row)
        for word in sorted(needed):
            self.word_ids[word] = first_token(tok, word)
        _, extras = encode(model, prompts, list(self.pairs))
        self.extras = extras
        self.positions = []
        for ids in tokens:
            self.positions.append(media_positions(ids, model.media_token_id))

    def setup(self, model: Any, executor: Any) -> None:
        """Read the ``W_U`` rows of the words (one short request where the batches run) and
        form each ``(new, old)`` vector ``W_U[new] − W_U[old]`` ``[d_model]`` float32."""
        names = sorted(self.word_ids)
        rows = unembedding_rows(model, [self.word_ids[w] for w in names], executor).float()
        index = {w: i for i, w in enumerate(names)}
        for clip, old in enumerate(self.animals):
            for new in self.new_words[clip]:
                self.vectors[(new, old)] = (rows[index[new]] - rows[index[old]]).contiguous()

    def describe_run(self) -> dict[str, Any]:
        """Layer (and its rule), token ids, clip counts and the draw rule, for the manifest."""
        counts = {c: 0 for c in CLASSES}
        for a in self.animals:
            counts[animal_class(a)] += 1
        collide = sorted({f"{n}/{o}" for (n, o) in self.vectors if self.word_ids[n] == self.word_ids[o]})
        return {
            "layer": self.layer, "layer_rule": "hub layer l = output of block l = HF hidden_states[l]; paper: pyvene layer 13 = hub 14 of 40; default floor(14*L/40 + 0.5)",
            "strengths": self.strengths, "readout_token_ids": dict(zip(READOUT, self.readout)), "readout_spelling": readout_spelling(self.options.template), "word_token_ids": self.word_ids,
            "clips": len(self.pairs), "clips_per_class": counts, "skipped_non_animal_rows": self.skipped,
            "audio_positions": sorted({len(p) for p in self.positions}),
            "draws": f"numpy.random.default_rng({self.options.seed}); per clip in order, per strength in order; integers(len) over the sorted other-class words",
            "zero_vectors": collide,
        }

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> list[Batch]:
        """Units = clip × condition (unedited, then each strength), cut per clip into batches
        of at most ``batch_size`` rows; the clip's processor tensors are ``expand``ed to the rows
        (a view: no copy). ``meta``: ``layer``, ``adds`` = ``(row, columns [k] long, delta
        [d_model] float32)``, ``last`` (each row's last position), ``readout`` (``[2]`` long:
        Yes, No), ``rows`` = ``(clip, strength index or None)``."""
        import torch

        batches = []
        readout = torch.tensor(self.readout, dtype=torch.long)
        for clip, ids in enumerate(tokens):
            conditions: list[int | None] = [None, *range(len(self.strengths))]
            columns = torch.tensor(self.positions[clip], dtype=torch.long)
            for first in range(0, len(conditions), batch_size):
                chunk = conditions[first : first + batch_size]
                k = len(chunk)
                adds = []
                for row, s in enumerate(chunk):
                    if s is None:
                        continue
                    vector = self.vectors[(self.new_words[clip][s], self.animals[clip])]
                    adds.append((row, columns, (self.strengths[s] * vector).float().contiguous()))
                extra = {}
                for key, value in self.extras[clip].items():
                    extra[key] = value.expand(k, *value.shape[1:])
                input_ids = torch.tensor([ids], dtype=torch.long).expand(k, -1).contiguous()
                empty = torch.zeros(0, dtype=torch.long)
                batches.append(Batch(
                    index=len(batches), prompt_index=[clip] * k, input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                    lengths=[len(ids)] * k, row_batch=empty, row_position=empty, tokens=[list(ids)] * k, extra=extra,
                    meta={"layer": self.layer, "adds": adds, "last": [len(ids) - 1] * k, "readout": readout, "rows": [(clip, s) for s in chunk]},
                ))
        return batches

    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """Body: add each row's delta at the audio columns of hub layer ``meta["layer"]`` (on
        that layer's device), then ``{"probs": [batch, 2]}`` = ``softmax(z)[Yes, No]`` at each
        row's last position (float32). Plain loops only."""
        import torch

        meta = batch.meta
        hidden = site_value(model, "resid", meta["layer"])
        for row, columns, delta in meta["adds"]:
            index = _device_tensor(columns, hidden)
            hidden[row, index, :] = hidden[row, index, :] + _device_tensor(delta, hidden)
        logits = model.lm.output.logits
        probs = []
        for row, column in enumerate(meta["last"]):
            p = torch.softmax(logits[row, column, :].float(), dim=-1)
            probs.append(p[meta["readout"].to(p.device)])
        return {"probs": torch.stack(probs)}

    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """One ``scores`` row per clip × condition: clip, media name, label, animal, class,
        strength (null = unedited), new word, ``p_yes``, ``p_no``, ``p_yes_norm``."""
        import polars as pl

        probs = saved["probs"].float().tolist()
        records = []
        for row, (clip, s) in enumerate(batch.meta["rows"]):
            p_yes, p_no = probs[row]
            animal = self.animals[clip]
            records.append({
                "clip": clip, "media": self.pairs[clip].media.name, "label": self.pairs[clip].caption, "animal": animal,
                "class": animal_class(animal), "strength": None if s is None else self.strengths[s],
                "new": None if s is None else self.new_words[clip][s],
                "p_yes": p_yes, "p_no": p_no, "p_yes_norm": p_yes / (p_yes + p_no) if p_yes + p_no > 0 else float("nan"),
            })
        schema = {"strength": pl.Float64, "new": pl.String}
        return {"scores": pl.DataFrame(records, schema_overrides=schema)}

    def finish(self, run: Any) -> dict[str, Any]:
        """``clip_strengths`` and ``class_strengths`` from ``scores`` (:func:`clip_strengths`,
        :func:`class_strengths`)."""
        per_clip = clip_strengths(run.table("scores"))
        return {"clip_strengths": per_clip, "class_strengths": class_strengths(per_clip)}

    @classmethod
    def summary(cls, run: Any) -> str:
        """Mean normalised P(Yes) per class and strength with its CI."""
        table = run.table("class_strengths")
        lines = ["animal class (A20): mean P(Yes)/(P(Yes)+P(No)) to 'Is this animal a mammal?' (95% bootstrap CI over clips):"]
        for r in table.iter_rows(named=True):
            label = "baseline" if r["strength"] == 0 else f"s={r['strength']:g}"
            lines.append(f"  {r['class']:<10} {label:>8}: {r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] (n={r['n']})")
        return "\n".join(lines)

    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """``animal_class``: mean normalised P(Yes) against the strength (0 = unedited), one
        line per class, with its 95% bootstrap band."""
        import altair as alt

        table = run.table("class_strengths")
        if table.height == 0:
            return {}
        base = alt.Chart(table).encode(x=alt.X("strength:Q", title="strength s (0 = no intervention)"), color=alt.Color("class:N", title="clip's animal"))
        band = base.mark_area(opacity=0.2).encode(y=alt.Y("ci_low:Q", title="P(Yes) / (P(Yes) + P(No))", scale=alt.Scale(domain=[0, 1])), y2="ci_high:Q")
        line = base.mark_line(point=True).encode(y="mean:Q", tooltip=["class", "strength", "n", alt.Tooltip("mean:Q", format=".3f"),
                                                                     alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f")])
        title = alt.TitleParams("add s·(W_U[new] − W_U[old]) at the audio positions (Wu et al. 2024 A20)",
                                subtitle=f"hub layer {run.manifest.get('layer')}; new = an animal of the other class")
        return {"animal_class": (band + line).properties(width=420, height=240, title=title)}


def clip_strengths(scores: Any) -> Any:
    """Per clip × strength: ``clip, media, label, animal, class, strength, new``,
    ``baseline`` (unedited ``p_yes_norm``), ``steered`` (``p_yes_norm`` at that strength) and
    ``change = steered − baseline``, sorted by clip and strength."""
    import polars as pl

    base = scores.filter(pl.col("strength").is_null()).select("clip", pl.col("p_yes_norm").alias("baseline"))
    steered = scores.filter(pl.col("strength").is_not_null()).select(
        "clip", "media", "label", "animal", "class", "strength", "new", pl.col("p_yes_norm").alias("steered"))
    out = steered.join(base, on="clip", how="left").with_columns(change=pl.col("steered") - pl.col("baseline"))
    return out.select("clip", "media", "label", "animal", "class", "strength", "new", "baseline", "steered", "change").sort("clip", "strength")


def class_strengths(per_clip: Any, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> Any:
    """Per class × strength (strength 0 = the unedited baseline, once per clip): ``n``,
    ``mean`` of the normalised P(Yes), its 95% percentile-bootstrap CI ``ci_low``/``ci_high``
    over clips (:func:`hubclient.science.stats.bootstrap_ci`, ``n_boot`` resamples, ``seed``),
    and for strengths > 0 ``mean_change`` (steered − baseline, paired per clip) with
    ``change_low``/``change_high`` (same bootstrap; null at strength 0)."""
    import numpy as np
    import polars as pl

    from hubclient.science.stats import bootstrap_ci

    records = []
    baseline = per_clip.unique("clip", keep="first").sort("clip")
    for cls_name in CLASSES:
        rows = baseline.filter(pl.col("class") == cls_name)
        if rows.height == 0:
            continue
        values = rows["baseline"].to_numpy()
        lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        records.append({"class": cls_name, "strength": 0.0, "n": int(values.size), "mean": float(np.mean(values)), "ci_low": lo, "ci_high": hi,
                        "mean_change": None, "change_low": None, "change_high": None})
        strengths = sorted(set(per_clip.filter(pl.col("class") == cls_name)["strength"].to_list()))
        for s in strengths:
            part = per_clip.filter((pl.col("class") == cls_name) & (pl.col("strength") == s))
            values = part["steered"].to_numpy()
            change = part["change"].to_numpy()
            lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            clo, chi = bootstrap_ci(change, n_boot=n_boot, seed=seed)
            records.append({"class": cls_name, "strength": float(s), "n": int(values.size), "mean": float(np.mean(values)), "ci_low": lo, "ci_high": hi,
                            "mean_change": float(np.mean(change)), "change_low": clo, "change_high": chi})
    return pl.DataFrame(records, schema_overrides={"mean_change": pl.Float64, "change_low": pl.Float64, "change_high": pl.Float64})


def run_animal_class(options: AnimalClassOptions, pairs: list[Any], config: Any, n: int | None = 1000, model: Any = None) -> Any:
    """Run the audio intervention over the animal clips of ``pairs`` and write a run folder.

    Args:
        pairs: rows of a pairs file (caption = VGGSound label); non-animal rows are skipped.
        n: the first ``n`` animal clips (the paper: 1000; ``None``: all).

    Raises:
        HubError: a bad template or strengths, no animal clip (all before loading a model),
            see :meth:`AnimalClass.prepare`.
    """
    from hubclient.exec.multimodal import check_template
    from hubclient.runner import run_analysis

    check_template(options.template)
    clips, skipped = animal_clips(pairs, n)
    analysis = AnimalClass(options, clips, skipped)
    prompts = [options.template] * len(clips)
    columns = {"label": [p.caption for p in clips], "animal": list(analysis.animals), "class": [animal_class(a) for a in analysis.animals]}
    return run_analysis(analysis, prompts, config, model=model, prompt_columns=columns, media=list(clips))
