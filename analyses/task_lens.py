"""``hub analyze logit-lens --task arithmetic|code``: the probe lens on non-language data (Wu et al. 2024 §4).

The semantic hub paper reads the logit lens at chosen positions of arithmetic expressions and
Python programs and asks whether intermediate layers put mass on the English word for what the
token means: the English number word of the answer after ``3+5=``; "and" at the commas between
list elements; the role word ("function", "argument", "variable") at an identifier. The data
and probes come from :mod:`hubclient.inputs.tasks` (arithmetic, code); this module runs them.

Positions: each probe is a character span of the prompt (:class:`hubclient.inputs.tasks.Probe`); the
lens is read at the model token that holds the span's last character. That token must end
exactly where the span ends (a token that runs past it, e.g. ``):`` for ``)``, would read what
follows, so the probe is skipped and counted in a warning); it may start earlier (Gemma's
``',`` or ``],`` for a comma): ``exact_token`` says whether the token holds nothing but
(the end of) the span.
Targets: each group's words are followed by their first token, as written and with a leading
space (:func:`hubclient.science.probes.first_token_ids`); a group's probability is the SUM over its
distinct token ids (disjoint outcomes of one softmax), its max is kept too. ``full_tokens`` is
how many tokens the group's shortest full word takes (1 = single-token word).

Traces: the residual stream at every layer (0 = embeddings) at the probe positions.
Reduces (inside the trace): ``softmax(W_U · norm(h_l))`` (Eq. 2; final norm optional) at those
rows to the sum and max probability per group (:func:`hubclient.science.probes.group_probabilities`);
only ``[layers+1, rows, groups]`` numbers leave the trace. ``--lens tuned|patchscope``
(:mod:`analyses.lenses`, docs/lenses.md) replaces ``p_l`` by that lens' distribution.
Stores: ``task_lens.parquet`` (prompt, probe, kind, span, position, token, exact_token, layer, group, targets,
full_tokens, probability, max_probability); ``task_lens_summary.parquet`` (per kind, group and
layer: the mean over prompts of each prompt's mean over its probes of that kind, with a 95%
percentile-bootstrap CI over prompts); the runner adds ``prompts.parquet`` with the task's
per-prompt columns (``a, op, b, answer, form`` or ``task_id``).
Draws: mean probability by layer with the CI band, one line per group, one panel per kind.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from analyses.language_probs import summarize
from analyses.lenses import LensBatches, LensChoice, PromptRows, init_lens, lens_manifest, lens_words, prepare_lens
from hubclient.inputs import tasks
from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.plots import ci_lines
from hubclient.science.probes import first_token_ids, group_probabilities, pad_groups
from hubclient.runner import RunConfig, run_analysis
from hubclient.science.tokens import decoder, token_offsets
from hubclient.inputs.tasks import LensItem, Probe, TaskOptions

#: Readable panel names of the probe kinds (others show as they are).
KIND_LABELS = {
    "digits_prompt": "digit form (3+5=), last token",
    "words_prompt": "word form (three plus five equals), last token",
}


@dataclass
class TaskLensOptions(LensChoice):
    """Options of the task lens (recorded in the manifest); the ``--lens`` fields of
    :class:`analyses.lenses.LensChoice`.

    Attributes:
        task: the :class:`hubclient.inputs.tasks.TaskOptions` that made the prompts, as a dict.
        final_norm: apply the model's final norm before ``W_U`` (logit lens only).
    """

    task: dict[str, Any] = field(default_factory=dict)
    final_norm: "bool | str" = True


@dataclass
class _Row:
    """A probe resolved against the tokenizer: its token position and per-group target ids."""

    probe_index: int
    probe: Probe
    position: int
    ids: list[list[int]]  # [groups][ids], in TaskLens.groups order (empty: group not probed)
    full_tokens: list[int]


class TaskLens(PromptRows, LensBatches, Analysis):
    """The probe lens over task prompts (see the module docstring).

    Args:
        options: :class:`TaskLensOptions`.
        items: the prompts and their probes (:func:`hubclient.inputs.tasks.lens_items`); prompt ``i``
            of the run is ``items[i].text``.
    """

    name = "task-lens"
    rows_name = "task probes"
    tables = {"task_lens": ["prompt", "probe", "layer", "group"]}

    def __init__(self, options: TaskLensOptions, items: list[LensItem]):
        super().__init__(options)
        self.items = list(items)
        self.groups: list[str] = []
        for item in self.items:
            for probe in item.probes:
                for group in probe.groups:
                    if group not in self.groups:
                        self.groups.append(group)
        self.rows_of: dict[int, list[_Row]] = {}
        init_lens(self)

    # ------------------------------------------------------------------ before the trace
    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Map every probe to its token position and its groups to token ids.

        Raises:
            HubError: a tokenizer without character offsets, prompts that are not the items'
                texts, no usable probe at all, or a lens that does not fit the model
                (:func:`analyses.lenses.prepare_lens`).
        """
        prepare_lens(self, model)
        tokenizer = model.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise HubError("the task lens needs a fast tokenizer (character offsets) to find the probed tokens")
        if len(prompts) != len(self.items):
            raise ValueError("prompts and task items differ in number")
        offsets_of = token_offsets(tokenizer, prompts, tokens)
        special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}  # BOS, pads…; an unknown token is still text
        cache: dict[str, tuple[list[int], int]] = {}
        skipped = {"merged": 0, "no_token": 0}
        by_kind: dict[str, int] = {}
        first_skip: dict[str, str] = {}
        probed = [0] * len(self.groups)  # usable probes that name words for group g…
        absent = [0] * len(self.groups)  # …none of which has a token
        multi = 0  # usable probes with a followed group word of several tokens
        self.rows_of = {}
        for i, item in enumerate(self.items):
            ids, offsets = list(tokens[i]), offsets_of[i]
            rows: list[_Row] = []
            for k, probe in enumerate(item.probes):
                position = _token_at(item.text, ids, offsets, probe, special)
                if position is None:
                    skipped["merged"] += 1
                    first_skip.setdefault("merged", f"{probe.kind} {probe.text!r} of prompt {i}")
                    by_kind[probe.kind] = by_kind.get(probe.kind, 0) + 1
                    continue
                group_ids: list[list[int]] = []
                full: list[int] = []
                for group in self.groups:
                    words = probe.groups.get(group, ())
                    found: list[int] = []
                    shortest = 0
                    for word in words:
                        if word not in cache:
                            cache[word] = first_token_ids(tokenizer, word)
                        word_ids, n_tokens = cache[word]
                        for t in word_ids:
                            if t not in found:
                                found.append(t)
                        if word_ids:
                            shortest = n_tokens if shortest == 0 else min(shortest, n_tokens)
                    group_ids.append(found)
                    full.append(shortest)
                if not any(group_ids):
                    skipped["no_token"] += 1
                    first_skip.setdefault("no_token", f"{probe.kind} {probe.text!r} of prompt {i}")
                    continue
                rows.append(_Row(k, probe, position, group_ids, full))
                for g, group in enumerate(self.groups):
                    if probe.groups.get(group):
                        probed[g] += 1
                        absent[g] += not group_ids[g]
                multi += any(group_ids[g] and full[g] > 1 for g in range(len(self.groups)))
            self.rows_of[i] = rows
        total = sum(len(item.probes) for item in self.items)
        used = sum(len(r) for r in self.rows_of.values())
        if used == 0:
            raise HubError(f"no usable probe among {total}: for every probed span the tokenizer runs a token past its end, or none of its words has a token")
        if skipped["merged"]:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items()))
            warnings.warn(f"{skipped['merged']} of {total} probes skipped: the token holding the span's end runs past it ({kinds}; first: {first_skip['merged']})", stacklevel=2)
        if skipped["no_token"]:
            warnings.warn(f"{skipped['no_token']} of {total} probes skipped: none of their words is in the vocabulary (first: {first_skip['no_token']})", stacklevel=2)
        missing = []
        for g, group in enumerate(self.groups):
            if absent[g]:
                missing.append(f"{group!r} at {absent[g]} of {probed[g]}")
        if missing:
            warnings.warn(f"groups with no token in the vocabulary (left out there): {', '.join(missing)}", stacklevel=2)
        if multi:
            warnings.warn(f"{multi} of {used} probes have a group word of several tokens; its first token is followed (column full_tokens says how many)", stacklevel=2)

    def describe_run(self) -> dict[str, Any]:
        """The lens (:func:`analyses.lenses.lens_manifest`)."""
        return lens_manifest(self)

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """``{"sum", "max"}``: ``[layers+1, rows, groups]`` lens probabilities per group."""
        per_row = []
        for _, row in self._batch_rows(batch):
            per_row.append(row.ids)
        ids, group = pad_groups(per_row, len(self.groups))
        return group_probabilities(model, batch, ids, group, len(self.groups), self.options.final_norm, self.lens_spec)

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """``task_lens`` rows: one per probe, layer and probed group."""
        import numpy as np
        import polars as pl

        sums = saved["sum"].double().numpy()  # [layers, rows, groups]
        maxes = saved["max"].double().numpy()
        n_layers = sums.shape[0]
        names = ("prompt", "probe", "kind", "span", "position", "token", "exact_token", "group", "targets", "full_tokens")
        entries: list[tuple[Any, ...]] = []  # one per (row, probed group), in ``names`` order
        at_row: list[int] = []
        at_group: list[int] = []
        decode_ids = decoder(model.tokenizer)

        def decode(i: int) -> str:
            return decode_ids([i])[0]

        row_batch = batch.row_batch.tolist()
        for r, (prompt, row) in enumerate(self._batch_rows(batch)):
            token = decode(int(batch.tokens[row_batch[r]][row.position]))
            exact = bool(token.strip()) and row.probe.text.endswith(token.strip())
            for g, group in enumerate(self.groups):
                if not row.ids[g]:
                    continue
                targets = "|".join(decode(t) for t in row.ids[g])
                entries.append((prompt, row.probe_index, row.probe.kind, row.probe.text, row.position, token, exact, group, targets, row.full_tokens[g]))
                at_row.append(r)
                at_group.append(g)
        schema = {"prompt": pl.Int64, "probe": pl.Int32, "kind": pl.String, "span": pl.String, "position": pl.Int32, "token": pl.String, "exact_token": pl.Boolean, "layer": pl.Int32, "group": pl.String, "targets": pl.String, "full_tokens": pl.Int32, "probability": pl.Float64, "max_probability": pl.Float64}
        # every (row, group) entry repeats over the layers: entry-major, layer-minor
        frame = pl.DataFrame(entries, schema={k: schema[k] for k in names}, orient="row").select(pl.all().gather(np.repeat(np.arange(len(at_row)), n_layers)))
        frame = frame.with_columns(
            layer=pl.Series(np.tile(np.arange(n_layers), len(at_row)), dtype=pl.Int32),
            probability=pl.Series(sums[:, at_row, at_group].T.reshape(-1), dtype=pl.Float64),
            max_probability=pl.Series(maxes[:, at_row, at_group].T.reshape(-1), dtype=pl.Float64),
        )
        return {"task_lens": frame.select(list(schema))}

    def finish(self, run: Any) -> dict[str, Any]:
        """``task_lens_summary``: per kind, group and layer, the mean over prompts of each
        prompt's mean over its probes, with a 95% bootstrap CI over prompts."""
        import polars as pl

        per_prompt = (
            run.table("task_lens")
            .group_by("kind", "group", "layer", "prompt")
            .agg(pl.col("probability").mean(), pl.len().alias("n_positions"))
        )
        summary = summarize(per_prompt, ["kind", "group", "layer"], "probability")
        positions = per_prompt.group_by("kind", "group", "layer").agg(pl.col("n_positions").sum())
        return {"task_lens_summary": summary.join(positions, on=["kind", "group", "layer"]).sort("kind", "group", "layer")}

    def summary(self, run: Any) -> str:
        """Per kind and group: the peak mean probability, its layer and the last layer's value."""
        return summary_lines(run)

    # ------------------------------------------------------------------ plots
    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """Mean probability by layer with its CI band: one line per group, one panel per kind;
        ``task_lens`` on a linear axis, ``task_lens_log`` on a log axis (lens probabilities of
        these words often stay between 1e-9 and 1e-3, flat on a linear axis)."""
        import polars as pl

        summary = run.table("task_lens_summary")
        options = run.manifest["options"]
        norm = lens_words(options, True)
        task = options.get("task", {}).get("task", "task")
        model_id = run.manifest["model"]["model_id"]
        frame = summary.with_columns(
            panel=pl.format("{} · {} prompts, {} positions", pl.col("kind").replace(KIND_LABELS), pl.col("n"), pl.col("n_positions")),
        )
        title = f"Probe lens, --task {task} ({norm}) · {model_id}"
        subtitle = "mean over prompts of the mean over positions; band = 95% bootstrap CI over prompts"
        return {
            "task_lens": ci_lines(frame, color="group", facet="panel", title=title, subtitle=subtitle, y_title="lens probability"),
            "task_lens_log": ci_lines(
                frame, color="group", facet="panel", title=title, subtitle=subtitle + "; log axis, values below 1e-12 drawn at 1e-12",
                y_title="lens probability (log)", log_floor=1e-12,
            ),
        }


