"""Measurements that need a process of their own (start-up time, peak memory, a cold cache).

Run as ``python -m benchmarks.children KIND CHECKPOINT_DIR``; prints one JSON line.
The ``torch-*`` kinds import only torch, transformers and numpy, so they run in
a reference environment that has no MAX.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

START = time.perf_counter()

SEQUENCE_LENGTHS = (8, 64, 256, 1024)
PROMPT_TOKENS = 16
NEW_TOKENS = 128
BATCH_PROMPTS = 4  # the traces row: this many 64-token prompts at once
MEMORY_TOKENS = 256


def ids_of_length(n: int, offset: int = 0) -> list[int]:
    # Deterministic, ordinary-text-like ids (all < 50257); another offset, another prompt.
    return [(1000 + 37 * i + 101 * offset) % 50000 for i in range(n)]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: per address space, so not inherited
    from the parent the way getrusage's ru_maxrss is across fork + exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB -> MB
    raise RuntimeError("no VmHWM in /proc/self/status")


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up: first calls allocate and fault in the weights
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def repeats_for(n: int) -> int:
    # This machine is a shared VM: single runs vary by 2x, so take medians of many.
    return 5 if n >= 1024 else 11


def max_start(directory: str) -> dict:
    """Process start -> model loaded and compiled (warm cache) -> first 8-token trace; then a 256-token trace for peak memory."""
    import gpt2_max

    model = gpt2_max.load(directory)
    model.trace(ids_of_length(8))
    first_trace = time.perf_counter() - START
    model.trace(ids_of_length(MEMORY_TOKENS))
    return {"first_trace_s": first_trace, "compile_s": model.compile_seconds, "peak_rss_mb": peak_rss_mb()}


def max_cold_compile(directory: str) -> dict:
    """Compile time of the trace graph; the parent points XDG_CACHE_HOME at an empty directory."""
    import gpt2_max

    model = gpt2_max.load(directory)
    return {"compile_s": model.compile_seconds}


def _torch_model(directory: str):
    import torch
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def torch_start(directory: str) -> dict:
    import torch

    model = _torch_model(directory)
    with torch.no_grad():
        model(torch.tensor([ids_of_length(8)]), output_attentions=True, output_hidden_states=True)
        first_trace = time.perf_counter() - START
        model(torch.tensor([ids_of_length(MEMORY_TOKENS)]), output_attentions=True, output_hidden_states=True)
    return {"first_trace_s": first_trace, "peak_rss_mb": peak_rss_mb()}


def torch_speed(directory: str) -> dict:
    """Forward with all attentions and hidden states per T, and cached greedy generation."""
    import torch

    model = _torch_model(directory)
    result: dict = {"torch": torch.__version__}
    import transformers

    result["transformers"] = transformers.__version__
    with torch.no_grad():
        for n in SEQUENCE_LENGTHS:
            ids = torch.tensor([ids_of_length(n)])
            result[f"trace_{n}_s"] = median_seconds(
                lambda ids=ids: model(ids, output_attentions=True, output_hidden_states=True), repeats_for(n)
            )
        batch = torch.tensor([ids_of_length(64, offset=b) for b in range(BATCH_PROMPTS)])
        result["traces_batch_s"] = median_seconds(
            lambda: model(batch, output_attentions=True, output_hidden_states=True), repeats_for(256)
        )
        prompt = torch.tensor([ids_of_length(PROMPT_TOKENS)])

        def generate() -> None:
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                use_cache=True,
                pad_token_id=50256,
            )
            assert out.shape[1] == PROMPT_TOKENS + NEW_TOKENS

        result["generate_s"] = median_seconds(generate, 3)
    return result


KINDS = {
    "max-start": max_start,
    "max-cold-compile": max_cold_compile,
    "torch-start": torch_start,
    "torch-speed": torch_speed,
}

if __name__ == "__main__":
    kind, directory = sys.argv[1], sys.argv[2]
    print(json.dumps(KINDS[kind](directory)), flush=True)
