"""``hub intervene steer``: the command (science: :mod:`analyses.steer`).

Modes: prompts (``--prompt``/``--prompts``/``--dataset``/``--language``), the semantic hub A16
preset (``--protocol wu2024``), the A18 code task (``--task range-calls``) and the A19 vision
intervention on image models (``--task colour-edit``, :mod:`analyses.media_steer`: a replacement
edit, not an addition) and the A20 audio intervention on audio models (``--task animal-class``,
:mod:`analyses.audio_steer`: an addition, forward pass only, normalised P(Yes) read out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from analyses.steer import ANALYSIS, NEGATIVE_WORDS, POSITIVE_WORDS, SteerOptions, run_steer, sentiment_prompts
from hubclient.cli import options as opt
from hubclient.errors import HubError
from hubclient.inputs.data import mbpp_file, sentiment_folder
from hubclient.inputs.prompts import read_prompts
from hubclient.runner import RunConfig

__all__ = ["ANALYSIS", "command", "wu2024_pairs"]

PROTOCOLS = ("wu2024",)
TASKS = ("range-calls", "colour-edit", "animal-class")


def wu2024_pairs(languages: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The A16 contrast pairs for prompts in ``languages``: English ``Good``/``Bad`` in both
    directions (pos, then neg = add and sub swapped), then each target language's pair in both
    directions (paper-protocols.md A16; ``multilingual/intervention.py:94-133``).

    Returns:
        (positive prompts, negative prompts, the language of each pair).
    """
    from hubclient.inputs.sentiment import STEERING_WORDS

    pos, neg, langs = [], [], []
    for language in ["english", *languages]:
        if language in langs:
            continue
        good, bad = STEERING_WORDS[language]
        pos += [good, bad]
        neg += [bad, good]
        langs += [language, language]
    return pos, neg, langs


def colour_edit(pairs: Path | None, template: str | None, layer: str | None, max_new_tokens: int | None, n: int | None, config: RunConfig) -> None:
    """``--task colour-edit`` (paper-protocols.md A19, :mod:`analyses.media_steer`): check the
    inputs before loading a model, write the 48 two-colour cases when no pairs file is given,
    run and report.

    ``--remote`` works (the processor runs here, the pixel values, replacement vectors and
    positions travel with each request; checked against the strict test server).

    Raises:
        HubError: a bad template or pairs file (missing case columns, bad side/old/new), all
            before a model is loaded.
    """
    from analyses.media_steer import ColourEdit, ColourEditOptions, check_cases, run_colour_edit
    from hubclient.exec.multimodal import check_template
    from hubclient.inputs.media import read_pairs, write_two_colours

    if template is not None:
        check_template(template)
    if pairs is None:
        pairs = write_two_colours(Path(config.out) / "two-colours")
    cases = read_pairs(pairs, n)
    check_cases(cases)
    options = ColourEditOptions(starts=layer or "all", max_new_tokens=max_new_tokens or 15, template=template)
    opt.report(run_colour_edit(options, cases, config), ColourEdit.summary)


def animal_class(pairs: Path | None, template: str, layer: str | None, coeff: str | None, n: int | None, seed: int, config: RunConfig) -> None:
    """``--task animal-class`` (paper-protocols.md A20, :mod:`analyses.audio_steer`): check the
    inputs before loading a model (template, strengths, layer syntax, pairs file with at least
    one animal label), say how many rows were skipped, run and report.

    ``--remote`` works (the processor runs here; features, deltas and positions travel with
    each request; only ``[P(Yes), P(No)]`` per row comes back; checked on the strict test server).

    Raises:
        HubError: no ``--pairs``, a bad template, ``--coeff`` or ``--layer`` (not one integer
            >= 1), a pairs file without animal labels, ``--n`` < 1, all before a model is loaded.
    """
    from analyses.audio_steer import AnimalClass, AnimalClassOptions, animal_clips, parse_strengths, run_animal_class
    from hubclient.exec.multimodal import check_template
    from hubclient.inputs.media import read_pairs

    if pairs is None:
        raise HubError("--task animal-class needs --pairs FILE: VGGSound clips, caption = the VGGSound label (write it with "
                       "hub media vggsound vggsound.csv wav/ -o audio.csv; non-animal rows are skipped)")
    check_template(template)
    strengths = coeff or "10:100:10"
    parse_strengths(strengths)
    chosen: int | None = None
    if layer is not None:
        try:
            chosen = int(layer)
        except ValueError:
            raise HubError(f"--layer {layer!r}: --task animal-class adds at one hub layer, an integer 1..L (the paper: 14 of 40; default round(14·L/40))") from None
        if chosen < 1:
            raise HubError(f"--layer {chosen}: the audio intervention adds at a block output, hub layer 1..L (0 is the embeddings)")
    rows = read_pairs(pairs)
    clips, skipped = animal_clips(rows, 1000 if n is None else n)
    typer.echo(f"{len(clips)} animal clips from {pairs} ({skipped} of its {len(rows)} rows skipped: not one of the 56 animal labels)")
    options = AnimalClassOptions(layer=chosen, strengths=strengths, seed=seed, template=template)
    opt.report(run_animal_class(options, rows, config, n=1000 if n is None else n), AnimalClass.summary)


