"""``hub analyze similarity``: cross-lingual similarity of hidden states by layer (Fig. 3, Eq. 1).

The semantic hub paper (Wu et al. 2024, arXiv 2411.04986) compares the hidden states of parallel
inputs: for languages A and B, N parallel sentences and layer ``l``,
``S_ij = cos(h_l(a_i), h_l(b_j))`` and the baseline-adjusted similarity is
``mean_i S_ii - mean_{i != j} S_ij`` (matching minus non-matching pairs; Eq. 1).

Traces: the residual stream ``h_l`` (layer 0 = embeddings, layer ``l`` = output of block ``l``,
before the final norm) of the asked ``--layers`` only; the forward pass stops after the last of
them (no final norm, no ``lm_head``). Each of the K×N inputs runs through the model once; all
language pairs come from the stored vectors.
Reduces (inside the trace): each layer's ``[batch, seq, d_model]`` to one pooled vector per
input, ``[layers, batch, d_model]`` (float32): the last real token (``--pool last``, the paper)
or the mean over the input's tokens without the leading BOS (``--pool mean``; padding ignored).
Stores: ``vectors.parquet`` (prompt, language, sentence, layer, vector), streamed per batch, so
any statistic can be redone in polars without the model; ``similarity.parquet`` (per layer and
language pair: Eq. 1 (or the ``--baseline``/``--paired-baseline`` variant), its matching and
non-matching means, the subtracted ``baseline`` mean, optional same-/other-group means, and a
seeded 95% bootstrap CI over pairs), computed in
:meth:`Similarity.finish` from the stored vectors; with ``--save-matrix``, ``matrix.parquet``
(the N×N cosines per layer and pair). The runner adds ``prompts.parquet`` (with ``language``
and ``sentence`` columns) and ``manifest.json``.
Draws: similarity by layer with its CI band (one line per pair), the matching and non-matching
means by layer, and the N×N cosine heatmap at ``--heatmap-layer``.

Conventions of the paper's released code (``paper-protocols.md`` §0, A1, A4, A9), each a named
option (our defaults stay as they were):

* ``--final-norm last``: layer ``L`` is read *after* the model's final norm, as transformers'
  ``hidden_states[L]`` that the paper's ``get_emb_and_hidden_states`` (``lib/logit_lens.py:46-52``)
  returns; layers below ``L`` stay raw. ``on`` puts every layer through the final norm; ``off``
  (default) keeps every layer raw (layer ``L`` = the output of the last block).
* ``--baseline offdiag|all``: Eq. 1 subtracts the off-diagonal mean (``lib/utils.py:147-154``);
  the paper's arithmetic script (``arithmetic/similarity.py:100-109``) subtracts the mean over
  all N² pairs, diagonal included.
* ``--paired-baseline LANG``: per item ``cos(a_i, b_i) - cos(a_i, LANG_i)`` (the COGS name-swap
  / shuffle baselines, ``semantics/similarity.py:116-122``), LANG being a third aligned input.
* ``--template wu2024``: the conditional suffix of ``multilingual/similarity.py:54-69``
  (``这代表了`` after a Chinese text ending in ``。``, ``This represents`` after an English text
  ending in ``.`` or ``."``, no space; nothing otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.exec.multimodal import pool_weights  # module level: trace() runs on the server, where importing hub fails
from hubclient.inputs import ranges
from hubclient.inputs.parallel import ParallelCorpus, read_languages
from hubclient.plots import ci_lines
from hubclient.science import stats

POOLS = ("last", "mean")
#: Named templates (``--template NAME``): a function of (text, language) instead of ``{text}``.
NAMED_TEMPLATES = ("wu2024",)
#: The paper's suffixes (``multilingual/similarity.py:54-69``): Chinese after ``。``, English
#: after ``.`` or ``."``.
ZH_SUFFIX, EN_SUFFIX = "这代表了", "This represents"
#: The CI's coverage (Fig. 3 of the paper shows 95% intervals).
LEVEL = 0.95
#: Pairs drawn in the heatmap, and sentences per heatmap axis (the first ones).
HEATMAP_PAIRS, HEATMAP_SENTENCES = 3, 100


@dataclass
class SimilarityOptions:
    """Options of the similarity analysis (recorded in the manifest).

    Attributes:
        languages: language names in input order (file stems or FLORES codes).
        sources: the files the languages were read from.
        n: first N sentences used (``None``: all).
        skip_empty: line indices empty in any language were dropped from all.
        pool: ``last`` (last real token, the paper) or ``mean`` (mean over the input's tokens
            except a leading BOS; padding never counts).
        template: text around each input with a ``{text}`` placeholder, or ``None``.
        center: subtract the layer's mean vector (over all K×N inputs) before the cosine.
        layers: ``all``, a list ``0,4,8``, a range ``2-10`` / ``0:8:2``, ``-1`` = the last (0 =
            embeddings; :mod:`hubclient.inputs.ranges`).
        anchor: compare only this language with each other one (``None``: all pairs).
        seed: bootstrap seed.
        bootstrap: bootstrap resamples.
        save_matrix: also store the N×N cosine matrix per layer and pair.
        save_vectors: keep ``vectors.parquet`` (the pooled vector per input and layer) once the
            statistics are computed from it.
        heatmap_layer: layer of the heatmap (``None``: the model's middle layer); an ``int``, or
            a negative index as text (``"-1"`` = the last layer).
        modality: ``text`` (parallel sentences), or ``image`` / ``audio``: media vs caption
            pairs (:mod:`hubclient.inputs.media`), the two "languages" being the modality and
            ``caption``.
        media_pool: with media, how the media positions are pooled: the ``last`` one (the
            paper's code, paper-protocols.md A11; on Chameleon the sep token its processor
            appends, :func:`hubclient.exec.multimodal.paper_media_pool`), the ``mean`` over them
            (ours) or ``final``, the prompt's last position on any model; ``pool`` applies to
            the caption.
        media_template: with media, the text around the medium, with a ``{media}`` slot.
        resample: with audio, resample other sampling rates (else they are an error).
        final_norm: ``False`` (default: every layer raw), ``"last"`` (layer ``L`` through the
            final norm, as transformers' ``hidden_states[L]``: the paper's code) or ``True``
            (every layer through the final norm).
        baseline: ``offdiag`` (Eq. 1) or ``all`` (diagonal included; the paper's arithmetic
            code), see :func:`hubclient.science.stats.baseline_adjusted`.
        paired_baseline: a language whose item ``i`` is the altered counterpart of item ``i``:
            each other pair ``(a, b)`` is scored ``mean_i [cos(a_i, b_i) - cos(a_i, alt_i)]``
            (:func:`hubclient.science.stats.paired_scores`; ``None``: Eq. 1).
        protocol: ``hub`` (our defaults) or ``wu2024`` (the options were set to the paper's
            code by ``--protocol wu2024``; recorded for the manifest and plot titles).
        groups: optional label of each sentence (indexed by sentence id; ``--protocol wu2024
            --task arithmetic``: the expression's result). The table then also has
            ``same_group`` (mean ``S_ij`` over pairs whose labels are equal, diagonal included)
            and ``other_group`` (over pairs whose labels differ): the paper's "Same result" and
            "Diff result" (``arithmetic/similarity.py:44-98``).
    """

    languages: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    n: int | None = None
    skip_empty: bool = False
    pool: str = "last"
    template: str | None = None
    center: bool = False
    layers: str = "all"
    anchor: str | None = None
    seed: int = 0
    bootstrap: int = stats.N_BOOTSTRAP
    save_matrix: bool = False
    save_vectors: bool = True
    heatmap_layer: int | str | None = None
    modality: str = "text"
    media_pool: str = "last"
    media_template: str = "{media}"
    resample: bool = True
    final_norm: "bool | str" = False
    baseline: str = "offdiag"
    paired_baseline: str | None = None
    protocol: str = "hub"
    groups: list[int] | None = None


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Parse ``--layers`` against a model of ``n_layers`` blocks (valid layers ``0..L``, 0 =
    embeddings): :func:`hubclient.inputs.ranges.parse_layers` (``all``, ``0,4,8``, ``2-10``,
    ``0:8:2``, ``-1`` = the last).

    Returns:
        sorted unique layer indices.

    Raises:
        HubError: bad syntax or a layer outside ``0..L``.
    """
    return ranges.parse_layers(spec, 0, n_layers, "--layers")


def heatmap_layer(value: int | str | None, n_layers: int) -> int | None:
    """``--heatmap-layer`` resolved against ``0..L`` (``-1`` = ``L``); ``None`` stays ``None``.

    Raises:
        HubError: a layer outside ``0..L`` or more than one layer.
    """
    if value is None:
        return None
    return ranges.parse_layer(str(value), 0, n_layers, "--heatmap-layer")


def compared_pairs(languages: list[str], anchor: str | None = None, paired_baseline: str | None = None) -> list[tuple[str, str]]:
    """The pairs scored: :func:`language_pairs` of the languages other than ``paired_baseline``
    (the altered counterpart is never a side of a pair)."""
    kept = [lang for lang in languages if lang != paired_baseline]
    return language_pairs(kept, anchor)


def language_pairs(languages: list[str], anchor: str | None = None) -> list[tuple[str, str]]:
    """The pairs compared: every unordered pair in input order, or ``anchor`` with each other."""
    if anchor is not None:
        pairs = []
        for other in languages:
            if other != anchor:
                pairs.append((anchor, other))
        return pairs
    pairs = []
    for i, a in enumerate(languages):
        for b in languages[i + 1 :]:
            pairs.append((a, b))
    return pairs


def template_language(language: str) -> str | None:
    """``zh`` or ``en`` for a language name the ``wu2024`` template knows (FLORES codes
    ``zho_Hans``/``zho_Hant``/``eng_Latn``, or names such as ``zh``, ``cmn``, ``en``, ``english``,
    ``chinese``, ``zh-cn``), else ``None``."""
    name = language.lower().replace("-", "_")
    head = name.split("_")[0]
    if head in ("zho", "zh", "cmn", "chinese") or name.startswith("zh"):
        return "zh"
    if head in ("eng", "en", "english"):
        return "en"
    return None


def wu2024_suffix(text: str, language: str) -> str:
    """The paper's conditional suffix (``multilingual/similarity.py:54-69``, ``augment_data``).

    Chinese: ``text + "这代表了"`` if the text ends with ``。``; English: ``text + "This
    represents"`` if it ends with ``.`` or ``."`` (no space, so ``...word.This represents``);
    any other text is returned unchanged.

    Args:
        text: one input.
        language: ``zh`` or ``en`` (see :func:`template_language`).
    """
    if language == "zh" and text.endswith("。"):
        return text + ZH_SUFFIX
    if language == "en" and (text.endswith(".") or text.endswith('."')):
        return text + EN_SUFFIX
    return text


def apply_template(template: str | None, texts: list[str], languages: list[str] | None = None) -> list[str]:
    """Put each text into ``template`` at ``{text}`` (other braces are left alone), or apply a
    named template (:data:`NAMED_TEMPLATES`): ``wu2024`` = :func:`wu2024_suffix` by the text's
    language.

    Args:
        template: ``None`` (texts unchanged), a string with ``{text}``, or a name.
        texts: the inputs.
        languages: each text's language name (needed by a named template).

    Raises:
        HubError: a template without ``{text}`` that is not a name; ``wu2024`` with a language
            that is neither Chinese nor English, or without languages.
    """
    if template is None:
        return list(texts)
    if template in NAMED_TEMPLATES:
        if languages is None or len(languages) != len(texts):
            raise HubError(f"--template {template} needs each input's language")
        kinds: dict[str, str | None] = {}
        for language in dict.fromkeys(languages):
            kinds[language] = template_language(language)
            if kinds[language] is None:
                raise HubError(f"--template wu2024 is the paper's Chinese/English suffix; language {language!r} is neither (use e.g. zho_Hans and eng_Latn, or a '{{text}} ...' template)")
        out = []
        for text, language in zip(texts, languages):
            out.append(wu2024_suffix(text, kinds[language]))
        return out
    if "{text}" not in template:
        raise HubError(f"--template {template!r} has no {{text}} placeholder; write e.g. '{{text}} In other words,'")
    out = []
    for text in texts:
        out.append(template.replace("{text}", text))
    return out


class Similarity(Analysis):
    """Cross-lingual hidden-state similarity (see the module docstring)."""

    name = "similarity"
    transfer_keys = ("vectors",)  # --remote: travel in --transfer-dtype (float16 by default)
    tables = {"vectors": ["layer", "prompt"]}

    def dropped_tables(self) -> dict[str, str]:
        """``vectors`` with ``--no-save-vectors``: removed once the statistics are written."""
        return {} if self.options.save_vectors else {"vectors": "not kept (--no-save-vectors)"}

    def __init__(self, options: SimilarityOptions, languages: list[str], sentences: list[int]):
        """Bind options and the per-prompt labels.

        Args:
            options: :class:`SimilarityOptions`.
            languages / sentences: the language and sentence index of each prompt (K×N each,
                as :meth:`hubclient.inputs.parallel.ParallelCorpus.flat` gives them).

        Raises:
            HubError: unknown ``pool``, an ``anchor`` that is not one of the languages, fewer
                than 2 languages, ``bootstrap < 1``, labels that do not form K complete languages.
        """
        super().__init__(options)
        if options.pool not in POOLS:
            raise HubError(f"unknown --pool {options.pool!r}; choose one of {', '.join(POOLS)}")
        if len(options.languages) < 2:
            raise HubError(f"need at least 2 languages, got {len(options.languages)}")
        if options.anchor is not None and options.anchor not in options.languages:
            raise HubError(f"--anchor {options.anchor!r} is not one of the inputs ({', '.join(options.languages)})")
        if options.bootstrap < 1:
            raise HubError(f"--bootstrap must be at least 1, got {options.bootstrap}")
        stats.check_baseline(options.baseline)
        from hubclient.science.lens import norm_mode

        options.final_norm = norm_mode(options.final_norm)
        if options.paired_baseline is not None:
            if options.paired_baseline not in options.languages:
                raise HubError(f"--paired-baseline {options.paired_baseline!r} is not one of the inputs ({', '.join(options.languages)}); give it as a third aligned input")
            if len(options.languages) < 3:
                raise HubError(f"--paired-baseline needs two compared inputs besides {options.paired_baseline!r}, got {len(options.languages)} inputs in all")
            if options.anchor == options.paired_baseline:
                raise HubError(f"--anchor and --paired-baseline are both {options.anchor!r}; the anchor must be one of the compared inputs")
            if options.baseline != "offdiag":
                raise HubError("--baseline all does not apply with --paired-baseline (the paired mode has no N×N baseline)")
        if len(languages) != len(sentences):
            raise ValueError("languages and sentences must label every prompt")
        self.languages = list(languages)
        self.sentences = list(sentences)
        self.layers: list[int] = []
        self.bos_id: int | None = None
        self.media_id: int | None = None
        self.media_pool = options.media_pool  # resolved against the model in prepare
        from hubclient.exec.multimodal import MEDIA_POOLS

        if options.media_pool not in MEDIA_POOLS:
            raise HubError(f"unknown --media-pool {options.media_pool!r}; choose {' or '.join(MEDIA_POOLS)}")

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Resolve ``--layers`` and ``--heatmap-layer`` against the model.

        Raises:
            HubError: a layer outside ``0..L`` or a heatmap layer that is not analysed.
        """
        self.layers = parse_layers(self.options.layers, model.n_layers)
        hl = heatmap_layer(self.options.heatmap_layer, model.n_layers)
        if hl is not None and hl not in self.layers:
            raise HubError(f"--heatmap-layer {hl} is not among the analysed layers ({self.options.layers}: {_short_list(self.layers)})")
        self.bos_id = model.tokenizer.bos_token_id
        if self.options.modality != "text":
            from hubclient.exec.multimodal import require_modality

            from hubclient.exec.multimodal import paper_media_pool

            require_modality(model, self.options.modality)
            self.media_id = model.media_token_id
            self.media_pool = paper_media_pool(model, self.options.media_pool)

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """Pool the asked layers to ``{"vectors": [layers, batch, d_model]}`` (float32).

        ``last``: ``h[b, length_b - 1]``. ``mean``: ``sum_s w[b, s] h[b, s]`` with ``w`` the
        attention mask without a leading BOS, normalised to sum 1 per input (an input that is
        only BOS keeps it).
        """
        import torch

        device = model.device
        wanted = set(self.layers)
        n = batch.input_ids.shape[0]
        if self.media_id is not None:  # media vs caption: weights over media positions / caption tokens
            weights = pool_weights(batch, self.media_id, self.media_pool, self.options.pool, self.bos_id).to(device)
        elif self.options.pool == "last":
            rows = torch.arange(n, device=device)
            last = torch.tensor(batch.lengths, device=device) - 1
            weights = None
        else:
            weights = batch.token_weights(self.bos_id)
            weights = (weights / weights.sum(dim=1, keepdim=True)).to(device)
        pooled = []
        final_norm = self.options.final_norm
        top = model.n_layers
        for layer, hidden in model.hidden_states(last=max(self.layers)):
            if layer in wanted:
                if final_norm is True or (final_norm == "last" and layer == top):
                    hidden = model.final_norm(hidden)
                here = hidden.device  # this layer's device (a model split by device_map); pooled back to model.device
                if weights is None:
                    pooled.append(hidden[rows.to(here), last.to(here)].float().to(device))
                else:
                    pooled.append(torch.einsum("bs,bsd->bd", weights.to(here), hidden.float()).to(device))
        return {"vectors": torch.stack(pooled)}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """``vectors`` rows of one batch: (prompt, language, sentence, layer, vector[d_model])."""
        import numpy as np
        import polars as pl

        vectors = saved["vectors"].numpy().astype(np.float32, copy=False)  # [layers, batch, d]
        n_layers, n, d = vectors.shape
        prompt = np.asarray(batch.prompt_index, dtype=np.int64)
        row = np.tile(np.arange(n), n_layers)
        languages = np.asarray(self.languages, dtype=object)[prompt].astype(str)
        sentences = np.asarray(self.sentences, dtype=np.int64)[prompt]
        frame = pl.DataFrame(
            {
                "prompt": prompt[row],
                "language": languages[row],
                "sentence": sentences[row],
                "layer": np.repeat(np.asarray(self.layers, dtype=np.int32), n),
                "vector": vectors.reshape(n_layers * n, d),
            }
        )
        return {"vectors": frame}

    # ------------------------------------------------------------------ statistics
    def finish(self, run: Any) -> dict[str, Any]:
        """Eq. 1 per layer and language pair (and, with ``--save-matrix``, the N×N cosines).

        Reads ``vectors.parquet`` one layer at a time; with ``--center`` every vector of a layer
        has the mean of all K×N vectors of that layer subtracted first.
        """
        import numpy as np
        import polars as pl

        o = self.options
        pairs = compared_pairs(o.languages, o.anchor, o.paired_baseline)
        out_rows: list[dict[str, Any]] = []
        matrices = []
        for layer in self.layers:
            by_lang, sentences = layer_vectors(run.path / "vectors.parquet", layer, o.languages)
            mean = np.concatenate(list(by_lang.values())).mean(axis=0) if o.center else None
            for a, b in pairs:
                x, y = by_lang[a], by_lang[b]
                if o.paired_baseline is not None:
                    scores, same, altered = stats.paired_scores(x, y, by_lang[o.paired_baseline], mean)
                    low, high = stats.bootstrap_ci(scores, n_boot=o.bootstrap, level=LEVEL, seed=o.seed)
                    out_rows.append(
                        {
                            "layer": layer, "language_a": a, "language_b": b, "pair": f"{a}-{b}",
                            "similarity": float(scores.mean()), "ci_low": low, "ci_high": high,
                            "matching": float(same.mean()), "non_matching": float(altered.mean()), "baseline": float(altered.mean()),
                            "n_sentences": len(sentences),
                        }
                    )
                    continue
                if mean is not None:
                    x, y = stats.center(x, mean), stats.center(y, mean)
                sim = stats.cosine_matrix(x, y)
                value, matching, non_matching = stats.baseline_adjusted(sim, o.baseline)
                low, high = stats.bootstrap_ci(stats.pair_scores(sim, o.baseline), n_boot=o.bootstrap, level=LEVEL, seed=o.seed)
                out_rows.append(
                    {
                        "layer": layer, "language_a": a, "language_b": b, "pair": f"{a}-{b}",
                        "similarity": value, "ci_low": low, "ci_high": high,
                        "matching": matching, "non_matching": non_matching, "baseline": matching - value, "n_sentences": len(sentences),
                    }
                )
                if o.groups is not None:
                    labels = np.asarray(o.groups)[np.asarray(sentences)]
                    same = labels[:, None] == labels[None, :]
                    out_rows[-1]["same_group"] = float(sim[same].mean())
                    out_rows[-1]["other_group"] = float(sim[~same].mean()) if (~same).any() else float("nan")
                if o.save_matrix:
                    n = len(sentences)
                    matrices.append(
                        pl.DataFrame(
                            {
                                "layer": np.full(n * n, layer, dtype=np.int32),
                                "language_a": [a] * (n * n),
                                "language_b": [b] * (n * n),
                                "sentence_a": np.repeat(sentences, n),
                                "sentence_b": np.tile(sentences, n),
                                "cosine": sim.reshape(-1).astype(np.float32),
                            }
                        )
                    )
        tables = {"similarity": pl.DataFrame(out_rows, schema_overrides={"layer": pl.Int32, "n_sentences": pl.Int32})}
        if o.save_matrix and matrices:
            tables["matrix"] = pl.concat(matrices)
        return tables

    def describe_run(self) -> dict[str, Any]:
        """With media: ``media_position``, the pooling applied (``--media-pool`` resolved
        against the model by :func:`hubclient.exec.multimodal.paper_media_pool`: ``final`` for
        ``last`` on Chameleon); nothing for text."""
        return {"media_position": self.media_pool} if self.media_id is not None else {}

    def summary(self, run: Any) -> str:
        """One line per pair: the layer of peak similarity, and the first and last layers' values."""
        table = run.table("similarity")
        lines = []
        for (pair,), rows in table.sort("layer").group_by("pair", maintain_order=True):
            peak = rows.row(int(rows["similarity"].arg_max()), named=True)
            first, last = rows.row(0, named=True), rows.row(rows.height - 1, named=True)
            lines.append(
                f"  {pair}: peak {peak['similarity']:.3f} [{peak['ci_low']:.3f}, {peak['ci_high']:.3f}] at layer {peak['layer']}; "
                f"layer {first['layer']} {first['similarity']:.3f}, layer {last['layer']} {last['similarity']:.3f}"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ plots
    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """Similarity by layer (CI band), matching/non-matching means, cosine heatmap."""
        import altair as alt

        manifest = run.manifest
        o = manifest["options"]
        model_id = manifest["model"]["model_id"]
        table = run.table("similarity").sort("pair", "layer")
        n = int(table["n_sentences"][0])
        how = f"{o['pool']} token{'s (mean)' if o['pool'] == 'mean' else ''}, {'centered' if o['center'] else 'raw'} cosine, N={n}"
        how += {"last": ", layer L after the final norm (paper)", True: ", every layer through the final norm"}.get(o.get("final_norm", False), "")
        paired = o.get("paired_baseline")
        baseline = o.get("baseline", "offdiag")
        if paired:
            what, y_title = f"Paired similarity, cos(a_i, b_i) − cos(a_i, {paired}_i), with 95% CI", f"cos(matching) − cos({paired})"
        elif baseline == "all":
            what, y_title = "Similarity, matching − mean of all pairs (diagonal included; paper's arithmetic code), 95% CI", "matching − all-pairs cosine"
        else:
            what, y_title = "Baseline-adjusted similarity (Eq. 1) with 95% CI", "matching − non-matching cosine"
        if o.get("protocol", "hub") != "hub":
            what += f" · --protocol {o['protocol']}"
        x = alt.X("layer:Q", title="layer (0 = embeddings)")
        charts: dict[str, Any] = {
            "similarity_by_layer": ci_lines(
                table, color="pair", y="similarity", y_title=y_title,
                title=f"{what} · {model_id}", subtitle=how, width=420, height=260,
            )
        }
        long = table.unpivot(index=["pair", "layer"], on=["matching", "non_matching"], variable_name="pairs", value_name="cosine")
        if paired:
            import polars as pl

            long = long.with_columns(pairs=pl.col("pairs").replace({"non_matching": f"item vs its {paired}"}))
        charts["similarity_means"] = (
            alt.Chart(long)
            .mark_line(point=True)
            .encode(
                x=x,
                y=alt.Y("cosine:Q", title="mean cosine"),
                color=alt.Color("pair:N"),
                strokeDash=alt.StrokeDash("pairs:N", title="sentence pairs", legend=alt.Legend(symbolType="stroke")),
                tooltip=["pair", "pairs", "layer", alt.Tooltip("cosine:Q", format=".4f")],
            )
            .properties(width=420, height=260, title=[f"Mean cosine of matching and non-matching pairs · {model_id}", how])
        )
        heat = cls._heatmap(run, manifest, table)
        if heat is not None:
            charts["similarity_heatmap"] = heat
        return charts

    @classmethod
    def _heatmap(cls, run: Any, manifest: dict[str, Any], table: Any) -> Any:
        import altair as alt
        import numpy as np
        import polars as pl

        o = manifest["options"]
        analysed = sorted(table["layer"].unique().to_list())
        wanted = heatmap_layer(o.get("heatmap_layer"), manifest["model"]["n_layers"])
        if wanted is None:
            middle = manifest["model"]["n_layers"] // 2
            wanted = min(analysed, key=lambda layer: (abs(layer - middle), layer))
        present = set(table.select("language_a", "language_b").unique().rows())
        pairs = [p for p in language_pairs(o["languages"], o.get("anchor")) if p in present][:HEATMAP_PAIRS]
        path = run.path / "vectors.parquet"
        frames = []
        if path.is_file():
            by_lang, sentences = layer_vectors(path, wanted, o["languages"])
            mean = np.concatenate(list(by_lang.values())).mean(axis=0) if o["center"] else None
            shown = sentences[:HEATMAP_SENTENCES]
            k = len(shown)
            for a, b in pairs:
                x, y = by_lang[a][:k], by_lang[b][:k]
                if mean is not None:
                    x, y = stats.center(x, mean), stats.center(y, mean)
                sim = stats.cosine_matrix(x, y)
                frames.append(pl.DataFrame({"pair": f"{a}-{b}", "sentence_a": np.repeat(shown, k), "sentence_b": np.tile(shown, k), "cosine": sim.reshape(-1)}))
        elif (run.path / "matrix.parquet").is_file():
            matrix = run.table("matrix").filter(pl.col("layer") == wanted)
            for a, b in pairs:
                m = matrix.filter((pl.col("language_a") == a) & (pl.col("language_b") == b))
                keep = m["sentence_a"].unique().sort().head(HEATMAP_SENTENCES)
                frames.append(
                    m.filter(pl.col("sentence_a").is_in(keep.implode()) & pl.col("sentence_b").is_in(keep.implode()))
                    .select(pair=pl.lit(f"{a}-{b}"), sentence_a="sentence_a", sentence_b="sentence_b", cosine=pl.col("cosine").cast(pl.Float64))
                )
        else:
            return None
        frame = pl.concat(frames)
        n = int(table["n_sentences"][0])
        k = frame["sentence_a"].n_unique()
        shown_note = f"first {k} of {n} sentences" if k < n else f"{n} sentences"
        size = max(160, min(360, 3 * k))
        chart = (
            alt.Chart(frame)
            .mark_rect()
            .encode(
                x=alt.X("sentence_b:O", title="sentence (second language)", axis=alt.Axis(labels=k <= 30, ticks=k <= 30)),
                y=alt.Y("sentence_a:O", title="sentence (first language)", axis=alt.Axis(labels=k <= 30, ticks=k <= 30)),
                color=alt.Color("cosine:Q", scale=alt.Scale(scheme="viridis")),
                tooltip=["pair", "sentence_a", "sentence_b", alt.Tooltip("cosine:Q", format=".4f")],
            )
            .properties(width=size, height=size)
            .facet(column=alt.Column("pair:N", title=None, sort=[f"{a}-{b}" for a, b in pairs]))
            .properties(
                title=[
                    f"Cosine of every sentence pair at layer {wanted} · {manifest['model']['model_id']}",
                    f"{'centered' if o['center'] else 'raw'} cosine, {o['pool']} pooling, {shown_note}; matching pairs on the diagonal",
                ]
            )
        )
        return chart


def layer_vectors(path: Path, layer: int, languages: list[str]) -> tuple[dict[str, Any], Any]:
    """The pooled vectors of one layer from ``vectors.parquet``, aligned by sentence.

    Args:
        path: a run's ``vectors.parquet``.
        layer: the layer to read (only its rows are loaded).
        languages: the languages wanted.

    Returns:
        ``({language: [N, d] float32 array}, sentences [N])``; row ``i`` of every array is
        sentence ``sentences[i]``.

    Raises:
        HubError: a language missing, or languages that do not share the same sentences.
    """
    import numpy as np
    import polars as pl

    frame = (
        pl.scan_parquet(path)
        .filter(pl.col("layer") == layer)
        .select("language", "sentence", "vector")
        .collect()
        .sort("language", "sentence")
    )
    out: dict[str, Any] = {}
    sentences = None
    for language in languages:
        part = frame.filter(pl.col("language") == language)
        if part.height == 0:
            raise HubError(f"{path} has no vectors of language {language!r} at layer {layer}; the run is incomplete")
        ids = part["sentence"].to_numpy()
        if sentences is None:
            sentences = ids
        elif not np.array_equal(ids, sentences):
            raise HubError(f"{path}: language {language!r} does not have the same sentences as {languages[0]!r} at layer {layer}")
        out[language] = part["vector"].to_numpy()
    return out, sentences


def _short_list(values: list[int]) -> str:
    return ",".join(str(v) for v in values) if len(values) <= 12 else f"{values[0]}..{values[-1]}"


def read_corpus(inputs: list[str], flores_dir: Path | None, n: int | None, skip_empty: bool) -> ParallelCorpus:
    """Old name of :func:`hubclient.inputs.parallel.read_languages` (parallel files and/or
    FLORES codes; the folder from ``flores_dir`` or ``$HUB_FLORES_DIR``)."""
    return read_languages(list(inputs), flores_dir, n=n, skip_empty=skip_empty)


ANALYSIS = Similarity
