"""Image and audio inputs for ``hub analyze similarity``, ``logit-lens`` and ``media-lens``.

The semantic hub paper (Wu et al. 2024, §"Vision / audio", Fig. 1) shows that an image or an
audio clip lands near its caption in the middle layers, and that the media positions decode,
through the logit lens, to English words for what they show. Both commands take a pairs file
(:mod:`hubclient.inputs.media`) with ``--modality image|audio``:

* **similarity**: each pair gives two inputs, the medium (in ``--media-template``) and its
  caption; the two "languages" are the modality and ``caption``, so Eq. 1 (matching minus
  non-matching cosine), its CI and every table and plot are the text analysis' own
  (:class:`analyses.similarity.Similarity`). Traces: the residual stream of the asked layers.
  Reduces: the medium to its last media position (``--media-pool last``, the default: the
  paper's code, paper-protocols.md A11) or the mean over them (``mean``, ours); the caption as
  ``--pool`` says.
* **logit-lens** (:class:`MediaLens`): traces the residual stream at every media position and
  layer (0 = embeddings); reduces it through the final norm and ``W_U`` (Eq. 2) to the top-k
  tokens and the probability and rank of each caption word; stores ``logit_lens.parquet``
  (as the text lens) and ``caption_words.parquet``; draws the caption words' probability by
  layer and the top-1 tokens at the media positions of the first pair.
* **media-lens** (:class:`MediaProtocolLens`, ``hub analyze media-lens``): the paper's four
  lens experiments as its released code computes them (paper-protocols.md A12 colour, A13
  caption nouns, A14 segmentation, A15 audio label words), each against its baseline.

Media are read and preprocessed on the client (:mod:`hubclient.exec.multimodal`); with
``--remote`` only the processor's tensors go to NDIF and only the reduced tensors come back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.lenses import LensBatches, LensChoice, init_lens, lens_manifest, patch_batches, prepare_lens
from analyses.logit_lens import LensOptions, LogitLens, _decoder
from analyses.media_plots import HEATMAP_POSITIONS, media_lens_plots  # noqa: F401 (re-exported)
from analyses.similarity import Similarity, SimilarityOptions, apply_template
from hubclient.errors import HubError
from hubclient.science.lens import decode_layers, reduce_logits
from hubclient.analysis import Analysis
from hubclient.inputs.media import MediaPair, check_modality, read_pairs
from hubclient.exec.multimodal import MEDIA_SLOT, check_template, media_positions, require_modality, spread_positions
from hubclient.runner import RunConfig, run_analysis
from hubclient.science.tokens import word_ids

#: Caption words not followed by the lens (function words carry no content).
STOPWORDS = frozenset(
    "a an the of on in at to and or is are was were be this that it its with for by from as into over under".split()
)


def check_max_positions(limit: int | None) -> None:
    """Validate ``--max-positions``.

    Raises:
        HubError: a limit below 1.
    """
    if limit is not None and limit < 1:
        raise HubError(f"--max-positions must be at least 1 (or left out: every media position), got {limit}")


def caption_words(caption: str) -> list[str]:
    """Content words of a caption, lower-cased, in order, without repeats or stopwords."""
    out: list[str] = []
    for word in re.findall(r"[^\W\d_]+|\d+", caption.lower()):
        if word not in STOPWORDS and word not in out:
            out.append(word)
    return out


def word_token(tokenizer: Any, word: str) -> int | None:
    """The token the lens follows for ``word``: the first token of its mid-sentence form
    (``" " + word``, e.g. ``▁cat`` / ``Ġcat``), or of ``word`` when the former starts with a
    bare space token; ``None`` when it tokenises to nothing or to the unknown token. Rule
    ``first-real`` of spelling ``space+written`` (:mod:`hubclient.science.tokens`), first hit."""
    ids = word_ids(tokenizer, word, "first-real", "space+written")
    return ids[0] if ids else None


def pair_prompts(pairs_file: Path, n: int | None, media_template: str) -> tuple[list[Any], list[str], list[str]]:
    """The pairs of ``pairs_file``, one media prompt per pair (``media_template``) and the
    pairs' captions.

    Raises:
        HubError: see :func:`hubclient.inputs.media.read_pairs`; a template without ``{media}``.
    """
    check_template(media_template)
    pairs = read_pairs(pairs_file, n=n)
    return pairs, [media_template] * len(pairs), [pair.caption for pair in pairs]


def single_pairs_file(inputs: list[str] | None, modality: str) -> Path:
    """The one pairs file a media run takes as INPUTS (or ``--prompts``).

    Raises:
        HubError: none or several given.
    """
    if not inputs or len(inputs) != 1:
        raise HubError(f"--modality {modality} takes one pairs file (.csv or .jsonl with media and caption columns); got {len(inputs or [])}")
    return Path(inputs[0])


# --------------------------------------------------------------------------- similarity


def run_similarity(pairs_file: Path, options: SimilarityOptions, n: int | None, config: RunConfig) -> tuple[Any, Similarity]:
    """Media-vs-caption similarity (Eq. 1) through the text analysis' own code path.

    Prompts are the N media prompts (language = the modality) followed by the N captions
    (language ``caption``, with ``options.template`` applied); sentence ``i`` is pair ``i``.

    Returns:
        ``(run, analysis)``.

    Raises:
        HubError: bad pairs, media, template or model (see :func:`pair_prompts`,
            :func:`hubclient.exec.multimodal.encode`).
    """
    modality = check_modality(options.modality)
    pairs, media_prompts, captions = pair_prompts(pairs_file, n, options.media_template)
    if len(pairs) < 2:
        raise HubError(f"{pairs_file} has {len(pairs)} pair; the similarity needs at least 2 (matching vs non-matching pairs)")
    options.languages = [modality, "caption"]
    options.sources = [str(pairs_file)]
    count = len(pairs)
    languages = [modality] * count + ["caption"] * count
    sentences = list(range(count)) * 2
    analysis = Similarity(options, languages, sentences)
    prompts = media_prompts + apply_template(options.template, captions)
    media = list(pairs) + [None] * count
    columns = {
        "language": languages,
        "sentence": sentences,
        "media": [str(p.media) for p in pairs] * 2,
        "caption": captions * 2,
    }
    run = run_analysis(analysis, prompts, config, prompt_columns=columns, media=media, resample=options.resample)
    return run, analysis


# --------------------------------------------------------------------------- logit lens


@dataclass
class MediaLensOptions(LensOptions):
    """Options of the logit lens at media positions (the text lens' plus these).

    Attributes:
        modality: ``image`` or ``audio``.
        media_template: the text around the medium, with a ``{media}`` slot.
        resample: resample audio at other rates (else they are an error).
        max_positions: read at most this many media positions per medium, evenly spaced
            (:func:`hubclient.exec.multimodal.spread_positions`); ``None``: all of them.
    """

    modality: str = "image"
    media_template: str = MEDIA_SLOT
    resample: bool = True
    max_positions: int | None = None


class MediaLens(LogitLens):
    """The logit lens at every media position, with the caption words followed (see the
    module docstring)."""

    def __init__(self, options: MediaLensOptions, captions: list[str]):
        """Bind options and each pair's caption.

        Raises:
            HubError: an unknown modality, ``--target`` (the captions name the words), bad
                ``top_k``, bad ``--lens`` options.
        """
        if options.targets:
            raise HubError("--target does not apply with --modality: the lens follows each pair's caption words")
        check_max_positions(options.max_positions)
        check_modality(options.modality)
        super().__init__(options)
        self.tables = {**self.tables, "caption_words": ["prompt", "position", "layer", "word"]}
        self.captions = list(captions)
        self.media_id: int | None = None
        # per prompt, its caption words and their token ids ([prompts, W_max], ""/0-padded), and counts
        self.word_table: Any = None
        self.id_table: Any = None
        self.word_counts: Any = None

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Check the model reads the modality; caption words -> token ids (:func:`word_token`).

        Raises:
            HubError: a text model or one of the other modality; ``top_k`` above the vocabulary.
        """
        import numpy as np

        require_modality(model, self.options.modality)
        super().prepare(model, prompts, tokens)
        self.media_id = model.media_token_id
        per_caption = []
        for caption in self.captions:
            followed = []
            for word in caption_words(caption):
                token = word_token(model.tokenizer, word)
                if token is not None:
                    followed.append((word, token))
            per_caption.append(followed)
        width = max([1] + [len(f) for f in per_caption])  # at least 1: the trace gathers [rows, W]
        self.word_table = np.full((len(per_caption), width), "", dtype=object)
        self.id_table = np.zeros((len(per_caption), width), dtype=np.int64)
        self.word_counts = np.zeros(len(per_caption), dtype=np.int64)
        for p, followed in enumerate(per_caption):
            self.word_counts[p] = len(followed)
            for j, (word, token) in enumerate(followed):
                self.word_table[p, j], self.id_table[p, j] = word, token

    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """See :func:`media_lens_plots`."""
        return media_lens_plots(run)

    def token_positions(self, tokens: list[int], prompt_index: int) -> list[int]:
        """The media positions of the prompt (where the processor put the media tokens): all of
        them, or ``max_positions`` evenly spaced ones."""
        return spread_positions(media_positions(tokens, self.media_id), self.options.max_positions)[0]

    def make_media_batches(self, model: Any, tokens: list[list[int]], batch_size: int, extras: list[Any]) -> Any:
        """The runner's media batches; with ``--lens patchscope`` each carries its target-prompt
        copies, text rows without the medium (:func:`analyses.lenses.patch_batches`)."""
        return patch_batches(self, model, tokens, batch_size, extras)

    def _row_words(self, batch: Any) -> Any:
        """``[rows, W]`` token ids of each selected row's caption words (0-padded; the padding
        cells are dropped in :meth:`rows`); ``W`` = the most words of a caption in the batch
        (at least 1)."""
        import numpy as np
        import torch

        prompts = np.asarray(batch.row_prompt, dtype=np.int64)
        width = int(self.word_counts[prompts].max(initial=1))
        return torch.from_numpy(self.id_table[prompts, :width].copy())

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Any) -> dict[str, Any]:
        """Lens of every layer at the media positions: top-k as the text lens, plus
        ``word_logits``/``word_probs``/``word_ranks`` ``[layers+1, rows, W]`` of the caption
        words: :func:`hubclient.science.lens.reduce_logits` with per-row target ids (probability
        ``exp(logit - logsumexp)``, rank ``1 + #{v: logit_v > logit_w}``)."""
        words = self._row_words(batch).to(model.device)
        top_k = self.options.top_k

        def reduce(logits: Any, rows: Any) -> dict[str, Any]:
            out = reduce_logits(logits, top_k, words[rows])
            for stat in ("logits", "probs", "ranks"):
                out[f"word_{stat}"] = out.pop(f"target_{stat}")
            return out

        return decode_layers(model, batch, reduce, self.options.final_norm, None, self.lens_spec)

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Any, saved: dict[str, Any]) -> dict[str, Any]:
        """``logit_lens`` rows as the text lens; ``caption_words`` rows (prompt, position,
        layer, word, token_id, token, probability, logit, rank) for each real caption word."""
        import numpy as np
        import polars as pl

        out = super().rows(model, batch, {k: v for k, v in saved.items() if not k.startswith("word_")})
        n_layers, n_rows, width = saved["word_probs"].shape
        row_prompt = np.asarray(batch.row_prompt, dtype=np.int64)
        row_pos = batch.row_position.numpy()
        decode = _decoder(model.tokenizer)
        # valid (row, word) cells: word j < the row's caption word count
        counts = self.word_counts[row_prompt]
        rr, jj = np.nonzero(np.arange(width)[None, :] < counts[:, None])  # row-major: row, then word
        words = self.word_table[row_prompt[rr], jj].astype(str)
        ids = self.id_table[row_prompt[rr], jj]
        cells = rr.size
        layer = np.repeat(np.arange(n_layers), cells)
        data = {
            "prompt": np.tile(row_prompt[rr], n_layers),
            "position": np.tile(row_pos[rr], n_layers),
            "layer": layer,
            "word": np.tile(words, n_layers),
            "token_id": np.tile(ids, n_layers),
            "token": np.tile(decode(ids) if cells else np.asarray([], dtype=str), n_layers),
            "probability": saved["word_probs"].numpy()[:, rr, jj].reshape(-1),
            "logit": saved["word_logits"].numpy()[:, rr, jj].reshape(-1),
            "rank": saved["word_ranks"].numpy()[:, rr, jj].reshape(-1),
        }
        out["caption_words"] = pl.DataFrame(
            data,
            schema={
                "prompt": pl.Int64, "position": pl.Int32, "layer": pl.Int32, "word": pl.String, "token_id": pl.Int64,
                "token": pl.String, "probability": pl.Float32, "logit": pl.Float32, "rank": pl.Int64,
            },
        )
        return out


