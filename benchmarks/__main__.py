"""Benchmark: the MAX engine against PyTorch + transformers, in one run, on this machine.

    .venv/bin/python -m benchmarks [--torch-python .venv-ref/bin/python] [--skip-cold] [--out FILE]
    .venv/bin/python -m benchmarks classroom --students 30 [...]   # the app under load: benchmarks/classroom.py
    .venv/bin/python -m benchmarks startup [--starts 3]              # a new app process after warmup: benchmarks/startup.py

Measures for GPT-2 small's shape (the real openai-community/gpt2 when it is in
the Hugging Face cache, else random weights at std 0.02, as the output says), through the
public API exactly as the README shows it (``m = gpt2_max.load(dir)``, ``m.trace(ids)`` with
its default every-position logits, ``m.traces([...])``, ``m.generate(ids, max_new_tokens=128,
temperature=0)``):
1. ``trace`` latency with every intermediate and all logits, T = 8, 64, 256, 1024;
2. ``traces`` of four 64-token prompts (PyTorch: one forward over a batch of four);
3. ``generate``: greedy tokens/s, 128 new tokens after a 16-token prompt;
4. process start to first trace, warm MAX cache;
5. compile time of the trace graph with an empty MAX cache (a temporary XDG_CACHE_HOME);
6. peak resident memory after loading and one 256-token trace;
and this machine's floors in the same run: a T = 64 forward's FLOPs at the fp32 matmul rate
numpy reaches here, and a decode step's weight bytes at the memory read bandwidth of both cores.
PyTorch rows come from ``--torch-python`` (an interpreter with torch and
transformers; default ``.venv-ref/bin/python`` when it exists). Medians of
repeated runs; prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.children import (
    BATCH_PROMPTS,
    NEW_TOKENS,
    PROMPT_TOKENS,
    SEQUENCE_LENGTHS,
    ids_of_length,
    median_seconds,
    repeats_for,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TORCH_PYTHON = REPO / ".venv-ref" / "bin" / "python"


def checkpoint_directory(workdir: Path) -> tuple[str, str]:
    """The real GPT-2 small from the cache if present, else a random one of its shape."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from gpt2_max.errors import ModelLoadError
    from gpt2_max.weights import DEFAULT_MODEL, locate

    try:
        return str(locate(DEFAULT_MODEL).directory), f"{DEFAULT_MODEL} (real weights, from the cache)"
    except ModelLoadError:
        from gpt2_max.config import GPT2Config
        from tests.tiny_checkpoint import write_save_pretrained

        directory = write_save_pretrained(workdir / "gpt2-small-random", GPT2Config(), seed=0)
        return str(directory), "GPT-2 small shape, random weights N(0, 0.02) (the real checkpoint is not cached)"


