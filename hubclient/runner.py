"""Running an analysis: tokenise, batch, trace, store, plot, record.

``run_analysis`` is the one loop every ``hub analyze …`` command goes through:

1. read nothing from disk it has not validated: tokenise every prompt and resolve positions
   first, so bad input fails before a run folder exists;
2. sort prompts by length (longest first) and cut them into batches (right-padded, see
   :class:`hubclient.analysis.Batch`);
3. for each batch, open ``with model.lm.trace(batch.inputs)``, run the analysis' trace body,
   stop the forward pass as soon as the body is done (unless the analysis needs the model's
   output), and store the batch's rows as Parquet parts;
4. merge the parts into ``<table>.parquet``, draw the plots, finish the manifest.

A run that stops half-way is continued with ``resume=``: finished batches are skipped.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.store import RunDir, new_run_id, write_parquet

if TYPE_CHECKING:
    import torch

LAYER_CONVENTION = "layer 0 = embeddings (input of block 0); layer l = output of decoder block l (before the final norm)"
VERSIONED = ("hub", "nnsight", "torch", "transformers", "polars", "altair", "numpy")


@dataclass
class RunConfig:
    """Where and how to run (the options every analysis shares).

    Attributes:
        model: ``--model`` (see :func:`hubclient.models.load_model`).
        device / dtype: ``--device`` / ``--dtype``.
        batch_size: prompts per forward pass (>= 1).
        out: results root folder; the run goes to ``out/<run id>``.
        name: run id (default: ``<time>-<analysis>-<input hash>``).
        resume: an existing run folder to continue instead of starting a new one.
        progress: show a progress bar.
        plots: draw the plots at the end (``hub plot RUN_DIR`` draws them later).
        remote: run each batch on NDIF (see :mod:`hubclient.remote`) instead of locally.
        detach: with ``remote``: submit every batch, record the job ids and return without
            waiting (``hub jobs collect`` finishes the run).
        ndif_host: NDIF host URL overriding nnsight's (``NDIF_HOST`` / config file).
        timeout: with ``remote``: seconds one job may take, from submission to result.
        retries: with ``remote``: retries of a request after a 5xx answer or a dropped
            connection.
    """

    model: str = "gemma-3-270m"
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    out: Path = Path("results")
    name: str | None = None
    resume: Path | None = None
    progress: bool = True
    plots: bool = True
    remote: bool = False
    detach: bool = False
    ndif_host: str | None = None
    timeout: float = 3600.0
    retries: int = 3


def versions() -> dict[str, str | None]:
    """Installed versions of hub and the libraries that shape its numbers."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def hash_inputs(prompts: list[str]) -> str:
    """sha256 of the prompts (JSON list, UTF-8): names the input in manifests and run ids."""
    return hashlib.sha256(json.dumps(prompts, ensure_ascii=False).encode()).hexdigest()