def run_lens(pairs_file: Path, options: MediaLensOptions, n: int | None, config: RunConfig) -> Any:
    """The logit lens at the media positions of every pair (prompts.parquet gets ``media``
    and ``caption`` columns).

    Raises:
        HubError: bad pairs, media, template or model.
    """
    pairs, prompts, captions = pair_prompts(pairs_file, n, options.media_template)
    analysis = MediaLens(options, captions)
    columns = {"media": [str(p.media) for p in pairs], "caption": captions}
    return run_analysis(analysis, prompts, config, prompt_columns=columns, media=list(pairs), resample=options.resample)


# --------------------------------------------------------------------------- the paper's media lenses (A12-A15)
#
# paper-protocols.md A12 (colour), A13 (caption nouns), A14 (segmentation), A15 (audio labels):
# the lens of every layer at every media position, reduced to the log-probability of a few
# target tokens per medium (the "matching" ones and a baseline's), then per medium to the
# released code's quantity; the per-medium values are stored, the means over media with a
# bootstrap CI are computed in ``finish``.

#: The experiments of ``hub analyze media-lens`` -> (paper-protocols.md ID, modality).
EXPERIMENTS = {"colour": ("A12", "image"), "caption-nouns": ("A13", "image"), "segmentation": ("A14", "image"), "label-words": ("A15", "audio")}
#: The released code's prompts (LLaVA's for the image lenses, SALMONN's template for audio),
#: with ``{media}`` where the placeholder goes: ``vision/logit_lens_color.py:17``,
#: ``lib/logit_lens.py:104-112``, ``audio/logit_lens.py:21`` + ``decode_config.yaml``.
PAPER_TEMPLATES = {
    "colour": "USER: What is the color in the image?{media}\n ASSISTANT:",
    "caption-nouns": "USER: What is in the image?\n{media} ASSISTANT:",
    "segmentation": "USER: What is in the image?\n{media} ASSISTANT:",
    "label-words": "USER: {media}\nASSISTANT:",
}
#: The released code's Chameleon prompts (``lib/logit_lens.py:104-112``; its processor appends the
#: sep token): the default of these experiments when the model is Chameleon.
CHAMELEON_TEMPLATES = {"caption-nouns": "What is in the image?\n{media}", "segmentation": "What is in the image?\n{media}"}
#: The released code's seeds: A14 ``random.seed(1)``, A15 ``random.seed(0)``.
PAPER_SEEDS = {"segmentation": 1, "label-words": 0}
#: How each experiment names its two sets in plots and summaries.
SET_NAMES = {
    "colour": ("the colour's name", "control word"),
    "caption-nouns": ("matching caption", "least-overlapping caption"),
    "segmentation": ("matching label", "random label"),
    "label-words": ("matching label", "random label"),
}
#: Experiments whose released code, on a family, masks every added token (image codes
#: included) out of the lens softmax and renormalises over the rest (paper-protocols.md A13:
#: ``vision/logit_lens_caption.py`` on Chameleon): ``--mask-added-tokens`` defaults to on there.
PAPER_MASKED = {"caption-nouns": ("chameleon",)}
#: ``--nouns`` choices (A13): the pairs file's ``nouns`` column, our content-word rule, or the
#: column when the file has one.
NOUN_SOURCES = ("auto", "column", "content-words")


