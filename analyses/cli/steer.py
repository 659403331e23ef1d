"""``hub intervene steer``: the command (science: :mod:`analyses.steer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from analyses.steer import ANALYSIS, NEGATIVE_WORDS, POSITIVE_WORDS, SteerOptions, run_steer, sentiment_prompts
from hubclient.cli import options as opt
from hubclient.errors import HubError
from hubclient.inputs.data import sentiment_folder
from hubclient.inputs.prompts import read_prompts
from hubclient.runner import RunConfig

__all__ = ["ANALYSIS", "command"]


@opt.analysis_command
def command(
    prompt: opt.Prompt = None,
    prompts: opt.PromptsFile = None,
    dataset: opt.Dataset = None,
    column: opt.Column = None,
    n: opt.N = None,
    sentiment_data: Annotated[Optional[Path], typer.Option(help="Sentiment data folder ({english,spanish,chinese}/*.csv, columns text,label,source): trains the classifier, and gives prompts with --language [default: $HUB_SENTIMENT_DIR, else the data folder's sentiment/ (hub data get sentiment)].", rich_help_panel="Input")] = None,
    language: Annotated[list[str], typer.Option("--language", help="Take prompts from SENTIMENT_DATA/<language>/test.csv (repeatable: english, spanish, chinese).", rich_help_panel="Input")] = [],  # noqa: B006
    label: Annotated[str, typer.Option(help="With --language: rows of this label (negative, neutral, positive, any).", rich_help_panel="Input")] = "negative",
    per_language: Annotated[int, typer.Option(min=1, help="With --language: prompts per language.", rich_help_panel="Input")] = 10,
    prefix_words: Annotated[int, typer.Option(min=1, help="With --language: keep the first N words of each sentence (Chinese: 2N characters).", rich_help_panel="Input")] = 4,
    positive: Annotated[list[str], typer.Option("--positive", help="Positive contrast prompt (repeatable, paired with --negative; any language).", rich_help_panel="Steering")] = ["Good"],  # noqa: B006
    negative: Annotated[list[str], typer.Option("--negative", help="Negative contrast prompt (repeatable).", rich_help_panel="Steering")] = ["Bad"],  # noqa: B006
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layer(s) to add the vector at: 6, 2,6,10 or 2:12:2 (0 = embeddings).", rich_help_panel="Steering")] = "6",
    coeff: Annotated[str, typer.Option("--coeff", "-c", help="Coefficient(s): 5, 0,2,5 or 0:8:2.", rich_help_panel="Steering")] = "5",
    positions: Annotated[str, typer.Option(help="first (ActAdd: vector row i at prompt position i), N (rows from position N), or all (last-token difference at every position and step).", rich_help_panel="Steering")] = "first",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate.", rich_help_panel="Generation")] = 20,
    sample: Annotated[bool, typer.Option("--sample/--greedy", help="Seeded sampling instead of greedy decoding.", rich_help_panel="Generation")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.", rich_help_panel="Generation")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed (batch i uses seed + i).", rich_help_panel="Generation")] = 0,
    positive_words: Annotated[Optional[str], typer.Option(help="Comma-separated positive words for the internal score (default: built-in English/Spanish/Chinese list).", rich_help_panel="Scores")] = None,
    negative_words: Annotated[Optional[str], typer.Option(help="Comma-separated negative words for the internal score.", rich_help_panel="Scores")] = None,
    classifier: Annotated[str, typer.Option(help="Sentiment classifier: char-ngram (trained on --sentiment-data), none, or module:attribute.", rich_help_panel="Scores")] = "char-ngram",
    *,
    config: RunConfig,
) -> None:
    """ActAdd steering: add h_l(positive) − h_l(negative) while generating; sweep layers × coefficients.

    Writes generations.parquet (steered and unsteered), side_by_side.parquet, effects.parquet,
    a manifest (with the classifier's held-out accuracy) and heatmaps of the effect.
    """
    sentiment_data = sentiment_folder(sentiment_data)  # --sentiment-data > $HUB_SENTIMENT_DIR > the data folder's sentiment/
    texts: list[str] = []
    langs: list[str] = []
    if prompt or prompts or dataset:
        texts = read_prompts(prompt, prompts, column, n, dataset=dataset)
        langs = ["unknown"] * len(texts)
    if language:
        if sentiment_data is None:
            raise HubError("--language needs --sentiment-data DIR (the folder with english/, spanish/, chinese/), or run hub data get sentiment")
        more, more_langs = sentiment_prompts(sentiment_data, list(language), label, per_language, prefix_words)
        texts += more
        langs += more_langs
    if not texts:
        raise HubError("no prompts: pass --prompt, --prompts FILE, --dataset NAME, or --sentiment-data DIR --language chinese")
    if classifier == "char-ngram" and sentiment_data is None:
        classifier = "none"
    options = SteerOptions(
        positive=list(positive), negative=list(negative), layers=layer, coeffs=coeff, positions=positions,
        max_new_tokens=max_new_tokens, sample=sample, temperature=temperature, seed=seed, classifier=classifier,
        positive_words=positive_words.split(",") if positive_words else list(POSITIVE_WORDS),
        negative_words=negative_words.split(",") if negative_words else list(NEGATIVE_WORDS),
    )
    opt.report(run_steer(options, texts, config, langs, sentiment_data), ANALYSIS.summary)
