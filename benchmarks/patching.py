"""Benchmark: activation-patching sweeps on GPT-2 small's shape, against the issue's target.

    .venv/bin/python -m benchmarks.patching [--tokens 20] [--out FILE]

Loads GPT-2 small (the real checkpoint when cached, else random weights of its shape, as the
output says), builds a clean and a corrupted prompt of the same length (the indirect-object
sentence with the second name swapped) and times: one trace, the L x H head sweep and the
L x T residual sweep (each patch is one run of the trace graph), and direct logit attribution
and the head detectors on the clean trace. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.__main__ import checkpoint_directory

# The issue asks for a full layers x heads sweep at 20 tokens in "seconds": we read that as <= 10 s.
SWEEP_TARGET_SECONDS = 10.0
CLEAN = "When Mary and John went to the store after a long day at school, John gave a drink to"
CORRUPTED = "When Mary and John went to the store after a long day at school, Mary gave a drink to"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("patching.json")))
    args = parser.parse_args()

    import gpt2_max
    from gpt2_max import attribution

    with tempfile.TemporaryDirectory() as workdir:
        directory, weights_note = checkpoint_directory(Path(workdir))
        started = time.perf_counter()
        model = gpt2_max.load(directory)
        load_seconds = time.perf_counter() - started
    clean = model.tokenizer.encode(CLEAN)
    corrupted = model.tokenizer.encode(CORRUPTED)
    mary, john = model.tokenizer.encode(" Mary")[0], model.tokenizer.encode(" John")[0]

    def metric(trace):
        return attribution.logit_difference(trace, -1, mary, john)

    model.trace(clean)  # first run allocates; not timed
    trace_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        trace = model.trace(clean)
        trace_times.append(time.perf_counter() - t0)
    heads = attribution.patch_heads(model, clean, corrupted, metric)
    stream = attribution.patch_residual(model, clean, corrupted, metric)
    t0 = time.perf_counter()
    attribution.attribute(model, trace, -1, mary, john)
    attribution_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    attribution.head_scores(model, trace)
    detector_seconds = time.perf_counter() - t0

    L, H, T = model.config.n_layer, model.config.n_head, len(clean)
    rows = [
        ("one trace (every intermediate)", 1, statistics.median(trace_times), None),
        (f"head sweep, {L} x {H} patched runs", heads.runs, heads.seconds, SWEEP_TARGET_SECONDS),
        (f"residual sweep, {L} x {T} patched runs", stream.runs, stream.seconds, None),
        ("direct logit attribution, one position", 0, attribution_seconds, None),
        ("three head detectors, all heads", 0, detector_seconds, None),
    ]
    print(f"Model: {weights_note}; {T} tokens; loaded and compiled in {load_seconds:.1f} s")
    print(f"{'what':45} {'traces':>7} {'seconds':>9} {'per trace':>10} {'target':>8}")
    for what, runs, seconds, target in rows:
        per = f"{seconds / runs * 1000:.0f} ms" if runs else "-"
        goal = f"<= {target:.0f} s" if target else "-"
        print(f"{what:45} {runs:>7} {seconds:>9.2f} {per:>10} {goal:>8}")
    print(f"clean metric {heads.clean_metric:.3f}, corrupted {heads.corrupted_metric:.3f} (logit ' Mary' - ' John')")
    Path(args.out).write_text(
        json.dumps(
            {
                "model": weights_note,
                "tokens": T,
                "load_seconds": load_seconds,
                "rows": [dict(what=w, traces=r, seconds=s, target_seconds=t) for w, r, s, t in rows],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
