"""``hub analyze language-probs``: which language each layer's logit lens is "in" (Wu et al. 2024, Fig. 4).

Traces: the residual stream ``h_l`` at every layer ``l = 0..L`` (0 = embeddings) at every token
position of every input text except special tokens (BOS).
Reduces (inside the trace): the lens distribution ``p_l = softmax(W_U · norm(h_l))`` (Eq. 2;
final norm optional) times the token-to-language matrix ``M`` ``[vocab, n_languages + 1]``
(:mod:`hubclient.science.token_languages`, built from ``wordfreq`` word frequencies):
``P_l(language) = p_l · M``, one ``[rows, vocab] x [vocab, n_lang+1]`` product per layer and row
chunk. Only ``[layers, rows, n_lang+1]`` leaves the trace.
Stores: ``language_probs.parquet``: per prompt, layer and language, the mean of
``P_l(language)`` over the prompt's positions (``n_positions`` of them);
``language_probs_summary.parquet``: per input language, layer and language, the mean over
prompts with a 95% percentile-bootstrap CI over prompts (sentences are the independent units).
Draws: for each input language, language probability by layer (one line per language, CI band).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.inputs.parallel import flores_codes, read_flores_texts  # noqa: F401 (flores_codes: old import path)
from hubclient.inputs.prompts import Positions
from hubclient.science.lens import decode_layers, norm_label
from hubclient.plots import ci_lines  # noqa: F401 (also the old import path analyses.language_probs.ci_lines)


# --------------------------------------------------------------------------- inputs
def read_flores(flores_dir: Path | None, code: str, n: int | None) -> list[str]:
    """The first ``n`` sentences (all when ``None``) of FLORES language ``code``: the old name
    (and argument order) of :func:`hubclient.inputs.parallel.read_flores_texts`.

    Raises:
        HubError: see :func:`hubclient.inputs.parallel.read_flores_texts`.
    """
    return read_flores_texts(code, flores_dir, n)


def take(texts: list[str], n: int | None, source: str) -> list[str]:
    """The first ``n`` texts of ``source`` (:func:`hubclient.inputs.prompts.take_first`, the one
    ``--n`` rule); ``HubError`` when ``n < 1`` or ``n`` exceeds what ``source`` has."""
    from hubclient.inputs.prompts import take_first

    return take_first(texts, n, f"texts in {source}")


def parse_lang_file(value: str) -> tuple[str, Path]:
    """``LANG=FILE`` (``--lang``) -> ``(LANG, FILE)``; ``HubError`` on another form."""
    lang, sep, file = value.partition("=")
    if not sep or not lang.strip() or not file.strip():
        raise HubError(f"bad --lang {value!r}: use LANG=FILE, e.g. --lang zh=prompts_zh.txt")
    return lang.strip(), Path(file.strip())


# --------------------------------------------------------------------------- analysis
@dataclass
class LanguageProbsOptions:
    """Options of ``language-probs``.

    Attributes:
        languages: wordfreq codes of the matrix columns (``unknown`` is added), in order.
        input_languages: each prompt's input-language label (``[prompts]``).
        final_norm: apply the model's final norm before ``W_U``.
        positions: positions averaged over: ``all`` (the paper's Fig. 4), ``last``, or indices
            such as ``0,3,-1`` (:class:`hubclient.inputs.Positions`); special tokens are always
            left out. Each position costs ``layers+1`` projections through ``W_U``, so ``last``
            is the fast choice for many or long texts.
    """

    languages: list[str] = field(default_factory=list)
    input_languages: list[str] = field(default_factory=list)
    final_norm: "bool | str" = True
    positions: str = "all"


class LanguageProbs(Analysis):
    """``P_l(language) = p_lens · M`` per layer, averaged over positions (module docstring).

    Args:
        options: see :class:`LanguageProbsOptions`.
        frequencies: ``{language: {word: frequency}}`` to build ``M`` from instead of wordfreq
            (tests, custom lists).
        cache: cache ``M`` on disk (see :mod:`hubclient.science.token_languages`).
    """

    name = "language-probs"
    tables = {"language_probs": ["prompt", "layer", "language"]}

    def __init__(self, options: LanguageProbsOptions, frequencies: Any = None, cache: bool = True):
        super().__init__(options)
        self._positions = Positions.parse(options.positions)
        self.frequencies = frequencies
        self.cache = cache
        self.matrix: Any = None
        self.columns: list[str] = []
        self.special: set[int] = set()

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Build (or load) ``M`` for the model's tokenizer; note the special token ids.

        Raises:
            HubError: no/duplicate languages, or a language without a frequency table.
        """
        import torch

        from hubclient.science.token_languages import language_matrix

        if len(self.options.input_languages) != len(prompts):
            raise HubError(f"{len(self.options.input_languages)} input-language labels for {len(prompts)} prompts")
        matrix, self.columns = language_matrix(model.tokenizer, self.options.languages, self.frequencies, cache=self.cache)
        vocab = model.vocab_size
        if matrix.shape[0] < vocab:  # lm_head rows beyond the tokenizer (padding): unknown
            pad = torch.zeros((vocab - matrix.shape[0], matrix.shape[1]))
            pad[:, -1] = 1
            self.matrix = torch.cat([torch.from_numpy(matrix), pad])
        else:
            self.matrix = torch.from_numpy(matrix[:vocab])
        self.special = set(model.tokenizer.all_special_ids)
        self._tokens: dict[int, list[int]] = {}
        for i, ids in enumerate(tokens):
            self._tokens[i] = list(ids)

    def positions(self, n_tokens: int, prompt_index: int) -> list[int]:
        """The ``--positions`` of the prompt whose token is not a special token (BOS is skipped);
        with ``last``, the last non-special token."""
        tokens = self._tokens[prompt_index][:n_tokens]
        usable = []
        for p, token in enumerate(tokens):
            if token not in self.special:
                usable.append(p)
        if self._positions.spec == "last":
            return usable[-1:]
        chosen = set(self._positions.resolve(n_tokens, prompt_index))
        out = []
        for p in usable:
            if p in chosen:
                out.append(p)
        return out

    # ------------------------------------------------------------------ inside the trace
    def trace(self, model: Any, batch: Batch) -> dict[str, Any]:
        """``[layers+1, rows, n_lang+1]`` language probabilities of the selected rows."""
        import torch

        matrix = self.matrix.to(model.device)

        def reduce(logits: Any, rows: Any) -> Any:
            return torch.softmax(logits, dim=-1) @ matrix.to(logits.dtype)

        return {"language_probs": decode_layers(model, batch, reduce, self.options.final_norm)}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        import polars as pl

        probs = saved["language_probs"].double().numpy()  # [layers, rows, n_lang+1]
        n_layers = probs.shape[0]
        row_prompt = np.asarray(batch.row_prompt, dtype=np.int64)
        frames = []
        for prompt in np.unique(row_prompt).tolist():
            sel = row_prompt == prompt
            mean = probs[:, sel, :].mean(axis=1)  # [layers, n_lang+1]
            frames.append(
                pl.DataFrame(
                    {
                        "prompt": np.full(mean.size, prompt, dtype=np.int64),
                        "input_language": [self.options.input_languages[prompt]] * mean.size,
                        "layer": np.repeat(np.arange(n_layers), len(self.columns)).astype(np.int32),
                        "language": self.columns * n_layers,
                        "probability": mean.reshape(-1),
                        "n_positions": np.full(mean.size, int(sel.sum()), dtype=np.int32),
                    }
                )
            )
        return {"language_probs": pl.concat(frames)}

    def finish(self, run: Any) -> dict[str, Any]:
        """``language_probs_summary``: mean over prompts and 95% bootstrap CI per (input
        language, layer, language)."""
        return {"language_probs_summary": summarize(run.table("language_probs"), ["input_language", "layer", "language"], "probability")}

    # ------------------------------------------------------------------ summary
    @classmethod
    def summary(cls, run: Any) -> str:
        """Per input language: the layer where English's mean probability peaks (and its
        value), and the most probable language at the last layer."""
        import polars as pl

        table = run.table("language_probs_summary")
        lines = []
        for (source,), rows in table.sort("input_language", "layer", "language").group_by("input_language", maintain_order=True):
            english = rows.filter(pl.col("language") == "en")
            text = f"  {source}:"
            if english.height:
                peak = english.row(int(english["mean"].arg_max()), named=True)
                text += f" English peaks at layer {peak['layer']} ({peak['mean']:.3f});"
            last = rows.filter(pl.col("layer") == rows["layer"].max())
            top = last.row(int(last["mean"].arg_max()), named=True)
            lines.append(f"{text} last layer {top['layer']}: {top['language']} {top['mean']:.3f}")
        return "\n".join(lines[:12])


    # ------------------------------------------------------------------ plots
    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        import polars as pl

        summary = run.table("language_probs_summary")
        norm = norm_label(run.manifest["options"].get("final_norm", True))
        model_id = run.manifest["model"]["model_id"]
        n = summary.group_by("input_language").agg(pl.col("n").max()).sort("input_language")
        counts = ", ".join(f"{r['input_language']}: {r['n']}" for r in n.iter_rows(named=True))
        return {
            "language_probs": ci_lines(
                summary.with_columns(panel=pl.format("input {}", pl.col("input_language"))),
                color="language",
                facet="panel",
                title=f"Language probability by layer (logit lens, {norm}) · {model_id}",
                subtitle=f"P(language) = p_lens · M, mean over positions then texts ({counts}); band = 95% bootstrap CI",
                y_title="P(language)",
            )
        }


def summarize(frame: Any, keys: list[str], value: str) -> Any:
    """Mean of ``value`` over the rows of each ``keys`` group, with a 95% percentile-bootstrap CI.

    Returns:
        polars rows: ``keys``, ``mean``, ``ci_low``, ``ci_high``, ``n`` (rows in the group).
    """
    import numpy as np
    import polars as pl

    from hubclient.science.stats import bootstrap_ci

    out: dict[str, list[Any]] = {k: [] for k in keys}
    out.update(mean=[], ci_low=[], ci_high=[], n=[])
    # Rows in a canonical order first: the bootstrap resamples by index, so a group's values
    # must come in the same order whatever order an upstream group_by produced them in.
    for group_key, group in frame.sort(frame.columns).group_by(keys, maintain_order=True):
        values = group.get_column(value).to_numpy().astype(np.float64)
        low, high = bootstrap_ci(values)
        for k, v in zip(keys, group_key):
            out[k].append(v)
        out["mean"].append(float(values.mean()))
        out["ci_low"].append(low)
        out["ci_high"].append(high)
        out["n"].append(int(values.size))
    schema = {k: frame.schema[k] for k in keys}
    return pl.DataFrame(out, schema_overrides={**schema, "n": pl.Int64}).sort(keys)


ANALYSIS = LanguageProbs
