"""``hub analyze arithmetic-lens``: the paper's arithmetic logit lens (Wu et al. 2024, Fig. 5; A5).

The semantic hub paper's ``arithmetic/logit_lens.py`` (``paper-protocols.md`` §A5) asks whether
the hidden state at the end of ``8=5+`` is close to the unembedding of the missing operand
written as an English word. For each of its 1,123 items ``(op, other, target, result)``
(:func:`hubclient.inputs.tasks.arithmetic.paper_items`: 846 ``+``, 277 ``*``) the prompt is
``f"{result}={other}{op}"`` and the missing operand is ``target``, a single digit 1–9; at the last
token (the operator) and every layer the lens gives

* ``number``: ``log p_l(digit)``, the digit with no leading space (``"3"``;
  ``first_token_id_for_string(..., add_prefix_space=False)``);
* ``text``: ``log p_l(word)``, the English word with a leading space (``" three"``;
  ``add_prefix_space=True``).

The paper prints the mean of each over all items, per layer ("Number" vs "Text"). Its lens is
``log_softmax(h_l · W_U^T)`` on transformers' ``hidden_states``: no final norm below ``L``, and
``hidden_states[L]`` is already normed, so layer ``L`` is the model's output
(``lib/logit_lens.py:55-66``): ``--final-norm last``, the default here. ``on``/``off`` are our
variants. The paper reports layers 1..L; layer 0 (the embeddings) is stored too. On a family
with a final logit soft-cap (Gemma 2) the lens applies the cap as the model's output does
(:func:`hubclient.science.lens.unembed`); the paper's plain matmul would not (its models have none;
nor does Gemma 3). ``--lens tuned|patchscope`` (:mod:`analyses.lenses`, docs/lenses.md) reads the
same two log-probabilities from that lens' distribution (always through the final norm).

This is *not* ``hub analyze logit-lens --task arithmetic``: that probe reads the answer after
``3+5=`` (our own variant, the "answer probe"; ``docs/tasks.md``).

Traces: the residual stream at the last token of every prompt, layers 0..L.
Reduces (inside the trace): the lens logits of those rows (decoded chunk by chunk through
:func:`hubclient.science.lens.decode_layers`) to two log-probabilities per row,
``logit[id] - logsumexp(logits)``: ``[layers+1, rows, 2]`` float32 leave the trace.
Stores: ``arithmetic_lens.parquet`` (prompt, op, other, target, result, layer, form, token,
logprob); ``arithmetic_lens_summary.parquet`` (per layer and form: mean log-prob over items with
a seeded 95% percentile-bootstrap CI over items, ``n``; form ``text-number`` is the per-item
difference); the runner adds ``prompts.parquet`` (with the item columns) and ``manifest.json``.
Draws: mean log-probability by layer with its CI band, one line per form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.lenses import LensBatches, LensChoice, init_lens, lens_manifest, lens_words, prepare_lens
from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.inputs.tasks import arithmetic
from hubclient.plots import ci_lines
from hubclient.science.lens import LENS_LABELS, decode_layers, norm_mode
from hubclient.science.tokens import decoder, encode_text

#: The two forms followed, in the order of the trace's last axis.
FORMS = ("number", "text")
#: The per-item difference reported in the summary.
DIFFERENCE = "text-number"


def paper_token_id(tokenizer: Any, text: str, prefix_space: bool) -> tuple[int, int]:
    """The first token of ``text`` as the paper's ``first_token_id_for_string`` picks it
    (``lib/logit_lens.py:115-129``, ``paper-protocols.md`` §0).

    ``prefix_space=True`` tokenises ``" " + text`` (the ``▁word``/``Ġword`` token);
    ``False`` tokenises ``text``. No special tokens. Leading tokens that decode to whitespace
    only (SentencePiece's bare ``▁`` before a digit, which the paper skips on Llama-2 by
    tokenising ``"*" + text`` and taking the second token) are skipped.

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the word or digit string.
        prefix_space: whether to follow the leading-space form.

    Returns:
        ``(token_id, n_tokens)``: the id and how many (non-whitespace-led) tokens the whole
        spelling takes (1 = the word is one token).

    Raises:
        HubError: the spelling has no token, or its first token is the unknown token (the word
            is not in the vocabulary).
    """
    ids = encode_text(tokenizer, (" " + text) if prefix_space else text)
    while ids and not tokenizer.decode([ids[0]]).strip():
        ids = ids[1:]
    shown = repr((" " + text) if prefix_space else text)
    if not ids:
        raise HubError(f"{shown} has no token of its own in this tokenizer")
    if ids[0] == tokenizer.unk_token_id:
        raise HubError(f"{shown} is the unknown token in this tokenizer's vocabulary; the arithmetic lens needs the digits and ' one'..' nine'")
    return int(ids[0]), len(ids)


@dataclass
class ArithmeticLensOptions(LensChoice):
    """Options of the arithmetic lens (recorded in the manifest); the ``--lens`` fields of
    :class:`analyses.lenses.LensChoice`.

    Attributes:
        operators: the paper's operators to keep, ``+*`` (both: the paper), ``+`` or ``*``.
        n: ``None`` (all 1,123 items: the paper) or a seeded subset of ``n`` items.
        data_seed: seed of that subset.
        final_norm: ``"last"`` (the paper's lens, default), ``True`` or ``False``; see
            :func:`hubclient.science.lens.decode_layers` (``True`` with another ``lens``).
        seed / bootstrap: the bootstrap of the 95% CIs over items.
    """

    operators: str = "+*"
    n: int | None = None
    data_seed: int = 0
    final_norm: "bool | str" = "last"
    seed: int = 0
    bootstrap: int = 1000


def items_for(options: ArithmeticLensOptions) -> list[arithmetic.PaperItem]:
    """The paper's items that ``options`` select (all, or a seeded subset in the paper's order).

    Raises:
        HubError: operators other than ``+``/``*``, a bad ``n``.
    """
    return arithmetic.sample_paper_items(arithmetic.paper_items(options.operators), options.n, options.data_seed)


class ArithmeticLens(LensBatches, Analysis):
    """The paper's arithmetic logit lens (see the module docstring).

    Args:
        options: :class:`ArithmeticLensOptions`.
        items: the items; prompt ``i`` of the run is ``items[i].lens_prompt``.

    Raises:
        HubError: an unknown ``final_norm``, ``bootstrap < 1``, no items, bad ``--lens``
            options (:func:`analyses.lenses.init_lens`).
    """

    name = "arithmetic-lens"
    tables = {"arithmetic_lens": ["prompt", "layer", "form"]}

    def __init__(self, options: ArithmeticLensOptions, items: list[arithmetic.PaperItem]):
        options.final_norm = norm_mode(options.final_norm)
        if options.bootstrap < 1:
            raise HubError(f"--bootstrap must be at least 1, got {options.bootstrap}")
        if not items:
            raise HubError("no arithmetic items to run")
        super().__init__(options)
        self.items = list(items)
        self.ids: list[list[int]] = []
        self.multi: dict[str, int] = {}
        init_lens(self)

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Resolve each item's two token ids (digit, no space; word, with a space).

        Raises:
            HubError: a digit or number word that is not in the vocabulary; a lens that does
                not fit the model (:func:`analyses.lenses.prepare_lens`).
        """
        prepare_lens(self, model)
        if len(prompts) != len(self.items):
            raise ValueError("prompts and items differ in number")
        cache: dict[tuple[str, bool], tuple[int, int]] = {}
        self.ids = []
        self.multi = {}
        for item in self.items:
            pair = []
            for text, space in ((item.target_digit, False), (item.target_word.strip(), True)):
                if (text, space) not in cache:
                    cache[(text, space)] = paper_token_id(model.tokenizer, text, space)
                token, n_tokens = cache[(text, space)]
                if n_tokens > 1:
                    self.multi[(" " if space else "") + text] = n_tokens
                pair.append(token)
            self.ids.append(pair)
        if self.multi:
            import warnings

            shown = ", ".join(f"{w!r} ({k} tokens)" for w, k in sorted(self.multi.items()))
            warnings.warn(f"words of several tokens, their first token is followed (as the paper's code): {shown}", stacklevel=2)

    def describe_run(self) -> dict[str, Any]:
        """The manifest's ``multi_token_words`` (followed words that take several tokens) and
        the lens (:func:`analyses.lenses.lens_manifest`)."""
        return {"multi_token_words": dict(self.multi), **lens_manifest(self)}

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """``{"logprob": [layers+1, rows, 2]}``: ``log p_l(digit)``, ``log p_l(word)`` at the
        last token of each prompt (float32; ``logit - logsumexp``, so tiny probabilities keep
        their exponent)."""
        import torch

        per_row = []
        for prompt in batch.prompt_index:
            per_row.append(self.ids[prompt])
        ids = torch.tensor(per_row, dtype=torch.long).to(model.device)

        def reduce(logits: Any, rows: Any) -> Any:
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            return logits.gather(1, ids[rows]) - lse

        return {"logprob": decode_layers(model, batch, reduce, self.options.final_norm, None, self.lens_spec)}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        """``arithmetic_lens`` rows: one per prompt, layer and form."""
        import polars as pl

        logprob = saved["logprob"].double().numpy()  # [layers, rows, 2]
        n_layers, n_rows, _ = logprob.shape
        decode = decoder(model.tokenizer)
        cols: dict[str, list[Any]] = {k: [] for k in ("prompt", "op", "other", "target", "result", "layer", "form", "token", "logprob")}
        for r, prompt in enumerate(batch.prompt_index):
            item = self.items[prompt]
            names = decode(self.ids[prompt])
            for layer in range(n_layers):
                for f, form in enumerate(FORMS):
                    cols["prompt"].append(prompt)
                    cols["op"].append(item.op)
                    cols["other"].append(item.other)
                    cols["target"].append(item.target)
                    cols["result"].append(item.result)
                    cols["layer"].append(layer)
                    cols["form"].append(form)
                    cols["token"].append(names[f])
                    cols["logprob"].append(float(logprob[layer, r, f]))
        schema = {"prompt": pl.Int64, "op": pl.String, "other": pl.Int32, "target": pl.Int32, "result": pl.Int32, "layer": pl.Int32, "form": pl.String, "token": pl.String, "logprob": pl.Float64}
        return {"arithmetic_lens": pl.DataFrame(cols, schema=schema)}

    # ------------------------------------------------------------------ statistics
    def finish(self, run: Any) -> dict[str, Any]:
        """``arithmetic_lens_summary``: per layer and form (and ``text-number``), the mean
        log-prob over items and a 95% percentile-bootstrap CI over items."""
        return {"arithmetic_lens_summary": summarize_lens(run.table("arithmetic_lens"), self.options.bootstrap, self.options.seed)}

    def summary(self, run: Any) -> str:
        """See :func:`summary_lines`."""
        return summary_lines(run)

    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """Mean log-prob by layer with the CI band: ``number`` vs ``text``."""
        import polars as pl

        o = run.manifest["options"]
        summary = run.table("arithmetic_lens_summary").filter(pl.col("form").is_in(list(FORMS)))
        summary = summary.with_columns(form=pl.col("form").replace({"number": "digit (\"3\")", "text": "English word (\"␣three\")"}))
        n = int(summary["n"][0])
        title = f"Arithmetic {LENS_LABELS.get(o.get('lens') or 'logit', 'Logit lens').lower()} at the end of '8=5+' (paper A5) · {run.manifest['model']['model_id']}"
        sub = f"mean log-prob of the missing operand, N={n} items ({o.get('operators', '+*')}); {lens_words(o, 'last')}; band = 95% bootstrap CI over items"
        return {"arithmetic_lens": ci_lines(summary, color="form", title=title, subtitle=sub, y_title="mean log-probability (nats)", width=420, height=260)}


