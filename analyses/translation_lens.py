"""``hub analyze translation-lens``: the multilingual logit lens (Wu et al. 2024, §4.1).

Does an intermediate layer of a model reading Chinese "think" in English? At each position
before a Chinese word, the lens probability of that word's English translation is compared with
the probability of the actual next Chinese token, layer by layer (and the mirror: English input,
Chinese translation of the next English word).

Positions used: for each input text, the text is cut into words (Chinese: ``jieba``; English:
runs of letters; see :mod:`hubclient.inputs.dictionary`). Position ``p`` (a token of the input) is used
when token ``p + 1`` starts a word ``w`` (the token's first non-space character is the word's
first character), ``w`` has at least one translation in the dictionary (CC-CEDICT) that is a
single token of the model's vocabulary (tokenised as written or with a leading space, i.e. with
and without the word-start marker), and token ``p`` is not a special token (the BOS position
is skipped). English words missing from the dictionary are retried once with a crude suffix
strip (``-s``, ``-es``, ``-ed``, ``-ing``).

Several translations: the stored probability of the ``translation`` kind is the SUM of the lens
probabilities of all single-token translations (both spellings, deduplicated, minus the actual
next token's id). Tokens are disjoint outcomes of the lens distribution, so the sum is the
probability that the next token is *some* translation of the word, which does not depend on how
CC-CEDICT splits a word's senses or on which spelling the model prefers; the max is stored too
(``max_probability``) for readers who want the most likely single translation.
The ``input`` kind is the lens probability of the actual next token ``input_ids[p + 1]``.

With ``--cloze-dir`` the Wendler et al. (2024, "Do Llamas work in English?") cloze setting is
used instead: each prompt is a few-shot cloze in the target language, ending at the answer's
opening quote; at the last position the lens probability of the English word's first token is
compared with the target-language word's first token (both spellings summed, as above).

Traces: the residual stream at every layer at the used positions.
Reduces (inside the trace): the lens logits of those rows to the log-sum-exp and the logits of
the few target ids of each row (padded ``[rows, targets]`` ids with a mask); only
``[layers, rows, 3]`` probabilities leave the trace.
Stores: ``translation_lens.parquet`` (prompt, position, word, targets, layer, kind,
probability, max_probability); ``translation_lens_summary.parquet`` (per direction, kind and
layer: mean over texts of each text's mean over its positions, 95% percentile-bootstrap CI over
texts).
Draws: mean probability by layer with the CI band, one line per kind, one panel per direction.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.language_probs import summarize, take
from hubclient.science.lens import norm_label
from hubclient.analysis import Analysis, Batch
from hubclient.inputs.dictionary import Dictionary, cedict
from hubclient.errors import HubError
from hubclient.plots import ci_lines
from hubclient.science.probes import group_probabilities, pad_groups
from hubclient.science.tokens import decoder, token_offsets, word_ids

DIRECTIONS = {"zh-en": ("zh", "en"), "en-zh": ("en", "zh")}
FLORES_CODES = {"zh": "zho_Hans", "en": "eng_Latn"}
KINDS = ("input", "translation")


@dataclass
class Target:
    """What one used position is scored on.

    Attributes:
        position: token position ``p`` whose lens is read (predicting token ``p + 1``).
        word: the next word (source language) or, in the cloze setting, the target-language word.
        input_ids: the actual next token id, as a one-element list (cloze: the target-language
            word's first token, as written and with a leading space).
        translation_ids: single-token translation ids (cloze: the English word's first token,
            both spellings, minus any id in ``input_ids``).
        translations: the translation words those ids come from.
    """

    position: int
    word: str
    input_ids: list[int]
    translation_ids: list[int]
    translations: list[str]


@dataclass
class TranslationOptions:
    """Options of ``translation-lens``.

    Attributes:
        directions: per prompt, ``zh-en`` or ``en-zh`` (``[prompts]``).
        final_norm: apply the model's final norm before ``W_U``.
        setting: ``text`` (every word of running text) or ``cloze`` (Wendler et al.).
        cloze_words: cloze setting only, per prompt ``[target-language word, English word]``.
    """

    directions: list[str] = field(default_factory=list)
    final_norm: "bool | str" = True
    setting: str = "text"
    cloze_words: list[list[str]] = field(default_factory=list)


class TranslationLens(Analysis):
    """The multilingual logit lens (see the module docstring).

    Args:
        options: see :class:`TranslationOptions`.
        dictionaries: direction -> :class:`~hubclient.inputs.dictionary.Dictionary` to use instead of
            CC-CEDICT (tests, other language pairs).
    """

    name = "translation-lens"
    local_only = ("dictionaries",)  # --remote: used in prepare only; not shipped with every request
    tables = {"translation_lens": ["prompt", "position", "layer", "kind"]}

    def __init__(self, options: TranslationOptions, dictionaries: dict[str, Dictionary] | None = None):
        super().__init__(options)
        self.dictionaries = dict(dictionaries or {})
        self.targets: dict[int, list[Target]] = {}

    def dictionary(self, direction: str) -> Dictionary:
        """The dictionary of ``direction`` (CC-CEDICT unless one was given)."""
        if direction not in self.dictionaries:
            if direction not in DIRECTIONS:
                raise HubError(f"unknown direction {direction!r}; use one of {', '.join(DIRECTIONS)}")
            self.dictionaries[direction] = cedict(*DIRECTIONS[direction])
        return self.dictionaries[direction]

    # ------------------------------------------------------------------ before the trace
    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Find the used positions of every prompt and their target token ids.

        Raises:
            HubError: a tokenizer without character offsets, or no usable position at all.
        """
        tokenizer = model.tokenizer
        special = set(tokenizer.all_special_ids)
        single = _single_token_ids(tokenizer)
        self.targets = {}
        if self.options.setting == "cloze":
            for i, ids in enumerate(tokens):
                word, english = self.options.cloze_words[i]
                local, eng = word_ids(tokenizer, word, "first-real", "written+space"), word_ids(tokenizer, english, "first-real", "written+space")
                eng = [t for t in eng if t not in local]
                self.targets[i] = [Target(len(ids) - 1, word, local, eng, [english])] if eng else []
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

    def _row_targets(self, batch: Batch) -> list[list[list[int]]]:
        """Per selected row of the batch, its two groups of target ids: ``[input ids,
        translation ids]`` (for :func:`hubclient.science.probes.pad_groups`)."""
        per_row = []
        for prompt, position in zip(batch.row_prompt, batch.row_position.tolist()):
            for target in self.targets[prompt]:
                if target.position == position:
                    per_row.append([list(target.input_ids), list(target.translation_ids)])
                    break
        return per_row

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """``[layers+1, rows, 3]``: input probability, translation sum, translation max
        (through :func:`hubclient.science.probes.group_probabilities`)."""
        import torch

        ids, group = pad_groups(self._row_targets(batch), 2)
        probs = group_probabilities(model, batch, ids, group, 2, self.options.final_norm)
        return {"probs": torch.stack([probs["sum"][..., 0], probs["sum"][..., 1], probs["max"][..., 1]], dim=-1)}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        import polars as pl

        probs = saved["probs"].double().numpy()  # [layers, rows, 3]
        n_layers, n_rows, _ = probs.shape
        records: dict[str, list[Any]] = {k: [] for k in ("prompt", "direction", "position", "word", "next_tokens", "translations", "n_translation_tokens", "layer", "kind", "probability", "max_probability")}
        decode = tokenizer_decoder(model.tokenizer)
        for r, (prompt, position) in enumerate(zip(batch.row_prompt, batch.row_position.tolist())):
            target = next(t for t in self.targets[prompt] if t.position == position)
            for layer in range(n_layers):
                for kind in KINDS:
                    records["prompt"].append(prompt)
                    records["direction"].append(self.options.directions[prompt])
                    records["position"].append(position)
                    records["word"].append(target.word)
                    records["next_tokens"].append("|".join(decode(target.input_ids)))
                    records["translations"].append("|".join(decode(target.translation_ids)))
                    records["n_translation_tokens"].append(len(target.translation_ids))
                    records["layer"].append(layer)
                    records["kind"].append(kind)
                    if kind == "input":
                        records["probability"].append(probs[layer, r, 0])
                        records["max_probability"].append(probs[layer, r, 0])
                    else:
                        records["probability"].append(probs[layer, r, 1])
                        records["max_probability"].append(probs[layer, r, 2])
        frame = pl.DataFrame(records, schema_overrides={"prompt": pl.Int64, "position": pl.Int32, "layer": pl.Int32, "n_translation_tokens": pl.Int32, "probability": pl.Float64, "max_probability": pl.Float64})
        return {"translation_lens": frame}

    def finish(self, run: Any) -> dict[str, Any]:
        """``translation_lens_summary``: per direction, kind and layer, the mean over texts of
        each text's mean over its positions, with a 95% bootstrap CI over texts."""
        import polars as pl

        per_text = (
            run.table("translation_lens")
            .group_by("direction", "kind", "layer", "prompt")
            .agg(pl.col("probability").mean(), pl.len().alias("n_positions"))
        )
        summary = summarize(per_text, ["direction", "kind", "layer"], "probability")
        positions = per_text.group_by("direction", "kind", "layer").agg(pl.col("n_positions").sum())
        return {"translation_lens_summary": summary.join(positions, on=["direction", "kind", "layer"]).sort("direction", "kind", "layer")}

    # ------------------------------------------------------------------ summary
    @classmethod
    def summary(cls, run: Any) -> str:
        """Per direction (or cloze language): the layer where the mean probability of the
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
        norm = norm_label(options.get("final_norm", True))
        model_id = run.manifest["model"]["model_id"]
        labels = {"input": "next token (input language)", "translation": "translation (sum over single-token translations)"}
        frame = summary.with_columns(
            kind=pl.col("kind").replace_strict(labels),
            panel=pl.format("{} · {} texts, {} positions", pl.col("direction"), pl.col("n"), pl.col("n_positions")),
        )
        setting = "Wendler et al. cloze, last position" if options.get("setting") == "cloze" else "next word at each position"
        return {
            "translation_lens": ci_lines(
                frame, color="kind", facet="panel",
                title=f"Multilingual logit lens ({setting}; {norm}) · {model_id}",
                subtitle="mean over texts of the mean over positions; band = 95% bootstrap CI over texts",
                y_title="lens probability",
            )
        }


# --------------------------------------------------------------------------- helpers
def tokenizer_decoder(tokenizer: Any) -> Any:
    """``ids -> [token text]`` with a cache (SentencePiece ``▁`` shows as a space):
    :func:`hubclient.science.tokens.decoder` under its old name."""
    return decoder(tokenizer)


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
    """Used positions of one text (module docstring) with their target ids."""
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


# --------------------------------------------------------------------------- Wendler et al. cloze
CLOZE_LANGUAGES = ("de", "fr", "ru", "zh")


def cloze_prompts(folder: Path, language: str, n: int | None, shots: int = 2) -> tuple[list[str], list[list[str]]]:
    """Few-shot cloze prompts of Wendler et al. (2024) from ``<folder>/<language>/clean.csv``.

    Each prompt is ``shots`` other rows' ``blank_prompt_translation_masked`` (answers shown),
    then this row's masked prompt cut right after the answer's opening quote, so the next token
    is the word's first token. Rows whose word does not appear quoted after the blank are
    skipped.

    Returns:
        ``(prompts, [[target-language word, English word], ...])``.

    Raises:
        HubError: a missing folder or language (lists the available ones), a file without the
            expected columns, or ``n`` larger than the rows.
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