def caption_token_texts(caption: str) -> set[str]:
    """The lower-cased token texts of a caption that the baseline's overlap counts: words
    (``\\w+``) and single punctuation marks, stop words included. Ours: the released code uses
    spaCy ``en_core_web_trf`` tokens (``vision/logit_lens_caption.py:47-52``), which split
    clitics (``"dog's"`` -> ``dog``, ``'s``) where this rule gives ``dog``, ``'``, ``s``."""
    return set(re.findall(r"\w+|[^\w\s]", caption.lower()))


def least_overlap(index: int, token_sets: list[set[str]]) -> int:
    """The baseline caption of A13: the caption (over the whole pairs file, the item's own
    included, as in ``select_irrelevant_caption``) whose token-text set shares the fewest
    elements with caption ``index``'s; the first wins ties."""
    mine = token_sets[index]
    best, best_overlap = 0, None
    for j, other in enumerate(token_sets):
        overlap = len(mine & other)
        if best_overlap is None or overlap < best_overlap:
            best, best_overlap = j, overlap
    return best


def caption_nouns(pair: MediaPair, source: str) -> list[str]:
    """The nouns of a pair's caption (A13 keywords), in order, repeats kept (the released code
    counts each noun token).

    ``column``: the pairs file's ``nouns`` cell, split on ``;`` or ``,`` (e.g. written with
    spaCy ``en_core_web_trf`` POS ``NOUN``/``PROPN``, the paper's rule). ``content-words``
    (ours, no tagger): the caption's words, as written, that are not in :data:`STOPWORDS` and
    are no digits. ``auto``: the column when the row has one, else ``content-words``.

    Raises:
        HubError: ``column`` and the row has no ``nouns`` cell; an unknown source.
    """
    if source not in NOUN_SOURCES:
        raise HubError(f"--nouns {source!r}: choose {', '.join(NOUN_SOURCES)}")
    cell = pair.extra.get("nouns")
    if source == "column" or (source == "auto" and cell is not None):
        if cell is None:
            raise HubError(f"{pair.where()}: --nouns column but the row has no 'nouns' cell; add a nouns column (e.g. 'dog;frisbee') or use --nouns content-words")
        return [w.strip() for w in re.split(r"[;,]", cell) if w.strip()]
    out = []
    for word in re.findall(r"[^\W\d_]+", pair.caption):
        if word.lower() not in STOPWORDS:
            out.append(word)
    return out


