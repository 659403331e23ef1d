"""Running an analysis or an intervention: the one run lifecycle every command goes through.

``run_analysis`` is the loop behind every ``hub analyze …`` and ``hub intervene …``:

1. choose the executor once (:func:`hubclient.exec.executor_for`: local, or NDIF with
   ``--remote``) and validate what needs no model;
2. tokenise every prompt, let the analysis resolve what needs the tokenizer (``prepare``, given
   those token ids) and run
   the short traces it needs first (``setup``, through the same executor), and cut the work
   into batches (``make_batches``): bad input fails before a run folder exists;
3. create the run folder (or reopen it with ``--resume``: finished batches are skipped);
4. hand the remaining batches to the executor, which writes each batch's rows as Parquet parts;
5. merge the parts into ``<table>.parquet``, draw the plots, finish the manifest
   (:func:`hubclient.run.lifecycle.finish_run`).
"""

from __future__ import annotations

import time
from typing import Any

from hubclient.analysis import Analysis, Batch
from hubclient.errors import HubError
from hubclient.exec import Executor, executor_for
from hubclient.exec.batching import batches_for, make_batches, right_pad, tokenize
from hubclient.exec.trace import trace_batch
from hubclient.run.folder import RunDir, check_output
from hubclient.run.lifecycle import (
    LAYER_CONVENTION,
    VERSIONED,
    RunConfig,
    check_resume,
    check_resumed_model,
    reopen_run,
    finish_run,
    guard,
    hash_inputs,
    save_plots,
    start_run,
    versions,
    write_prompts,
)
from hubclient.run.progress import progress_bar

#: Old private name of :func:`hubclient.run.lifecycle.check_resume`.
_check_resume = check_resume

__all__ = [
    "LAYER_CONVENTION", "VERSIONED", "Batch", "RunConfig", "check_resume", "finish_run", "guard", "hash_inputs",
    "make_batches", "progress_bar", "right_pad", "run_analysis", "save_plots", "start_run", "tokenize", "trace_batch",
    "versions", "write_prompts",
]


def run_analysis(
    analysis: Analysis,
    prompts: list[str],
    config: RunConfig,
    model: Any = None,
    prompt_columns: dict[str, list[Any]] | None = None,
    media: list[Any] | None = None,
    resample: bool = True,
    extra: dict[str, Any] | None = None,
    executor: Executor | None = None,
) -> RunDir:
    """Run ``analysis`` over ``prompts`` and write a complete run folder.

    Args:
        analysis: the analysis or intervention, options bound.
        prompts: the input texts (already validated by :func:`hubclient.inputs.read_prompts`).
        config: model, device, batching, output and remote options.
        model: an already-loaded :class:`~hubclient.models.HubModel` (tests, notebooks); when
            ``None`` the executor loads ``config.model`` (with weights locally, without them for
            ``--remote``).
        prompt_columns: extra per-prompt columns for ``prompts.parquet`` (e.g. ``language``,
            ``sentence``), each a list as long as ``prompts``.
        media: for image/audio models, per prompt a :class:`hubclient.inputs.media.MediaPair`
            whose file the prompt's media placeholder stands for, or ``None`` for a text prompt;
            encoded by :func:`hubclient.exec.multimodal.encode` (files hashed into the input hash).
        resample: with ``media``: resample audio at another rate (else it is an error).
        extra: further manifest fields (e.g. an intervention's resolved metric).
        executor: overrides the executor chosen from ``config`` (tests).

    Returns:
        the finished :class:`~hubclient.run.folder.RunDir` (status ``submitted`` after
        ``--detach``: ``hub jobs collect`` finishes it).

    Raises:
        HubError: bad model, prompts, positions or options (before any file is written), or a
            ``resume`` folder whose inputs or options differ from this call's; ``dry_run``
            without ``remote``.
        SystemExit: code 0 after a ``config.dry_run`` (``--remote --dry-run``) printed the
            request and result sizes (:func:`hubclient.exec.remote.dryrun.dry_run`); nothing
            was sent or written.
    """
    started = time.time()
    if config.dry_run and not config.remote:
        raise HubError("--dry-run sizes a remote run: add --remote (nothing is sent)")
    executor = executor or executor_for(config)
    if media is not None:
        from hubclient.exec.multimodal import media_key

        if config.detach:
            raise HubError("--detach is not supported for image/audio inputs yet; run --remote without --detach")
        input_hash = hash_inputs(prompts + [media_key(m) for m in media])
    else:
        input_hash = hash_inputs(prompts)
    options = analysis.describe_options()
    previous = check_resume(config, analysis, options, input_hash) if config.resume else None
    if previous is None:
        check_output(config.out, config.name)
    if model is None:
        model = executor.load_model(config)
    if previous is not None:
        check_resumed_model(previous, model)
    extras = None
    if media is not None:  # encode raises for a text-only model; prepare checks the modality
        from hubclient.exec.multimodal import encode

        tokens, extras = encode(model, prompts, media, resample=resample)
    else:
        tokens = tokenize(model, prompts, limit=analysis.prompt_limit(model))
    analysis.prepare(model, prompts, tokens)
    analysis.setup(model, executor)
    batches = batches_for(analysis, model, tokens, config.batch_size, extras)
    if config.dry_run:  # --remote --dry-run: print the request/result sizes, send nothing, write nothing
        from hubclient.exec.remote.dryrun import dry_run

        dry_run(config, model, analysis, batches)
        raise SystemExit(0)
    executor.check(model, analysis)

    if previous is not None:
        run = reopen_run(previous)
    else:
        more = dict(extra or {})
        more.update(analysis.describe_run())
        described = executor.describe(model)
        if described is not None:
            more["remote"] = described
        more["plots_requested"] = config.plots
        run = start_run(analysis, prompts, tokens, config, model, prompt_columns, more, input_hash=input_hash)
    done = run.done_batches(list(analysis.tables))
    todo = [b for b in batches if b.index not in done]
    loaded = time.time()
    with guard(run, "batches", fresh=previous is None):
        complete = executor.run(model, analysis, run, todo, len(batches), len(done))
    if not complete:
        run.update_manifest(status="submitted")
        return run
    timings = {"load_and_prepare": round(loaded - started, 3), "batches": round(time.time() - loaded, 3)}
    return finish_run(analysis, run, started, plots=config.plots, timings=timings)