def tokenize(model: Any, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt, with the tokenizer's special tokens (e.g. BOS).

    Raises:
        HubError: a prompt that tokenises to nothing, or one longer than the model's context.
    """
    encoded = model.tokenizer(prompts, add_special_tokens=True)["input_ids"]
    limit = model.max_length
    for i, ids in enumerate(encoded):
        if not ids:
            raise HubError(f"prompt {i} tokenises to no tokens; give some text")
        if limit is not None and len(ids) > limit:
            raise HubError(
                f"prompt {i} has {len(ids)} tokens, more than the model's context of {limit}; shorten it"
            )
    return [list(ids) for ids in encoded]


def right_pad(tokens: list[list[int]], pad_id: int) -> dict[str, "torch.Tensor"]:
    """Right-padded ``input_ids`` / ``attention_mask`` ``[batch, max_len]`` (long): every token
    keeps the position it has when its prompt runs alone (causal attention never sees the pads
    that follow), so batched results equal unbatched ones."""
    import torch

    width = max(len(t) for t in tokens)
    ids = torch.full((len(tokens), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tokens), width), dtype=torch.long)
    for b, t in enumerate(tokens):
        ids[b, : len(t)] = torch.tensor(t, dtype=torch.long)
        mask[b, : len(t)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def make_batches(
    tokens: list[list[int]],
    positions: list[list[int]],
    batch_size: int,
    pad_id: int,
    extras: list[dict[str, Any] | None] | None = None,
) -> list[Batch]:
    """Cut prompts into length-sorted, right-padded batches.

    Prompts are sorted by length, longest first (ties keep input order), so padding is small
    and a batch that does not fit memory fails first. The result does not depend on anything
    but the inputs and ``batch_size``.

    Args:
        tokens: token ids per prompt.
        positions: positions to read per prompt (from ``Analysis.positions``).
        batch_size: prompts per batch.
        pad_id: id used for padding (masked out).
        extras: per prompt, the processor tensors of an image/audio prompt or ``None`` (text).
            Media prompts and text prompts then go into separate batches (media first), each
            group length-sorted as above, and a batch's tensors are joined by
            :func:`hubclient.multimodal.collate`.
    """
    import torch

    if batch_size < 1:
        raise HubError(f"--batch-size must be at least 1, got {batch_size}")
    order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))
    groups = [order]
    if extras is not None:
        groups = [[i for i in order if extras[i] is not None], [i for i in order if extras[i] is None]]
    chunks = []
    for group in groups:
        for start in range(0, len(group), batch_size):
            chunks.append(group[start : start + batch_size])
    batches = []
    for k, idx in enumerate(chunks):
        padded = right_pad([tokens[i] for i in idx], pad_id)
        row_b: list[int] = []
        row_p: list[int] = []
        for b, i in enumerate(idx):
            for p in positions[i]:
                row_b.append(b)
                row_p.append(p)
        batches.append(
            Batch(
                index=k,
                prompt_index=idx,
                input_ids=padded["input_ids"],
                attention_mask=padded["attention_mask"],
                lengths=[len(tokens[i]) for i in idx],
                row_batch=torch.tensor(row_b, dtype=torch.long),
                row_position=torch.tensor(row_p, dtype=torch.long),
                tokens=[tokens[i] for i in idx],
                extra=_collate(extras, idx, padded["input_ids"].shape[1]),
            )
        )
    return batches


def _collate(extras: list[dict[str, Any] | None] | None, idx: list[int], width: int) -> dict[str, Any]:
    if extras is None or extras[idx[0]] is None:
        return {}
    from hubclient.multimodal import collate

    return collate([extras[i] for i in idx], width)


def trace_batch(model: Any, analysis: Analysis, batch: Batch, backend: Any = None) -> dict[str, Any] | None:
    """Run the analysis' trace body on one batch and return what it saved.

    This is the one ``with model.lm.trace(...)`` block of every analysis, local or remote. The
    forward pass is stopped as soon as the body returns, unless the analysis declares
    ``needs_model_output``, so layers after the last one read and the ``lm_head`` are skipped.

    Args:
        backend: ``None`` runs locally on ``model.device``; an nnsight backend (e.g.
            :func:`hubclient.remote.make_backend`) sends the same body to NDIF.

    Returns:
        the saved dict (tensors on the CPU), or ``None`` when a non-blocking backend only
        submitted the job.
    """
    import nnsight
    import torch

    if backend is None:
        inputs = {k: v.to(model.device) for k, v in batch.inputs.items()}
        dtype = getattr(torch, str(model.dtype), None)
        for key in batch.extra:  # media tensors (pixel_values…) in the weights' dtype
            if inputs[key].is_floating_point() and isinstance(dtype, torch.dtype):
                inputs[key] = inputs[key].to(dtype)
        kwargs = {}
    else:
        inputs, kwargs = batch.inputs, {"backend": backend}
    with torch.inference_mode():
        with model.lm.trace(inputs, **kwargs) as tracer:
            saved = nnsight.save(analysis.trace(model, batch))
            if not analysis.needs_model_output:
                tracer.stop()
    if backend is not None and not backend.blocking:
        return None
    return {k: _to_cpu(v) for k, v in saved.items()}


def _to_cpu(value: Any) -> Any:
    import torch

    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


def run_analysis(
    analysis: Analysis,
    prompts: list[str],
    config: RunConfig,
    model: Any = None,
    prompt_columns: dict[str, list[Any]] | None = None,
    media: list[Any] | None = None,
    resample: bool = True,
) -> RunDir:
    """Run ``analysis`` over ``prompts`` and write a complete run folder.

    Args:
        analysis: the analysis, options bound.
        prompts: the input texts (already validated by :func:`hubclient.inputs.read_prompts`).
        config: model, device, batching and output options.
        model: an already-loaded :class:`~hubclient.models.HubModel` (tests, notebooks); when
            ``None`` it is loaded from ``config.model``.
        prompt_columns: extra per-prompt columns for ``prompts.parquet`` (e.g. ``language``,
            ``sentence``), each a list as long as ``prompts``.
        media: for image/audio models, per prompt a :class:`hubclient.media.MediaPair` whose
            file the prompt's media placeholder stands for, or ``None`` for a text prompt;
            encoded by :func:`hubclient.multimodal.encode` (files hashed into the input hash).
        resample: with ``media``: resample audio at another rate (else it is an error).

    Returns:
        the finished :class:`~hubclient.store.RunDir`.

    Raises:
        HubError: bad model, prompts, positions or options (before any file is written), or a
            ``resume`` folder whose inputs or options differ from this call's.
    """
    from hubclient.models import load_model

    started = time.time()
    if media is not None:
        from hubclient.multimodal import media_key

        if config.detach:
            raise HubError("--detach is not supported for image/audio inputs yet; run --remote without --detach")
        input_hash = hash_inputs(prompts + [media_key(m) for m in media])
    else:
        input_hash = hash_inputs(prompts)
    options = analysis.describe_options()
    previous = _check_resume(config, analysis, options, input_hash) if config.resume else None

    if config.detach and not config.remote:
        raise HubError("--detach needs --remote (it leaves jobs on NDIF); add --remote")
    if model is None:
        if config.remote:
            from hubclient.remote import load_remote_model

            model = load_remote_model(config.model)
        else:
            model = load_model(config.model, device=config.device, dtype=config.dtype)
    if previous is not None and previous.manifest["model"]["model_id"] != model.model_id:
        raise HubError(f"cannot resume {previous.path}: it ran {previous.manifest['model']['model_id']!r}, not {model.model_id!r}")
    extras = None
    if media is not None:  # prepare first: it checks that the model reads the analysis' modality
        from hubclient.multimodal import encode

        analysis.prepare(model, prompts)
        tokens, extras = encode(model, prompts, media, resample=resample)
    else:
        tokens = tokenize(model, prompts)
        analysis.prepare(model, prompts)
    positions = [analysis.token_positions(ids, i) for i, ids in enumerate(tokens)]
    batches = make_batches(tokens, positions, config.batch_size, model.tokenizer.pad_token_id, extras)

    if previous is not None:
        run = previous
    else:
        extra = {"remote": _remote_describe(config, model)} if config.remote else None
        run = start_run(analysis, prompts, tokens, config, model, prompt_columns, extra, input_hash=input_hash)
    done = run.done_batches(list(analysis.tables))
    todo = [b for b in batches if b.index not in done]
    loaded = time.time()
    try:
        if config.remote:
            from hubclient.remote import run_batches

            if not run_batches(model, analysis, run, todo, len(batches), len(done), config):
                run.update_manifest(status="submitted")
                return run
        else:
            _run_batches(model, analysis, run, todo, len(batches), len(done), config.progress)
    except KeyboardInterrupt:
        run.update_manifest(status="interrupted")
        raise HubError(f"interrupted; finished batches are kept: continue with --resume {run.path}") from None
    except Exception:
        run.update_manifest(status="failed")
        raise
    timings = {"load_and_prepare": round(loaded - started, 3), "batches": round(time.time() - loaded, 3)}
    return finish_run(analysis, run, started, plots=config.plots, timings=timings)


def start_run(
    analysis: Analysis,
    prompts: list[str],
    tokens: list[list[int]],
    config: RunConfig,
    model: Any,
    prompt_columns: dict[str, list[Any]] | None = None,
    extra: dict[str, Any] | None = None,
    input_hash: str | None = None,
) -> RunDir:
    """Create the run folder, its manifest (status ``running``) and ``prompts.parquet``.

    Shared by analyses (:func:`run_analysis`) and interventions that run their own loop
    (:mod:`hubclient.edits`). ``extra`` adds manifest fields (e.g. ``remote``);
    ``input_hash`` replaces the prompts' hash (runs with media files hash those too).

    Raises:
        HubError: the run folder already exists.
    """
    input_hash = input_hash or hash_inputs(prompts)
    options = json.loads(json.dumps(analysis.describe_options(), default=str))
    run_id = config.name or new_run_id(analysis.name, hashlib.sha256((input_hash + json.dumps(options, sort_keys=True)).encode()).hexdigest())
    run = RunDir.create(config.out, run_id)
    run.write_manifest(
        {
            "analysis": analysis.name,
            "status": "running",
            "model": model.describe(),
            "options": options,
            "batch_size": config.batch_size,
            "n_prompts": len(prompts),
            "input_sha256": input_hash,
            "layer_convention": LAYER_CONVENTION,
            **(extra or {}),
            "command": sys.argv,
            "versions": versions(),
            "machine": {"platform": platform.platform(), "processor": platform.machine()},
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    write_prompts(run, prompts, tokens, prompt_columns)
    return run


def _remote_describe(config: RunConfig, model: Any) -> dict[str, Any]:
    from hubclient.remote import describe

    return describe(config, model)


def finish_run(
    analysis: Analysis,
    run: RunDir,
    started: float,
    plots: bool = True,
    timings: dict[str, float] | None = None,
) -> RunDir:
    """Merge the batch parts into tables, add ``analysis.finish`` tables, draw plots (unless
    ``plots`` is off) and mark the manifest complete (the end of every run, local, remote or
    collected). ``timings`` (seconds per phase) go into the manifest with this phase's own."""
    timings = dict(timings or {})
    begin = time.time()
    counts = run.finalize(dict(analysis.tables))
    for table, frame in analysis.finish(run).items():
        write_parquet(run.path / f"{table}.parquet", frame)
        counts[table] = frame.height
    timings["tables"] = round(time.time() - begin, 3)
    begin = time.time()
    drawn = save_plots(analysis, run) if plots else []
    timings["plots"] = round(time.time() - begin, 3)
    run.update_manifest(
        status="complete",
        rows=counts,
        plots=drawn,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=round(time.time() - started, 2),
        timings=timings,
    )
    return run


@contextmanager
def progress_bar(label: str, total: int, enabled: bool = True, completed: int = 0, state: bool = False) -> Iterator[tuple[Any, Any]]:
    """The one progress display of hub (rich): yields ``(progress, task)``.

    Args:
        label: what is counted (e.g. ``"logit-lens batches"``).
        total / completed: units in all / already done (resumed runs start part-way).
        enabled: ``--progress/--no-progress``.
        state: add a column showing the task's ``state`` field (remote job states).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    if state:
        columns.append(TextColumn("{task.fields[state]}"))
    with Progress(*columns, disable=not enabled, transient=False) as bar:
        yield bar, bar.add_task(label, total=total, completed=completed, **({"state": ""} if state else {}))


def _run_batches(model: Any, analysis: Analysis, run: RunDir, todo: list[Batch], total: int, done: int, progress: bool) -> None:
    with progress_bar(f"{analysis.name} batches", total, progress, completed=done) as (bar, task):
        for batch in todo:
            saved = trace_batch(model, analysis, batch)
            run.write_parts(batch.index, analysis.rows(model, batch, saved))
            bar.advance(task)


def _check_resume(config: RunConfig, analysis: Analysis, options: dict, input_hash: str) -> RunDir:
    run = RunDir.open(config.resume)
    manifest = run.manifest
    if manifest.get("status") == "complete":
        raise HubError(f"{run.path} is already complete; nothing to resume")
    mismatches = []
    if manifest.get("analysis") != analysis.name:
        mismatches.append(f"analysis {manifest.get('analysis')!r}")
    if manifest.get("input_sha256") != input_hash:
        mismatches.append("prompts")
    if manifest.get("options") != json.loads(json.dumps(options, default=str)):
        mismatches.append("analysis options")
    if manifest.get("batch_size") != config.batch_size:
        mismatches.append(f"--batch-size (was {manifest.get('batch_size')})")
    if mismatches:
        raise HubError(f"cannot resume {run.path}: it was started with different {', '.join(mismatches)}; rerun with the same inputs")
    return run


def write_prompts(run: RunDir, prompts: list[str], tokens: list[list[int]], columns: dict[str, list[Any]] | None = None) -> None:
    """Write ``prompts.parquet``: ``prompt`` (index), ``text``, ``n_tokens`` (special tokens
    included) and any extra ``columns``."""
    import polars as pl

    data: dict[str, Any] = {"prompt": list(range(len(prompts))), "text": prompts, "n_tokens": [len(t) for t in tokens]}
    for name, values in (columns or {}).items():
        if len(values) != len(prompts):
            raise ValueError(f"prompt column {name!r} has {len(values)} values for {len(prompts)} prompts")
        data[name] = values
    frame = pl.DataFrame(data, schema_overrides={"prompt": pl.Int64, "n_tokens": pl.Int32})
    write_parquet(run.path / "prompts.parquet", frame)


def save_plots(analysis: type[Analysis] | Analysis, run: RunDir) -> list[str]:
    """Draw the analysis' charts from the run's Parquet and save them under ``plots/``."""
    from hubclient.plots import save_chart

    written = []
    for stem, chart in analysis.plots(run).items():
        written.extend(save_chart(chart, run.path / "plots" / stem))
    return written