def label_words(label: str) -> list[str]:
    """A15's words of a label: split on ``,`` then on spaces (``audio/logit_lens.py:49-51``),
    empty pieces dropped."""
    out = []
    for part in label.split(","):
        for word in part.strip().split(" "):
            if word.strip():
                out.append(word.strip())
    return out


def read_label_pool(path: str) -> list[str]:
    """The labels of a ``--labels`` file: one a line, blank lines skipped.

    Raises:
        HubError: a missing or empty file.
    """
    file = Path(path)
    if not file.is_file():
        raise HubError(f"--labels {path}: no such file (one label a line, e.g. written by hubclient.inputs.media.vggsound_pairs)")
    labels = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise HubError(f"--labels {path} has no labels")
    return labels


def disjoint_label(label: str, labels: list[str], rng: Any) -> str | None:
    """A15's baseline: ``rng.choice`` over the labels (in ``labels`` order; the code's are
    sorted) sharing no word with ``label`` (``audio/logit_lens.py:79-83``); ``None`` when there
    is none."""
    mine = set(label_words(label))
    candidates = []
    for other in labels:
        if not mine & set(label_words(other)):
            candidates.append(other)
    return rng.choice(candidates) if candidates else None


def added_token_ids(model: Any) -> list[int]:
    """Ids the A13 Chameleon lens masks out of the softmax: every added token of the tokenizer
    (``tokenizer.added_tokens_decoder``: specials, reserved tokens, the image markers) and every
    image-code token (``model.masked_output_ids``: the config's ``vocabulary_map`` entries named
    ``IMGIMG…``, the VQ codes' tokens, whether the tokenizer lists them as added or not),
    restricted to ``W_U``'s rows.

    Returns:
        sorted ids (plain ints, for the trace).
    """
    size = int(model.vocab_size)
    ids = set(int(i) for i in getattr(model.tokenizer, "added_tokens_decoder", {}) or {})
    ids.update(model.masked_output_ids or [])  # the image codes (hubclient.models.arch.masked_output_ids)
    return sorted(i for i in ids if 0 <= i < size)


