"""Speed and memory of hub's analyses against the bare forward pass and a reference loop.

Measured in one run, on the same inputs (FLORES devtest, English + Chinese), interleaved over
rounds so that a noisy machine slows every method alike; each method's fastest round is compared
(the minimum is the least noisy estimate of a method's cost, as ``timeit`` advises):

1. bare forward: the transformer body alone (no ``lm_head``), batched like the runner batches;
2. ``hub analyze similarity`` collection of per-layer last-token states (its batch loop);
3. a reference-style loop: one text at a time, ``output_hidden_states=True``, full ``lm_head``,
   last-token states copied to the host (as the semantic hub paper's released scripts do);
4. ``hub analyze logit-lens --top-k 10`` over all layers at the last position (its batch loop),
   as it runs by default (``W_U`` in the model's float32) and with ``--lens-dtype bfloat16``;
   and with ``--lens tuned`` (a tuned lens of random translators: the cost does not depend on
   their values) and ``--lens patchscope`` (the default identity prompt: one target copy per
   layer and prompt in the same forward pass), docs/lenses.md;
5. peak memory (RSS) of a whole ``hub analyze similarity`` process at N and at N_large sentences
   per language.

Run with ``make bench`` (or ``python benchmarks/bench.py --help``); writes
``benchmarks/results.md`` and prints it. Not part of the tests: timings on shared machines are
noisy, so targets are checked here, as ratios, not in timed tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANGS = ["eng_Latn", "zho_Hans"]
TARGETS = {
    "similarity / bare (throughput)": (">=", 0.95),
    "reference / similarity (speed-up)": (">=", 4.5),
    "logit-lens / bare (cost)": ("<=", 1.5),
    "logit-lens --lens-dtype bfloat16 / bare (cost)": ("<=", 1.5),
    "logit-lens --lens tuned / bare (cost)": (None, None),  # reported
    "--lens tuned / logit-lens (overhead)": ("<=", 1.15),  # L small d×d products next to L+1 W_U products
    "logit-lens --lens patchscope / bare (cost)": (None, None),  # reported: L+1 target copies per prompt
    "RSS growth N_large vs N": ("<=", 0.10),  # peak during the run
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flores-dir", type=Path, default=ROOT.parent / "shared" / "data" / "flores200-devtest")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=200, help="sentences per language for the timings")
    parser.add_argument("--n-large", type=int, default=1012, help="sentences per language for the memory check")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.md")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def corpus(args: argparse.Namespace, n: int):
    from hubclient.inputs.parallel import read_flores

    data = read_flores(LANGS, args.flores_dir, n=n)
    return data.flat()


def similarity_run(model, args, texts, languages, sentences, out: Path):
    from analyses.similarity import Similarity, SimilarityOptions
    from hubclient.runner import RunConfig, run_analysis

    options = SimilarityOptions(languages=LANGS, n=len(texts) // len(LANGS), pool="last", layers="all")
    config = RunConfig(out=out, batch_size=args.batch_size, progress=False, plots=False)
    return run_analysis(Similarity(options, languages, sentences), texts, config, model=model,
                        prompt_columns={"language": languages, "sentence": sentences})


def lens_run(model, args, texts, out: Path, lens_dtype: str = "model", lens: str = "logit", tuned_lens: str | None = None):
    from analyses.logit_lens import LensOptions, LogitLens
    from hubclient.runner import RunConfig, run_analysis

    config = RunConfig(out=out, batch_size=args.batch_size, progress=False, plots=False)
    options = LensOptions(positions="last", top_k=10, lens_dtype=lens_dtype, lens=lens, tuned_lens=tuned_lens)
    return run_analysis(LogitLens(options), texts, config, model=model)


def random_tuned_lens(model, folder: Path) -> str:
    """A tuned lens of random translators for ``model`` in ``folder`` (its cost is that of any
    tuned lens)."""
    import torch

    from hubclient.science import tuned_lens as tl

    config = tl.model_config(model)
    translators = tl.make_translators(config.d_model, config.num_hidden_layers)
    with torch.no_grad():
        for layer in translators:
            layer.weight.normal_(0, 0.01)
    return str(tl.save_lens(folder, translators, config))


def lens_profile(model, batches, repeat: int = 3) -> dict[str, float]:
    """Milliseconds per batch of the logit lens's parts, outside nnsight, on one batch's
    last-token states of every layer: the ``W_U`` product (float32 and bfloat16) and the
    reductions of :func:`hubclient.lens.reduce_logits` (fastest of ``repeat``)."""
    import torch

    from hubclient.science.lens import reduce_logits

    hf = model.torch_model
    body = hf.get_submodule(model.arch.layers.rsplit(".", 1)[0])
    norm = hf.get_submodule(model.arch.final_norm)
    batch = batches[len(batches) // 2]
    with torch.inference_mode():
        out = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        states = []
        for hidden in out.hidden_states:
            states.append(hidden[batch.row_batch, batch.row_position])
        h = norm(torch.cat(states))  # [rows × layers, d_model]; HF's last entry is already normed: close enough for timing
        weight = hf.get_submodule(model.arch.lm_head).weight
        weight_bf16 = weight.to(torch.bfloat16)
        logits = torch.nn.functional.linear(h, weight).float()

        def best(f) -> float:
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                f()
                times.append(time.perf_counter() - t)
            return 1000 * min(times)

        return {
            "rows": float(h.shape[0]),
            "body forward": best(lambda: body(input_ids=batch.input_ids, attention_mask=batch.attention_mask)),
            "W_U product, float32": best(lambda: torch.nn.functional.linear(h, weight)),
            "W_U product, bfloat16": best(lambda: torch.nn.functional.linear(h.bfloat16(), weight_bf16).float()),
            "reductions (top-k, softmax, entropy)": best(lambda: reduce_logits(logits, 10)),
        }


def bare_forward(model, batches) -> None:
    import torch

    body = model.torch_model.get_submodule(model.arch.layers.rsplit(".", 1)[0])
    with torch.inference_mode():
        for batch in batches:
            body(input_ids=batch.input_ids.to(model.device), attention_mask=batch.attention_mask.to(model.device))
    if model.device == "cuda":
        torch.cuda.synchronize()


def reference_loop(model, texts) -> None:
    import torch

    hf = model.torch_model
    with torch.inference_mode():
        for text in texts:
            ids = model.tokenizer(text, return_tensors="pt").to(model.device)
            out = hf(**ids, output_hidden_states=True)
            states = []
            for h in out.hidden_states:
                states.append(h[0, -1].float().cpu().numpy())


def _proc_status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so it measures from now on (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_child(args: argparse.Namespace) -> None:
    """Run a whole similarity analysis for ``--rss-child`` sentences per language; print the
    resident memory after loading the model and the peak during the run (MB)."""
    import gc

    from hubclient.models.loading import load_model

    model = load_model(args.model, device=args.device)
    texts, languages, sentences = corpus(args, args.rss_child)
    touch_weights(model)
    gc.collect()
    loaded = _proc_status_mb("VmRSS")
    reset = _reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp:
        similarity_run(model, args, texts, languages, sentences, Path(tmp))
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run_peak = _proc_status_mb("VmHWM") if reset else process_peak
    print(json.dumps({"n": args.rss_child, "loaded_mb": loaded, "weights_file_mb": _proc_status_mb("RssFile"),
                      "run_peak_mb": run_peak, "process_peak_mb": process_peak, "end_anon_mb": _proc_status_mb("RssAnon")}))


def touch_weights(model) -> None:
    """Read every parameter once, so all weight pages are resident before the run.

    transformers memory-maps safetensors weights: pages come in when first used, so a run over
    more sentences touches more rows of the 262k-row embedding and its RSS grows with N for a
    reason that has nothing to do with the analysis. Touching them all first makes the run's
    peak measure what the analysis itself holds.
    """
    import torch

    with torch.inference_mode():
        for param in model.torch_model.parameters():
            param.sum()


def measure_rss(args: argparse.Namespace, n: int) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", str(n), "--flores-dir", str(args.flores_dir), "--model", args.model,
           "--device", args.device, "--batch-size", str(args.batch_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def main() -> None:
    args = parse_args()
    if args.rss_child:
        return rss_child(args)
    if not args.flores_dir.is_dir():
        sys.exit(f"FLORES data not found at {args.flores_dir}; pass --flores-dir")

    import torch

    from hubclient.models.loading import load_model
    from hubclient.runner import make_batches, tokenize, versions

    model = load_model(args.model, device=args.device)
    texts, languages, sentences = corpus(args, args.n)
    tokens = tokenize(model, texts)
    batches = make_batches(tokens, [[len(t) - 1] for t in tokens], args.batch_size, model.tokenizer.pad_token_id)
    n_tokens = sum(len(t) for t in tokens)

    times: dict[str, list[float]] = {"bare": [], "similarity": [], "reference": [], "logit-lens": [], "logit-lens bf16": [], "tuned lens": [], "patchscope lens": []}
    with tempfile.TemporaryDirectory() as tmp:
        tuned = random_tuned_lens(model, Path(tmp) / "tuned")
        similarity_run(model, args, *corpus(args, 8), Path(tmp) / "warm")  # warm-up
        for r in range(args.rounds):
            t = time.perf_counter()
            bare_forward(model, batches)
            times["bare"].append(time.perf_counter() - t)
            run = similarity_run(model, args, texts, languages, sentences, Path(tmp) / f"sim{r}")
            times["similarity"].append(run.manifest["timings"]["batches"])
            t = time.perf_counter()
            reference_loop(model, texts)
            times["reference"].append(time.perf_counter() - t)
            run = lens_run(model, args, texts, Path(tmp) / f"lens{r}")
            times["logit-lens"].append(run.manifest["timings"]["batches"])
            run = lens_run(model, args, texts, Path(tmp) / f"lensbf{r}", lens_dtype="bfloat16")
            times["logit-lens bf16"].append(run.manifest["timings"]["batches"])
            run = lens_run(model, args, texts, Path(tmp) / f"tuned{r}", lens="tuned", tuned_lens=tuned)
            times["tuned lens"].append(run.manifest["timings"]["batches"])
            run = lens_run(model, args, texts, Path(tmp) / f"patch{r}", lens="patchscope")
            times["patchscope lens"].append(run.manifest["timings"]["batches"])
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)

    med = {k: min(v) for k, v in times.items()}
    ratios = {
        "similarity / bare (throughput)": med["bare"] / med["similarity"],
        "reference / similarity (speed-up)": med["reference"] / med["similarity"],
        "logit-lens / bare (cost)": med["logit-lens"] / med["bare"],
        "logit-lens --lens-dtype bfloat16 / bare (cost)": med["logit-lens bf16"] / med["bare"],
        "logit-lens --lens tuned / bare (cost)": med["tuned lens"] / med["bare"],
        "--lens tuned / logit-lens (overhead)": med["tuned lens"] / med["logit-lens"],
        "logit-lens --lens patchscope / bare (cost)": med["patchscope lens"] / med["bare"],
    }
    profile = lens_profile(model, batches)
    rss = {}
    if not args.skip_memory:
        rss = {args.n: measure_rss(args, args.n), args.n_large: measure_rss(args, args.n_large)}
        ratios["RSS growth N_large vs N"] = rss[args.n_large]["run_peak_mb"] / rss[args.n]["run_peak_mb"] - 1

    lines = [
        "# Benchmark results",
        "",
        f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}  ",
        f"Machine: {platform.platform()}, {platform.machine()}, {torch.get_num_threads()} torch threads, device {args.device}  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in versions().items())}  ",
        f"Model: {model.model_id} ({model.source}), dtype {model.dtype}  ",
        f"Inputs: FLORES devtest {' + '.join(LANGS)}, {args.n} sentences each ({len(texts)} texts, {n_tokens} tokens), "
        f"batch size {args.batch_size}, {args.rounds} interleaved rounds (fastest round of each method)",
        "",
        "| method | seconds (fastest) | tokens/s | all rounds (s) |",
        "|---|---|---|---|",
    ]
    for k, v in times.items():
        lines.append(f"| {k} | {med[k]:.2f} | {n_tokens / med[k]:.0f} | {', '.join(f'{x:.2f}' for x in v)} |")
    lines += ["", "| ratio | measured | target | met |", "|---|---|---|---|"]
    for k, value in ratios.items():
        op, bound = TARGETS[k]
        if op is None:
            lines.append(f"| {k} | {value:.2f} | (reported) | |")
            continue
        met = value >= bound if op == ">=" else value <= bound
        shown = f"{value:+.1%}" if k.startswith("RSS") else f"{value:.2f}"
        target = f"{op} {bound:+.0%}" if k.startswith("RSS") else f"{op} {bound}"
        lines.append(f"| {k} | {shown} | {target} | {'yes' if met else 'NO'} |")
    lines += ["", f"Profile of one batch ({profile.pop('rows'):.0f} lens rows = {args.batch_size} prompts × layers 0..L; fastest of 3):", "",
              "| part | ms |", "|---|---|"]
    for k, value in profile.items():
        lines.append(f"| {k} | {value:.0f} |")
    if rss:
        lines += ["", "Memory of `hub analyze similarity` (one process per N; peak measured from after model loading, "
                  "the kernel's peak mark reset there):", "", "| N per language | RSS after loading (MB) | of which mapped weights (MB) | peak during the run (MB) | peak of the whole process (MB) |", "|---|---|---|---|---|"]
        for n, m in rss.items():
            lines.append(f"| {n} | {m['loaded_mb']:.0f} | {m['weights_file_mb']:.0f} | {m['run_peak_mb']:.0f} | {m['process_peak_mb']:.0f} |")
        lines += ["", "The weights are memory-mapped from safetensors; every weight page is read before the peak mark is reset "
                  "(`touch_weights`), so that the embedding rows a larger corpus happens to touch do not count as the analysis's memory."]
    lines += [
        "",
        "(1) bare = transformer body only, no `lm_head`, same batches; (2) and (4) = the runner's batch loop "
        "(`manifest.json` timings.batches: tracing, reductions, host copies and Parquet parts), without "
        "model loading or plots; (3) = one text at a time with `output_hidden_states=True` and the full `lm_head`.",
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