def summary_lines(run: Any) -> str:
    """Per form: the peak mean log-prob over layers 1..L [95% CI], its layer, and layer L."""
    import polars as pl

    table = run.table("arithmetic_lens_summary").filter(pl.col("layer") >= 1)
    lines = []
    for form in (*FORMS, DIFFERENCE):
        rows = table.filter(pl.col("form") == form).sort("layer")
        peak = rows.row(int(rows["mean"].arg_max()), named=True)
        last = rows.row(rows.height - 1, named=True)
        lines.append(f"  {form}: peak {peak['mean']:.3f} [{peak['ci_low']:.3f}, {peak['ci_high']:.3f}] at layer {peak['layer']}; layer {last['layer']} {last['mean']:.3f} (N={peak['n']})")
    return "\n".join(lines)


def summarize_lens(table: Any, n_boot: int = 1000, seed: int = 0) -> Any:
    """Mean log-prob per layer and form over items, with 95% bootstrap CIs over items.

    Args:
        table: ``arithmetic_lens`` rows (prompt, layer, form, logprob).
        n_boot / seed: the bootstrap (:func:`hubclient.science.stats.bootstrap_ci`).

    Returns:
        polars rows ``layer, form, mean, ci_low, ci_high, n``; forms ``number``, ``text`` and
        ``text-number`` (the per-item difference ``log p(word) - log p(digit)``).
    """
    import numpy as np
    import polars as pl

    from hubclient.science.stats import bootstrap_ci

    wide = table.pivot(on="form", index=["prompt", "layer"], values="logprob").sort("layer", "prompt")
    out: dict[str, list[Any]] = {"layer": [], "form": [], "mean": [], "ci_low": [], "ci_high": [], "n": []}
    for (layer,), rows in wide.group_by("layer", maintain_order=True):
        number = rows["number"].to_numpy().astype(np.float64)
        text = rows["text"].to_numpy().astype(np.float64)
        for form, values in (("number", number), ("text", text), (DIFFERENCE, text - number)):
            low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            out["layer"].append(int(layer))
            out["form"].append(form)
            out["mean"].append(float(values.mean()))
            out["ci_low"].append(low)
            out["ci_high"].append(high)
            out["n"].append(int(values.size))
    return pl.DataFrame(out, schema_overrides={"layer": pl.Int32, "n": pl.Int64}).sort("form", "layer")


def run_arithmetic_lens(options: ArithmeticLensOptions, config: Any, model: Any = None) -> Any:
    """Build the paper's prompts, run :class:`ArithmeticLens`, return the finished run.

    ``model``: an already-loaded :class:`~hubclient.models.HubModel` (tests, notebooks);
    ``None`` loads ``config.model``. The item columns go to ``prompts.parquet``.

    Raises:
        HubError: see :func:`items_for` and :meth:`ArithmeticLens.prepare`.
    """
    from hubclient.runner import run_analysis

    items = items_for(options)
    analysis = ArithmeticLens(options, items)
    columns = {"op": [i.op for i in items], "other": [i.other for i in items], "target": [i.target for i in items], "result": [i.result for i in items]}
    return run_analysis(analysis, [i.lens_prompt for i in items], config, model=model, prompt_columns=columns)


ANALYSIS = ArithmeticLens
