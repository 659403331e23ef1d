"""The semantic hub paper's code and COGS lenses (``paper-protocols.md`` A7, A8, A10).

Three experiments read, at one token of a prompt, the lens log-probability of a few named
target tokens, layer by layer; they differ in where they read and what they summarise:

``--task code`` (A7, ``coding/logit_lens_and.py``)
    MBPP programs with their tests; at each comma between list elements (the comma its own
    token): ``log p_l`` of the first token of ``" and"``, of the controls ``" or"`` and
    ``" not"``, and of the true next token. Printed by the paper: the mean over commas.
``--task code-roles`` (A8, ``coding/logit_lens_semantic_role.py``)
    MBPP programs without tests; at the ``(``/``,`` before each positional argument of a
    call: ``Δ_l = log p_l(first token of " " + parameter name) − log p_l(first token of
    " " + ast.unparse(argument))``. Drawn by the paper: ``sign(Δ_l)`` per argument and layer.
``--task cogs`` (A10, ``semantics/logit_lens.py``)
    COGS train sentences with re-sampled proper names; at the token before each name:
    ``P_l`` of the first token of ``" " + role`` for every role (agent, recipient, theme),
    grouped into a (gold role, predicted role) matrix, raw and with each predicted role's
    mean over all names subtracted.

Data and read positions come from :mod:`hubclient.inputs.tasks.code` and
:mod:`hubclient.inputs.tasks.cogs` (:class:`~hubclient.inputs.tasks.sites.Site`); this module
resolves them against the tokenizer (:meth:`SiteLens.prepare`, with the paper code's token
rules, quoted there) and runs them.

Trace: the residual stream at every layer (0 = embeddings) at the read rows, decoded by
:func:`hubclient.science.lens.decode_layers` (``final_norm="last"`` is the paper's lens: raw
``h_l @ W_U`` below ``L``, the model's output at ``L``; ``lib/logit_lens.py:55-66``) and
reduced in the trace to ``logit[target] − logsumexp(logits)``: ``[layers+1, rows, targets]``.
The paper reports layers 1..L (its index ``l`` is our layer ``l``); layer 0 is stored too.
``--lens tuned|patchscope`` (:mod:`analyses.lenses`, docs/lenses.md) decodes the same rows
through that lens instead (always with the final norm), reduced the same way.

Tables: ``code_lens.parquet`` (one row per site and layer: prompt, site, kind, position,
token, the site's info columns, one ``logp_<target>`` column per target, ``next_token`` for
A7); ``code_lens_summary.parquet`` (per experiment, see :func:`summaries`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from analyses.lenses import LensBatches, LensChoice, PromptRows, init_lens, lens_manifest, lens_words, prepare_lens
from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.inputs.tasks.sites import NEXT_TOKEN, SiteItem
from hubclient.science.lens import decode_layers
from hubclient.science.tokens import decoder, encode_text, token_offsets

#: Experiment of each task (``options.experiment``).
EXPERIMENTS = {"code": "and", "code-roles": "roles", "cogs": "cogs-roles"}
#: Paper figure colours of the A8 sign map (``coding/logit_lens_semantic_role.py:199``).
SIGN_COLOURS = {"closer to the surface argument (Δ ≤ 0)": "#6b8a97", "closer to the semantic role (Δ > 0)": "#e29dbc"}
#: Bootstrap resamples of the CIs (percentile, 95%, seed 0).
N_BOOT = 1000


@dataclass
class SiteLensOptions(LensChoice):
    """Options of the site lens (recorded in the manifest); the ``--lens`` fields of
    :class:`analyses.lenses.LensChoice`.

    Attributes:
        experiment: ``and`` (A7), ``roles`` (A8) or ``cogs-roles`` (A10).
        targets: the target names, in column order (``and, or, not, next``; ``role,
            surface``; the COGS roles).
        task: the :class:`hubclient.inputs.tasks.TaskOptions` that made the prompts, as a dict.
        final_norm: ``"last"`` (the paper's lens), ``True`` or ``False``
            (:func:`hubclient.science.lens.decode_layers`); ``True`` with another ``lens``.
        data: counts of the data step (sites dropped before the tokenizer, …).
    """

    experiment: str = "and"
    targets: list[str] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)
    final_norm: "bool | str" = "last"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Row:
    """A site resolved against the tokenizer: its token position and target ids."""

    site_index: int
    position: int
    ids: list[int]  # one per target, in options.targets order


def space_first_token(tokenizer: Any, word: str) -> int | None:
    """The first token of ``" " + word`` (the paper's ``first_token_id_for_string(word,
    add_prefix_space=True)``, ``lib/logit_lens.py:115-129``): for byte-level BPE (Llama-3) the
    ``Ġword`` token, for SentencePiece (Llama-2, Gemma) the ``▁word`` token; a leading token
    that decodes to whitespace only (a bare ``▁``) is skipped when more follow. ``None`` when
    ``" " + word`` has no token (or only the unknown token)."""
    ids = encode_text(tokenizer, " " + word)
    if len(ids) > 1 and not tokenizer.decode([ids[0]]).strip():
        ids = ids[1:]
    if not ids or ids[0] == tokenizer.unk_token_id:
        return None
    return int(ids[0])


def find_position(text: str, site: Any, ids: list[int], offsets: list[tuple[int, int]], special: set[int], tokenizer: Any) -> tuple[int | None, str]:
    """Token position a site reads, or ``(None, reason)`` (see :class:`~hubclient.inputs.tasks.sites.Site`).

    Rules, as the paper's code:

    * ``comma-token``: ``[t for t, (s, e) in enumerate(offsets) if s <= char < e and
      text[s:e].strip(" ") == ","]`` (``coding/logit_lens_and.py:57-66``); none: ``merged``;
    * ``ends-at``: ``[t for t, (s, e) in enumerate(offsets) if char == e - 1]``
      (``coding/logit_lens_semantic_role.py:129-140``); none: ``merged``;
    * ``before-word``: ``tokens = [decode(t).strip() for t in ids]``; the name must be one of
      them (else ``not_one_token``) and only once (else ``repeated``; the paper asserts); the
      position is the one before it (``semantics/logit_lens.py:95-120``).
    """
    if site.match == "before-word":
        words = [tokenizer.decode([t]).strip() for t in ids]
        count = words.count(site.word)
        if count == 0:
            return None, "not_one_token"
        if count > 1:
            return None, "repeated"
        at = words.index(site.word)
        return (at - 1, "") if at >= 1 else (None, "at_start")
    found = []
    for t, (s, e) in enumerate(offsets):
        if ids[t] in special or e <= s:
            continue
        if site.match == "comma-token" and s <= site.char < e and text[s:e].strip(" ") == ",":
            found.append(t)
        elif site.match == "ends-at" and site.char == e - 1:
            found.append(t)
    if not found:
        return None, "merged"
    return found[0], ""


class SiteLens(PromptRows, LensBatches, Analysis):
    """Lens log-probabilities of named targets at resolved sites (see the module docstring).

    Args:
        options: :class:`SiteLensOptions`.
        items: the prompts and their sites; prompt ``i`` of the run is ``items[i].text``.
    """

    name = "code-lens"
    rows_name = "sites"
    tables = {"code_lens": ["prompt", "site", "layer"]}

    def __init__(self, options: SiteLensOptions, items: list[SiteItem]):
        super().__init__(options)
        if options.experiment not in EXPERIMENTS.values():
            raise HubError(f"unknown experiment {options.experiment!r}; choose one of {', '.join(EXPERIMENTS.values())}")
        self.items = list(items)
        self.rows_of: dict[int, list[_Row]] = {}
        self.skipped: dict[str, int] = {}
        init_lens(self)

    # ------------------------------------------------------------------ before the trace
    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Find every site's token and its targets' token ids; drop (and count) the sites the
        paper's code drops at this step.

        Dropped: no token for the site (:func:`find_position`: ``merged``, ``not_one_token``,
        ``repeated``, ``at_start``), ``no_next`` (A7: the comma is the last token), a target
        word without a token (``no_target``), and A8's ``same_token`` (role and surface have
        the same first token, ``coding/logit_lens_semantic_role.py:174-176``).

        Raises:
            HubError: a tokenizer without character offsets, no usable site at all, or a lens
                that does not fit the model (:func:`analyses.lenses.prepare_lens`).
        """
        prepare_lens(self, model)
        tokenizer = model.tokenizer
        if len(prompts) != len(self.items):
            raise ValueError("prompts and items differ in number")
        need_offsets = any(site.match != "before-word" for item in self.items for site in item.sites)
        offsets_of = token_offsets(tokenizer, prompts, tokens) if need_offsets else [[(0, 0)] * len(t) for t in tokens]
        special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
        cache: dict[str, int | None] = {}
        skipped: dict[str, int] = {}
        self.rows_of = {}
        for i, item in enumerate(self.items):
            ids = [int(t) for t in tokens[i]]
            rows = []
            for k, site in enumerate(item.sites):
                position, why = find_position(item.text, site, ids, offsets_of[i], special, tokenizer)
                if position is None:
                    skipped[why] = skipped.get(why, 0) + 1
                    continue
                target_ids: list[int | None] = []
                for _, word in site.targets:
                    if word == NEXT_TOKEN:
                        target_ids.append(ids[position + 1] if position + 1 < len(ids) else None)
                        continue
                    if word not in cache:
                        cache[word] = space_first_token(tokenizer, word)
                    target_ids.append(cache[word])
                if any(t is None for t in target_ids):
                    reason = "no_next" if site.targets[-1][1] == NEXT_TOKEN and target_ids[-1] is None else "no_target"
                    skipped[reason] = skipped.get(reason, 0) + 1
                    continue
                if self.options.experiment == "roles" and target_ids[0] == target_ids[1]:
                    skipped["same_token"] = skipped.get("same_token", 0) + 1
                    continue
                rows.append(_Row(k, position, [int(t) for t in target_ids]))
            self.rows_of[i] = rows
        self.skipped = skipped
        total = sum(len(item.sites) for item in self.items)
        used = sum(len(r) for r in self.rows_of.values())
        if used == 0:
            raise HubError(f"no usable site among {total} ({', '.join(f'{k} {v}' for k, v in sorted(skipped.items())) or 'none found'}); the tokenizer merges every read character with its neighbours or lacks the target words")
        if skipped:
            warnings.warn(f"{total - used} of {total} sites skipped as the paper's code skips them: {', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))}", stacklevel=2)

    def describe_run(self) -> dict[str, Any]:
        """Manifest: the sites kept and the ones skipped at the tokenizer step, by reason; the lens."""
        return {"sites_used": sum(len(r) for r in self.rows_of.values()), "sites_skipped": dict(sorted(self.skipped.items())), **lens_manifest(self)}

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """``{"logp": [layers+1, rows, targets]}``: ``log softmax(lens logits)`` at each row's
        target ids (plain torch; runs remotely too)."""
        import torch

        per_row = []
        for _, row in self._batch_rows(batch):
            per_row.append(row.ids)
        n_targets = len(self.options.targets)
        if not per_row:
            return {"logp": torch.zeros((model.n_layers + 1, 0, n_targets))}
        ids = torch.tensor(per_row, dtype=torch.long).to(model.device)

        def reduce(logits: Any, rows: Any) -> Any:
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            return logits.gather(1, ids[rows]) - lse

        return {"logp": decode_layers(model, batch, reduce, self.options.final_norm, None, self.lens_spec)}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """``code_lens`` rows: one per site and layer."""
        import numpy as np
        import polars as pl

        logp = saved["logp"].double().numpy()  # [layers, rows, targets]
        n_layers = logp.shape[0]
        decode = decoder(model.tokenizer)
        row_batch = batch.row_batch.tolist()
        records: dict[str, list[Any]] = {"prompt": [], "site": [], "kind": [], "position": [], "token": []}
        info_keys: list[str] = []
        for r, (prompt, row) in enumerate(self._batch_rows(batch)):
            site = self.items[prompt].sites[row.site_index]
            if not info_keys:
                info_keys = list(site.info)
                for key in info_keys:
                    records[key] = []
                if self.options.experiment == "and":
                    records["next_token"] = []
            token_ids = batch.tokens[row_batch[r]]
            records["prompt"].append(prompt)
            records["site"].append(row.site_index)
            records["kind"].append(site.kind)
            records["position"].append(row.position)
            records["token"].append(decode([int(token_ids[row.position])])[0])
            for key in info_keys:
                records[key].append(site.info[key])
            if self.options.experiment == "and":
                records["next_token"].append(decode([row.ids[-1]])[0])
        n_rows = len(records["prompt"])
        repeat = np.repeat(np.arange(n_rows), n_layers)
        frame = pl.DataFrame(records).select(pl.all().gather(repeat)) if n_rows else pl.DataFrame(records)
        columns = {"layer": pl.Series(np.tile(np.arange(n_layers), n_rows), dtype=pl.Int32)}
        for t, target in enumerate(self.options.targets):
            columns[f"logp_{target}"] = pl.Series(logp[:, :, t].T.reshape(-1), dtype=pl.Float64)
        frame = frame.with_columns(**columns).with_columns(pl.col("prompt").cast(pl.Int64), pl.col("site").cast(pl.Int32), pl.col("position").cast(pl.Int32))
        if self.options.experiment == "roles":
            frame = frame.with_columns(delta=pl.col("logp_role") - pl.col("logp_surface"))
        return {"code_lens": frame}

    def finish(self, run: Any) -> dict[str, Any]:
        """``code_lens_summary`` (see :func:`summaries`)."""
        return {"code_lens_summary": summaries(run.table("code_lens"), self.options.experiment, self.options.targets)}

    def summary(self, run: Any) -> str:
        """A few lines for the terminal (see :func:`summary_lines`)."""
        return summary_lines(run)

    # ------------------------------------------------------------------ plots
    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """A7: mean log-prob by layer per target (CI band), the paired differences and the
        fraction of commas where ' and' wins. A8: the sign map (x = arguments,
        y = layers, the paper's colours) and the fraction with Δ > 0 by layer (CI band).
        A10: the mean-subtracted (gold, predicted role) matrix per layer, and the raw one."""
        return plots(run)


