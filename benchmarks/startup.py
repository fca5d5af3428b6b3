"""Start-up benchmark: how soon a new app process serves everything, after ``warmup``.

    .venv/bin/python -m benchmarks startup [--model DIR] [--starts 3] [--out FILE]

Around GPT-2 small's shape with random weights (``--model`` takes a directory or Hub id
instead): runs ``python -m gpt2_max warmup`` once (it compiles the three graphs into MAX's cache,
or finds them there), then starts ``app.py`` ``--starts`` times on that cache, one after another,
and polls each from outside as HAProxy's health check and the page's status line do (the status
API, every 0.2 s). The first start gets an empty explorer cache, as a container built with the
warmup does (MAX's cache in the image, nothing of the app's); the others keep it, as a restarted
host does. Per start:

- **page**: the first ``GET /`` that answers 200 (a browser sees the page);
- **Runs live**: the status says the model is ready (its trace graph is loaded);
- **graphs ready**: the trace, analysis and decode graphs all loaded (nothing "compiling" in the
  background; the target: within 30 s);
- **background done**: the examples traced and the trace store's memory touched too;

and the app's own record of each load stage (``load-seconds.json`` in its cache directory:
reading the checkpoint, each graph, the examples, the memory). Prints a table and writes JSON
(default ``benchmarks/startup-results.json``).
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
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 30.0  # issue 23: every graph ready within 30 s of the process starting, after the warmup
POLL_S = 0.2
START_TIMEOUT_S = 600.0


def page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def warmup(model: str) -> dict:
    """``python -m gpt2_max warmup`` as the README shows it: its wall time and the line it printed."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "gpt2_max", "warmup", "--model", model],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MODULAR_TELEMETRY_ENABLED": "0"},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"warmup failed:\n{done.stderr[-3000:]}")
    return {"wall_s": time.perf_counter() - started, "said": done.stdout.strip().splitlines()[-1]}


def one_start(model: str, cache_dir: Path) -> dict:
    """Starts app.py (the classroom benchmark's Server), polls it until its background load is
    done, stops it; -> the times (s from launch) and the app's stage record."""
    from benchmarks.classroom import SERVER_LOG, Server, deploy_scripts, free_port
    from explorer.loading import STAGES

    deploy_scripts()  # deploy/ on the path: its replica_ready asks what HAProxy's check asks
    from replica_ready import READY_MARK, status

    times: dict[str, float] = {}
    launched = time.perf_counter()
    server = Server(REPO, model, free_port(), str(cache_dir))
    try:
        while "background_done_s" not in times:
            server.check_alive()
            now = time.perf_counter() - launched
            if now > START_TIMEOUT_S:
                raise RuntimeError(f"not ready within {START_TIMEOUT_S:.0f} s; see {SERVER_LOG}")
            if "page_s" not in times:
                if page_answers(server.url):
                    times["page_s"] = now
            else:
                try:
                    text = status(server.url)
                except (OSError, ValueError, KeyError, IndexError):
                    text = ""
                if "not available" in text:
                    raise RuntimeError(f"the model did not load: {text}")
                if READY_MARK in text:
                    times.setdefault("runs_live_s", now)
                    if not any(STAGES[stage][0] in text for stage in GRAPH_STAGES):
                        times.setdefault("graphs_ready_s", now)
                    if "In the background" not in text:
                        times["background_done_s"] = now
                        times["status"] = text
            time.sleep(POLL_S)
    finally:
        server.stop()
    record = json.loads((cache_dir / "load-seconds.json").read_text())
    times["stages_s"] = record.get(model, {})
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks startup", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a checkpoint directory or Hub id (default: GPT-2 small's shape)")
    parser.add_argument("--starts", type=int, default=3, help="app starts on the warmed cache (the first one fresh)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "startup-results.json")
    args = parser.parse_args(argv)
    from benchmarks.classroom import checkpoint

    with checkpoint(args.model) as model, tempfile.TemporaryDirectory(prefix="startup-") as workdir:
        shape = args.model or "GPT-2 small's shape, random weights"
        print(f"model: {shape}; warmup ...", flush=True)
        warmed = warmup(model)
        print(f"warmup {warmed['wall_s']:.1f} s: {warmed['said']}", flush=True)
        cache_dir = Path(workdir) / "explorer-cache"
        starts = []
        for index in range(args.starts):
            kind = "first start (empty app cache)" if index == 0 else "restart (app cache kept)"
            times = one_start(model, cache_dir)
            times["kind"] = kind
            starts.append(times)
            print(f"{kind}: graphs ready {times['graphs_ready_s']:.1f} s", flush=True)

    stage_names = sorted({name for start in starts for name in start["stages_s"]}, key=STAGE_ORDER.index)
    header = ["start", "page", "Runs live", "graphs ready", "background done", *stage_names]
    rows = [
        [
            start["kind"],
            *(f"{start[key]:.1f}" for key in ("page_s", "runs_live_s", "graphs_ready_s", "background_done_s")),
            *(f"{start['stages_s'].get(name, 0.0):.1f}" for name in stage_names),
        ]
        for start in starts
    ]
    print(f"\nseconds from the process start; target: graphs ready within {TARGET_S:.0f} s\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "model": shape,
                "warmup": warmed,
                "target_s": TARGET_S,
                "starts": starts,
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.out}")
    return 0


# The app's load stages in the order it runs them (explorer.loading.STAGES), and those that come
# before every graph is loaded (the examples are traced before the analysis and decode graphs load).
STAGE_ORDER = ["download", "trace", "examples", "analysis", "decode", "memory"]
GRAPH_STAGES = ("download", "trace", "examples", "analysis", "decode")