def _token_at(text: str, ids: list[int], offsets: list[tuple[int, int]], probe: Probe, special: set[int]) -> int | None:
    """Position of the token holding the span's last character, or ``None`` when that token
    ends elsewhere (it may start before the span)."""
    last = probe.end - 1
    for j, (s, e) in enumerate(offsets):
        if ids[j] in special or e <= s:
            continue
        if s <= last < e:
            return j if e == probe.end else None
    return None


def run_task_lens(task_options: TaskOptions, final_norm: bool, config: RunConfig, model: Any = None, lens: "dict[str, Any] | None" = None) -> Any:
    """Build the task's prompts and probes, run :class:`TaskLens`, return the finished run.

    ``model``: an already-loaded :class:`~hubclient.models.HubModel` (tests, notebooks);
    ``None`` loads ``config.model``. The task's per-prompt columns go to ``prompts.parquet``.
    ``lens``: the :class:`analyses.lenses.LensChoice` fields as keywords (``None``: the logit
    lens; :func:`analyses.cli.lens_options.lens_fields` makes them).

    ``--task code``, ``code-roles`` and ``cogs`` (the paper's A7, A8, A10) run
    :func:`analyses.code_lens.run_site_lens` instead.

    Raises:
        HubError: see :func:`hubclient.inputs.tasks.lens_items` and :meth:`TaskLens.prepare`.
    """
    if task_options.task in tasks.SITE_TASKS:  # code and COGS: analyses/code_lens.py
        from analyses.code_lens import run_site_lens

        return run_site_lens(task_options, final_norm, config, model=model, lens=lens)
    items = tasks.lens_items(task_options)
    analysis = TaskLens(TaskLensOptions(task=task_options.describe(), final_norm=final_norm, **(lens or {})), items)
    keys = dict.fromkeys(key for item in items for key in item.columns)  # first-seen order
    columns = {key: [item.columns.get(key) for item in items] for key in keys}
    return run_analysis(analysis, [item.text for item in items], config, model=model, prompt_columns=columns)


def summary_lines(run: Any) -> str:
    """One line per probe kind and group of a finished run: peak mean probability [95% CI] and
    its layer, and the last layer's mean (a code/COGS run: :func:`analyses.code_lens.summary_lines`)."""
    import polars as pl

    if run.manifest.get("analysis") == "code-lens":
        from analyses.code_lens import summary_lines as site_lines

        return site_lines(run)
    table = run.table("task_lens_summary")
    lines = []
    for (kind, group), rows in table.sort("layer").group_by("kind", "group", maintain_order=True):
        peak = rows.row(int(rows["mean"].arg_max()), named=True)
        last = rows.filter(pl.col("layer") == rows["layer"].max()).row(0, named=True)
        lines.append(f"  {kind} / {group}: peak {peak['mean']:.3g} [{peak['ci_low']:.3g}, {peak['ci_high']:.3g}] at layer {peak['layer']}; layer {last['layer']} {last['mean']:.3g} ({peak['n']} prompts)")
    return "\n".join(sorted(lines))


ANALYSIS = TaskLens
