"""Image and audio inputs for ``hub analyze similarity`` and ``hub analyze logit-lens``.

The semantic hub paper (Wu et al. 2024, §"Vision / audio", Fig. 1) shows that an image or an
audio clip lands near its caption in the middle layers, and that the media positions decode,
through the logit lens, to English words for what they show. Both commands take a pairs file
(:mod:`hubclient.inputs.media`) with ``--modality image|audio``:

* **similarity**: each pair gives two inputs, the medium (in ``--media-template``) and its
  caption; the two "languages" are the modality and ``caption``, so Eq. 1 (matching minus
  non-matching cosine), its CI and every table and plot are the text analysis' own
  (:class:`analyses.similarity.Similarity`). Traces: the residual stream of the asked layers.
  Reduces: the medium to the mean over its media positions (``--media-pool mean``) or the
  last one; the caption as ``--pool`` says.
* **logit-lens** (:class:`MediaLens`): traces the residual stream at every media position and
  layer (0 = embeddings); reduces it through the final norm and ``W_U`` (Eq. 2) to the top-k
  tokens and the probability and rank of each caption word; stores ``logit_lens.parquet``
  (as the text lens) and ``caption_words.parquet``; draws the caption words' probability by
  layer and the top-1 tokens at the media positions of the first pair.

Media are read and preprocessed on the client (:mod:`hubclient.exec.multimodal`); with
``--remote`` only the processor's tensors go to NDIF and only the reduced tensors come back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.logit_lens import LensOptions, LogitLens, _decoder
from analyses.media_plots import HEATMAP_POSITIONS, media_lens_plots  # noqa: F401 (re-exported)
from analyses.similarity import Similarity, SimilarityOptions, apply_template
from hubclient.errors import HubError
from hubclient.science.lens import decode_layers, reduce_logits
from hubclient.inputs.media import check_modality, read_pairs
from hubclient.exec.multimodal import MEDIA_SLOT, check_template, media_positions, require_modality
from hubclient.runner import RunConfig, run_analysis
from hubclient.science.tokens import word_ids

#: Caption words not followed by the lens (function words carry no content).
STOPWORDS = frozenset(
    "a an the of on in at to and or is are was were be this that it its with for by from as into over under".split()
)


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
    """

    modality: str = "image"
    media_template: str = MEDIA_SLOT
    resample: bool = True


class MediaLens(LogitLens):
    """The logit lens at every media position, with the caption words followed (see the
    module docstring)."""

    def __init__(self, options: MediaLensOptions, captions: list[str]):
        """Bind options and each pair's caption.

        Raises:
            HubError: an unknown modality, ``--target`` (the captions name the words), bad
                ``top_k``.
        """
        if options.targets:
            raise HubError("--target does not apply with --modality: the lens follows each pair's caption words")
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
        """Every media position of the prompt (where the processor put the media tokens)."""
        return media_positions(tokens, self.media_id)

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

        return decode_layers(model, batch, reduce, self.options.final_norm)

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
