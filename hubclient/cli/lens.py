"""``hub lens …``: train and evaluate tuned lenses (science: :mod:`hubclient.science.tuned_lens`).

``hub lens train`` learns the affine translators of a tuned lens (Belrose et al. 2023) with the
tuned-lens package's loss, optimiser and schedule on a text folder (FLORES-200 by default),
with a progress bar, snapshots (``--checkpoint-every``, ``--resume``) and a time limit, saves
the lens in the package's format and reports the held-out KL per layer against the logit lens.
``hub lens eval`` reports that KL for any saved lens (hub's or the package's).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hubclient.cli import options as opt
from hubclient.errors import HubError

lens_app = typer.Typer(help="Tuned lenses: train one (tuned-lens package format), evaluate held-out KL against the logit lens (docs/lenses.md).", no_args_is_help=True)

Text = Annotated[Optional[Path], typer.Option("--text", help="Folder of text files (one text a line) to train and evaluate on [default: the FLORES-200 folder: --flores-dir, $HUB_FLORES_DIR or the data folder].", rich_help_panel="Data")]
HeldOut = Annotated[float, typer.Option(help="Fraction of each file's last lines held out for the KL evaluation (for FLORES: the same sentence ids in every language).", rich_help_panel="Data")]
EvalLength = Annotated[int, typer.Option(min=2, help="Tokens per held-out chunk (BOS included).", rich_help_panel="Evaluation")]
EvalChunks = Annotated[int, typer.Option(min=0, help="Held-out chunks evaluated, evenly spaced over the held-out text (0: no evaluation; `hub lens eval` does it later) (the items of the bootstrap CI); the evaluation decodes the whole vocabulary at every layer twice per token.", rich_help_panel="Evaluation")]


def _corpus(text: Path | None, flores_dir: Path | None) -> tuple[Path, dict[str, list[str]]]:
    from hubclient.inputs.parallel import flores_folder
    from hubclient.science.tuned_lens import read_text_folder

    folder = text if text is not None else flores_folder(flores_dir)
    if folder is None:
        raise HubError("no text to train on: pass --text FOLDER (text files, one text a line) or --flores-dir, set HUB_FLORES_DIR, or run hub data get flores200")
    return Path(folder), read_text_folder(folder)


def _kl_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per layer and lens: mean held-out KL (nats/token) with a 95% bootstrap CI over chunks, and
    the paired difference tuned − logit over the same chunks (lens ``"tuned - logit"``)."""
    from hubclient.science.stats import bootstrap_ci

    rows = []
    for lens in ("logit", "tuned"):
        values = result[lens]
        for layer in range(values.shape[1]):
            column = values[:, layer]
            low, high = bootstrap_ci(column) if len(column) > 1 else (float("nan"), float("nan"))
            rows.append({"lens": lens, "layer": layer, "mean": float(column.mean()), "ci_low": float(low), "ci_high": float(high), "n": int(len(column))})
    diff = result["tuned"] - result["logit"]  # paired over the same chunks
    for layer in range(diff.shape[1]):
        column = diff[:, layer]
        low, high = bootstrap_ci(column) if len(column) > 1 else (float("nan"), float("nan"))
        rows.append({"lens": "tuned - logit", "layer": layer, "mean": float(column.mean()), "ci_low": float(low), "ci_high": float(high), "n": int(len(column))})
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("layer", "logit lens KL", "tuned lens KL", "tuned − logit (paired)", title="held-out KL(p_final || p_lens), nats/token, 95% CI over chunks")
    by = {(r["lens"], r["layer"]): r for r in rows}
    for layer in sorted({r["layer"] for r in rows}):
        cells = []
        for lens in ("logit", "tuned", "tuned - logit"):
            r = by[(lens, layer)]
            cells.append(f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
        table.add_row(str(layer), *cells)
    Console(width=120).print(table)


def _plot(rows: list[dict[str, Any]], model_id: str, stem: Path) -> None:
    import polars as pl

    from hubclient.plots import ci_lines, save_chart

    frame = pl.DataFrame([r for r in rows if r["lens"] != "tuned - logit"]).with_columns(lens=pl.col("lens").replace({"logit": "logit lens", "tuned": "tuned lens"}))
    n = int(frame["n"].max())
    chart = ci_lines(frame, "lens", f"Held-out KL to the model's output · {model_id}", "KL(p_final ‖ p_lens), nats/token",
                     subtitle=f"mean over {n} held-out chunks, 95% bootstrap CI", log_floor=0.5)
    save_chart(chart, stem)


def _evaluate(model: Any, translators: Any, texts: list[str], eval_length: int, eval_chunks: int) -> list[dict[str, Any]]:
    from hubclient.science.tuned_lens import chunk_ids, evaluate

    import torch

    chunks = chunk_ids(model.tokenizer, texts, eval_length)
    if chunks.shape[0] > eval_chunks:  # spread over the held-out text (every file/language), not its start
        chunks = chunks[torch.linspace(0, chunks.shape[0] - 1, eval_chunks).round().long()]
    if chunks.shape[0] == 0:
        raise HubError(f"the held-out text makes no chunk of {eval_length} tokens; raise --held-out or lower --eval-length")
    return _kl_table(evaluate(model, translators, chunks))


@lens_app.command("train")
@opt.cli_command
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the lens: config.json + params.pt (the tuned-lens package's format), training.json, plots, checkpoints/.")],
    model_name: opt.Model = "gemma-3-270m",
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    text: Text = None,
    flores_dir: opt.FloresDir = None,
    held_out: HeldOut = 0.1,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps (package default 250).", rich_help_panel="Training")] = 250,
    tokens_per_step: Annotated[int, typer.Option(min=1, help="Tokens per step, a multiple of --max-length (package default 2**18 = 262144).", rich_help_panel="Training")] = 2**18,
    max_length: Annotated[int, typer.Option(min=2, help="Tokens per chunk, BOS included (package default 2048).", rich_help_panel="Training")] = 2048,
    batch_size: Annotated[int, typer.Option(min=1, help="Chunks per forward pass; gradients accumulate over the step's chunks (package: 1).", rich_help_panel="Training")] = 1,
    optimizer: Annotated[str, typer.Option(help="sgd (Nesterov momentum, the package's default) or adam (amsgrad).", rich_help_panel="Training")] = "sgd",
    lr_scale: Annotated[float, typer.Option(help="SGD lr = lr_scale × (1 − momentum); Adam lr = lr_scale × 1e-3 (package: 1).", rich_help_panel="Training")] = 1.0,
    momentum: Annotated[float, typer.Option(help="SGD momentum / Adam beta1 (package: 0.9).", rich_help_panel="Training")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="Weight decay (package: 1e-3).", rich_help_panel="Training")] = 1e-3,
    warmup_steps: Annotated[int, typer.Option(min=0, help="Linear warmup steps, then linear decay to 0 (package: 0).", rich_help_panel="Training")] = 0,
    autocast: Annotated[str, typer.Option(help="bfloat16 (the package's torch.autocast) or off.", rich_help_panel="Training")] = "bfloat16",
    vocab_sample: Annotated[int, typer.Option(min=0, help="0: KL over the whole vocabulary (the package). N: hub's CPU variant, the KL over N sampled token ids per micro-batch (each position's top 32 final tokens + uniform others), renormalised; ~30× cheaper for Gemma-3's 262k vocabulary at 8192.", rich_help_panel="Training")] = 0,
    seed: Annotated[int, typer.Option(help="Chunk shuffling seed (package: 42).", rich_help_panel="Training")] = 42,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Steps between snapshots in OUT/checkpoints (0: only when stopped early).", rich_help_panel="Training")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest snapshot in OUT/checkpoints (same options).", rich_help_panel="Training")] = False,
    time_limit: Annotated[Optional[float], typer.Option(help="Stop after this many minutes of training (after the current step), snapshot, and save the lens as it is; --resume continues.", rich_help_panel="Training")] = None,
    eval_length: EvalLength = 64,
    eval_chunks: EvalChunks = 16,
    progress: opt.Progress = True,
) -> None:
    """Train a tuned lens (Belrose et al. 2023) as the tuned-lens package does, and report its
    held-out KL per layer against the logit lens.

    Writes OUT/config.json + OUT/params.pt (loadable by `tuned_lens.TunedLens.from_model_and_pretrained`
    and by `--lens tuned --tuned-lens OUT`), OUT/training.json (options, losses, held-out KL),
    OUT/heldout_kl.{html,png}. Package defaults: 250 steps of 2**18 tokens in chunks of 2048
    (GPU scale); on a CPU scale them down, e.g. --steps 30 --tokens-per-step 256 --max-length 128
    --vocab-sample 8192 (docs/lenses.md).
    """
    import torch

    from hubclient.fs import write_json
    from hubclient.models import load_model
    from hubclient.run.progress import progress_bar
    from hubclient.science import tuned_lens as tl

    options = tl.TrainOptions(
        steps=steps, tokens_per_step=tokens_per_step, max_length=max_length, batch_size=batch_size, optimizer=optimizer,
        lr_scale=lr_scale, momentum=momentum, weight_decay=weight_decay, warmup_steps=warmup_steps, autocast=autocast,
        seed=seed, held_out=held_out, checkpoint_every=checkpoint_every, vocab_sample=vocab_sample,
    )
    options.check()
    if time_limit is not None and time_limit <= 0:
        raise HubError(f"--time-limit must be positive (minutes), got {time_limit}")
    if (out / tl.PARAMS_FILE).exists() and not resume:
        raise HubError(f"{out} already holds a lens; choose another --out (or --resume to continue its snapshot)")
    folder, files = _corpus(text, flores_dir)
    train_texts, test_texts = tl.split_texts(files, held_out)
    model = load_model(model_name, device=device, dtype=dtype)
    chunks = tl.chunk_ids(model.tokenizer, train_texts, max_length)
    config = tl.model_config(model)
    translators = tl.make_translators(config.d_model, config.num_hidden_layers)
    typer.echo(f"training on {chunks.shape[0]} chunks of {max_length} tokens from {len(files)} file(s) in {folder.name}/ "
               f"({options.steps} steps × {options.tokens_per_step} tokens, {options.accumulation} micro-batch(es) per step)", err=True)
    deadline = None if time_limit is None else time.monotonic() + 60 * time_limit
    snap = tl.latest_snapshot(out / tl.CHECKPOINTS) if resume else None
    done = 0
    if snap is not None:
        done = int(torch.load(snap, map_location="cpu", weights_only=False)["step"])
    with progress_bar("tuned-lens steps", options.steps, enabled=progress, completed=done) as (bar, task):
        def on_step(step: int, losses: list[float]) -> None:
            bar.update(task, completed=step, description=f"tuned-lens steps (mean KL {sum(losses) / len(losses):.3f})")

        result = tl.train(
            model, translators, chunks, options, checkpoint_dir=out / tl.CHECKPOINTS, resume=resume, on_step=on_step,
            should_stop=(lambda: time.monotonic() > deadline) if deadline is not None else None,
        )
    tl.save_lens(out, translators.cpu(), config)
    rows = _evaluate(model, translators, test_texts, eval_length, eval_chunks) if eval_chunks else []
    write_json(out / tl.TRAINING_FILE, {
        "model": model.describe(), "corpus": str(folder.name), "files": sorted(files), "options": asdict(options),
        "steps_done": result.steps_done, "tokens": result.tokens, "seconds": round(result.seconds, 1), "resumed_from": result.resumed_from,
        "complete": result.steps_done == options.steps, "train_losses": result.losses,
        "heldout": {"eval_length": eval_length, "eval_chunks": eval_chunks, "kl": rows},
    })
    if rows:
        _plot(rows, model.model_id, out / "heldout_kl")
        _print_table(rows)
    state = "complete" if result.steps_done == options.steps else f"stopped at step {result.steps_done} of {options.steps} (hub lens train … --resume continues)"
    typer.echo(f"lens: {out} ({state}; {result.tokens} tokens in {result.seconds:.0f} s)")


