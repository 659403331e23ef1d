"""``hub intervene ablate``: ablate language-specific neurons and measure perplexity per language.

The ablation test of Zeng et al. (COLING 2025, "Converging to a Lingua Franca") and Tang et al.
(ACL 2024, LAPE): switching off the neurons selected for one language should raise that
language's perplexity far more than the other languages', and far more than switching off as
many random neurons.

Input: a ``hub analyze neurons`` run (``--from``): its neuron lists (``key_neurons.parquet`` or
``lape_neurons.parquet``, ``--selector``), its languages and sentence files, and for
``--mode mean`` the token-mean activation of every neuron (``neuron_stats.parquet``, over all
its languages). Held-out sentences: the ``--n`` lines after the ones the neurons run used
(``--offset``, default the run's ``--n``), in every ``--langs`` language.

Conditions (each held-out sentence runs once under each): ``none`` (no edit); for every
``--ablate`` language A, ``<selector>:A`` (A's selected neurons) and, with ``--random``,
``random:A`` (as many random neurons in every layer as A has there, drawn with ``--seed`` from
the neurons not selected for A).

Traces: one forward pass per batch (rows of several conditions side by side). In every block
with neurons to ablate the MLP activation, the input of the down projection
(``[batch, seq, d_ff]``), is edited as an nnsight edit, so it runs the same on NDIF:
``a[b, :, j] <- 0`` (``--mode zero``) or ``<- mean_j`` (``--mode mean``) for each row's neurons.
Reduces (inside the trace): the next-token log-probability of every real token after the
first, ``log softmax(logits[b, s])[x[b, s+1]]``, summed per row: ``[batch]`` numbers leave.
Perplexity text (``--perplexity``): ``windows`` (the CLI default, as Zeng et al.'s released code,
``lib/eval.py``): each language's held-out lines joined with ``"\n\n"``, tokenised once (BOS
only at the start), cut into non-overlapping ``--window``-token windows (default the model's
context capped at 2048, ``model.seqlen`` of the paper's BLOOM models; ``--window 4096`` for
Llama-2 as the released code), the last partial window dropped; every window
is one row. ``sentences``: every held-out line is its own row.
Stores: ``scores.parquet`` (per prompt × condition: summed log-probability and predicted
tokens) and ``perplexity.parquet`` (per condition and language: ``exp(-sum log p / tokens)``,
its change against ``none``, the neurons ablated). Draws: the relative perplexity change by
ablated language × evaluated language, selected vs random neurons.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.neurons import split_langs
from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError

SELECTORS = {"key": "key_neurons", "lape": "lape_neurons"}
MODES = ("zero", "mean")
PERPLEXITY = ("windows", "sentences")
#: Default ``--window``: the model's context, capped here. 2048 is ``model.seqlen`` of the paper's
#: BLOOM models; long-context models (Gemma 3: 32768) would leave FLORES text with no whole
#: window. For Llama-2 as the released code, pass ``--window 4096``.
DEFAULT_WINDOW = 2048


@dataclass
class AblateOptions:
    """Options of ``hub intervene ablate`` (recorded in the manifest).

    Attributes:
        source: the neurons run folder (``--from``).
        selector: ``key`` (Zeng et al.'s key neurons) or ``lape`` (Tang et al.).
        ablate: languages whose neurons are ablated, one condition each.
        languages: languages evaluated (perplexity on held-out sentences).
        sources: the sentence file of each evaluated language.
        n: held-out sentences per language.
        offset: first held-out line (0-based); lines before it were used to select neurons.
        mode: ``zero`` or ``mean`` (the neuron's token-mean activation in the neurons run).
        random: also ablate as many random neurons per layer (control).
        seed: seed of the random neurons.
        random_draws: independent random sets per ablated language (seeds ``seed .. seed+R-1``),
            summarised with their spread in ``random_control.parquet``.
        mc: a multiple-choice file (JSON lines: language, context, endings, label) scored under
            every condition (``multiple_choice.parquet``); empty for none.
        perplexity: ``windows`` (Zeng et al.'s code: each language's held-out lines joined with
            ``"\n\n"``, tokenised once, cut into non-overlapping ``window``-token windows, the
            last partial window dropped) or ``sentences`` (every held-out line alone).
        window: window length in tokens for ``windows``; 0 = the model's context length capped
            at 2048 (``model.seqlen`` in the released code for the paper's BLOOM models).
    """

    source: str = ""
    selector: str = "key"
    ablate: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    n: int = 20
    offset: int = 100
    mode: str = "zero"
    random: bool = True
    seed: int = 0
    random_draws: int = 1
    mc: str = ""
    perplexity: str = "sentences"
    window: int = 0


@dataclass
class Condition:
    """One ablation condition.

    Attributes:
        name: ``none``, ``<selector>:<language>`` or ``random:<language>``.
        kind: ``none``, ``selected`` or ``random``.
        ablated: the language whose neurons (or their random counterpart) are ablated ("" for none).
        neurons: block (1..L) -> neuron indices (``d_ff`` columns of the ``mlp_down`` input).
    """

    name: str
    kind: str
    ablated: str
    neurons: dict[int, list[int]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Neurons ablated in all layers together."""
        total = 0
        for idx in self.neurons.values():
            total += len(idx)
        return total


class Ablate(Analysis):
    """Perplexity per language with neurons ablated (see the module docstring)."""

    name = "ablate"
    tables = {"scores": ["prompt", "sentence"]}
    needs_model_output = True

    def __init__(self, options: AblateOptions, conditions: list[Condition], languages: list[str], sentences: list[int],
                 means: dict[int, Any] | None = None, model_id: str | None = None, tasks: list[str] | None = None,
                 endings: list[int] | None = None, answers: dict[str, int] | None = None):
        """Bind the conditions and the evaluated sentences.

        Prompt ``c * E + e`` is evaluated sentence ``e`` (of ``E``) under condition ``c``.

        Args:
            options: :class:`AblateOptions`.
            conditions: the conditions, ``none`` first.
            languages / sentences: language and sentence id of each of the E evaluated texts.
            means: with ``--mode mean``, block -> ``[d_ff]`` replacement values.
            model_id: the model the neurons were selected on (checked in :meth:`prepare`).
            tasks: per evaluated text ``ppl`` (perplexity, the default), ``mc-context`` or
                ``mc-ending`` (multiple choice, :func:`mc_texts`); endings: per text the ending
                index (-1 for ppl and contexts); answers: ``"<language>/<item>"`` -> correct ending.

        Raises:
            HubError: an unknown mode, or mean mode without means for an ablated block.
        """
        super().__init__(options)
        if options.mode not in MODES:
            raise HubError(f"unknown --mode {options.mode!r}; choose one of {', '.join(MODES)}")
        if options.perplexity not in PERPLEXITY:
            raise HubError(f"unknown --perplexity {options.perplexity!r}; choose one of {', '.join(PERPLEXITY)}")
        if options.window < 0 or options.window == 1:
            raise HubError(f"--window must be 2 tokens or more (0: the model's context), got {options.window}")
        if len(languages) != len(sentences):
            raise ValueError("languages and sentences must label every evaluated text")
        self.conditions = list(conditions)
        self.languages = list(languages)
        self.sentences = list(sentences)
        self.tasks = list(tasks) if tasks is not None else ["ppl"] * len(self.languages)
        self.endings = list(endings) if endings is not None else [-1] * len(self.languages)
        self.answers = dict(answers or {})
        if len(self.tasks) != len(self.languages) or len(self.endings) != len(self.languages):
            raise ValueError("tasks and endings must label every evaluated text")
        self.model_id = model_id
        self.means = {}
        import torch

        if options.mode == "mean" and means is not None:
            for block, values in means.items():
                self.means[int(block)] = torch.as_tensor(values, dtype=torch.float32)
        self.index = []
        for cond in self.conditions:
            per_block = {}
            for block, idx in cond.neurons.items():
                if len(idx):
                    if options.mode == "mean" and int(block) not in self.means:
                        raise HubError(f"--mode mean needs the mean activation of block {block}; the neurons run has none")
                    per_block[int(block)] = torch.as_tensor(sorted(idx), dtype=torch.long)
            self.index.append(per_block)
        self.n_layers = 0
        self.d_ff = 0
        self.window = options.window

    def prompts(self, texts: list[str]) -> list[str]:
        """The runner's prompt list: every evaluated text once per condition."""
        out: list[str] = []
        for _ in self.conditions:
            out.extend(texts)
        return out

    def prompt_columns(self) -> dict[str, list[Any]]:
        """Per-prompt labels for ``prompts.parquet``: condition, kind, ablated, language, sentence."""
        columns: dict[str, list[Any]] = {"condition": [], "kind": [], "ablated": [], "language": [], "sentence": [], "task": []}
        for cond in self.conditions:
            columns["condition"].extend([cond.name] * len(self.languages))
            columns["kind"].extend([cond.kind] * len(self.languages))
            columns["ablated"].extend([cond.ablated] * len(self.languages))
            columns["language"].extend(self.languages)
            columns["sentence"].extend(self.sentences)
            columns["task"].extend(self.tasks)
        return columns

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Check the neuron indices against the model.

        Raises:
            HubError: a model other than the neurons run's, or a neuron/block out of range.
        """
        if self.model_id is not None and model.model_id != self.model_id:
            raise HubError(f"the neurons were selected on {self.model_id!r}, but --model is {model.model_id!r}; use the same model")
        self.n_layers = model.n_layers
        d_ff = _d_ff(model)
        for cond in self.conditions:
            for block, idx in cond.neurons.items():
                if not 1 <= block <= model.n_layers:
                    raise HubError(f"condition {cond.name}: block {block} is out of range 1..{model.n_layers}")
                if idx and (min(idx) < 0 or max(idx) >= d_ff):
                    raise HubError(f"condition {cond.name}: neuron {max(idx)} of block {block} is out of range 0..{d_ff - 1}")
        self.d_ff = d_ff
        if self.options.perplexity == "windows":
            self.window = self.options.window or min(model.max_length or DEFAULT_WINDOW, DEFAULT_WINDOW)
            if model.max_length is not None and self.window > model.max_length:
                raise HubError(f"--window {self.window} is longer than the model's context ({model.max_length} tokens); choose a shorter one")
            n_eval = len(self.languages)
            for e in range(n_eval):
                if self.tasks[e] == "ppl" and len(tokens[e]) < self.window:
                    raise HubError(
                        f"the held-out text of {self.languages[e]} has {len(tokens[e])} tokens, fewer than one --window of {self.window}; "
                        "pass a shorter --window or more lines (--n)"
                    )

    def describe_run(self) -> dict[str, Any]:
        """The resolved window length (tokens; 0 in sentences mode) for the manifest."""
        return {"window": self.window if self.options.perplexity == "windows" else 0}

    def prompt_limit(self, model: Any) -> int | None:
        """Windows mode: none (a language's joined held-out text is longer than the context by
        design; :meth:`make_batches` cuts it into windows no longer than the context, checked in
        ``prepare``); sentences mode: the model's context."""
        return None if self.options.perplexity == "windows" else model.max_length

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> list[Batch] | None:
        """Windows mode: every perplexity prompt (one language's joined held-out text under one
        condition) cut into ``floor(T / window)`` non-overlapping windows of ``window`` tokens
        (``tokens[p][w*window:(w+1)*window]``; the remainder is dropped, as Zeng et al.'s
        ``lib/eval.py``), ``batch_size`` windows a batch (``[batch, window]``, no padding;
        ``meta["window"]`` numbers them); multiple-choice prompts follow in ordinary batches.
        Sentences mode: ``None`` (the runner's length-sorted batches of the prompts).
        """
        if self.options.perplexity != "windows":
            return None
        import torch

        from hubclient.exec.batching import make_batches

        n_eval = len(self.languages)
        units: list[tuple[int, int]] = []
        others: list[int] = []
        for p in range(len(tokens)):
            if self.tasks[p % n_eval] != "ppl":
                others.append(p)
                continue
            for w in range(len(tokens[p]) // self.window):
                units.append((p, w))
        if batch_size < 1:
            raise HubError(f"--batch-size must be at least 1, got {batch_size}")
        batches: list[Batch] = []
        for start in range(0, len(units), batch_size):
            chunk = units[start : start + batch_size]
            rows: list[list[int]] = []
            for p, w in chunk:
                rows.append(tokens[p][w * self.window : (w + 1) * self.window])
            ids = torch.tensor(rows, dtype=torch.long)
            prompt_index = []
            windows = []
            for p, w in chunk:
                prompt_index.append(p)
                windows.append(w)
            batches.append(Batch(
                index=len(batches), prompt_index=prompt_index, input_ids=ids, attention_mask=torch.ones_like(ids),
                lengths=[self.window] * len(chunk), row_batch=torch.zeros(0, dtype=torch.long),
                row_position=torch.zeros(0, dtype=torch.long), tokens=rows, meta={"window": windows},
            ))
        if others:
            pad = model.tokenizer.pad_token_id
            rest = make_batches([tokens[p] for p in others], [[] for _ in others], batch_size, pad if pad is not None else 0)
            for batch in rest:
                local = batch.prompt_index
                batch.prompt_index = [others[i] for i in local]
                batch.index = len(batches)
                batches.append(batch)
        return batches

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """Ablate each row's neurons, then ``{"logprob": [batch], "n": [batch]}``: the summed
        next-token log-probability of the row's real tokens after the first, and their number.

        A block where no row of the batch ablates anything is not touched, so a row of an empty
        condition is computed exactly as an unedited forward pass.
        """
        import torch

        device = model.device
        n_eval = len(self.languages)
        conds = []
        for p in batch.prompt_index:
            conds.append(p // n_eval)
        rows = len(conds)
        for block in range(1, self.n_layers + 1):
            keep = None
            for row in range(rows):
                idx = self.index[conds[row]].get(block)
                if idx is not None:
                    if keep is None:
                        keep = torch.ones(rows, self.d_ff)
                    keep[row, idx] = 0.0
            if keep is not None:
                envoy = model.mlp_down(block)
                act = envoy.input
                flat = model.arch.mlp_flat_tokens  # the family's blocks give the MLP [batch * seq, d_ff]
                if flat:
                    act = act.reshape(rows, batch.input_ids.shape[1], -1)
                scale = keep.to(device=device, dtype=act.dtype)[:, None, :]
                if self.options.mode == "mean":
                    fill = ((1.0 - keep) * self.means[block][None, :]).to(device=device, dtype=act.dtype)[:, None, :]
                    edited = act * scale + fill
                else:
                    edited = act * scale
                envoy.input = edited.reshape(rows * batch.input_ids.shape[1], -1) if flat else edited
        logits = model.lm.output.logits[:, :-1].float()
        target = batch.input_ids[:, 1:].to(device)
        mask = batch.attention_mask[:, 1:].to(device=device, dtype=torch.float32)
        picked = logits.gather(-1, target[..., None])[..., 0]
        logprob = (picked - torch.logsumexp(logits, dim=-1)) * mask
        return {"logprob": logprob.sum(dim=1), "n": mask.sum(dim=1)}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """``scores`` rows: prompt, condition, kind, ablated, language, sentence (the held-out line;
        in windows mode the window number within the language's text), logprob, n_tokens."""
        import numpy as np
        import polars as pl

        prompt = np.asarray(batch.prompt_index, dtype=np.int64)
        n_eval = len(self.languages)
        cond = prompt // n_eval
        ev = prompt % n_eval
        sentence = np.asarray(self.sentences, dtype=np.int64)[ev]
        if "window" in batch.meta:
            sentence = np.asarray(batch.meta["window"], dtype=np.int64)
        frame = pl.DataFrame(
            {
                "prompt": prompt,
                "condition": [self.conditions[c].name for c in cond],
                "kind": [self.conditions[c].kind for c in cond],
                "ablated": [self.conditions[c].ablated for c in cond],
                "language": [self.languages[e] for e in ev],
                "sentence": sentence,
                "task": [self.tasks[e] for e in ev],
                "ending": np.asarray(self.endings, dtype=np.int32)[ev],
                "logprob": saved["logprob"].numpy().astype(np.float64),
                "n_tokens": np.rint(saved["n"].numpy()).astype(np.int32),
            }
        )
        return {"scores": frame}

    # ------------------------------------------------------------------ statistics
    def finish(self, run: Any) -> dict[str, Any]:
        """``perplexity``: per condition and language, ``exp(-sum logprob / sum n_tokens)`` over
        the held-out sentences, with its change against ``none`` (difference and ratio);
        ``random_control``: the selected neurons' change against the spread of the random draws;
        ``multiple_choice`` (with ``--mc``): accuracy per condition and language."""
        import polars as pl

        scores = run.table("scores")
        ppl = perplexity_table(scores.filter(pl.col("task") == "ppl") if "task" in scores.columns else scores, self.conditions)
        out = {"perplexity": ppl, "random_control": random_control(ppl)}
        if "task" in scores.columns and (scores["task"] != "ppl").any():
            out["multiple_choice"] = mc_accuracy(scores, self.answers)
        return out

    def summary(self, run: Any) -> str:
        """Per ablated language: the relative perplexity change of its own language and the mean
        over the other languages, for the selected and the random neurons."""
        import polars as pl

        table = run.table("perplexity").filter(pl.col("kind") != "none")
        lines = []
        for (ablated,), rows in table.group_by("ablated", maintain_order=True):
            parts = []
            for kind in ("selected", "random"):
                part = rows.filter(pl.col("kind") == kind)
                if part.height == 0:
                    continue
                own = part.filter(pl.col("language") == ablated)["change"]
                other = part.filter(pl.col("language") != ablated)["change"]
                own_text = f"{own[0]:+.1%}" if own.len() else "n/a"
                other_text = f"{other.mean():+.1%}" if other.len() else "n/a"
                parts.append(f"{kind} ({int(part['n_ablated'][0])} neurons): own {own_text}, others {other_text}")
            lines.append(f"  ablate {ablated}: " + "; ".join(parts))
        return "\n".join(lines)

    # ------------------------------------------------------------------ plots
    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """``ablate_perplexity``: perplexity change (ablated language × evaluated language; colour
        the change of log perplexity, label the relative change), one panel for the selected and
        one for the random neurons."""
        import altair as alt
        import polars as pl

        manifest = run.manifest
        o = manifest["options"]
        table = run.table("perplexity").filter(pl.col("kind") != "none")
        draws = table.filter(pl.col("kind") == "random").group_by("ablated", "language").len()["len"].max() if (table["kind"] == "random").any() else 1
        if draws and draws > 1:  # several random draws: their mean change per cell
            randoms = (
                table.filter(pl.col("kind") == "random")
                .group_by("kind", "ablated", "language", maintain_order=True)
                .agg(pl.col("condition").first().str.replace(r"#\d+$", "").alias("condition"), pl.col("n_ablated").first(),
                     pl.col("perplexity").mean(), pl.col("baseline").first(), pl.col("change").mean(), pl.col("delta_nll").mean())
            )
            table = pl.concat([table.filter(pl.col("kind") == "selected").select(randoms.columns), randoms.select(randoms.columns)])
        langs = table["language"].unique(maintain_order=True).to_list()
        ablated = table["ablated"].unique(maintain_order=True).to_list()
        limit = max(float(table["delta_nll"].abs().max() or 0.0), 1e-6)
        base = alt.Chart(table).encode(
            x=alt.X("language:N", sort=langs, title="evaluated language"),
            y=alt.Y("ablated:N", sort=ablated, title="neurons ablated for"),
        )
        rect = base.mark_rect().encode(
            color=alt.Color("delta_nll:Q", title=["Δ log perplexity", "(nats/token)"], scale=alt.Scale(scheme="redblue", reverse=True, domain=[-limit, limit])),
            tooltip=["condition", "language", "n_ablated", alt.Tooltip("perplexity:Q", format=".2f"), alt.Tooltip("baseline:Q", format=".2f"),
                     alt.Tooltip("change:Q", format="+.1%"), alt.Tooltip("delta_nll:Q", format="+.3f")],
        )
        text = base.mark_text(fontSize=9).encode(text=alt.Text("change:Q", format="+.0%"))
        chart = (
            alt.layer(rect, text, data=table)
            .properties(width=alt.Step(44), height=alt.Step(26))
            .facet(column=alt.Column("kind:N", title=None, sort=["selected", "random"]))
            .properties(
                title=[
                    f"Perplexity change when neurons are ablated (labels: perplexity / unablated − 1) · {manifest['model']['model_id']}",
                    (f"{o['selector']} neurons set to {'0' if o['mode'] == 'zero' else 'their mean'}; {o['n']} held-out sentences per language (lines {o['offset'] + 1}-{o['offset'] + o['n']}); "
                     f"random: as many neurons per layer ({o.get('random_draws', 1)} draw(s); the mean when several, spread in random_control)"),
                ]
            )
        )
        return {"ablate_perplexity": chart}


def _d_ff(model: Any) -> int:
    """Width of the MLP activation (``mlp_down`` input) of the model."""
    import torch

    module = model.torch_model.get_submodule(model.arch.layers)[0].get_submodule(model.arch.mlp_down)
    if isinstance(module, torch.nn.Linear):
        return int(module.in_features)
    return int(module.weight.shape[0])  # GPT-2 Conv1D: weight [d_ff, d_model]


def perplexity_table(scores: Any, conditions: list[Condition]) -> Any:
    """Perplexity per condition and language, against the ``none`` condition.

    ``perplexity = exp(-sum logprob / sum n_tokens)`` over a language's sentences (token-level,
    as a language model's perplexity); ``baseline`` is the ``none`` condition's, ``change =
    perplexity / baseline - 1``, ``difference = perplexity - baseline`` and ``delta_nll =
    log perplexity - log baseline``, the change of the mean negative log-likelihood (nats per
    token).

    Raises:
        HubError: no ``none`` rows for a language (an incomplete run).
    """
    import polars as pl

    sizes = {c.name: c.size for c in conditions}
    table = (
        scores.group_by("condition", "kind", "ablated", "language", maintain_order=True)
        .agg(pl.col("logprob").sum(), pl.col("n_tokens").sum(), pl.len().alias("n_sentences"))
        .with_columns((-(pl.col("logprob") / pl.col("n_tokens"))).exp().alias("perplexity"))
    )
    base = table.filter(pl.col("kind") == "none").select("language", pl.col("perplexity").alias("baseline"))
    if base.height == 0:
        raise HubError("no unablated (condition 'none') scores; the run is incomplete")
    out = table.join(base, on="language", how="left").with_columns(
        (pl.col("perplexity") / pl.col("baseline") - 1).alias("change"),
        (pl.col("perplexity") - pl.col("baseline")).alias("difference"),
        (pl.col("perplexity").log() - pl.col("baseline").log()).alias("delta_nll"),
        pl.col("condition").replace_strict(sizes, return_dtype=pl.Int64).alias("n_ablated"),
        (pl.col("ablated") == pl.col("language")).alias("own_language"),
    )
    return out.select(
        "condition", "kind", "ablated", "language", "own_language", "n_ablated", "n_sentences", "n_tokens",
        "perplexity", "baseline", "change", "difference", "delta_nll",
    )


# --------------------------------------------------------------------------- the neurons run


def open_neurons_run(path: Path) -> Any:
    """Open ``--from``: a complete single-model ``hub analyze neurons`` run.

    Raises:
        HubError: not a run folder, a run of another analysis, a multi-model parent folder
            (naming its model runs), or an incomplete run.
    """
    from hubclient.run.folder import RunDir

    run = RunDir.open(path)
    manifest = run.manifest
    if manifest.get("analysis") != "neurons":
        raise HubError(f"--from {path} is a {manifest.get('analysis')!r} run, not a neurons run; run `hub analyze neurons` first")
    if "runs" in manifest:
        subs = ", ".join(str(Path(path) / s) for s in manifest["runs"])
        raise HubError(f"--from {path} compares several models; pass one of its model runs: {subs}")
    if manifest.get("status") != "complete":
        raise HubError(f"--from {path} is not complete (status {manifest.get('status')!r}); finish it with --resume {path}")
    return run


def selected_neurons(run: Any, selector: str, language: str) -> dict[int, list[int]]:
    """Block -> neuron indices selected for ``language`` by ``selector`` in a neurons run."""
    import polars as pl

    table = run.table(SELECTORS[selector]).filter(pl.col("language") == language)
    out: dict[int, list[int]] = {}
    for (layer,), rows in table.group_by("layer", maintain_order=True):
        out[int(layer)] = sorted(int(v) for v in rows["neuron"].to_list())
    return out


def random_like(neurons: dict[int, list[int]], d_ff: int, seed: int, salt: int) -> dict[int, list[int]]:
    """As many random neurons in each block as ``neurons`` has there, drawn without
    replacement from the block's other neurons (``numpy.random.default_rng([seed, salt])``).

    Raises:
        HubError: a block where more than half the neurons are selected (no equal-size
            disjoint random set exists).
    """
    import numpy as np

    rng = np.random.default_rng([seed, salt])
    out: dict[int, list[int]] = {}
    for block in sorted(neurons):
        chosen = np.unique(np.asarray(neurons[block], dtype=np.int64))
        pool = np.setdiff1d(np.arange(d_ff, dtype=np.int64), chosen)
        if chosen.size > pool.size:
            raise HubError(f"block {block} has {chosen.size} of {d_ff} neurons selected: too many for a disjoint random set; use --no-random")
        out[block] = sorted(int(v) for v in rng.choice(pool, size=chosen.size, replace=False))
    return out


def mean_activations(run: Any) -> dict[int, Any]:
    """Block -> ``[d_ff]`` token-mean activation over all languages of a neurons run
    (``neuron_stats.parquet``: per-language means weighted by their token counts)."""
    import numpy as np

    table = run.table("neuron_stats")
    out = {}
    for (layer,), rows in table.group_by("layer", maintain_order=True):
        weights = rows["n_tokens"].to_numpy().astype(np.float64)
        means = rows["mean_activation"].to_numpy().astype(np.float64)
        out[int(layer)] = weights @ means / weights.sum()
    return out


def build_conditions(run: Any, selector: str, ablate: list[str], random: bool, seed: int, draws: int = 1) -> list[Condition]:
    """``none``, then per ablated language its selected neurons and (``random``) ``draws`` random
    sets of the same size per block (:func:`random_like` with seeds ``seed .. seed+draws-1``; the
    first is ``random:<language>``, the others ``random:<language>#<r>``). Warns about a language
    with no selected neuron.

    Raises:
        HubError: ``draws < 1``, or as :func:`random_like`.
    """
    if draws < 1:
        raise HubError(f"--random-draws must be at least 1, got {draws}")
    import polars as pl

    d_ff = int(run.table("counts").filter(pl.col("selector") == selector)["d_ff"][0])
    languages = run.manifest["options"]["languages"]
    conditions = [Condition("none", "none", "")]
    for language in ablate:
        neurons = selected_neurons(run, selector, language)
        cond = Condition(f"{selector}:{language}", "selected", language, neurons)
        if cond.size == 0:
            warnings.warn(f"no {selector} neurons are selected for {language}; its ablation changes nothing")
        conditions.append(cond)
        if random:
            for r in range(draws):
                name = f"random:{language}" if r == 0 else f"random:{language}#{r}"
                conditions.append(Condition(name, "random", language, random_like(neurons, d_ff, seed + r, languages.index(language))))
    return conditions


def random_control(perplexity: Any, level: float = 0.95) -> Any:
    """The selected neurons' perplexity change against R random draws of the same size per layer.

    Per (ablated, language): ``selected_change`` (perplexity / baseline − 1 with the selected
    neurons), ``n_draws``, ``random_mean``, ``random_sd`` (ddof 1; null for one draw),
    ``random_low``/``random_high`` (the percentile interval at ``level`` over the draws: with few
    draws it is close to their range) and ``p_random = (1 + #{random change >= selected}) /
    (R + 1)``. Source: the random-neuron control of Zeng et al. 2025 (the released code draws one
    unseeded mask, ``run.py:656-659``; here several seeded draws give a spread).

    Returns:
        a polars frame (empty without random conditions).
    """
    import numpy as np
    import polars as pl

    rows = []
    selected = perplexity.filter(pl.col("kind") == "selected")
    randoms = perplexity.filter(pl.col("kind") == "random")
    alpha = (1 - level) / 2
    for row in selected.iter_rows(named=True):
        draws = randoms.filter((pl.col("ablated") == row["ablated"]) & (pl.col("language") == row["language"]))["change"].to_numpy()
        if draws.size == 0:
            continue
        rows.append({
            "ablated": row["ablated"], "language": row["language"], "own_language": row["own_language"], "selected_change": row["change"],
            "n_draws": int(draws.size), "random_mean": float(draws.mean()),
            "random_sd": float(draws.std(ddof=1)) if draws.size > 1 else None,
            "random_low": float(np.quantile(draws, alpha)), "random_high": float(np.quantile(draws, 1 - alpha)),
            "p_random": float((1 + (draws >= row["change"]).sum()) / (draws.size + 1)),
        })
    schema = {"ablated": pl.String, "language": pl.String, "own_language": pl.Boolean, "selected_change": pl.Float64, "n_draws": pl.Int32,
              "random_mean": pl.Float64, "random_sd": pl.Float64, "random_low": pl.Float64, "random_high": pl.Float64, "p_random": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def mc_texts(path: Path) -> tuple[list[str], list[str], list[int], list[str], list[int], dict[str, int]]:
    """Zero-shot multiple-choice items (XStoryCloze-style) as texts to score.

    The file holds JSON lines ``{"language": str, "context": str, "endings": [str, ...], "label": int}``
    (``label`` indexes ``endings``). Each item gives its context alone and ``context + " " +
    ending`` for every ending; an ending's score is ``log p(context + " " + ending) - log
    p(context)``, the log-likelihood of the ending given the context (as lm-evaluation-harness
    scores ``xstorycloze``: the 4 context sentences joined by spaces, the ending after a space),
    and the item counts as correct when the labelled ending scores highest.

    Returns:
        ``(texts, languages, items, tasks, endings, answers)``: per text its language, item index
        (within the language), ``mc-context``/``mc-ending`` and ending index (-1 for the
        context); ``answers["<language>/<item>"]`` = label.

    Raises:
        HubError: an unreadable file, a line that is not such an object, fewer than 2 endings, a
            label out of range.
    """
    import json

    texts: list[str] = []
    langs: list[str] = []
    items: list[int] = []
    tasks: list[str] = []
    endings: list[int] = []
    answers: dict[str, int] = {}
    counter: dict[str, int] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise HubError(f"--mc {path}: cannot read it ({exc.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            language, context, options, label = str(item["language"]), str(item["context"]), [str(e) for e in item["endings"]], int(item["label"])
        except (ValueError, KeyError, TypeError):
            raise HubError(f"--mc {path}:{number}: need a JSON object with language, context, endings (list) and label (int)") from None
        if len(options) < 2 or not 0 <= label < len(options):
            raise HubError(f"--mc {path}:{number}: need 2 or more endings and a label among them")
        index = counter.get(language, 0)
        counter[language] = index + 1
        answers[f"{language}/{index}"] = label
        for k, text in enumerate([context, *(context + " " + e for e in options)]):
            texts.append(text)
            langs.append(language)
            items.append(index)
            tasks.append("mc-context" if k == 0 else "mc-ending")
            endings.append(k - 1)
    if not texts:
        raise HubError(f"--mc {path} has no items")
    return texts, langs, items, tasks, endings, answers


def mc_accuracy(scores: Any, answers: dict[str, int]) -> Any:
    """Multiple-choice accuracy per condition and language (see :func:`mc_texts`), with the
    accuracy of ``none`` as ``baseline``; every condition's scores come from forward passes with
    that condition's ablation applied.

    Returns:
        polars rows: condition, kind, ablated, language, n_items, accuracy, baseline, change (accuracy − baseline).
    """
    import numpy as np
    import polars as pl

    mc = scores.filter(pl.col("task") != "ppl")
    rows = []
    for (condition, kind, ablated, language), part in mc.group_by("condition", "kind", "ablated", "language", maintain_order=True):
        correct = []
        for (item,), one in part.group_by("sentence", maintain_order=True):
            context = one.filter(pl.col("task") == "mc-context")["logprob"][0]
            ends = one.filter(pl.col("task") == "mc-ending").sort("ending")
            scored = ends["logprob"].to_numpy() - context
            correct.append(int(ends["ending"][int(np.argmax(scored))]) == answers[f"{language}/{int(item)}"])
        rows.append({"condition": condition, "kind": kind, "ablated": ablated, "language": language, "n_items": len(correct),
                     "accuracy": float(np.mean(correct))})
    table = pl.DataFrame(rows)
    base = table.filter(pl.col("kind") == "none").select("language", pl.col("accuracy").alias("baseline"))
    return table.join(base, on="language", how="left").with_columns((pl.col("accuracy") - pl.col("baseline")).alias("change"))


def held_out(run: Any, languages: list[str], n: int | None, offset: int, flores_dir: Path | None, files: dict[str, Path] | None = None) -> tuple[list[str], list[str], list[int], list[str]]:
    """The held-out texts: lines ``offset .. offset+n-1`` of every language's file (``n=None``:
    every line from ``offset`` on).

    Each language's file is, in this order: the one given for it in ``files``; its FLORES file
    (:func:`hubclient.inputs.parallel.flores_file`) when a FLORES folder is set (``flores_dir``
    or ``$HUB_FLORES_DIR``); else the file the neurons run read it from.

    Returns:
        ``(texts, languages, sentences, sources)``, language by language.

    Raises:
        HubError: a file that is gone (pass ``--flores-dir``), an unknown FLORES code, too few
            lines, or empty lines.
    """
    from hubclient.inputs.parallel import FLORES_ENV, flores_file, flores_folder, read_parallel_files

    o = run.manifest["options"]
    folder = flores_folder(flores_dir)
    paths = []
    for language in languages:
        if files and language in files:
            paths.append(Path(files[language]))
        elif folder is not None:
            paths.append(flores_file(language, folder))
        else:
            path = Path(o["sources"][o["languages"].index(language)])
            if not path.is_file():
                raise HubError(f"the neurons run read {language} from {path}, which is gone; pass --flores-dir (or set {FLORES_ENV}) or the file itself")
            paths.append(path)
    corpus = read_parallel_files(paths, n=None if n is None else offset + n, skip_empty=o.get("skip_empty", False))
    texts: list[str] = []
    langs: list[str] = []
    sentences: list[int] = []
    for language, lines in zip(languages, corpus.texts):
        texts.extend(lines[offset:])
        langs.extend([language] * len(lines[offset:]))
        sentences.extend(corpus.sentences[offset:])
    return texts, langs, sentences, [str(p) for p in corpus.sources]


def join_by_language(texts: list[str], languages: list[str]) -> tuple[list[str], list[str]]:
    """Each language's texts joined with ``"\n\n"`` in order (Zeng et al.'s ``lib/eval.py``
    joins the XL-Sum ``text`` fields this way before tokenising once).

    Returns:
        ``(joined, langs)``: one text per language, in order of first appearance.
    """
    order: list[str] = []
    parts: dict[str, list[str]] = {}
    for text, language in zip(texts, languages):
        if language not in parts:
            order.append(language)
            parts[language] = []
        parts[language].append(text)
    joined = []
    for language in order:
        joined.append("\n\n".join(parts[language]))
    return joined, order


def _split(values: list[str] | None, available: list[str], option: str) -> list[str]:
    """``--langs``/``--ablate`` values (comma-separated or repeated, as
    :func:`analyses.neurons.split_langs`), default all ``available``.

    Raises:
        HubError: a language the neurons run does not have.
    """
    if not values:
        return list(available)
    out = split_langs(values)
    for item in out:
        if item not in available:
            raise HubError(f"{option} {item!r} is not a language of the neurons run ({', '.join(available)})")
    return out


ANALYSIS = Ablate
