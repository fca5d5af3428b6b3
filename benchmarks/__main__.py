"""Benchmark: the MAX engine against PyTorch + transformers, in one run, on this machine.

    .venv/bin/python -m benchmarks [--torch-python .venv-ref/bin/python] [--skip-cold] [--out FILE]
    .venv/bin/python -m benchmarks classroom --students 30 [...]   # the app under load: benchmarks/classroom.py

Measures for GPT-2 small's shape (the real openai-community/gpt2 when it is in
the Hugging Face cache, else random weights at std 0.02, as the output says):
1. trace latency with every intermediate, T = 8, 64, 256, 1024;
2. greedy generation tokens/s, 128 new tokens after a 16-token prompt;
3. process start to first trace, warm MAX cache;
4. compile time of the trace graph with an empty MAX cache (a temporary XDG_CACHE_HOME);
5. peak resident memory after loading and one 256-token trace.
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
    import gpt2_max
    from gpt2_max.sampling import SamplingSettings

    model = gpt2_max.load(directory)
    result: dict = {}
    for n in SEQUENCE_LENGTHS:
        ids = ids_of_length(n)
        result[f"trace_{n}_s"] = median_seconds(lambda ids=ids: model.trace(ids), repeats_for(n))
    model.engine.warm("decode")
    prompt = ids_of_length(PROMPT_TOKENS)
    produced: list[int] = []

    def generate() -> None:
        steps = list(model.stream(prompt, NEW_TOKENS, SamplingSettings(temperature=0.0)))
        produced.append(len(steps))

    result["generate_s"] = median_seconds(generate, 3)
    result["generated_tokens"] = min(produced)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=str(DEFAULT_TORCH_PYTHON) if DEFAULT_TORCH_PYTHON.exists() else sys.executable)
    parser.add_argument("--skip-cold", action="store_true", help="skip the empty-cache compile (minutes)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory, weights_note = checkpoint_directory(Path(tmp))
        print(f"weights: {weights_note}", flush=True)
        ours = measure_max(directory)
        start, start_wall = run_child(sys.executable, "max-start", directory)
        ours.update(first_trace_s=start["first_trace_s"], start_wall_s=start_wall, peak_rss_mb=start["peak_rss_mb"])
        if not args.skip_cold:
            with tempfile.TemporaryDirectory() as empty_cache:
                cold, _ = run_child(sys.executable, "max-cold-compile", directory, {"XDG_CACHE_HOME": empty_cache})
            ours["cold_compile_s"] = cold["compile_s"]
        theirs: dict = {}
        try:
            theirs = run_child(args.torch_python, "torch-speed", directory)[0]
            torch_start, _ = run_child(args.torch_python, "torch-start", directory)
            theirs.update(first_trace_s=torch_start["first_trace_s"], peak_rss_mb=torch_start["peak_rss_mb"])
        except (RuntimeError, OSError) as error:
            print(f"PyTorch side skipped: {str(error).splitlines()[0]}", flush=True)

    ours["generate_tok_s"] = ours["generated_tokens"] / ours["generate_s"]
    if "generate_s" in theirs:
        theirs["generate_tok_s"] = NEW_TOKENS / theirs["generate_s"]
    rows = [(f"trace T={n} (ms, all intermediates)", f"trace_{n}_s", 1000.0) for n in SEQUENCE_LENGTHS]
    rows += [
        (f"generate {NEW_TOKENS} tokens, greedy (tokens/s)", "generate_tok_s", 1.0),
        ("process start -> first trace, warm cache (s)", "first_trace_s", 1.0),
        ("compile trace graph, empty cache (s)", "cold_compile_s", 1.0),
        (f"peak RSS after load + T={256} trace (MB)", "peak_rss_mb", 1.0),
    ]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
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
    table = "\n".join(lines)
    print(table)
    Path(args.out).write_text(
        json.dumps({"machine": machine, "weights": weights_note, "max": ours, "pytorch": theirs, "table": table}, indent=2)
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["classroom"]:
        from benchmarks.classroom import main as classroom

        sys.exit(classroom(sys.argv[2:]))
    sys.exit(main())
