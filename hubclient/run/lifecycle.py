"""The life of a run folder: create or resume, manifest, guard, finish, plots.

Every command that writes results (``hub analyze …``, ``hub intervene …``, multi-model runs,
``hub jobs collect``) goes through these steps:

1. :func:`check_resume` (``--resume RUN_DIR``: same analysis, inputs, options and batch size) or
   :func:`start_run` (a new folder, manifest status ``running``, ``prompts.parquet``);
2. the executor writes each batch's rows as Parquet parts (``RunDir.write_parts``) inside
   :func:`guard`, which marks the manifest ``interrupted``/``failed`` when the loop stops early
   and keeps the finished parts for ``--resume``;
3. :func:`finish_run` merges the parts, adds the analysis' ``finish`` tables, draws the plots
   and marks the manifest ``complete``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from hubclient.analysis import Analysis
from hubclient.errors import HubError
from hubclient.run.folder import RunDir, new_run_id, write_parquet

#: How an error of a run that kept finished work says so (``explain`` appends it; :func:`guard`
#: strips it when nothing was kept after all).
RESUME_HINT = "; finished chunks are kept: continue with --resume"
LAYER_CONVENTION = "layer 0 = embeddings (input of block 0); layer l = output of decoder block l (before the final norm)"
VERSIONED = ("hub", "nnsight", "torch", "transformers", "polars", "altair", "numpy")


@dataclass
class RunConfig:
    """Where and how to run (the options every analysis shares).

    Attributes:
        model: ``--model`` (see :func:`hubclient.models.load_model`).
        revision: ``--revision``: a Hugging Face Hub revision (branch, tag or commit) of a repo-id
            ``--model``; ``None`` for the default branch. Recorded in the manifest's model block.
        device / dtype: ``--device`` / ``--dtype``.
        batch_size: prompts per forward pass (>= 1).
        out: results root folder; the run goes to ``out/<run id>``.
        name: run id (default: ``<time>-<analysis>-<input hash>``).
        resume: an existing run folder to continue instead of starting a new one.
        progress: show a progress bar.
        plots: draw the plots at the end (``hub plot RUN_DIR`` draws them later).
        remote: run each batch on NDIF (see :mod:`hubclient.exec.remote`) instead of locally.
        detach: with ``remote``: submit every batch, record the job ids and return without
            waiting (``hub jobs collect`` finishes the run).
        ndif_host: NDIF host URL overriding nnsight's (``NDIF_HOST`` / config file).
        timeout: with ``remote``: seconds one job may take, from submission to result.
        retries: with ``remote``: retries of a request after a 5xx answer or a dropped
            connection.
        device_map: ``--device-map``: local runs, spread the model over devices (``auto``,
            ``balanced`` or a JSON object of module name -> device; accelerate); ``None``: all
            on ``device``.
        transfer_dtype: with ``remote``: the dtype vector-valued results (similarity vectors,
            neuron activations) travel in (``float16``, ``bfloat16`` or ``float32``).
        dry_run: with ``remote``: build the first request, report its size and the expected
            result size per prompt, send nothing.
        preflight: with ``remote``: check ``/status`` before sending (the model must be HOT and
            RUNNING there); ``False`` (``--no-preflight``) skips that check and says so in one
            line; the Python/nnsight check of ``/env`` still runs
            (:func:`hubclient.exec.remote.preflight.preflight`).
    """

    model: str = "gemma-3-270m"
    revision: str | None = None
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
    device_map: str | None = None
    transfer_dtype: str = "float16"
    dry_run: bool = False
    preflight: bool = True


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
    (:mod:`hubclient.exec.edits`). ``extra`` adds manifest fields (e.g. ``remote``);
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
            "process": {"pid": os.getpid(), "host": socket.gethostname()},
            "versions": versions(),
            "machine": {"platform": platform.platform(), "processor": platform.machine()},
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    write_prompts(run, prompts, tokens, prompt_columns)
    return run


def reopen_run(run: RunDir) -> RunDir:
    """Mark a resumed run as running again, owned by this process (``hub runs`` tells a live
    run from one whose process is gone by the recorded pid)."""
    run.update_manifest(status="running", process={"pid": os.getpid(), "host": socket.gethostname()})
    return run


def check_resumed_model(run: RunDir, model: Any) -> None:
    """After the model is loaded for ``--resume``: the same model, revision, dtype and device as
    the run's first part (anything else would mix numbers of two set-ups in one table).

    Raises:
        HubError: naming what differs and the value the run was started with.
    """
    before = run.manifest.get("model", {})
    now = model.describe()
    for key, option in (("model_id", "--model"), ("revision", "--model and --revision"), ("dtype", "--dtype"), ("device", "--device")):
        if key in before and before.get(key) != now.get(key):
            raise HubError(
                f"cannot resume {run.path}: it ran with {key} {before.get(key)!r}, this call gives {now.get(key)!r}; "
                f"rerun with the same {option}"
            )


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
    dropped = analysis.dropped_tables() if isinstance(analysis, Analysis) else {}
    for table, why in dropped.items():
        (run.path / f"{table}.parquet").unlink(missing_ok=True)
        counts.pop(table, None)
    run.update_manifest(
        dropped_tables=dropped,
        status="complete",
        rows=counts,
        plots=drawn,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=round(time.time() - started, 2),
        timings=timings,
    )
    return run


def check_resume(config: RunConfig, analysis: Analysis, options: dict, input_hash: str) -> RunDir:
    """Open ``config.resume`` for continuing, after checking it is the same run.

    Args:
        options: ``analysis.describe_options()`` of this call.
        input_hash: :func:`hash_inputs` of this call's prompts (and media files).

    Returns:
        the run folder (finished batches are listed by ``RunDir.done_batches``).

    Raises:
        HubError: the folder is not a run, is already complete, or was started with a different
            analysis, prompts, options or ``--batch-size`` (each named in the message).
    """
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


def _nothing_done(run: RunDir) -> bool:
    """True when a run holds no finished part and no remote job record: nothing ran."""
    for folder in ((run.path / ".parts"), (run.path / "jobs")):
        if folder.is_dir() and any(p.suffix in (".parquet", ".json") for p in folder.rglob("*")):
            return False
    return True


@contextmanager
def guard(run: RunDir, what: str = "batches", fresh: bool = False) -> Iterator[None]:
    """Around the loop that fills a run: on Ctrl-C mark the manifest ``interrupted`` and raise a
    :class:`HubError` that says how to continue; on any other exception mark it ``failed`` and
    re-raise. Finished parts stay on disk either way (``--resume`` skips them).

    Args:
        fresh: the folder was made by this call; when it fails before anything finished (e.g.
            the server refused the key on the first request) the folder is removed, so the same
            ``--name`` works next time and no message points at an empty run.

    Raises:
        HubError: on ``KeyboardInterrupt`` (``interrupted; finished … are kept: continue with
            --resume RUN_DIR``).
    """
    import shutil

    try:
        yield
    except BaseException as exc:
        if fresh and _nothing_done(run):
            shutil.rmtree(run.path, ignore_errors=True)
            if isinstance(exc, KeyboardInterrupt):
                raise HubError("interrupted before any batch finished; nothing was kept") from None
            if isinstance(exc, HubError):
                message = str(exc).split(RESUME_HINT)[0]
                raise HubError(message + " (nothing ran; no run folder was kept)") from None
            raise
        if isinstance(exc, KeyboardInterrupt):
            run.update_manifest(status="interrupted")
            raise HubError(f"interrupted; finished {what} are kept: continue with --resume {run.path}") from None
        run.update_manifest(status="failed")
        raise
