"""``hub analyze neurons``: language-specific neurons and the lingua franca (Zeng et al. 2025).

"Converging to a Lingua Franca" (Zeng, Han, Chen, Yu; COLING 2025, arXiv 2410.11718) reads the
MLP neurons of every layer on parallel FLORES sentences: activations cluster by language in the
first and last layers and by meaning in the middle ones. LAPE (Tang et al., ACL 2024) is the
standard alternative selector of language-specific neurons.

Traces: in every decoder block ``l = 1..L`` the MLP's intermediate activation, the input of the
down projection (:meth:`hubclient.models.HubModel.mlp_down`, ``[batch, seq, d_ff]``:
``act(gate(x)) * up(x)`` for gated MLPs, the GELU output for GPT-2/BLOOM-style ones); for gated
MLPs also ``act(gate(x))`` (the output of the activation-function module,
``ArchSpec.mlp_gate_act``), where LAPE counts a neuron as active, as in Tang et al.'s code.
The forward pass stops after the last block's MLP (no final norm, no ``lm_head``).
Reduces (inside the trace, over each sentence's real tokens without a leading BOS, padding
never counts): the token mean of the activation, ``[L, batch, d_ff]``, and the number of tokens on
which each neuron is active (> 0), ``[L, batch, d_ff]``. Nothing ``[tokens, d_ff]``-sized leaves
the trace.
Stores (streamed per batch): ``activations.parquet`` (prompt, language, sentence, layer,
n_tokens, activation[d_ff]; ``--float16`` halves it) and ``lape_counts.parquet`` (per batch,
language and layer: tokens and active-token counts[d_ff]). :meth:`Neurons.finish` then reads one
layer at a time and writes ``lrds_sads.parquet`` (LRDS, SADS and SADS against a cross-language
baseline per layer; :mod:`hubclient.science.neurons`), ``key_neurons.parquet`` (Zeng et al.'s key
linguistic neurons: neuron, score, z), ``lape_neurons.parquet`` (Tang et al.'s selection: neuron,
probability, entropy), ``counts.parquet`` (neurons per selector, layer and language) and
``neuron_stats.parquet`` (per layer and language: token-mean activation and activation
probability of every neuron; ``hub intervene ablate --mode mean`` reads it).
Draws: LRDS and SADS by layer; selected neurons per layer and language (both selectors).

Layer convention here: ``layer l`` is the MLP of decoder block ``l`` (1..L); there is no layer 0.
``--model`` is repeatable: each model gets its own run inside one parent folder, whose tables
concatenate theirs (column ``model``) and whose charts compare them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hubclient.science import neurons as stats
from hubclient.analysis import Analysis, Batch
from hubclient.models.arch import get_module
from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis

#: The paper's ten FLORES-200 languages (Zeng et al. 2025).
DEFAULT_LANGS = ["eng_Latn", "zho_Hans", "zho_Hant", "fra_Latn", "spa_Latn", "por_Latn", "arb_Arab", "vie_Latn", "hin_Deva", "ind_Latn"]
#: Largest magnitude float16 holds.
FLOAT16_MAX = 65504.0
#: Measures of ``lrds_sads.parquet``.
MEASURES = ("LRDS", "SADS", "SADS-intended", "SADS-hub", "SADS-released")
#: The "different meaning" pair set of each ``--sads`` variant (for titles and docs).
SADS_PAIRS = {
    "intended": "different-language different-sentence pairs",
    "hub": "all different-sentence pairs",
    "released": "the released stride-(S+1) blocks",
}
#: ``--key-norm`` values: divide by the all-layer vector's norm (released) or by the layer's.
KEY_NORMS = ("all", "layer")


@dataclass
class NeuronOptions:
    """Options of the neurons analysis (recorded in the manifest).

    Attributes:
        languages: language names in input order (FLORES codes or file stems).
        sources: the files they were read from.
        n: first N sentences of every language (``None``: all).
        skip_empty: line indices empty in any language were dropped from all.
        float16: store the activations as float16 (statistics are computed in float64 either way).
        z_threshold: key neuron when its z-score across languages exceeds this (paper: 2).
        lape_top: LAPE: share of all neurons (all layers) with the lowest entropy to select.
        lape_quantile: LAPE: the minimum probability is this quantile of all probabilities.
        sads: which SADS is ``SADS`` in the tables and plots: ``intended`` (translations vs
            different-language different-sentence pairs), ``hub`` (translations vs all
            different-sentence pairs) or ``released`` (the released code's stride-S+1 blocks);
            all three are written (``SADS-<variant>``).
        key_norm: key neurons divide each sentence by the norm of its ``all``-layer vector
            (released) or of the ``layer``'s vector.
        key_eps: added after that division (released: 1e-5).
        permutations: label permutations of the key-neuron null (0: none).
        bootstrap: bootstrap resamples of sentences for the LRDS/SADS CIs (0: none).
        confidence: level of the bootstrap intervals.
        seed: seed of the permutations and the bootstrap.
        revisions: ``--revision`` values (one run each), recorded by :func:`run_models`.
        lape_corpus: ``all``: LAPE counts every line of each language's file (and of its FLORES
            ``.dev`` sibling: dev + devtest), the lines beyond the parallel set running as
            LAPE-only prompts (sentence id < 0); ``parallel``: only the parallel sentences.
    """

    languages: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    n: int | None = 100
    skip_empty: bool = False
    float16: bool = False
    z_threshold: float = 2.0
    lape_top: float = 0.01
    lape_quantile: float = 0.95
    sads: str = "intended"
    key_norm: str = "all"
    key_eps: float = 1e-5
    permutations: int = 20
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    revisions: list[str] = field(default_factory=list)
    lape_corpus: str = "parallel"


def gate_activation(model: Any, block: int) -> Any:
    """The envoy whose output is ``act(gate(x))`` in block ``block`` (1..L) of a gated MLP
    (``ArchSpec.mlp_gate_act``), or ``None`` when the MLP is not gated (then the ``mlp_down``
    input is the activation function's output)."""
    if model.arch.mlp_gate_act is None:
        return None
    return get_module(model.layers[block - 1], model.arch.mlp_gate_act)


class Neurons(Analysis):
    """MLP neurons by language and meaning (see the module docstring)."""

    name = "neurons"
    transfer_keys = ("mean",)  # --remote: travel in --transfer-dtype (float16 by default); "active" counts stay exact
    tables = {"activations": ["layer", "prompt"], "lape_counts": ["layer", "language", "batch"]}

    def __init__(self, options: NeuronOptions, languages: list[str], sentences: list[int]):
        """Bind options and the per-prompt labels.

        Args:
            options: :class:`NeuronOptions`.
            languages / sentences: the language and sentence id of each prompt (K×N each, as
                :meth:`hubclient.inputs.parallel.ParallelCorpus.flat` gives them).

        Raises:
            HubError: fewer than 2 languages, a threshold or LAPE rate out of range.
        """
        super().__init__(options)
        if len(options.languages) < 2:
            raise HubError(f"need at least 2 languages, got {len(options.languages)}")
        if not 0 < options.lape_top <= 1:
            raise HubError(f"--lape-top must be in (0, 1], got {options.lape_top}")
        if not 0 < options.lape_quantile <= 1:
            raise HubError(f"--lape-quantile must be in (0, 1], got {options.lape_quantile}")
        if len(languages) != len(sentences):
            raise ValueError("languages and sentences must label every prompt")
        if options.sads not in stats.SADS_VARIANTS:
            raise HubError(f"unknown --sads {options.sads!r}; choose one of {', '.join(stats.SADS_VARIANTS)}")
        if options.key_norm not in KEY_NORMS:
            raise HubError(f"unknown --key-norm {options.key_norm!r}; choose one of {', '.join(KEY_NORMS)}")
        if options.permutations < 0 or options.bootstrap < 0:
            raise HubError("--permutations and --bootstrap must be >= 0")
        if not 0 < options.confidence < 1:
            raise HubError(f"--confidence must be in (0, 1), got {options.confidence}")
        k = len(options.languages)
        bound = stats.max_zscore(k)
        if bound <= options.z_threshold:
            warnings.warn(
                f"with {k} languages no z-score can exceed sqrt({k}-1) = {bound:.2f}, so no neuron passes --z-threshold "
                f"{options.z_threshold}; use more languages or a lower threshold"
            )
        self.languages = list(languages)
        self.sentences = list(sentences)
        self.n_layers = 0
        self.bos_id: int | None = None
        self.label: str | None = None  # the ``model`` column (``model@revision``; default the model id)

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Record the model's blocks and its BOS id."""
        self.n_layers = model.n_layers
        self.bos_id = model.tokenizer.bos_token_id

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """Per block: ``{"mean": [L, batch, d_ff], "active": [L, batch, d_ff]}`` (float32).

        ``mean[l, b] = sum_s w[b, s] a_l[b, s] / sum_s w[b, s]`` with ``a_l`` the ``mlp_down``
        input and ``w`` from :meth:`hubclient.analysis.Batch.token_weights`; ``active[l, b] = sum_s w[b, s] [g_l[b, s] > 0]``
        with ``g_l = act(gate(x))`` for gated MLPs, else ``a_l``.
        """
        import torch

        weights = batch.token_weights(self.bos_id).to(model.device)
        norm = weights / weights.sum(dim=1, keepdim=True)
        shape = (weights.shape[0], weights.shape[1], -1)  # OPT flattens [batch * seq, d_ff]
        means = []
        active = []
        for block in range(1, self.n_layers + 1):
            gate = gate_activation(model, block)
            firing = gate.output.reshape(shape) if gate is not None else None  # act(gate(x)) runs before the down projection
            act = model.mlp_down(block).input.reshape(shape)
            if firing is None:
                firing = act
            here = act.device  # this block's device (a model split by device_map); results back to model.device
            means.append(torch.einsum("bs,bsf->bf", norm.to(here), act.float()).to(weights.device))
            active.append(torch.einsum("bs,bsf->bf", weights.to(here), (firing > 0).float().to(here)).to(weights.device))
        return {"mean": torch.stack(means), "active": torch.stack(active)}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """One batch's ``activations`` rows (per prompt and layer) and ``lape_counts`` rows (per
        language and layer: the batch's tokens and active-token counts summed)."""
        import numpy as np
        import polars as pl

        mean = saved["mean"].numpy().astype(np.float32, copy=False)  # [L, b, d]
        active = np.rint(saved["active"].numpy()).astype(np.int32)  # [L, b, d]
        n_layers, n, d = mean.shape
        n_tokens = batch.token_weights(self.bos_id).sum(dim=1).numpy().astype(np.int32)
        prompt = np.asarray(batch.prompt_index, dtype=np.int64)
        languages = np.asarray(self.languages, dtype=object)[prompt].astype(str)
        sentences = np.asarray(self.sentences, dtype=np.int64)[prompt]
        parallel = sentences >= 0  # LAPE-only corpus lines (sentence < 0) are counted, not stored
        row = np.tile(np.arange(n), n_layers)
        values = mean.reshape(n_layers * n, d)
        stored = np.tile(parallel, n_layers)
        row, values = row[stored], values[stored]
        if self.options.float16:
            if np.abs(values).max(initial=0.0) > FLOAT16_MAX:
                warnings.warn(f"activations beyond ±{FLOAT16_MAX:g} are clipped to fit --float16; drop --float16 to keep them")
                values = np.clip(values, -FLOAT16_MAX, FLOAT16_MAX)
            values = values.astype(np.float16)
        layers = np.repeat(np.arange(1, n_layers + 1, dtype=np.int32), n)[stored]
        activations = pl.DataFrame(
            {
                "prompt": prompt[row], "language": languages[row], "sentence": sentences[row], "layer": layers,
                "n_tokens": n_tokens[row], "activation": values,
            }
        )
        count_frames = []
        for language in sorted(set(languages.tolist())):
            members = languages == language
            count_frames.append(
                pl.DataFrame(
                    {
                        "batch": np.full(n_layers, batch.index, dtype=np.int32), "language": [language] * n_layers,
                        "layer": np.arange(1, n_layers + 1, dtype=np.int32), "n_tokens": np.full(n_layers, n_tokens[members].sum(), dtype=np.int64),
                        "n_active": active[:, members].sum(axis=1).astype(np.int32),  # [L, d_ff]
                    }
                )
            )
        counts = pl.concat(count_frames)
        return {"activations": activations, "lape_counts": counts}

    # ------------------------------------------------------------------ statistics
    def finish(self, run: Any) -> dict[str, Any]:
        """LRDS/SADS per layer and on the all-layer vector with bootstrap CIs, key neurons with their
        permutation null, neuron statistics and the LAPE selection.

        Two passes over ``activations.parquet``, one layer in memory at a time: the first computes
        the per-layer measures, the all-layer Gram matrix ``[N, N]`` and each sentence's all-layer
        norm; the second the key neurons (which divide by that norm, as released).
        """
        import numpy as np
        import polars as pl

        o = self.options
        model_id = getattr(self, "label", None) or run.manifest["model"]["model_id"]
        langs = list(o.languages)
        path = run.path / "activations.parquet"
        measures: list[dict[str, Any]] = []
        key_frames = []
        count_rows: list[dict[str, Any]] = []
        null_rows: list[dict[str, Any]] = []
        stat_rows: dict[str, list[Any]] = {"layer": [], "language": [], "n_tokens": [], "mean_activation": [], "active_prob": []}
        probs = lape_probabilities(run.path / "lape_counts.parquet", langs, self.n_layers)  # [K, L, d]
        layout = None
        gram = None
        sq_norms = None
        draws = None
        for layer in range(1, self.n_layers + 1):
            x, languages, sentences, n_tokens = layer_activations(path, layer)
            if layout is None:
                layout = stats.parallel_layout(languages, sentences, langs)
                gram = np.zeros((x.shape[0], x.shape[0]))
                sq_norms = np.zeros(x.shape[0])
                draws = stats.bootstrap_draws(layout.shape[1], o.bootstrap, o.seed)
            gram += x @ x.T
            sq_norms += np.einsum("nd,nd->n", x, x)
            units = stats.unit_rows(x)
            measures.extend(contrast_rows(units @ units.T, layout, draws, o, layer))
            for k, language in enumerate(langs):
                members = languages == language
                if not members.any():
                    raise HubError(f"{run.path}: no activations of language {language!r} at layer {layer}; the run is incomplete")
                weight = n_tokens[members].astype(np.float64)
                stat_rows["layer"].append(layer)
                stat_rows["language"].append(language)
                stat_rows["n_tokens"].append(int(weight.sum()))
                stat_rows["mean_activation"].append((weight @ x[members] / max(weight.sum(), 1.0)).astype(np.float32))
                stat_rows["active_prob"].append(probs[k, layer - 1].astype(np.float32))
        norms = np.sqrt(gram.diagonal())
        cos_all = gram / np.where(norms > 0, np.outer(norms, norms), 1.0)
        measures.extend(contrast_rows(cos_all, layout, draws, o, None))
        perms = stats.permutations(layout.size, o.permutations, o.seed)
        for layer in range(1, self.n_layers + 1):
            x, languages, _, _ = layer_activations(path, layer)
            position = {name: i for i, name in enumerate(langs)}
            label = np.asarray([position[v] for v in languages.tolist()], dtype=np.int64)
            units = stats.scaled_units(x, np.sqrt(sq_norms) if o.key_norm == "all" else None, o.key_eps)
            scores = stats.group_scores(units, label, len(langs))
            z = stats.zscores(scores)
            key = z > o.z_threshold
            null = stats.key_neuron_null(units, label, len(langs), o.z_threshold, perms)  # [R, K]
            for k, language in enumerate(langs):
                idx = np.flatnonzero(key[k])
                key_frames.append(neuron_frame(layer, language, idx, score=scores[k, idx], z=z[k, idx]))
                count_rows.append({"selector": "key", "layer": layer, "language": language, "n_neurons": int(idx.size), "d_ff": x.shape[1]})
            observed = key.sum(axis=1)
            for language, obs, col in [*zip(langs, observed, null.T), ("all", observed.sum(), null.sum(axis=1))]:
                null_rows.append(null_row(layer, language, int(obs), col))
        sel = stats.lape(probs.reshape(len(langs), -1), o.lape_top, o.lape_quantile)
        tokens = pl.read_parquet(run.path / "lape_counts.parquet").filter(pl.col("layer") == 1).group_by("language").agg(pl.col("n_tokens").sum())
        per_language = dict(zip(tokens["language"].to_list(), tokens["n_tokens"].to_list()))
        run.update_manifest(lape_tokens={language: int(per_language.get(language, 0)) for language in langs})
        d_ff = probs.shape[2]
        entropy = sel.entropy.reshape(self.n_layers, d_ff)
        lape_frames = []
        for k, language in enumerate(langs):
            specific = sel.specific[k].reshape(self.n_layers, d_ff)
            for layer in range(1, self.n_layers + 1):
                idx = np.flatnonzero(specific[layer - 1])
                lape_frames.append(neuron_frame(layer, language, idx, prob=probs[k, layer - 1, idx], entropy=entropy[layer - 1, idx]))
                count_rows.append({"selector": "lape", "layer": layer, "language": language, "n_neurons": int(idx.size), "d_ff": d_ff})

        def with_model(frame: Any) -> Any:
            return frame.with_columns(pl.lit(model_id).alias("model"), pl.lit(self.n_layers).cast(pl.Int32).alias("n_layers")).select(
                "model", *frame.columns, "n_layers"
            )

        counts = pl.DataFrame(count_rows, schema_overrides={"layer": pl.Int32, "n_neurons": pl.Int32, "d_ff": pl.Int32})
        stats_frame = pl.DataFrame(
            {
                "layer": np.asarray(stat_rows["layer"], dtype=np.int32), "language": stat_rows["language"],
                "n_tokens": np.asarray(stat_rows["n_tokens"], dtype=np.int64),
                "mean_activation": np.stack(stat_rows["mean_activation"]), "active_prob": np.stack(stat_rows["active_prob"]),
            }
        )
        return {
            "lrds_sads": with_model(pl.DataFrame(measures, schema=schema(MEASURE_SCHEMA))),
            "key_neurons": with_model(pl.concat(key_frames)),
            "key_null": with_model(pl.DataFrame(null_rows, schema=schema(NULL_SCHEMA))),
            "lape_neurons": with_model(pl.concat(lape_frames)),
            "counts": with_model(counts.with_columns((pl.col("n_neurons") / pl.col("d_ff")).alias("share"))),
            "neuron_stats": stats_frame,
        }

    def summary(self, run: Any) -> str:
        """Per model: the layers where LRDS and SADS peak, and selected neurons per language."""
        return summarize(run)

    # ------------------------------------------------------------------ plots
    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """``neurons_lrds_sads`` (LRDS and SADS by layer, one line per model) and
        ``neurons_counts`` (selected neurons per layer and language, per selector and model)."""
        import altair as alt
        import polars as pl

        sads = run.manifest.get("options", {}).get("sads", "intended")
        table = run.table("lrds_sads").filter(pl.col("measure").is_in(["LRDS", "SADS"]))
        if "scope" in table.columns:
            table = table.filter(pl.col("scope") == "layer")
        if "ci_low" not in table.columns:
            table = table.with_columns(pl.lit(None, pl.Float64).alias("ci_low"), pl.lit(None, pl.Float64).alias("ci_high"))
        models = table["model"].unique(maintain_order=True).to_list()
        depths = table.group_by("model").agg(pl.col("n_layers").first())["n_layers"].unique()
        relative = depths.len() > 1
        table = table.with_columns((pl.col("layer") / pl.col("n_layers")).alias("depth"))
        x = alt.X("depth:Q", title="relative depth (layer / L)") if relative else alt.X("layer:Q", title="layer (MLP of block l)", scale=alt.Scale(zero=False))
        title = "Language (LRDS) vs meaning (SADS) similarity of MLP activations by layer"
        color = alt.Color("model:N", sort=models, legend=alt.Legend(orient="bottom", labelLimit=400))
        base = alt.Chart(table).encode(x=x, color=color)
        band = base.mark_area(opacity=0.2).encode(y=alt.Y("ci_low:Q", title="same-group minus other-group mean cosine"), y2="ci_high:Q")
        line = base.mark_line(point=True).encode(
            y=alt.Y("value:Q", title="same-group minus other-group mean cosine"),
            tooltip=["model", "layer", "measure", alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("ci_low:Q", format=".4f"),
                     alt.Tooltip("ci_high:Q", format=".4f"), alt.Tooltip("same:Q", format=".4f"), alt.Tooltip("different:Q", format=".4f")],
        )
        lines = (
            alt.layer(band, line, data=table)
            .properties(width=320, height=220)
            .facet(column=alt.Column("measure:N", title=None, sort=["LRDS", "SADS"]))
            .resolve_scale(y="independent")
            .properties(title=[title, ("LRDS: same language vs different languages (different sentences); "
                                       f"SADS ({sads}): translations vs {SADS_PAIRS.get(sads, sads)}; band: bootstrap CI over sentences")])
        )
        counts = run.table("counts")
        langs = counts["language"].unique(maintain_order=True).to_list()
        heat = (
            alt.Chart(counts)
            .mark_rect()
            .encode(
                x=alt.X("layer:O", title="layer (MLP of block l)"),
                y=alt.Y("language:N", sort=langs, title=None),
                color=alt.Color("n_neurons:Q", title="neurons", scale=alt.Scale(scheme="viridis")),
                tooltip=["model", "selector", "layer", "language", "n_neurons", alt.Tooltip("share:Q", format=".2%")],
            )
            .properties(width=alt.Step(18), height=alt.Step(16))
            .facet(column=alt.Column("selector:N", title=None, sort=["key", "lape"]), row=alt.Row("model:N", title=None, sort=models))
            .resolve_scale(color="independent")
            .properties(title=["Language-specific neurons per layer and language", "key: Zeng et al. 2025 (z > threshold); lape: Tang et al. 2024 (low entropy)"])
        )
        charts = {"neurons_lrds_sads": lines, "neurons_counts": heat}
        steps = by_step(run)
        if steps is not None:
            band = alt.Chart(steps).mark_area(opacity=0.2).encode(x=alt.X("step:Q", title=steps["axis"][0]), y="ci_low:Q", y2="ci_high:Q")
            line = alt.Chart(steps).mark_line(point=True).encode(
                x=alt.X("step:Q", title=steps["axis"][0]), y=alt.Y("value:Q", title="all-layer score (cosine)"),
                tooltip=["model", "step", alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("ci_low:Q", format=".4f"), alt.Tooltip("ci_high:Q", format=".4f")],
            )
            charts["neurons_by_step"] = (
                alt.layer(band, line, data=steps).properties(width=300, height=200)
                .facet(column=alt.Column("measure:N", title=None, sort=["LRDS", "SADS"])).resolve_scale(y="independent")
                .properties(title=["LRDS and SADS of the all-layer vector by training checkpoint", "band: bootstrap CI over sentences; identical-weight checkpoints: see the manifest"])
            )
        if (run.path / "key_null.parquet").is_file():
            null = run.table("key_null").filter(pl.col("language") == "all")
            if null.height and int(null["permutations"].max()) > 0:
                long = pl.concat([
                    null.select("model", "layer", pl.lit("observed").alias("series"), pl.col("observed").cast(pl.Float64).alias("neurons"), "fdr"),
                    null.select("model", "layer", pl.lit("expected under the null").alias("series"), pl.col("null_mean").alias("neurons"), "fdr"),
                ])
                charts["neurons_key_null"] = (
                    alt.Chart(long)
                    .mark_line(point=True)
                    .encode(
                        x=alt.X("layer:Q", title="layer (MLP of block l)", scale=alt.Scale(zero=False)),
                        y=alt.Y("neurons:Q", title="key neurons (all languages)"),
                        color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom")),
                        tooltip=["model", "layer", "series", alt.Tooltip("neurons:Q", format=".1f"), alt.Tooltip("fdr:Q", format=".2f")],
                    )
                    .properties(width=320, height=200)
                    .facet(column=alt.Column("model:N", title=None, sort=models))
                    .properties(title=["Key neurons per layer against a label-permutation null",
                                       f"languages shuffled across sentences, {int(null['permutations'].max())} permutations; FDR ≈ expected / observed (tooltip)"])
                )
        return charts


# --------------------------------------------------------------------------- reading tables


def neuron_frame(layer: int, language: str, neurons: Any, **values: Any) -> Any:
    """Rows ``(layer, language, neuron, **values)`` of a neuron list (typed even when empty)."""
    import numpy as np
    import polars as pl

    n = len(neurons)
    columns = {
        "layer": pl.Series("layer", np.full(n, layer, dtype=np.int32)),
        "language": pl.Series("language", [language] * n, dtype=pl.String),
        "neuron": pl.Series("neuron", np.asarray(neurons, dtype=np.int32)),
    }
    for name, value in values.items():
        columns[name] = pl.Series(name, np.asarray(value, dtype=np.float64))
    return pl.DataFrame(columns)


#: Column types of ``lrds_sads`` rows (``layer`` is null for the all-layer vector).
MEASURE_SCHEMA = {"layer": "Int32", "scope": "String", "measure": "String", "value": "Float64", "same": "Float64",
                  "different": "Float64", "ci_low": "Float64", "ci_high": "Float64"}
#: Column types of ``key_null`` rows.
NULL_SCHEMA = {"layer": "Int32", "language": "String", "observed": "Int64", "null_mean": "Float64", "null_q95": "Float64",
               "p_value": "Float64", "fdr": "Float64", "permutations": "Int32"}


def schema(columns: dict[str, str]) -> dict[str, Any]:
    """Polars dtypes from the names above (polars is imported only where tables are built)."""
    import polars as pl

    return {name: getattr(pl, dtype) for name, dtype in columns.items()}


def contrast_rows(cos: Any, layout: Any, draws: Any, options: NeuronOptions, layer: int | None) -> list[dict[str, Any]]:
    """``lrds_sads`` rows of one layer (``layer``) or of the all-layer vector (``None``).

    Args:
        cos: ``[N, N]`` cosines of the rows; layout: ``[K, S]`` row indices
            (:func:`hubclient.science.neurons.parallel_layout`); draws: ``[B, S]`` bootstrap
            multiplicities (B may be 0).

    Returns:
        rows ``LRDS``, ``SADS-intended``, ``SADS-hub``, ``SADS-released`` and ``SADS`` (a copy of the
        ``--sads`` variant): value = same − different (cosine units), percentile bootstrap CI
        over sentences (null for ``SADS-released``, whose blocks are not sentence units).
    """
    pairs = stats.sentence_pairs(cos, layout)
    point = stats.pair_contrasts(pairs)
    boots = stats.bootstrap_contrasts(pairs, draws) if len(draws) else {}
    released = stats.sads_released(cos, layout)
    values = {"LRDS": point["LRDS"], "SADS-intended": point["SADS"], "SADS-hub": point["SADS-hub"], "SADS-released": released}
    reps = {"LRDS": boots.get("LRDS"), "SADS-intended": boots.get("SADS"), "SADS-hub": boots.get("SADS-hub"), "SADS-released": None}
    rows = []
    for measure in ("LRDS", "SADS-intended", "SADS-hub", "SADS-released", "SADS"):
        source = f"SADS-{options.sads}" if measure == "SADS" else measure
        same, different = values[source]
        low, high = stats.percentile_ci(reps[source] if reps[source] is not None else [], options.confidence)
        rows.append({"layer": layer, "scope": "layer" if layer is not None else "all", "measure": measure, "value": same - different,
                     "same": same, "different": different, "ci_low": low, "ci_high": high})
    return rows


def null_row(layer: int, language: str, observed: int, null_counts: Any) -> dict[str, Any]:
    """One ``key_null`` row: observed key neurons against R permutation counts.

    ``null_mean`` is the expected count under the null (mean over permutations), ``null_q95``
    its 95th percentile, ``p_value = (1 + #{null >= observed}) / (R + 1)`` and ``fdr =
    min(1, null_mean / observed)``, the estimated share of false discoveries among the observed
    neurons (null when nothing was observed or R = 0).
    """
    import numpy as np

    null = np.asarray(null_counts, dtype=np.float64)
    r = null.size
    mean = float(null.mean()) if r else float("nan")
    return {
        "layer": layer, "language": language, "observed": observed, "null_mean": mean,
        "null_q95": float(np.quantile(null, 0.95)) if r else float("nan"),
        "p_value": float((1 + (null >= observed).sum()) / (r + 1)) if r else float("nan"),
        "fdr": float(min(1.0, mean / observed)) if r and observed > 0 else None, "permutations": r,
    }


def layer_activations(path: Path, layer: int) -> tuple[Any, Any, Any, Any]:
    """One layer's rows of ``activations.parquet``, in prompt order.

    Returns:
        ``(x [n, d_ff] float64, languages [n], sentences [n], n_tokens [n])`` (numpy).
    """
    import numpy as np
    import polars as pl

    frame = (
        pl.scan_parquet(path).filter(pl.col("layer") == layer).select("prompt", "language", "sentence", "n_tokens", "activation").collect().sort("prompt")
    )
    x = frame["activation"].to_numpy().astype(np.float64)
    return x, frame["language"].to_numpy().astype(str), frame["sentence"].to_numpy(), frame["n_tokens"].to_numpy()


def lape_probabilities(path: Path, languages: list[str], n_layers: int) -> Any:
    """Activation probabilities ``p[k, l-1, j]`` = active tokens / tokens of language k at layer l,
    summed over the batches of ``lape_counts.parquet``; ``[K, L, d_ff]`` float64.

    Raises:
        HubError: a language or layer without counts (an incomplete run).
    """
    import numpy as np
    import polars as pl

    frame = pl.read_parquet(path).filter(pl.col("language").is_in(languages) & pl.col("layer").is_between(1, n_layers))
    k = frame["language"].replace_strict(languages, list(range(len(languages))), return_dtype=pl.Int64).to_numpy()
    layer = frame["layer"].to_numpy().astype(np.int64) - 1
    active = frame["n_active"].to_numpy().astype(np.float64)  # [rows, d_ff]
    tokens = np.zeros((len(languages), n_layers))
    np.add.at(tokens, (k, layer), frame["n_tokens"].to_numpy().astype(np.float64))
    missing = np.argwhere(tokens == 0)
    if missing.size:
        language, layer_index = missing[0]
        raise HubError(f"{path}: no tokens of language {languages[language]!r} at layer {layer_index + 1}; the run is incomplete")
    out = np.zeros((len(languages), n_layers, active.shape[1]))
    np.add.at(out, (k, layer), active)
    return out / tokens[:, :, None]


def by_step(run: Any) -> Any:
    """All-layer LRDS and SADS rows per checkpoint of a parent run with ``checkpoints`` (2 or more):
    columns model, step, measure, value, ci_low, ci_high, axis; the step is the checkpoint's
    training step when every checkpoint names one, else its position. ``None`` otherwise."""
    import polars as pl

    checkpoints = run.manifest.get("checkpoints") or []
    if len(checkpoints) < 2:
        return None
    named = all(c.get("step") is not None for c in checkpoints)
    step = {c["label"]: (c["step"] if named else i) for i, c in enumerate(checkpoints)}
    table = run.table("lrds_sads")
    if "scope" not in table.columns:
        return None
    table = table.filter((pl.col("scope") == "all") & pl.col("measure").is_in(["LRDS", "SADS"]) & pl.col("model").is_in(list(step)))
    return table.with_columns(
        pl.col("model").replace_strict(step, return_dtype=pl.Int64).alias("step"),
        pl.lit("training step" if named else "checkpoint (order given)").alias("axis"),
    ).sort("step")


def _ci(row: dict[str, Any]) -> str:
    """``[low, high]`` of a measure row, or nothing without a CI."""
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is None or high is None or math.isnan(low):
        return ""
    return f"[{low:.4f}, {high:.4f}]"


def summarize(run: Any) -> str:
    """A few lines per model: peak LRDS/SADS layers and neurons selected per language."""
    import polars as pl

    table = run.table("lrds_sads")
    counts = run.table("counts")
    lines = []
    for (model,), rows in table.group_by("model", maintain_order=True):
        parts = []
        for measure in ("LRDS", "SADS"):
            m = rows.filter((pl.col("measure") == measure) & (pl.col("scope") == "layer")).sort("layer")
            peak = m.row(int(m["value"].arg_max()), named=True)
            low = m.row(int(m["value"].arg_min()), named=True)
            whole = rows.filter((pl.col("measure") == measure) & (pl.col("scope") == "all")).row(0, named=True)
            parts.append(
                f"{measure} peak {peak['value']:.4f} {_ci(peak)} at layer {peak['layer']}, low {low['value']:.4f} {_ci(low)} at layer {low['layer']}, "
                f"all layers {whole['value']:.4f} {_ci(whole)}"
            )
        lines.append(f"  {model}: " + "; ".join(parts))
        mine = counts.filter(pl.col("model") == model)
        for selector in ("key", "lape"):
            per = mine.filter(pl.col("selector") == selector).group_by("language", maintain_order=True).agg(pl.col("n_neurons").sum())
            text = ", ".join(f"{r['language']} {r['n_neurons']}" for r in per.iter_rows(named=True))
            lines.append(f"    {selector} neurons: {text}")
        try:
            null = run.table("key_null").filter((pl.col("model") == model) & (pl.col("language") == "all"))
        except HubError:
            null = None
        if null is not None and null.height and null["permutations"][0] > 0:
            lines.append(
                f"    key neurons under the label-permutation null ({null['permutations'][0]} permutations): "
                f"expected {null['null_mean'].sum():.0f} of {null['observed'].sum()} observed"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- several models


def model_slug(name: str) -> str:
    """A folder name for a model (``google/gemma-3-270m`` -> ``google_gemma-3-270m``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.")
    return slug[-80:] or "model"


COMBINED = ("lrds_sads", "counts", "key_neurons", "key_null", "lape_neurons")


def training_step(model: str, revision: str | None) -> int | None:
    """The training step a checkpoint names: the last integer of the revision (``global_step1000``
    -> 1000) or, without a revision, of the model folder's name (``ckpt/step-500`` -> 500); ``None``
    when there is none."""
    text = revision if revision is not None else Path(model.rstrip("/")).name
    found = re.findall(r"\d+", text or "")
    return int(found[-1]) if found else None


def weights_sha256(hf_model: Any) -> str:
    """SHA-256 over every parameter and buffer of a loaded model: name, dtype, shape and raw bytes, in
    ``state_dict`` order. Two checkpoints with the same hash have identical weights (e.g. the
    known identical ``bigscience/bloom-7b1-intermediate`` ``global_step100000``/``200000``,
    ``paper-protocols.md`` §B5)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in hf_model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def identical_weights(checkpoints: list[dict[str, Any]]) -> list[list[str]]:
    """Groups (labels) of checkpoints whose ``weights_sha256`` are equal (2 or more each)."""
    groups: dict[str, list[str]] = {}
    for c in checkpoints:
        if c.get("weights_sha256"):
            groups.setdefault(c["weights_sha256"], []).append(c["label"])
    return [labels for labels in groups.values() if len(labels) > 1]


def run_models(
    options: NeuronOptions, prompts: list[str], languages: list[str], sentences: list[int], config: RunConfig, models: list[str],
    revisions: list[str] | None = None,
) -> Any:
    """Run the analysis once per model (or per ``--revision`` of one model) inside one parent run
    folder and combine the results.

    The parent ``OUT/RUN_ID/`` holds one complete run per checkpoint (``<slug>/``) and the
    concatenation of their ``lrds_sads``, ``counts``, ``key_neurons``, ``key_null`` and
    ``lape_neurons`` tables (column ``model``: the model, ``model@revision`` for revisions), its
    own manifest (``runs``: the sub-run folders; ``checkpoints``: label, model, revision, training
    step, ``weights_sha256`` (:func:`weights_sha256`, locally loaded models only) and run of
    each; ``identical_weights``: groups with equal hashes, also warned about) and the comparison
    charts (with checkpoints of one model: scores by training step). ``--resume PARENT`` keeps
    finished runs, resumes an interrupted one and starts the missing ones.

    Raises:
        HubError: a model or revision named twice, ``--revision`` with several models or with
            ``--remote``, an existing parent without ``--resume``, and every error of
            :func:`hubclient.runner.run_analysis`.
    """
    import polars as pl

    from hubclient.models import load_model
    from hubclient.runner import hash_inputs, save_plots, versions
    from hubclient.run.folder import RunDir, new_run_id, write_parquet

    if config.detach:
        raise HubError("--detach runs one model at a time; give a single --model")
    revisions = list(revisions or [])
    if revisions:
        if len(models) != 1:
            raise HubError("--revision takes one --model (a Hugging Face repo id); for local checkpoints repeat --model instead")
        if config.remote:
            raise HubError("--revision runs locally only (NDIF serves one revision per model); drop --remote")
        entries = [(models[0], r) for r in revisions]
    else:
        entries = [(m, None) for m in models]
    labels = [m if r is None else f"{m}@{r}" for m, r in entries]
    slugs = []
    for label in labels:
        slug = model_slug(label)
        if slug in slugs:
            raise HubError(f"{label!r} is given twice (or two checkpoints share the folder name {slug!r})")
        slugs.append(slug)
    started = time.time()
    if config.resume is not None:
        parent = RunDir.open(config.resume)
        if parent.manifest.get("models") != labels:
            raise HubError(f"cannot resume {parent.path}: it compares {parent.manifest.get('models')}, not {labels}")
    else:
        describe = json.loads(json.dumps(options.__dict__, default=str))
        tag = hashlib.sha256((hash_inputs(prompts) + json.dumps([describe, labels], sort_keys=True)).encode()).hexdigest()
        parent = RunDir.create(config.out, config.name or new_run_id("neurons", tag))
        parent.write_manifest(
            {
                "analysis": Neurons.name, "status": "running", "models": labels, "runs": slugs,
                "model": {"model_id": " + ".join(labels), "notes": []}, "options": describe,
                "n_prompts": len(prompts), "input_sha256": hash_inputs(prompts), "versions": versions(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        )
    subruns = []
    checkpoints = []
    for (name, revision), label, slug in zip(entries, labels, slugs):
        folder = parent.path / slug
        sub = replace(config, model=name, out=parent.path, name=slug, resume=None)
        if (folder / "manifest.json").is_file():
            existing = RunDir.open(folder)
            if existing.manifest.get("status") == "complete":
                subruns.append(existing)
                checkpoints.append(existing.manifest.get("checkpoint", {"label": label, "model": name, "revision": revision}))
                continue
            sub = replace(sub, name=None, resume=folder)
        model = None
        checkpoint = {"label": label, "model": name, "revision": revision, "step": training_step(name, revision), "weights_sha256": None, "run": slug}
        if not config.remote:
            model = load_model(name, config.device, config.dtype, revision=revision, device_map=config.device_map)
            checkpoint["weights_sha256"] = weights_sha256(model.torch_model)
        analysis = Neurons(options, languages, sentences)
        analysis.label = label
        # the parent's manifest lists its sub-runs ("runs"), so the runner makes them inside it
        subruns.append(run_analysis(analysis, prompts, sub, model=model, prompt_columns={"language": languages, "sentence": sentences},
                                    extra={"checkpoint": checkpoint}))
        checkpoints.append(checkpoint)
        del model
    same = identical_weights(checkpoints)
    for group in same:
        warnings.warn(f"checkpoints {', '.join(group)} have identical weights (same weights_sha256): their scores are the same run twice, not a finding about training")
    rows = {}
    for table in COMBINED:
        frame = pl.concat([run.table(table) for run in subruns], how="vertical")
        write_parquet(parent.path / f"{table}.parquet", frame)
        rows[table] = frame.height
    notes = []
    for run in subruns:
        notes.extend(run.manifest["model"].get("notes", []))
    parent.update_manifest(model={"model_id": " + ".join(labels), "notes": sorted(set(notes))}, checkpoints=checkpoints, identical_weights=same)
    drawn = save_plots(Neurons, parent) if config.plots else []
    parent.update_manifest(
        status="complete", rows=rows, plots=drawn, seconds=round(time.time() - started, 2),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return parent


# --------------------------------------------------------------------------- CLI


def lape_corpus_lines(sources: list[str], n: int | None) -> list[list[str]]:
    """Per language, the extra lines LAPE counts beyond the parallel set (Tang et al. count a
    language's whole corpus, ``activation.py:20-69``): the non-empty lines after the first ``n``
    of its file and, for a FLORES ``CODE.devtest`` file, every non-empty line of ``CODE.dev``
    next to it (FLORES dev + devtest).

    Raises:
        HubError: a file that cannot be read.
    """
    out = []
    for source in sources:
        path = Path(source)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise HubError(f"cannot read {path} for the LAPE corpus ({exc.strerror})") from None
        extra = [line for line in (lines[n:] if n is not None else []) if line.strip()]
        if path.name.endswith(".devtest"):
            dev = path.with_name(path.name[: -len(".devtest")] + ".dev")
            if dev.is_file():
                extra += [line for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()]
        out.append(extra)
    return out


def split_langs(values: list[str] | None) -> list[str]:
    """``--langs`` values, each possibly comma-separated, in order (default: the paper's ten)."""
    if not values:
        return list(DEFAULT_LANGS)
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item and item not in out:
                out.append(item)
    return out


ANALYSIS = Neurons