# --------------------------------------------------------------------------- statistics
def cluster_bootstrap(values: Any, clusters: Any, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` (pooled over all items, as the paper's mean) with a 95% percentile
    CI from resampling whole clusters (programs or sentences) with replacement.

    Args:
        values: ``[items]`` floats.
        clusters: ``[items]`` cluster labels (items of one program are not independent).

    Returns:
        ``(mean, ci_low, ci_high)``; ``nan`` bounds when there is one item.
    """
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    clusters = np.asarray(clusters)
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan")
    labels, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=labels.size)
    counts = np.bincount(inverse, minlength=labels.size).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, labels.size, size=(n_boot, labels.size))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return mean, float(low), float(high)


def summaries(table: Any, experiment: str, targets: list[str]) -> Any:
    """Per-layer summaries of a finished run, long format: ``layer``, ``statistic``, ``mean``,
    ``ci_low``, ``ci_high``, ``n`` (items), ``n_clusters`` (prompts), and for A10 ``gold``,
    ``pred``. 95% CIs bootstrap whole prompts (:func:`cluster_bootstrap`).

    * ``and`` (A7): ``logp_<target>`` (the paper's printed mean over commas), the paired
      differences ``and-or``, ``and-not``, ``and-next`` (mean over commas of the per-comma
      difference) and (ours) ``and>or``, ``and>not``, ``and>next``: the fraction of commas where
      ``" and"`` is the more probable of the two (scale-free: the raw lens's log-probabilities
      reach −10³ on some models);
    * ``roles`` (A8): ``frac_role`` (fraction of arguments with Δ > 0) and ``delta`` (mean Δ);
    * ``cogs-roles`` (A10): per (gold, pred): ``prob`` (the paper's first print: mean
      ``P_l(pred)`` over names of that gold role) and ``prob_minus_mean`` (its second print:
      minus the mean of ``P_l(pred)`` over all names, ``semantics/logit_lens.py:180-199``);
      and ``gold_minus_mean`` (ours): over all names, ``P_l(gold) −`` that mean for the
      name's gold role, a one-number summary of the matrix diagonal; ``gold_top`` (ours): the
      fraction of names whose gold role word is the most probable of the role words
      (scale-free: the raw lens's probabilities underflow to 0 on some models).
    """
    import numpy as np
    import polars as pl

    out: list[dict[str, Any]] = []

    def add(layer: int, statistic: str, values: Any, clusters: Any, **keys: Any) -> None:
        mean, low, high = cluster_bootstrap(values, clusters)
        out.append({"layer": layer, "statistic": statistic, **keys, "mean": mean, "ci_low": low, "ci_high": high, "n": int(len(values)), "n_clusters": int(len(np.unique(clusters)))})

    for (layer,), rows in table.sort("prompt", "site").group_by(["layer"], maintain_order=True):
        clusters = rows["prompt"].to_numpy()
        if experiment == "and":
            for target in targets:
                add(layer, f"logp_{target}", rows[f"logp_{target}"].to_numpy(), clusters)
            for other in targets[1:]:
                difference = (rows["logp_and"] - rows[f"logp_{other}"]).to_numpy()
                add(layer, f"and-{other}", difference, clusters)
                add(layer, f"and>{other}", (difference > 0).astype(np.float64), clusters)
        elif experiment == "roles":
            delta = rows["delta"].to_numpy()
            add(layer, "frac_role", (delta > 0).astype(np.float64), clusters)
            add(layer, "delta", delta, clusters)
        else:
            probs = {role: np.exp(rows[f"logp_{role}"].to_numpy()) for role in targets}
            gold = rows["gold_role"].to_numpy()
            baseline = {role: float(probs[role].mean()) for role in targets}
            for g in targets:
                mask = gold == g
                if not mask.any():
                    continue
                for p in targets:
                    add(layer, "prob", probs[p][mask], clusters[mask], gold=g, pred=p)
                    add(layer, "prob_minus_mean", probs[p][mask] - baseline[p], clusters[mask], gold=g, pred=p)
            own = np.zeros(len(gold))
            for role in targets:
                own = np.where(gold == role, probs[role] - baseline[role], own)
            add(layer, "gold_minus_mean", own, clusters)
            logps = np.stack([rows[f"logp_{role}"].to_numpy() for role in targets], axis=1)
            gold_index = np.array([targets.index(g) for g in gold])
            add(layer, "gold_top", (logps.argmax(1) == gold_index).astype(np.float64), clusters)
    frame = pl.DataFrame(out)
    keys = ["statistic", "gold", "pred", "layer"] if experiment == "cogs-roles" else ["statistic", "layer"]
    return frame.sort([k for k in keys if k in frame.columns])


def summary_lines(run: Any) -> str:
    """The terminal summary: per statistic, its value [95% CI] at the peak layer and at the
    last layer."""
    import polars as pl

    table = run.table("code_lens_summary")
    lines = []
    group_keys = [k for k in ("statistic", "gold", "pred") if k in table.columns]
    for key, rows in table.sort("layer").group_by(group_keys, maintain_order=True):
        label = " / ".join(str(k) for k in key)
        peak = rows.row(int(rows["mean"].arg_max()), named=True)
        last = rows.filter(pl.col("layer") == rows["layer"].max()).row(0, named=True)
        lines.append(f"  {label}: max {peak['mean']:.3g} [{peak['ci_low']:.3g}, {peak['ci_high']:.3g}] at layer {peak['layer']}; layer {last['layer']} {last['mean']:.3g} (n {peak['n']}, {peak['n_clusters']} prompts)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots
def plots(run: Any) -> dict[str, Any]:
    """The charts of a finished run (see :meth:`SiteLens.plots`)."""
    import altair as alt
    import polars as pl

    from hubclient.plots import ci_lines

    options = run.manifest["options"]
    experiment = options.get("experiment", "and")
    norm = lens_words(options, "last")
    model_id = run.manifest["model"]["model_id"]
    summary = run.table("code_lens_summary")
    charts: dict[str, Any] = {}
    if experiment == "and":
        frame = summary.filter(pl.col("statistic").str.starts_with("logp_")).with_columns(target=pl.col("statistic").str.replace("logp_", ""))
        n = frame["n"][0]
        clusters = frame["n_clusters"][0]
        charts["code_and"] = ci_lines(
            frame, color="target", title=f"A7: lens log-prob at list commas ({norm}) · {model_id}",
            subtitle=f"mean over {n} commas of {clusters} MBPP programs; band = 95% bootstrap CI over programs", y_title="log-probability",
        )
        diffs = summary.filter(pl.col("statistic").str.starts_with("and-")).with_columns(difference=pl.format("log p(and) − log p({})", pl.col("statistic").str.replace("and-", "")))
        charts["code_and_differences"] = ci_lines(
            diffs, color="difference", title=f"A7: ' and' against its controls at the same commas ({norm}) · {model_id}",
            subtitle="mean over commas of the per-comma difference; > 0: ' and' more probable; band = 95% CI over programs", y_title="log-probability difference",
        )
        wins = summary.filter(pl.col("statistic").str.starts_with("and>")).with_columns(comparison=pl.format("' and' above {}", pl.col("statistic").str.replace("and>", "")))
        charts["code_and_wins"] = ci_lines(
            wins, color="comparison", title=f"A7: commas where ' and' beats each control ({norm}) · {model_id}",
            subtitle="fraction of commas (ours; scale-free); band = 95% CI over programs", y_title="fraction of commas",
        )
    elif experiment == "roles":
        table = run.table("code_lens").sort("prompt", "site", "layer")
        order = table.select("prompt", "site").unique(maintain_order=True).with_row_index("argument")
        cells = table.join(order, on=["prompt", "site"]).with_columns(
            side=pl.when(pl.col("delta") > 0).then(pl.lit(list(SIGN_COLOURS)[1])).otherwise(pl.lit(list(SIGN_COLOURS)[0]))
        ).select("argument", "layer", "side", "function", "param", "surface", "delta")
        colour = alt.Color("side:N", scale=alt.Scale(domain=list(SIGN_COLOURS), range=list(SIGN_COLOURS.values())), legend=alt.Legend(title=None, orient="top", labelLimit=0))
        charts["code_roles_sign"] = alt.Chart(cells.to_pandas()).mark_rect().encode(
            x=alt.X("argument:O", title=f"all {order.height} function arguments (MBPP, in program order)", axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("layer:O", sort="descending", title="layer"),
            color=colour,
            tooltip=["argument", "layer", "function", "param", "surface", alt.Tooltip("delta:Q", format=".3f")],
        ).properties(width=min(900, max(300, 2 * order.height)), height=220, title=alt.TitleParams(f"A8: sign of log p(parameter name) − log p(argument) ({norm}) · {model_id}", subtitle="each column one argument at the ( or , before it; as the paper's code_semantic_role.pdf"))
        frac = summary.filter(pl.col("statistic") == "frac_role").with_columns(statistic=pl.lit("fraction with Δ > 0"))
        charts["code_roles_fraction"] = ci_lines(
            frac, color="statistic", title=f"A8: arguments whose parameter name is more probable than their surface ({norm}) · {model_id}",
            subtitle=f"{frac['n'][0]} arguments of {frac['n_clusters'][0]} programs; band = 95% bootstrap CI over programs", y_title="fraction",
        )
    else:
        cells = summary.filter(pl.col("statistic").is_in(["prob", "prob_minus_mean"]))
        for statistic, stem, what in (("prob_minus_mean", "cogs_roles", "P(role word) minus its mean over all names"), ("prob", "cogs_roles_raw", "P(role word)")):
            frame = cells.filter(pl.col("statistic") == statistic).to_pandas()
            base = alt.Chart(frame).encode(
                x=alt.X("pred:N", title="role word read"),
                y=alt.Y("gold:N", title="gold role of the name"),
            )
            scale = alt.Scale(scheme="redblue", domainMid=0, reverse=True) if statistic == "prob_minus_mean" else alt.Scale(scheme="blues")
            rect = base.mark_rect().encode(color=alt.Color("mean:Q", scale=scale, title=what), tooltip=["gold", "pred", "layer", alt.Tooltip("mean:Q", format=".3g"), alt.Tooltip("ci_low:Q", format=".3g"), alt.Tooltip("ci_high:Q", format=".3g"), "n"])
            charts[stem] = rect.properties(width=90, height=90).facet(facet=alt.Facet("layer:O", title="layer"), columns=7).properties(
                title=alt.TitleParams(f"A10: COGS role lens before proper names ({norm}) · {model_id}", subtitle=f"{what}; mean over names of each gold role")
            )
        top = summary.filter(pl.col("statistic") == "gold_top").with_columns(statistic=pl.lit("gold role word ranked first"))
        if top.height:
            charts["cogs_roles_top"] = ci_lines(
                top, color="statistic", title=f"A10: names whose own role word is the most probable role word ({norm}) · {model_id}",
                subtitle=f"fraction of {top['n'][0]} names (ours; scale-free); band = 95% CI over sentences", y_title="fraction of names",
            )
        own = summary.filter(pl.col("statistic") == "gold_minus_mean").with_columns(statistic=pl.lit("P(gold role) − its mean"))
        charts["cogs_roles_gold"] = ci_lines(
            own, color="statistic", title=f"A10: the name's own role word against its mean ({norm}) · {model_id}",
            subtitle=f"{own['n'][0]} names in {own['n_clusters'][0]} sentences; > 0: the gold role is read more than average; band = 95% CI", y_title="probability difference",
        )
    return charts


# --------------------------------------------------------------------------- running
def site_items(task_options: Any) -> tuple[list[SiteItem], list[str], dict[str, Any]]:
    """The prompts, target names and data-step counts of a site-lens task.

    Raises:
        HubError: an unknown task, missing data (see :func:`hubclient.inputs.tasks.site_items`).
    """
    from hubclient.inputs import tasks

    return tasks.site_items(task_options)


def run_site_lens(task_options: Any, final_norm: "bool | str", config: Any, model: Any = None, lens: "dict[str, Any] | None" = None) -> Any:
    """Build the task's prompts and sites, run :class:`SiteLens`, return the finished run.

    ``model``: an already-loaded :class:`~hubclient.models.HubModel` (tests, notebooks);
    ``None`` loads ``config.model``. ``lens``: the :class:`analyses.lenses.LensChoice` fields
    as keywords (``None``: the logit lens).

    Raises:
        HubError: see :func:`site_items` and :meth:`SiteLens.prepare`.
    """
    from hubclient.runner import run_analysis

    items, targets, data = site_items(task_options)
    experiment = EXPERIMENTS[task_options.task]
    analysis = SiteLens(SiteLensOptions(experiment=experiment, targets=targets, task=task_options.describe(), final_norm=final_norm, data=data, **(lens or {})), items)
    keys = dict.fromkeys(key for item in items for key in item.columns)
    columns = {key: [item.columns.get(key) for item in items] for key in keys}
    return run_analysis(analysis, [item.text for item in items], config, model=model, prompt_columns=columns)


ANALYSIS = SiteLens