def patch_masks(mask_ids: Any, labels: dict[int, str], processor: Any, n_positions: int) -> list[tuple[str, Any]]:
    """A14's patch labels: for each category of the image, which media positions are its
    patches.

    Each category's binary mask (over its segments' pixel ids) goes through the model's image
    processor like the image (``do_rescale=False, do_normalize=False``: the same resize and
    crop), then is cut into a ``g × g`` grid, ``g = sqrt(n_positions)`` (24 for LLaVA-1.5's 576
    positions of 14-pixel patches); a cell is the category's when more than half its pixels are
    (``prepare_labels``, ``vision/logit_lens_segmentation.py:67-98``). Cells are ordered row
    by row (``y·g + x``), the image tokens' order; the released code's ``(W, H)`` labels order
    them column by column (A14 [BUG]), which this does not reproduce.

    Args:
        mask_ids: ``[H, W]`` pixel ids (:func:`hubclient.inputs.media.read_label_mask`).
        labels: segment pixel id -> category name (ids not listed are unlabelled).
        processor: the model's processor (its ``image_processor`` is used).
        n_positions: media positions of the prompt (a square number).

    Returns:
        ``(category name, bool [n_positions])`` per category with at least one patch, in
        order of the categories' first pixel id.

    Raises:
        HubError: ``n_positions`` is not a square, or the processed mask does not divide into
            the grid.
    """
    import math

    import numpy as np

    side = math.isqrt(n_positions)
    if side * side != n_positions:
        raise HubError(f"the segmentation lens needs a square grid of image positions; this model gives {n_positions}")
    by_name: dict[str, list[int]] = {}
    for pixel_id, name in labels.items():
        by_name.setdefault(name, []).append(pixel_id)
    out = []
    for name, ids in by_name.items():
        binary = np.isin(mask_ids, ids)
        if not binary.any():
            continue
        image = np.repeat(binary.astype(np.float32)[:, :, None], 3, axis=2)
        pixels = processor.image_processor(images=[image], do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
        grid = np.asarray(pixels)[0, 0]  # [H', W'], channel 0 (all equal)
        h, w = grid.shape
        if h % side or w % side:
            raise HubError(f"the processed mask is {h}×{w} pixels, which does not divide into {side}×{side} patches")
        cells = grid.reshape(side, h // side, side, w // side).mean(axis=(1, 3))  # [g(y), g(x)]
        patches = (cells > 0.5).reshape(-1)
        if patches.any():
            out.append((name, patches))
    return out


@dataclass
class MediaProtocolOptions(LensChoice):
    """Options of ``hub analyze media-lens`` (recorded in the manifest); the ``--lens`` fields
    of :class:`analyses.lenses.LensChoice` (``logit``, ``tuned`` or ``patchscope``: the
    target prompt is text, without the medium; docs/lenses.md).

    Attributes:
        experiment: one of :data:`EXPERIMENTS`.
        modality: ``image`` or ``audio`` (set from the experiment).
        media_template: the prompt with a ``{media}`` slot (``None``: :data:`PAPER_TEMPLATES`,
            or :data:`CHAMELEON_TEMPLATES` on Chameleon).
        final_norm: the lens' final norm: ``"last"`` (the paper's code: raw layers, the model's
            output at ``L``), ``True`` or ``False`` (:func:`hubclient.science.lens.decode_layers`);
            ``True`` with the tuned lens.
        nouns: A13's noun source (:func:`caption_nouns`).
        control: A12's control word (the paper: ``white``).
        seed: the baseline's random seed (``None``: the paper's, :data:`PAPER_SEEDS`).
        bootstrap: bootstrap resamples of the CI over media.
        resample: audio at another rate is resampled (else an error).
        label_pool: A15: a text file of every label (one a line) the random label is drawn
            from, e.g. all VGGSound labels as the paper
            (:func:`hubclient.inputs.media.vggsound_pairs` writes it); ``None``: the pairs
            file's labels. Either way sorted, as the code's ``sorted(set(...))``.
        max_positions: read at most this many media positions per medium, evenly spaced
            (:func:`hubclient.exec.multimodal.spread_positions`; A14 keeps each category's
            patches among them); ``None``: all, as the paper. Not the paper's quantity when set.
        mask_added: mask every added token and image code (:func:`added_token_ids`) out of the
            lens softmax and renormalise over the rest: ``log P'(k) = z_k − logsumexp_{v ∉ M}
            z_v`` (the released A13 code on Chameleon); ``None``: on where :data:`PAPER_MASKED`
            says the paper did (caption-nouns on Chameleon), else off. The manifest records the
            resolved choice and the number of ids masked.
    """

    experiment: str = "caption-nouns"
    modality: str = "image"
    media_template: str | None = None
    final_norm: Any = "last"
    nouns: str = "auto"
    control: str = "white"
    seed: int | None = None
    bootstrap: int = 1000
    resample: bool = True
    label_pool: str | None = None
    max_positions: int | None = None
    mask_added: bool | None = None


class MediaProtocolLens(LensBatches, Analysis):
    """The paper's lens experiments at media positions (A12-A15; see the block comment above).

    Traces: the residual stream at every media position, layers ``0..L``. Reduces (inside the
    trace): each ``[rows, vocab]`` lens distribution to the log-probability of the medium's
    target tokens (``[rows, W]``: ``logit - logsumexp``) and the top-1 id. Stores
    ``media_lens.parquet``: (prompt, layer, set, value, n) with ``set`` ``matching`` or
    ``baseline`` and ``value`` the released code's per-medium quantity:

    * ``colour`` (A12): % of the image's positions whose top-1 is the colour's token
      (``matching``) or the control word's (``baseline``); the mean over the images equals the
      paper's pooled rate (every image has the same positions).
    * ``caption-nouns`` (A13): ``Σ_{k ∈ keywords} mean_pos P(k) / |keywords| · |nouns|``, where
      ``nouns`` are the true caption's and ``keywords`` the true caption's nouns
      (``matching``) or the least-overlapping caption's (``baseline``).
    * ``segmentation`` (A14): ``mean_c exp(mean_{patches of c} log P(name token))``, names
      true (``matching``) or a random other category's (``baseline``).
    * ``label-words`` (A15): ``exp(mean_words mean_pos log P(word token))``, the clip's label
      (``matching``) or a random label sharing no word (``baseline``, drawn from the sorted
      labels of the file or of ``label_pool``).

    ``finish`` writes ``media_lens_summary.parquet``: per layer and set (and ``difference`` =
    matching − baseline, paired per medium), the mean over media, a seeded 95% bootstrap CI
    over media and ``n``.
    """

    name = "media-lens"
    tables = {"media_lens": ["prompt", "layer", "set"]}
    #: --remote: the media pairs (``pathlib.Path`` file names, which NDIF's allow-list refuses to
    #: unpickle) are read here; the trace needs only ``id_table``, ``media_id`` and the options.
    local_only = ("pairs",)

    def __init__(self, options: MediaProtocolOptions, pairs: list[MediaPair], pool: list[MediaPair] | None = None):
        """Bind the media and draw each one's targets and baseline (no model needed).

        Args:
            pairs: the media analysed, in order.
            pool: every pair of the file (A13's baseline captions, A14's category names, A15's
                labels are drawn from it); default ``pairs``.

        Raises:
            HubError: an unknown experiment, a modality that does not fit it, a pair without
                the columns it needs (``mask`` + ``labels`` for segmentation), no nouns; bad
                ``--lens`` options (:func:`analyses.lenses.init_lens`).
        """
        import random

        if options.experiment not in EXPERIMENTS:
            raise HubError(f"unknown media-lens experiment {options.experiment!r}; choose {', '.join(EXPERIMENTS)}")
        check_max_positions(options.max_positions)
        super().__init__(options)
        init_lens(self)
        pool = list(pool) if pool is not None else list(pairs)
        self.pairs = list(pairs)
        seed = options.seed if options.seed is not None else PAPER_SEEDS.get(options.experiment, 0)
        rng = random.Random(seed)
        exp = options.experiment
        #: per prompt: the matching words and the baseline words (A14: per category, in order)
        self.words: list[tuple[list[str], list[str]]] = []
        self.baseline_of: list[str] = []  # what the baseline is, per prompt (for the manifest / tables)
        self.masks_src: list[tuple[Any, dict[int, str]]] = []
        if exp == "colour":
            for pair in self.pairs:
                self.words.append(([pair.caption], [options.control]))
                self.baseline_of.append(options.control)
        elif exp == "caption-nouns":
            sets = [caption_token_texts(p.caption) for p in pool]
            index = {id(p): i for i, p in enumerate(pool)}
            for k, pair in enumerate(self.pairs):
                nouns = caption_nouns(pair, options.nouns)
                if not nouns:
                    raise HubError(f"{pair.where()}: the caption {pair.caption!r} has no nouns ({options.nouns}); the released code asserts at least one")
                i = index.get(id(pair), k)
                other = pool[least_overlap(i, sets)]
                self.words.append((nouns, caption_nouns(other, options.nouns)))
                self.baseline_of.append(other.caption)
        elif exp == "segmentation":
            from hubclient.inputs.media import parse_segment_labels, read_label_mask

            names = []
            for pair in pool:
                for name in parse_segment_labels(pair.extra.get("labels", ""), pair.where()).values():
                    if name not in names:
                        names.append(name)
            for pair in self.pairs:
                if "mask" not in pair.extra or "labels" not in pair.extra:
                    raise HubError(f"{pair.where()}: the segmentation lens needs 'mask' (a PNG of segment ids) and 'labels' ('id:name;...') columns")
                mask_path = Path(pair.extra["mask"]).expanduser()
                if not mask_path.is_absolute():
                    mask_path = pair.source.parent / mask_path
                labels = parse_segment_labels(pair.extra["labels"], pair.where())
                self.masks_src.append((read_label_mask(mask_path, pair.where()), labels))
                true, fake = [], []
                for name in dict.fromkeys(labels.values()):
                    others = [n for n in names if n != name]
                    if not others:
                        raise HubError(f"{pair.where()}: the random-label baseline needs at least two category names in the file")
                    true.append(name)
                    fake.append(rng.choice(others))
                self.words.append((true, fake))
                self.baseline_of.append(", ".join(fake))
        else:  # label-words: the code's all_labels = sorted(set(all VGGSound labels))
            labels = sorted(set(read_label_pool(options.label_pool) if options.label_pool else [p.caption for p in pool]))
            for pair in self.pairs:
                other = disjoint_label(pair.caption, labels, rng)
                if other is None:
                    raise HubError(f"{pair.where()}: no label of the file shares no word with {pair.caption!r}; the random-label baseline needs one")
                self.words.append((label_words(pair.caption), label_words(other)))
                self.baseline_of.append(other)
        self.media_id: int | None = None
        self.id_table: Any = None
        self.masked_ids: Any = None  # int64 [M] ids out of the softmax (mask_added), or None
        self.columns: list[list[tuple[str, int, int]]] = []  # per prompt: (set, group, column)
        self.patches: list[list[Any]] = []  # A14: per prompt, per category: bool [positions]
        self.dropped: list[str] = []

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Target words -> token ids (:func:`word_token`: the first token of ``" " + word``,
        which for Llama's tokenizer is the released code's ``tokenizer(word)[0]``, e.g.
        ``▁red``); A14's patch masks from the processor and each prompt's media positions.

        Raises:
            HubError: a model of the other modality or text-only; no target of a medium has a
                token.
        """
        import numpy as np

        require_modality(model, self.options.modality)
        prepare_lens(self, model)
        self.media_id = model.media_token_id
        mask = self.options.mask_added
        if mask is None:
            mask = model.arch.family in PAPER_MASKED.get(self.options.experiment, ())
        self.masked_ids = np.asarray(added_token_ids(model), dtype=np.int64) if mask else None
        cache: dict[str, int | None] = {}

        def token(word: str) -> int | None:
            if word not in cache:
                cache[word] = word_token(model.tokenizer, word)
                if cache[word] is None:
                    self.dropped.append(word)
            return cache[word]

        table = []
        for p, (true, base) in enumerate(self.words):
            cols: list[tuple[str, int, int]] = []
            ids: list[int] = []
            if self.options.experiment == "segmentation":
                n_pos = len(media_positions(tokens[p], self.media_id))
                mask_ids, labels = self.masks_src[p]
                masks = dict(patch_masks(mask_ids, labels, model.processor, n_pos))
                sampled = spread_positions(list(range(n_pos)), self.options.max_positions)[1]
                kept = []
                for g, (name, fake) in enumerate(zip(true, base)):
                    if name not in masks or token(name) is None or token(fake) is None:
                        continue
                    masks[name] = masks[name][sampled]  # the patches among the positions read
                    if not masks[name].any():
                        continue
                    cols.append(("matching", len(kept), len(ids)))
                    ids.append(token(name))
                    cols.append(("baseline", len(kept), len(ids)))
                    ids.append(token(fake))
                    kept.append(masks[name])
                self.patches.append(kept)
            else:
                for set_name, words in (("matching", true), ("baseline", base)):
                    for word in words:
                        t = token(word)
                        if t is not None:
                            cols.append((set_name, 0, len(ids)))
                            ids.append(t)
            self.columns.append(cols)
            table.append(ids)
        width = max([1] + [len(ids) for ids in table])
        self.id_table = np.zeros((len(table), width), dtype=np.int64)
        for p, ids in enumerate(table):
            self.id_table[p, : len(ids)] = ids

    def describe_run(self) -> dict[str, Any]:
        """The paper ID, each medium's baseline and the target words without a token."""
        return {
            "protocol": EXPERIMENTS[self.options.experiment][0],
            "baselines": list(self.baseline_of),
            "words_without_token": sorted(set(self.dropped)),
            "softmax_mask": (
                {"rule": "added tokens and image codes out of the softmax, renormalised over the rest (A13 Chameleon)", "n_ids": int(self.masked_ids.size)}
                if self.masked_ids is not None else None
            ),
            **lens_manifest(self),
        }

    def token_positions(self, tokens: list[int], prompt_index: int) -> list[int]:
        """The media positions of the prompt: all (the paper), or ``max_positions`` evenly
        spaced ones (:func:`hubclient.exec.multimodal.spread_positions`)."""
        return spread_positions(media_positions(tokens, self.media_id), self.options.max_positions)[0]

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Any) -> dict[str, Any]:
        """``lp`` ``[layers+1, rows, W]``: log-probabilities ``logit - logsumexp(logits)`` of each
        row's target ids, and ``top1`` ``[layers+1, rows]``: the lens' arg-max, at every media
        position and layer (:func:`hubclient.science.lens.decode_layers`, the paper's lens with
        ``final_norm="last"``, ``lib/logit_lens.py:46-66``). With ``masked_ids`` (A13 on
        Chameleon) those logits are set to ``-inf`` first, so the softmax is renormalised over
        the other tokens and the arg-max is never a masked one."""
        import numpy as np
        import torch

        prompts = np.asarray(batch.row_prompt, dtype=np.int64)
        words = torch.from_numpy(self.id_table[prompts].copy()).to(model.device)
        masked = None if self.masked_ids is None else torch.from_numpy(self.masked_ids.copy())

        def reduce(logits: Any, rows: Any) -> dict[str, Any]:
            if masked is not None:
                logits = logits.index_fill(1, masked.to(logits.device), float("-inf"))
            lse = torch.logsumexp(logits, dim=-1)
            return {"lp": logits.gather(1, words[rows]) - lse[:, None], "top1": logits.argmax(dim=-1)}

        return decode_layers(model, batch, reduce, self.options.final_norm, None, self.lens_spec)

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Any, saved: dict[str, Any]) -> dict[str, Any]:
        """One row per (medium, layer, set): the per-medium quantity (see the class docstring)
        and ``n`` (positions for A12, keywords for A13, categories for A14, words for A15)."""
        import numpy as np
        import polars as pl

        lp_all = saved["lp"].numpy().astype(np.float64)  # [layers, rows, W]
        top1 = saved["top1"].numpy()
        row_prompt = np.asarray(batch.row_prompt, dtype=np.int64)
        row_pos = batch.row_position.numpy()
        n_layers = lp_all.shape[0]
        out: dict[str, list[Any]] = {"prompt": [], "layer": [], "set": [], "value": [], "n": []}
        exp = self.options.experiment
        for p in dict.fromkeys(row_prompt.tolist()):
            sel = np.nonzero(row_prompt == p)[0]
            sel = sel[np.argsort(row_pos[sel], kind="stable")]
            lp = lp_all[:, sel, :]  # [layers, positions, W]
            cols = self.columns[p]
            values: dict[str, Any] = {}
            counts: dict[str, int] = {}
            for set_name in ("matching", "baseline"):
                mine = [c for s, _, c in cols if s == set_name]
                if exp == "colour":
                    if mine:
                        hits = top1[:, sel] == self.id_table[p, mine[0]]
                        values[set_name], counts[set_name] = 100.0 * hits.mean(axis=1), len(sel)
                elif exp == "caption-nouns":
                    n_nouns = len([c for s, _, c in cols if s == "matching"])
                    if mine and n_nouns:
                        total = np.exp(lp[:, :, mine]).mean(axis=1).sum(axis=1)  # Σ_k mean_pos P(k)
                        values[set_name], counts[set_name] = total / len(mine) * n_nouns, len(mine)
                elif exp == "segmentation":
                    per_cat = []
                    for (s, g, c) in cols:
                        if s == set_name:
                            patches = self.patches[p][g]
                            per_cat.append(np.exp(lp[:, patches, c].mean(axis=1)))
                    if per_cat:
                        values[set_name], counts[set_name] = np.mean(per_cat, axis=0), len(per_cat)
                elif mine:  # label-words
                    values[set_name], counts[set_name] = np.exp(lp[:, :, mine].mean(axis=(1, 2))), len(mine)
            for set_name, value in values.items():
                out["prompt"].extend([p] * n_layers)
                out["layer"].extend(range(n_layers))
                out["set"].extend([set_name] * n_layers)
                out["value"].extend(np.asarray(value, dtype=np.float64).tolist())
                out["n"].extend([counts[set_name]] * n_layers)
        frame = pl.DataFrame(out, schema={"prompt": pl.Int64, "layer": pl.Int32, "set": pl.String, "value": pl.Float64, "n": pl.Int32})
        return {"media_lens": frame}

    # ------------------------------------------------------------------ statistics
    def finish(self, run: Any) -> dict[str, Any]:
        """``media_lens_summary``: per layer and set (``matching``, ``baseline``, and
        ``difference`` = matching − baseline over the media that have both), the mean over
        media, its seeded percentile-bootstrap 95% CI over media
        (:func:`hubclient.science.stats.bootstrap_ci`) and ``n`` media."""
        import numpy as np
        import polars as pl

        from hubclient.science import stats

        table = run.table("media_lens")
        wide = table.pivot(on="set", index=["prompt", "layer"], values="value")
        rows = []
        for (layer,), part in wide.sort("layer", "prompt").group_by("layer", maintain_order=True):
            series = {}
            for set_name in ("matching", "baseline"):
                if set_name in part.columns:
                    series[set_name] = part[set_name].drop_nulls().to_numpy()
            if "matching" in part.columns and "baseline" in part.columns:
                both = part.drop_nulls(["matching", "baseline"])
                series["difference"] = (both["matching"] - both["baseline"]).to_numpy()
            for set_name, values in series.items():
                if values.size == 0:
                    continue
                low, high = stats.bootstrap_ci(values, n_boot=self.options.bootstrap, seed=0)
                rows.append({"layer": layer, "set": set_name, "mean": float(np.mean(values)), "ci_low": low, "ci_high": high, "n": int(values.size)})
        return {"media_lens_summary": pl.DataFrame(rows, schema={"layer": pl.Int32, "set": pl.String, "mean": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int32})}

    def summary(self, run: Any) -> str:
        """See :func:`protocol_summary`."""
        return protocol_summary(run)

    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """See :func:`analyses.media_plots.protocol_lens_plot`."""
        from analyses.media_plots import protocol_lens_plot

        return protocol_lens_plot(run)