@opt.analysis_command
def command(
    prompt: opt.Prompt = None,
    prompts: opt.PromptsFile = None,
    dataset: opt.Dataset = None,
    column: opt.Column = None,
    n: opt.N = None,
    protocol: Annotated[Optional[str], typer.Option(help="wu2024: the semantic hub sentiment steering (paper-protocols.md A16): --per-language (default 1000) random.seed(0) training rows per --language (default chinese and spanish) with the language-keeping prefix; English and target-language Good/Bad vectors in both directions at round(17·L/32) (TL resid_pre 17 = hub layer 17 on 32-layer models; 10 on Gemma-3-270m), first positions, c=5; T=1, top-p 0.3, frequency penalty 1, 32 tokens, seeds 0:9; three-class classifier, perplexity and relevance under the model itself. Options given explicitly override the preset.", rich_help_panel="Input")] = None,
    task: Annotated[Optional[str], typer.Option(help="range-calls: MBPP one-argument range( prompts (paper-protocols.md A18), scored range(x) -> range(0, x); use with --vector unembed:start,end --positions last. colour-edit: the vision intervention (A19) on an image model (Chameleon, the paper's; LLaVA-style, Gemma 3): at the image positions of one half REPLACE the residual stream by W_U[new] − W_U[old] at hub layers s..L for each start layer s in --layer [default: all], greedy --max-new-tokens [default: 15]; cases from --pairs (default: the 48 two-colour cases, written under --out). animal-class: the audio intervention (A20) on an audio model (Qwen2-Audio): ADD s·(W_U[new] − W_U[old]) at the audio positions of hub layer --layer [default: round(14·L/40); the paper: pyvene 13 = hub 14 of 40] for each strength s in --coeff [default: 10:100:10], new = a --seed-ed random animal word of the other class (mammal/non-mammal), forward pass only; reads P(Yes)/(P(Yes)+P(No)) at the last position; clips from --pairs (caption = VGGSound label; the first --n [default: 1000] animal clips).", rich_help_panel="Input")] = None,
    pairs: Annotated[Optional[Path], typer.Option(help="--task colour-edit: pairs file (.csv/.jsonl) with columns media, caption, top, bottom, side, old, new, one row per case [default: the paper's 48 two-colour cases, written to OUT/two-colours/]. --task animal-class: pairs file with columns media, caption = the VGGSound label (rows without one of the 56 animal labels are skipped).", rich_help_panel="Input")] = None,
    media_template: Annotated[Optional[str], typer.Option(help="--task colour-edit / animal-class: the text prompt, {media} where the image or audio goes ('chat:…' uses the model's chat template) [default: colour-edit on Chameleon the paper's 'What are the two colors in the image?\n{media}' (its processor appends the sep token), else 'USER: {media}\nWhat are the two colors in the image? ASSISTANT:'; animal-class SALMONN's 'USER: {media} Is this animal a mammal?\nASSISTANT:'].", rich_help_panel="Input", show_default=False)] = None,
    mbpp: Annotated[Optional[Path], typer.Option(help="MBPP JSONL for --task range-calls [default: $HUB_MBPP, else the data folder's mbpp/mbpp.jsonl].", rich_help_panel="Input")] = None,
    sentiment_data: Annotated[Optional[Path], typer.Option(help="Sentiment data folder ({english,spanish,chinese}/*.csv, columns text,label,source): trains the classifier, and gives prompts with --language [default: $HUB_SENTIMENT_DIR, else the data folder's sentiment/ (hub data get sentiment)].", rich_help_panel="Input")] = None,
    language: Annotated[list[str], typer.Option("--language", help="Take prompts from SENTIMENT_DATA/<language>/test.csv (repeatable: english, spanish, chinese); with --protocol wu2024 from the training split.", rich_help_panel="Input")] = [],  # noqa: B006
    label: Annotated[str, typer.Option(help="With --language: rows of this label (negative, neutral, positive, any).", rich_help_panel="Input")] = "negative",
    per_language: Annotated[Optional[int], typer.Option(min=1, help="With --language: prompts per language [default: 10; --protocol wu2024: 1000].", rich_help_panel="Input")] = None,
    prefix_words: Annotated[int, typer.Option(min=1, help="With --language: keep the first N words of each sentence (Chinese: 2N characters).", rich_help_panel="Input")] = 4,
    positive: Annotated[list[str], typer.Option("--positive", help="Positive contrast prompt (repeatable, paired with --negative; any language) [default: Good, unless --vector is given].", rich_help_panel="Steering")] = [],  # noqa: B006
    negative: Annotated[list[str], typer.Option("--negative", help="Negative contrast prompt (repeatable) [default: Bad].", rich_help_panel="Steering")] = [],  # noqa: B006
    vector: Annotated[list[str], typer.Option("--vector", help="unembed:WORD_A,WORD_B: the vector W_U[first token of A] − W_U[first token of B] (repeatable; paper-protocols.md A18-A20), added at --layer (pyvene block_output l = hub layer l+1).", rich_help_panel="Steering")] = [],  # noqa: B006
    layer: Annotated[Optional[str], typer.Option("--layer", "-l", help="Layer(s) to add the vector at: 6, 2,6,10 or 2:12:2 (0 = embeddings; layer l = output of block l) [default: 6; --protocol wu2024: round(17·L/32); --task animal-class: one layer, floor(14·L/40 + 0.5)].", rich_help_panel="Steering")] = None,
    coeff: Annotated[Optional[str], typer.Option("--coeff", "-c", help="Coefficient(s): 5, 0,2,5 or 0:8:2 [default: 5; --task animal-class: the strengths s, 10:100:10].", rich_help_panel="Steering")] = None,
    positions: Annotated[Optional[str], typer.Option(help="first (ActAdd: vector row i at prompt position i), last (the last row at each prompt's last token), N (rows from position N), or all (last-token difference at every position and step) [default: first; --task range-calls: last].", rich_help_panel="Steering")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help="Tokens to generate [default: 20; --protocol/--task: 32].", rich_help_panel="Generation")] = None,
    sample: Annotated[bool, typer.Option("--sample/--greedy", help="Seeded sampling instead of greedy decoding.", rich_help_panel="Generation")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.", rich_help_panel="Generation")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed with --sample (batch i uses seed + i); --task animal-class: the seed of the new-word draws (numpy default_rng).", rich_help_panel="Generation")] = 0,
    seeds: Annotated[Optional[str], typer.Option(help="Seeds (0:9, 0,3): every prompt × condition is sampled once per seed, each row from its own generator seeded with it (TransformerLens order: temperature, --freq-penalty, --top-p) [--protocol wu2024: 0:9].", rich_help_panel="Generation")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="With --seeds: nucleus mass (TransformerLens rule) [default: 1; --protocol wu2024: 0.3].", rich_help_panel="Generation")] = None,
    freq_penalty: Annotated[Optional[float], typer.Option(help="With --seeds: frequency penalty, logits − penalty × count of the token so far (prompt included) [default: 0; --protocol wu2024: 1].", rich_help_panel="Generation")] = None,
    positive_words: Annotated[Optional[str], typer.Option(help="Comma-separated positive words for the internal score (default: built-in English/Spanish/Chinese list).", rich_help_panel="Scores")] = None,
    negative_words: Annotated[Optional[str], typer.Option(help="Comma-separated negative words for the internal score.", rich_help_panel="Scores")] = None,
    include_steering_words: Annotated[bool, typer.Option("--include-steering-words", help="Let the internal score count the tokens of the steering words themselves (left out by default).", rich_help_panel="Scores")] = False,
    classifier: Annotated[Optional[str], typer.Option(help="Sentiment classifier: char-ngram (binary, trained on --sentiment-data), char-ngram3 (positive/neutral/negative), hf:PATH (a local transformers sequence classifier with pos…/neg… labels, e.g. the paper's distilbert-base-multilingual-cased-sentiments-student), none, or module:attribute [default: char-ngram; --protocol wu2024: char-ngram3].", rich_help_panel="Scores")] = None,
    perplexity: Annotated[Optional[str], typer.Option(help="self: perplexity of each continuation under the model itself, unsteered; none [--protocol wu2024: self].", rich_help_panel="Scores")] = None,
    relevance: Annotated[Optional[str], typer.Option(help="self: cosine of mean final hidden states of prompt and continuation under the model itself; none [--protocol wu2024: self].", rich_help_panel="Scores")] = None,
    *,
    config: RunConfig,
) -> None:
    """Steering: add ActAdd h_l(positive) − h_l(negative) or W_U[a] − W_U[b] while generating; sweep layers × coefficients (× seeds).

    Writes generations.parquet (steered and unsteered), side_by_side.parquet, effects.parquet,
    with --seeds seed_summary.parquet, with --task range-calls range_items/range_calls.parquet,
    a manifest (with the classifier's held-out accuracy) and plots. --task colour-edit writes
    generations/success_rates.parquet; --task animal-class scores, clip_strengths and
    class_strengths.parquet.
    """
    from hubclient.inputs.sentiment import protocol_prompts

    if task == "colour-edit":
        opt.reject("steer --task colour-edit", {
            "--prompt": bool(prompt), "--prompts": prompts is not None, "--dataset": dataset is not None, "--protocol": protocol is not None,
            "--language": bool(language), "--positive": bool(positive), "--negative": bool(negative), "--vector": bool(vector),
            "--coeff": coeff is not None, "--positions": positions is not None, "--sample": sample, "--seeds": seeds is not None,
            "--top-p": top_p is not None, "--freq-penalty": freq_penalty is not None, "--mbpp": mbpp is not None,
            "--classifier": classifier is not None, "--perplexity": perplexity is not None, "--relevance": relevance is not None,
        })
        colour_edit(pairs, media_template, layer, max_new_tokens, n, config)
        return
    if task == "animal-class":
        from analyses.audio_steer import DEFAULT_TEMPLATE

        opt.reject("steer --task animal-class", {
            "--prompt": bool(prompt), "--prompts": prompts is not None, "--dataset": dataset is not None, "--protocol": protocol is not None,
            "--language": bool(language), "--positive": bool(positive), "--negative": bool(negative), "--vector": bool(vector),
            "--positions": positions is not None, "--max-new-tokens": max_new_tokens is not None, "--sample": sample, "--seeds": seeds is not None,
            "--top-p": top_p is not None, "--freq-penalty": freq_penalty is not None, "--mbpp": mbpp is not None,
            "--classifier": classifier is not None, "--perplexity": perplexity is not None, "--relevance": relevance is not None,
            "--sentiment-data": sentiment_data is not None, "--positive-words": positive_words is not None,
            "--negative-words": negative_words is not None, "--include-steering-words": include_steering_words,
        })
        animal_class(pairs, media_template or DEFAULT_TEMPLATE, layer, coeff, n, seed, config)
        return
    if pairs is not None:
        raise HubError("--pairs applies to --task colour-edit and --task animal-class only")
    if media_template is not None:
        raise HubError("--media-template applies to --task colour-edit and --task animal-class only")
    if protocol is not None and protocol not in PROTOCOLS:
        raise HubError(f"unknown --protocol {protocol!r}; choose {', '.join(PROTOCOLS)}")
    if task is not None and task not in TASKS:
        raise HubError(f"unknown --task {task!r}; choose {', '.join(TASKS)}")
    if protocol and task:
        raise HubError("--protocol wu2024 (sentiment steering) and --task range-calls are separate experiments; give one")
    if task:
        opt.reject(f"steer --task {task}", {"--prompt": bool(prompt), "--prompts": prompts is not None, "--dataset": dataset is not None,
                                             "--language": bool(language), "--sentiment-data": sentiment_data is not None})
    if protocol:
        opt.reject(f"steer --protocol {protocol}", {"--prompt": bool(prompt), "--prompts": prompts is not None, "--dataset": dataset is not None,
                                                     "--positive": bool(positive), "--negative": bool(negative), "--vector": bool(vector), "--sample": sample})
    sentiment_data = sentiment_folder(sentiment_data)  # --sentiment-data > $HUB_SENTIMENT_DIR > the data folder's sentiment/
    texts: list[str] = []
    langs: list[str] = []
    pair_languages = None
    if task == "range-calls":
        from hubclient.inputs.tasks.range_calls import range_calls

        path = mbpp_file(mbpp)
        if path is None:
            raise HubError("--task range-calls needs --mbpp PATH/mbpp.jsonl (or $HUB_MBPP, or hub data get mbpp)")
        calls = range_calls(path)
        if n is not None:
            calls = calls[:n]
        texts = [c.prompt for c in calls]
        langs = ["python"] * len(texts)
    elif protocol == "wu2024":
        if sentiment_data is None:
            raise HubError("--protocol wu2024 needs --sentiment-data DIR (the folder with spanish/, chinese/), or run hub data get sentiment")
        chosen = list(language) or ["chinese", "spanish"]
        for lang in chosen:
            more, _, _ = protocol_prompts(sentiment_data, lang, per_language or 1000)
            texts += more
            langs += [lang] * len(more)
        positive, negative, pair_languages = wu2024_pairs(chosen)
    else:
        if prompt or prompts or dataset:
            texts = read_prompts(prompt, prompts, column, n, dataset=dataset)
            langs = ["unknown"] * len(texts)
        if language:
            if sentiment_data is None:
                raise HubError("--language needs --sentiment-data DIR (the folder with english/, spanish/, chinese/), or run hub data get sentiment")
            more, more_langs = sentiment_prompts(sentiment_data, list(language), label, per_language or 10, prefix_words)
            texts += more
            langs += more_langs
    if not texts:
        raise HubError("no prompts: pass --prompt, --prompts FILE, --dataset NAME, --sentiment-data DIR --language chinese, --protocol wu2024 or --task range-calls")
    if not positive and not negative and not vector:
        positive, negative = ["Good"], ["Bad"]
    paper = protocol == "wu2024"
    if classifier is None:
        classifier = "char-ngram3" if paper else ("none" if task else "char-ngram")
    if classifier.startswith("char-ngram") and sentiment_data is None:
        classifier = "none"
    if seeds is None and paper:
        seeds = "0:9"
    if seeds is None and (top_p is not None or freq_penalty is not None):
        raise HubError("--top-p and --freq-penalty act through the per-row sampler: give --seeds (e.g. --seeds 0:9)")
    options = SteerOptions(
        positive=list(positive), negative=list(negative), unembed=list(vector),
        layers=layer or ("wu2024" if paper else "6"), coeffs=coeff or "5",
        positions=positions or ("last" if task else "first"),
        max_new_tokens=max_new_tokens or (32 if (paper or task) else 20), sample=sample, temperature=temperature, seed=seed,
        seeds=seeds, top_p=top_p if top_p is not None else (0.3 if paper else 1.0),
        freq_penalty=freq_penalty if freq_penalty is not None else (1.0 if paper else 0.0),
        classifier=classifier, pair_languages=pair_languages, exclude_steering_words=not include_steering_words,
        perplexity=perplexity or ("self" if paper else "none"), relevance=relevance or ("self" if paper else "none"),
        task=task, protocol=protocol,
        positive_words=positive_words.split(",") if positive_words else list(POSITIVE_WORDS),
        negative_words=negative_words.split(",") if negative_words else list(NEGATIVE_WORDS),
    )
    opt.report(run_steer(options, texts, config, langs, sentiment_data), ANALYSIS.summary)
