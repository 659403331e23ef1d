"""``hub analyze language-probs``: which language each layer's logit lens is "in" (Wu et al.
2024, Fig. 4; A3 of paper-protocols.md).

Traces: the residual stream ``h_l`` at every layer ``l = 0..L`` (0 = embeddings) at the chosen
positions of every input text.
Reduces (inside the trace): the lens distribution ``p_l`` (Eq. 2) times the token-to-language
matrix ``M`` ``[vocab, n_columns]`` (:mod:`hubclient.science.token_languages`):
``P_l(language) = p_l · M``, one ``[rows, vocab] x [vocab, n_columns]`` product per layer and row
chunk. Only ``[layers, rows, n_columns]`` leaves the trace. ``--lens tuned|patchscope``
(docs/lenses.md) replaces ``p_l`` by the tuned lens' or the patchscope's distribution at the
same rows (:class:`LanguageProbsOptions`).

``M`` (``LanguageProbsOptions.matrix``): ``flores`` (default): token counts of every FLORES-200
language file in the FLORES folder (the ``dev`` split when present, else ``devtest``), uniform
prior, ``1/K`` rows for unseen tokens (:func:`hubclient.science.token_languages.corpus_matrix`,
the paper's construction on another corpus); ``folder:PATH``: the same over a folder of
per-language text files (one text a line, language = file name up to the first dot);
``hf:NAME``: the same over a Hugging Face dataset (one config per language, like the paper's
mC4); ``wordfreq``: the older word-frequency matrix with an ``unknown`` column.

Protocols: ``wu2024`` (the paper's ``global_language_trends.py``): every position INCLUDING
BOS; the lens distribution truncated to ``tokenizer.vocab_size`` ids and renormalised
(``softmax`` over those logits; lines 81-84); final norm only at layer ``L``
(``final_norm="last"``, set by the command); the summary is the pooled mean over all positions
of all texts (``Σ_texts Σ_pos P / #positions``). ``hub`` (default): special tokens (BOS) left
out, the full vocabulary (rows of ``M`` beyond the tokenizer padded: ``unknown`` or ``1/K``),
the mean over texts of each text's mean over positions.

Stores: ``language_probs.parquet``: per prompt, layer and language, the mean of
``P_l(language)`` over the prompt's positions (``n_positions`` of them);
``language_probs_summary.parquet``: per input language, layer and language, the mean with a
95% bootstrap CI over prompts (``wu2024``: pooled over positions, texts resampled).
Draws: for each input language, the input language, English and the top other language of
each layer (the paper's Fig. 4), one colour per language in every figure
(:func:`language_color`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analyses.lenses import LensChoice, init_lens, lens_manifest, patch_batches, prepare_lens
from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.inputs.parallel import flores_codes, read_flores_texts  # noqa: F401 (flores_codes: old import path)
from hubclient.inputs.prompts import Positions
from hubclient.science.lens import decode_layers, lens_label, norm_label
from hubclient.plots import ci_lines  # noqa: F401 (also the old import path analyses.language_probs.ci_lines)

if TYPE_CHECKING:
    from pathlib import Path

# ``Path`` is imported inside the functions that call it: the analysis class travels to NDIF by
# value with every function it reaches, and a module-level ``Path`` would pickle ``pathlib``,
# which NDIF's import allow-list refuses (docs/remote.md).


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
    from pathlib import Path

    lang, sep, file = value.partition("=")
    if not sep or not lang.strip() or not file.strip():
        raise HubError(f"bad --lang {value!r}: use LANG=FILE, e.g. --lang zh=prompts_zh.txt")
    return lang.strip(), Path(file.strip())


# --------------------------------------------------------------------------- matrix corpora
#: ``--matrix`` values besides ``folder:PATH`` and ``hf:NAME``.
MATRIX_SOURCES = ("flores", "wordfreq")
#: The paper's documents per language (mC4, ``compute_tokenizer_language_probabilities.py:186``).
PAPER_DOCS = 100_000


def flores_matrix_folder(folder: Path | None) -> Path:
    """The FLORES files the default matrix counts: ``*.dev`` files in ``folder`` or in its
    sibling ``dev`` folder (``hub data get flores200`` layout) when present, else ``folder``'s
    ``*.devtest`` files.

    Raises:
        HubError: no FLORES folder (naming ``--flores-dir``, ``$HUB_FLORES_DIR``, ``hub data get
            flores200`` and ``--matrix wordfreq``).
    """
    from pathlib import Path

    from hubclient.inputs.parallel import FLORES_ENV, flores_folder

    resolved = flores_folder(folder)
    if resolved is None or not Path(resolved).is_dir():
        raise HubError(f"the token-to-language matrix counts FLORES-200 text: pass --flores-dir DIR (or set {FLORES_ENV}, or run hub data get flores200), or choose --matrix folder:PATH, hf:NAME or wordfreq")
    resolved = Path(resolved)
    for candidate in (resolved, resolved.parent / "dev"):
        if candidate.is_dir() and any(candidate.glob("*.dev")):
            return candidate
    return resolved


def read_corpus_folder(folder: Path, suffix: str | None = None) -> dict[str, list[str]]:
    """``{language: non-empty lines}`` of every file in ``folder`` (language = file name up to
    the first dot), sorted by language; with ``suffix`` only files ending in it.

    Raises:
        HubError: not a folder, or no files.
    """
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"matrix corpus {str(folder)!r} is not a folder; pass a folder of per-language text files (one text a line, e.g. zh.txt)")
    out: dict[str, list[str]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or (suffix and not path.name.endswith(suffix)):
            continue
        language = path.name.split(".")[0]
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        out.setdefault(language, []).extend(lines)
    if not out:
        raise HubError(f"no text files in {folder}; put one file per language there (e.g. en.txt, zh.txt)")
    return out


def read_hf_corpus(name: str, languages: list[str], docs: int = PAPER_DOCS, split: str = "train", column: str = "text") -> dict[str, list[str]]:
    """``{language: the first docs texts}`` of Hugging Face dataset ``name``, one config per
    language (``load_dataset(name, language, split=split, streaming=True)``), like the paper's
    mC4 reading (``load_language``: documents in order until ``docs``).

    Raises:
        HubError: no languages, or a dataset/config that cannot be read (the message names it).
    """
    if not languages:
        raise HubError("--matrix hf:NAME needs --matrix-languages (the dataset configs, one per language)")
    try:
        from datasets import load_dataset
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise HubError("--matrix hf:NAME needs the datasets package: pip install 'hub[hf]'") from exc
    out: dict[str, list[str]] = {}
    for language in languages:
        try:
            stream = load_dataset(name, language, split=split, streaming=True)
            texts = []
            for row in stream:
                texts.append(row[column])
                if len(texts) >= docs:
                    break
        except Exception as exc:  # datasets raises many types; say which dataset failed
            raise HubError(f"cannot read Hugging Face dataset {name!r} config {language!r} ({type(exc).__name__}: {exc}); check the name, the config, --matrix-column and that the Hub is reachable") from exc
        out[language] = texts
    return out


def matrix_corpus(source: str, flores_dir: Path | None = None, languages: list[str] | None = None, docs: int = PAPER_DOCS, column: str = "text") -> dict[str, list[str]]:
    """The corpus of a ``--matrix`` value (``flores``, ``folder:PATH``, ``hf:NAME``).

    Raises:
        HubError: an unknown value, or the errors of the readers.
    """
    from pathlib import Path

    if source == "flores":
        folder = flores_matrix_folder(flores_dir)
        suffix = ".dev" if any(folder.glob("*.dev")) else ".devtest"
        return read_corpus_folder(folder, suffix)
    if source.startswith("folder:"):
        return read_corpus_folder(Path(source[len("folder:"):]))
    if source.startswith("hf:"):
        return read_hf_corpus(source[len("hf:"):], list(languages or []), docs, column=column)
    raise HubError(f"unknown --matrix {source!r}; use flores, folder:PATH, hf:NAME or wordfreq")


# --------------------------------------------------------------------------- analysis
@dataclass
class LanguageProbsOptions(LensChoice):
    """Options of ``language-probs``.

    Attributes:
        languages: ``wordfreq`` matrix only: wordfreq codes of the columns (``unknown`` added).
        input_languages: each prompt's input-language label (``[prompts]``).
        final_norm: ``True``/``False``/``"last"`` (:func:`hubclient.science.lens.decode_layers`).
        positions: ``all`` (the paper's Fig. 4), ``last``, or indices such as ``0,3,-1``
            (:class:`hubclient.inputs.Positions`); special tokens are left out under ``hub``.
        protocol: ``hub`` or ``wu2024`` (module docstring).
        matrix: ``flores``, ``folder:PATH``, ``hf:NAME`` or ``wordfreq`` (module docstring).
        flores_dir: the FLORES folder of the ``flores`` matrix (``None``: ``$HUB_FLORES_DIR`` or
            the data folder).
        matrix_languages / matrix_docs / matrix_column: ``hf:NAME`` only: configs, documents
            per language, text column.
        lens / tuned_lens / patch_prompt / patch_placeholder: the ``--lens`` fields
            (:class:`analyses.lenses.LensChoice`, docs/lenses.md); the tuned lens and the
            patchscope need ``final_norm=True``.
    """

    languages: list[str] = field(default_factory=list)
    input_languages: list[str] = field(default_factory=list)
    final_norm: "bool | str" = True
    positions: str = "all"
    protocol: str = "hub"
    matrix: str = "flores"
    flores_dir: str | None = None
    matrix_languages: list[str] = field(default_factory=list)
    matrix_docs: int = PAPER_DOCS
    matrix_column: str = "text"


class LanguageProbs(Analysis):
    """``P_l(language) = p_lens · M`` per layer, averaged over positions (module docstring).

    Args:
        options: see :class:`LanguageProbsOptions`.
        frequencies: ``{language: {word: frequency}}`` to build the ``wordfreq`` matrix from
            instead of wordfreq (tests, custom lists); given, it selects the word-frequency
            matrix whatever ``options.matrix`` says.
        corpus: ``{language: texts}`` to count instead of ``options.matrix``'s corpus (tests).
        cache: cache ``M`` on disk (see :mod:`hubclient.science.token_languages`).

    Raises:
        HubError: an unknown protocol, or bad ``--lens`` options
            (:func:`hubclient.science.lens.check_lens_choice`).
    """

    name = "language-probs"
    tables = {"language_probs": ["prompt", "layer", "language"]}

    def __init__(self, options: LanguageProbsOptions, frequencies: Any = None, cache: bool = True, corpus: Any = None):
        super().__init__(options)
        if options.protocol not in ("hub", "wu2024"):
            raise HubError(f"unknown protocol {options.protocol!r}; use hub or wu2024")
        init_lens(self)
        self._positions = Positions.parse(options.positions)
        self.frequencies = frequencies
        self.corpus = corpus
        self.cache = cache
        self.matrix: Any = None
        self.columns: list[str] = []
        self.special: set[int] = set()
        self.vocab_limit: int | None = None

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Build (or load) ``M`` for the model's tokenizer; note the special token ids.

        Raises:
            HubError: no/duplicate languages, a language without a frequency table, the
                errors of the matrix corpus readers (:func:`matrix_corpus`), or a lens that does
                not fit the model (:func:`analyses.lenses.prepare_lens`).
        """
        import torch

        from hubclient.science.token_languages import corpus_matrix, language_matrix

        if len(self.options.input_languages) != len(prompts):
            raise HubError(f"{len(self.options.input_languages)} input-language labels for {len(prompts)} prompts")
        prepare_lens(self, model)
        if self.corpus is None and (self.frequencies is not None or self.options.matrix == "wordfreq"):
            matrix, self.columns = language_matrix(model.tokenizer, self.options.languages, self.frequencies, cache=self.cache)
            filler = torch.zeros(matrix.shape[1])
            filler[-1] = 1
        else:
            corpus = self.corpus
            if corpus is None:
                corpus = matrix_corpus(self.options.matrix, self.options.flores_dir, self.options.matrix_languages, self.options.matrix_docs, self.options.matrix_column)
            matrix, self.columns = corpus_matrix(model.tokenizer, corpus, cache=self.cache)
            filler = torch.full((matrix.shape[1],), 1.0 / matrix.shape[1])
        vocab = model.vocab_size
        self.vocab_limit = None
        if self.options.protocol == "wu2024":
            self.vocab_limit = min(int(model.tokenizer.vocab_size), vocab)
            matrix = matrix[: self.vocab_limit]
            vocab = self.vocab_limit
        if matrix.shape[0] < vocab:  # lm_head rows beyond the matrix (padding, added tokens)
            pad = filler.repeat(vocab - matrix.shape[0], 1)
            self.matrix = torch.cat([torch.from_numpy(matrix), pad])
        else:
            self.matrix = torch.from_numpy(matrix[:vocab])
        self.special = set() if self.options.protocol == "wu2024" else set(model.tokenizer.all_special_ids)
        self._tokens: dict[int, list[int]] = {}
        for i, ids in enumerate(tokens):
            self._tokens[i] = list(ids)

    def describe_run(self) -> dict[str, Any]:
        """The matrix's columns, under ``wu2024`` the vocabulary the lens is truncated to, and
        the lens (:func:`analyses.lenses.lens_manifest`)."""
        return {"matrix_columns": list(self.columns), "vocab_limit": self.vocab_limit, **lens_manifest(self)}

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> Any:
        """The runner's batches (``None``), or with ``--lens patchscope`` the same batches each
        with its target-prompt copies (:func:`analyses.lenses.patch_batches`)."""
        return patch_batches(self, model, tokens, batch_size)

    def positions(self, n_tokens: int, prompt_index: int) -> list[int]:
        """The ``--positions`` of the prompt; under ``hub`` special tokens (BOS) are skipped,
        under ``wu2024`` every position counts; ``last``: the last usable token."""
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
        """``[layers+1, rows, n_columns]`` language probabilities of the selected rows."""
        import torch

        matrix = self.matrix.to(model.device)
        limit = self.vocab_limit

        def reduce(logits: Any, rows: Any) -> Any:
            if limit is not None:
                logits = logits[:, :limit]  # the paper: truncate to tokenizer.vocab_size, renormalise
            return torch.softmax(logits, dim=-1) @ matrix.to(device=logits.device, dtype=logits.dtype)

        return {"language_probs": decode_layers(model, batch, reduce, self.options.final_norm, None, self.lens_spec)}

    # ------------------------------------------------------------------ rows
    def rows(self, model: Any, batch: Batch, saved: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        import polars as pl

        probs = saved["language_probs"].double().numpy()  # [layers, rows, n_columns]
        n_layers = probs.shape[0]
        row_prompt = np.asarray(batch.row_prompt, dtype=np.int64)
        frames = []
        for prompt in np.unique(row_prompt).tolist():
            sel = row_prompt == prompt
            mean = probs[:, sel, :].mean(axis=1)  # [layers, n_columns]
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
        """``language_probs_summary`` per (input language, layer, language): ``wu2024``: the
        pooled mean over all positions (:func:`pooled_summary`); ``hub``: the mean over prompts
        of each prompt's mean (:func:`summarize`); both with a 95% bootstrap CI over prompts."""
        import polars as pl

        keys = ["input_language", "layer", "language"]
        table = run.table("language_probs")
        if self.options.protocol == "wu2024":
            frame = table.with_columns(total=pl.col("probability") * pl.col("n_positions"))
            return {"language_probs_summary": pooled_summary(frame, keys, "total", "n_positions")}
        return {"language_probs_summary": summarize(table, keys, "probability")}

    # ------------------------------------------------------------------ summary
    @classmethod
    def summary(cls, run: Any) -> str:
        """Per input language: the layer where English's mean probability peaks (and its
        value), and the most probable language at the last layer."""
        import polars as pl

        table = run.table("language_probs_summary")
        columns = sorted(set(table["language"]))
        english = english_column(columns)
        lines = []
        for (source,), rows in table.sort("input_language", "layer", "language").group_by("input_language", maintain_order=True):
            en_rows = rows.filter(pl.col("language") == english) if english else rows.clear()
            text = f"  {source}:"
            if en_rows.height:
                peak = en_rows.row(int(en_rows["mean"].arg_max()), named=True)
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
        options = run.manifest["options"]
        norm = norm_label(options.get("final_norm", True))
        lens = lens_label(options)
        model = model_label(run.manifest["model"]["model_id"])
        shown = fig4_lines(summary)
        n = summary.group_by("input_language").agg(pl.col("n").max()).sort("input_language")
        counts = ", ".join(f"{r['input_language']}: {r['n']}" for r in n.iter_rows(named=True))
        protocol = options.get("protocol", "hub")
        matrix = options.get("matrix", "wordfreq")
        how = "pooled over all positions incl. BOS (Wu et al. 2024 protocol)" if protocol == "wu2024" else "mean over positions (BOS skipped), then texts"
        return {
            "language_probs": language_lines(
                shown,
                title=f"Language probability by layer ({lens[0].lower() + lens[1:]}, {norm}) · {model}",
                subtitle=[
                    f"P(lang) = p_lens · M, M from {matrix} token {'counts' if matrix != 'wordfreq' else 'word frequencies'}; {how}; texts {counts}",
                    "solid: the input language; dashed: English; dotted: every language that is the top other language at some layer; band = 95% bootstrap CI over texts",
                ],
            )
        }


def english_column(columns: list[str]) -> str | None:
    """The English column of a matrix (``en`` or ``eng_Latn``…), or ``None``."""
    return match_column("en", columns)


def match_column(label: str, columns: list[str]) -> str | None:
    """The matrix column of an input-language label: the same name, else the first column of
    the same language (ISO 639 base: ``zho_Hans`` ~ ``zh``, ``eng_Latn`` ~ ``en``), else
    ``None``."""
    if label in columns:
        return label
    base = _base(label)
    for column in columns:
        if base and _base(column) == base:
            return column
    return None


def _base(code: str) -> str:
    import langcodes

    part = code.strip().replace("-", "_").split("_")[0]
    try:
        return langcodes.Language.get(part).language or part
    except Exception:  # an unparsable label matches only itself
        return part


def fig4_lines(summary: Any) -> Any:
    """The rows of the paper's Fig. 4 per input language: its own language, English, and every
    other language that is the most probable of the rest at some layer (each a whole line, so
    that a language keeps one colour), with a ``role`` column."""
    import polars as pl

    columns = sorted(set(summary["language"]))
    english = english_column(columns)
    parts = []
    for (source,), rows in summary.group_by("input_language", maintain_order=True):
        own = match_column(source, columns)
        keep = [c for c in (own, english) if c]
        rest = rows.filter(~pl.col("language").is_in(keep))
        if rest.height:
            tops = rest.sort("mean", descending=True).group_by("layer").first()["language"].unique().to_list()
        else:
            tops = []
        chosen = list(dict.fromkeys(keep + sorted(tops)))
        role = {c: "input" if c == own else "English" if c == english else "top other" for c in chosen}
        parts.append(rows.filter(pl.col("language").is_in(chosen)).with_columns(role=pl.col("language").replace_strict(role, default="")))
    return pl.concat(parts) if parts else summary.with_columns(role=pl.lit(""))


def language_color(language: str) -> str:
    """The colour of ``language`` in every figure: :func:`hubclient.plots.series_colour` (the
    project's fixed language colours, ``zho_Hans`` ~ ``zh``), trying the ISO 639-1 code of a
    FLORES code the table lacks."""
    from hubclient.plots import LANGUAGE_COLOURS, series_colour

    if language.lower() not in LANGUAGE_COLOURS and _base(language) in LANGUAGE_COLOURS:
        return series_colour(_base(language))
    return series_colour(language)


def language_lines(frame: Any, title: str, subtitle: str, y_title: str = "P(language)") -> Any:
    """Language probability by layer, one panel per input language, one line (and CI band)
    per language in its fixed colour (:func:`language_color`); solid for the input language,
    dashed for English, dotted for the top other languages (``role`` of :func:`fig4_lines`)."""
    import altair as alt

    languages = sorted(set(frame["language"]))
    colours: list[str] = []
    for language in languages:  # two languages that would share a colour get distinct ones
        colour = language_color(language)
        if colour in colours:
            from hubclient.plots import PALETTE

            colour = next((c for c in PALETTE if c not in colours), colour)
        colours.append(colour)
    scale = alt.Scale(domain=languages, range=colours)
    base = alt.Chart(frame).encode(x=alt.X("layer:Q", title="layer (0 = embeddings)"))
    legend = alt.Legend(symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=3, symbolFillColor="transparent")
    band = base.mark_area(opacity=0.15).encode(y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q", color=alt.Color("language:N", scale=scale, title="language", legend=legend))
    tooltip = ["layer", "language", "role", alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("ci_low:Q", format=".4f"), alt.Tooltip("ci_high:Q", format=".4f"), "n"]
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q"), tooltip=tooltip, color=alt.Color("language:N", scale=scale, title="language", legend=legend),
        strokeDash=alt.StrokeDash("role:N", scale=alt.Scale(domain=["input", "English", "top other"], range=[[1, 0], [6, 2], [2, 2]]), legend=None),
    )
    chart = (band + line).properties(width=300, height=200)
    return chart.facet(facet=alt.Facet("input_language:N", title=None), columns=3).properties(title=alt.TitleParams(title, subtitle=subtitle))


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


def pooled_summary(frame: Any, keys: list[str], total: str, count: str, n_boot: int = 1000, seed: int = 0) -> Any:
    """Pooled mean over every unit (position) of each ``keys`` group, with a 95% CI from
    resampling the clusters (texts): ``mean = sum(total) / sum(count)``.

    This is the semantic hub code's average (A2: the mean of the log-probabilities of all
    (text, position) pairs; A3: the sum over texts and positions divided by the number of
    positions, paper-protocols.md A2/A3). Positions of one text are not independent, so the CI
    resamples texts with replacement (a cluster bootstrap of the ratio estimator; percentile
    interval, ``numpy.random.default_rng(seed)``).

    Args:
        frame: one row per (group, text): ``keys``, ``total`` (the sum of the values over the
            text's positions) and ``count`` (its number of positions, > 0).
        keys: group columns.
        total / count: column names.

    Returns:
        polars rows: ``keys``, ``mean``, ``ci_low``, ``ci_high``, ``n`` (texts in the group).

    Raises:
        HubError: a group whose counts sum to 0.
    """
    import numpy as np
    import polars as pl

    out: dict[str, list[Any]] = {k: [] for k in keys}
    out.update(mean=[], ci_low=[], ci_high=[], n=[])
    for group_key, group in frame.sort(frame.columns).group_by(keys, maintain_order=True):
        totals = group.get_column(total).to_numpy().astype(np.float64)
        counts = group.get_column(count).to_numpy().astype(np.float64)
        if counts.sum() <= 0:
            raise HubError(f"no positions in group {group_key}")
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, totals.size, size=(n_boot, totals.size))
        with np.errstate(invalid="ignore", divide="ignore"):
            means = totals[idx].sum(axis=1) / counts[idx].sum(axis=1)
        low, high = np.quantile(means, [0.025, 0.975])
        for k, v in zip(keys, group_key):
            out[k].append(v)
        out["mean"].append(float(totals.sum() / counts.sum()))
        out["ci_low"].append(float(low))
        out["ci_high"].append(float(high))
        out["n"].append(int(totals.size))
    schema = {k: frame.schema[k] for k in keys}
    return pl.DataFrame(out, schema_overrides={**schema, "n": pl.Int64}).sort(keys)


def model_label(model_id: str) -> str:
    """The model's name for plot titles: a Hub id as it is, a local folder by its last part
    (no local paths in titles)."""
    from pathlib import Path

    text = str(model_id).rstrip("/\\")
    if "/" in text and (text.startswith(("/", ".", "~")) or Path(text).exists()):
        return Path(text).name
    return text