def run_child(python: str, kind: str, directory: str, env: dict | None = None) -> tuple[dict, float]:
    """Runs one measurement in a fresh process; returns its JSON and the wall time."""
    started = time.perf_counter()
    done = subprocess.run(
        [python, "-m", "benchmarks.children", kind, directory],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def measure_max(directory: str) -> dict:
    """The public API as a notebook user calls it (see the README's engine section)."""
    import gpt2_max

    model = gpt2_max.load(directory)
    result: dict = {}
    for n in SEQUENCE_LENGTHS:
        ids = ids_of_length(n)
        result[f"trace_{n}_s"] = median_seconds(lambda ids=ids: model.trace(ids), repeats_for(n))
    batch = [dict(token_ids=ids_of_length(64, offset=b)) for b in range(BATCH_PROMPTS)]
    result["traces_batch_s"] = median_seconds(lambda: model.traces(batch), repeats_for(256))
    prompt = ids_of_length(PROMPT_TOKENS)
    produced: list[int] = []

    def generate() -> None:
        produced.append(len(model.generate(prompt, max_new_tokens=NEW_TOKENS, temperature=0).ids))

    result["generate_s"] = median_seconds(generate, 3)
    result["generated_tokens"] = min(produced)
    return result


def machine_floors(config) -> dict:
    """This machine's limits, measured now: numpy's fp32 matmul rate (2048^3, both cores) and the
    read bandwidth of two threads summing halves of a 512 MB array; and what they make of a
    T = 64 trace (FLOPs of the dense layers, attention and every position's logits) and of one
    decode step (every weight read once: the blocks and the tied wte)."""
    import threading

    import numpy as np

    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    matmul_s = median_seconds(lambda: a @ a, 5)
    flops_per_s = 2 * 2048**3 / matmul_s
    big = np.ones(2**27, dtype=np.float32)  # 512 MB
    halves = np.split(big, 2)

    def read_both() -> None:
        threads = [threading.Thread(target=np.sum, args=(half,)) for half in halves]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    bytes_per_s = big.nbytes / median_seconds(read_both, 5)
    E, L, V, T = config.n_embd, config.n_layer, config.vocab_size, 64
    block_params = L * (4 * E * E + 2 * 4 * E * E)  # q|k|v + out projection, MLP in + out
    trace_flops = 2 * block_params * T + 4 * L * T * T * E + 2 * T * E * V
    decode_bytes = 4 * (block_params + V * E)
    return {
        "matmul_gflop_s": flops_per_s / 1e9,
        "read_gb_s": bytes_per_s / 1e9,
        "trace_64_floor_s": trace_flops / flops_per_s,
        "generate_floor_tok_s": bytes_per_s / decode_bytes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--torch-python", default=str(DEFAULT_TORCH_PYTHON) if DEFAULT_TORCH_PYTHON.exists() else sys.executable
    )
    parser.add_argument("--skip-cold", action="store_true", help="skip the empty-cache compile (minutes)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory, weights_note = checkpoint_directory(Path(tmp))
        print(f"weights: {weights_note}", flush=True)
        try:
            before = run_child(args.torch_python, "torch-speed", directory)[0]
        except (RuntimeError, OSError) as error:
            print(f"PyTorch side skipped: {str(error).splitlines()[0]}", flush=True)
            before = None
        ours = measure_max(directory)
        from gpt2_max.config import GPT2Config

        floors = machine_floors(GPT2Config.from_json_file(Path(directory) / "config.json"))
        start, start_wall = run_child(sys.executable, "max-start", directory)
        ours.update(first_trace_s=start["first_trace_s"], start_wall_s=start_wall, peak_rss_mb=start["peak_rss_mb"])
        if not args.skip_cold:
            with tempfile.TemporaryDirectory() as empty_cache:
                cold, _ = run_child(sys.executable, "max-cold-compile", directory, {"XDG_CACHE_HOME": empty_cache})
            ours["cold_compile_s"] = cold["compile_s"]
        theirs: dict = {}
        try:
            # PyTorch's speed before and after ours: this VM's speed drifts within a run, and
            # the mean of the two puts both engines in the same window.
            if before is None:
                raise RuntimeError("no PyTorch")
            runs = [before, run_child(args.torch_python, "torch-speed", directory)[0]]
            theirs = {**runs[1], **{key: (runs[0][key] + runs[1][key]) / 2 for key in runs[1] if key.endswith("_s")}}
            theirs["runs"] = runs
            torch_start, _ = run_child(args.torch_python, "torch-start", directory)
            theirs.update(first_trace_s=torch_start["first_trace_s"], peak_rss_mb=torch_start["peak_rss_mb"])
        except (RuntimeError, OSError) as error:
            print(f"PyTorch side skipped: {str(error).splitlines()[0]}", flush=True)

    ours["generate_tok_s"] = ours["generated_tokens"] / ours["generate_s"]
    if "generate_s" in theirs:
        theirs["generate_tok_s"] = NEW_TOKENS / theirs["generate_s"]
    rows = [(f"trace T={n} (ms, all intermediates)", f"trace_{n}_s", 1000.0) for n in SEQUENCE_LENGTHS]
    rows += [
        (f"traces, {BATCH_PROMPTS} x 64 tokens (ms)", "traces_batch_s", 1000.0),
        (f"generate {NEW_TOKENS} tokens, greedy (tokens/s)", "generate_tok_s", 1.0),
        ("process start -> first trace, warm cache (s)", "first_trace_s", 1.0),
        ("compile trace graph, empty cache (s)", "cold_compile_s", 1.0),
        (f"peak RSS after load + T={256} trace (MB)", "peak_rss_mb", 1.0),
    ]
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    lines = [
        f"machine: {machine}; {weights_note}",
        f"PyTorch: torch {theirs.get('torch', '-')}, transformers {theirs.get('transformers', '-')}",
        "",
        f"| {'measure':48} | {'MAX (ours)':>11} | {'PyTorch':>9} | {'ours/theirs':>11} |",
        f"|{'-' * 50}|{'-' * 13}:|{'-' * 10}:|{'-' * 12}:|",
    ]
    for label, key, scale in rows:
        a, b = ours.get(key), theirs.get(key)
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        fa = f"{a * scale:.1f}" if a is not None else "-"
        fb = f"{b * scale:.1f}" if b is not None else "-"
        lines.append(f"| {label:48} | {fa:>11} | {fb:>9} | {ratio:>11} |")
    lines += [
        "",
        f"floors here: fp32 matmul {floors['matmul_gflop_s']:.0f} GFLOP/s, memory read {floors['read_gb_s']:.1f} GB/s;",
        f"trace T=64 floor {floors['trace_64_floor_s'] * 1000:.0f} ms (ours {ours['trace_64_s'] / floors['trace_64_floor_s']:.2f}x it); "
        f"generate floor {floors['generate_floor_tok_s']:.1f} tokens/s (ours {ours['generate_tok_s'] / floors['generate_floor_tok_s']:.2f}x it)",
    ]
    table = "\n".join(lines)
    print(table)
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": machine,
                "weights": weights_note,
                "max": ours,
                "pytorch": theirs,
                "floors": floors,
                "table": table,
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["classroom"]:
        from benchmarks.classroom import main as classroom

        sys.exit(classroom(sys.argv[2:]))
    if sys.argv[1:2] == ["startup"]:
        from benchmarks.startup import main as startup

        sys.exit(startup(sys.argv[2:]))
    sys.exit(main())