@lens_app.command("eval")
@opt.cli_command
def evaluate(
    tuned_lens: Annotated[Path, typer.Argument(help="A tuned lens folder (config.json + params.pt), hub's or the tuned-lens package's.")],
    model_name: opt.Model = "gemma-3-270m",
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    text: Text = None,
    flores_dir: opt.FloresDir = None,
    held_out: HeldOut = 0.1,
    eval_length: EvalLength = 64,
    eval_chunks: EvalChunks = 16,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write OUT/heldout_kl.json and OUT/heldout_kl.{html,png}.")] = None,
) -> None:
    """Held-out KL(p_final || p_lens) per layer of a tuned lens and of the logit lens (final
    norm on), on the last --held-out fraction of each text file's lines."""
    from hubclient.models import load_model
    from hubclient.science import tuned_lens as tl

    tl.check_lens_folder(tuned_lens)
    _, files = _corpus(text, flores_dir)
    _, test_texts = tl.split_texts(files, held_out)
    model = load_model(model_name, device=device, dtype=dtype)
    translators, _ = tl.load_lens(tuned_lens, model)
    if eval_chunks < 1:
        raise HubError("--eval-chunks must be at least 1 for hub lens eval")
    rows = _evaluate(model, translators, test_texts, eval_length, eval_chunks)
    _print_table(rows)
    if out is not None:
        from hubclient.fs import write_json

        write_json(out / "heldout_kl.json", {"lens": str(tuned_lens), "model": model.describe(), "eval_length": eval_length, "eval_chunks": eval_chunks, "held_out": held_out, "kl": rows})
        _plot(rows, model.model_id, out / "heldout_kl")
        typer.echo(f"wrote {out / 'heldout_kl.json'} and {out / 'heldout_kl.png'}")