def protocol_summary(run: Any) -> str:
    """A few lines of a media-lens run: per set, the peak layer's mean and CI, and the last
    layer's (from ``media_lens_summary.parquet`` and the manifest)."""
    table = run.table("media_lens_summary")
    experiment = run.manifest["options"].get("experiment", "")
    names = dict(zip(("matching", "baseline"), SET_NAMES.get(experiment, ("matching", "baseline"))))
    lines = []
    for (set_name,), rows in table.sort("layer").group_by("set", maintain_order=True):
        peak = rows.row(int(rows["mean"].arg_max()), named=True)
        last = rows.row(rows.height - 1, named=True)
        lines.append(
            f"  {names.get(set_name, set_name)}: peak {peak['mean']:.4g} [{peak['ci_low']:.4g}, {peak['ci_high']:.4g}] at layer {peak['layer']}; "
            f"layer {last['layer']} {last['mean']:.4g} [{last['ci_low']:.4g}, {last['ci_high']:.4g}] (n={peak['n']})"
        )
    return "\n".join(lines)


def run_media_lens(options: MediaProtocolOptions, pairs_file: Path | None, n: int | None, config: RunConfig, colours_dir: Path | None = None) -> Any:
    """One of the paper's media lenses (A12-A15) on a pairs file.

    ``colour`` without a pairs file writes the four solid images first
    (:func:`hubclient.inputs.media.write_solid_colours`, into ``colours_dir`` or
    ``config.out/solid-colours``). The baselines are drawn from the whole file; ``n`` keeps the
    first ``n`` media. Without ``options.media_template`` the prompt is the released code's for
    the model: :data:`CHAMELEON_TEMPLATES` on Chameleon (the model is loaded first, after the
    inputs are checked, to see its family), else :data:`PAPER_TEMPLATES`.

    Raises:
        HubError: bad pairs, media, template or model; see :class:`MediaProtocolLens`.
    """
    from hubclient.inputs.media import write_solid_colours

    options.modality = EXPERIMENTS.get(options.experiment, (None, options.modality))[1]
    if options.experiment not in EXPERIMENTS:
        raise HubError(f"unknown media-lens experiment {options.experiment!r}; choose {', '.join(EXPERIMENTS)}")
    if pairs_file is None:
        if options.experiment != "colour":
            raise HubError(f"media-lens {options.experiment} needs a pairs file (docs/modalities.md)")
        pairs_file = write_solid_colours(Path(colours_dir) if colours_dir else Path(config.out) / "solid-colours")
    template = options.media_template if options.media_template is not None else PAPER_TEMPLATES[options.experiment]
    check_template(template)
    pool = read_pairs(pairs_file)
    pairs = pool[:n] if n is not None else pool
    if n is not None and n < 1:
        raise HubError(f"--n must be at least 1, got {n}")
    analysis = MediaProtocolLens(options, pairs, pool)
    model = None
    if options.media_template is None and options.experiment in CHAMELEON_TEMPLATES:  # the paper's prompt depends on the model
        from hubclient.exec import executor_for

        model = executor_for(config).load_model(config)
        if model.arch.family == "chameleon":
            template = CHAMELEON_TEMPLATES[options.experiment]
    columns = {"media": [str(p.media) for p in pairs], "caption": [p.caption for p in pairs], "baseline": analysis.baseline_of}
    return run_analysis(analysis, [template] * len(pairs), config, model=model, prompt_columns=columns, media=pairs, resample=options.resample)
