"""Where a lone call's time goes: the engine's public API and the app's Run, one user alone.

    .venv/bin/python -m benchmarks.profile [--model DIR] [--repeats 7]

Around GPT-2 small's shape with random weights (``--model`` takes a directory or Hub id
instead), each call as a user makes it, alone on the machine:

- ``m.trace(ids)``, T = 64, every position's logits (the README's call);
- ``m.trace(ids, logit_positions=[-1])``, T = 64, the last row's logits only;
- ``m.generate(16 ids, max_new_tokens=128, temperature=0)``, per new token;
- the app's Run of a 64-token prompt (``ExplorerService.run``: validation, the tokenizer, the
  Run batcher, the trace arena, touched first as the app's load does, and the trace store), each
  with a prompt not traced before.

The engine's parts are timed by wrapping them on the loaded model: each compiled graph's
execution (MAX), the inputs handed to MAX and the outputs taken back (buffers), the request's
inputs built in numpy, copies into the trace arena, the decode caches packed, waits for the
engine lock and the batchers' gather windows; "Python, the rest" is the wall time less those.
Medians over ``--repeats`` calls, per call in ms. Prints a table and writes JSON (default
``benchmarks/profile-results.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("MODULAR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PARTS = (
    "MAX trace graph",
    "MAX analysis graph",
    "MAX decode graph",
    "inputs built (numpy)",
    "buffers to and from MAX",
    "copies into the trace arena",
    "decode caches packed",
    "engine lock wait",
    "batcher gather wait",
)


class Profile:
    """Seconds spent in each wrapped part since the last ``reset``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.seconds.clear()

    def wrap(self, owner, attribute: str, part: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - started

        setattr(owner, attribute, timed)

    def wrap_lock(self, engine) -> None:
        """The engine lock's ``hold``: only the wait until it is held counts."""
        lock = engine._run_lock
        original = lock.hold

        @contextlib.contextmanager
        def hold(priority):
            started = time.perf_counter()
            with original(priority):
                self.seconds["engine lock wait"] += time.perf_counter() - started
                yield

        lock.hold = hold


def instrument(model, profile: Profile) -> None:
    import gpt2_max.engine as engine_module

    engine = model.engine
    for graph in ("analysis", "decode"):
        engine.warm(graph)
    profile.wrap(engine._trace, "execute_raw", "MAX trace graph")
    profile.wrap(engine._compiled("analysis"), "execute_raw", "MAX analysis graph")
    profile.wrap(engine._compiled("decode"), "execute_raw", "MAX decode graph")
    profile.wrap(engine, "_to_device", "buffers to and from MAX")
    profile.wrap(engine, "_to_numpy", "buffers to and from MAX")
    profile.wrap(model, "_request", "inputs built (numpy)")
    profile.wrap(engine, "_pack_caches", "decode caches packed")
    profile.wrap(engine_module, "copy_into", "copies into the trace arena")
    profile.wrap(engine.decode_batcher, "_take", "batcher gather wait")
    profile.wrap_lock(engine)


def measure(profile: Profile, call, repeats: int, per: int = 1) -> dict[str, float]:
    """Median ms per call (divided by ``per``: per token) of the wall time and of each part."""
    call()  # the first call pays for first-use costs (page faults, buffers kept)
    rows: list[dict[str, float]] = []
    for _ in range(repeats):
        profile.reset()
        started = time.perf_counter()
        call()
        wall = time.perf_counter() - started
        row = {part: profile.seconds.get(part, 0.0) for part in PARTS}
        row["Python, the rest"] = wall - sum(row.values())
        row["wall"] = wall
        rows.append(row)
    return {key: 1e3 * float(np.median([row[key] for row in rows])) / per for key in rows[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a checkpoint directory or Hub id (default: GPT-2 small's shape)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "profile-results.json")
    args = parser.parse_args(argv)

    import gpt2_max
    from benchmarks.children import ids_of_length
    from benchmarks.classroom import checkpoint, student_prompts
    from explorer.service import ExplorerService
    from explorer.settings import Settings

    with checkpoint(args.model) as name, tempfile.TemporaryDirectory(prefix="profile-") as workdir:
        model = gpt2_max.load(name)
        profile = Profile()
        instrument(model, profile)
        ids = ids_of_length(64)
        prompt = ids_of_length(16)
        new_tokens = 128
        results = {
            "trace T=64, all logits": measure(profile, lambda: model.trace(ids), args.repeats),
            "trace T=64, last logits": measure(profile, lambda: model.trace(ids, logit_positions=[-1]), args.repeats),
            "generate, per token": measure(
                profile,
                lambda: model.generate(prompt, max_new_tokens=new_tokens, temperature=0),
                max(3, args.repeats // 2),
                per=new_tokens,
            ),
        }
        settings = Settings(
            model=name, examples_dir=str(Path(workdir) / "examples"), cache_dir=str(Path(workdir) / "cache")
        )
        service = ExplorerService(settings, name)
        service.loader.adopt(model)
        service.loader.trace_arena.touch()  # as the app's background load does before Runs come
        profile.wrap(service.scheduler.runs, "_take", "batcher gather wait")
        texts = iter(student_prompts(args.repeats + 1, 64))
        results["app Run, 64 tokens"] = measure(profile, lambda: service.run(next(texts)), args.repeats)

    columns = list(results)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; model: {args.model or 'GPT-2 small shape'}")
    print("median ms per call (generate: per new token), one user alone\n")
    print("| part | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for part in ("wall", *PARTS, "Python, the rest"):
        print(f"| {part} | " + " | ".join(f"{results[c][part]:.1f}" for c in columns) + " |")
    args.out.write_text(json.dumps({"machine": platform.machine(), "results": results}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
