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
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 30.0  # issue 23: every graph ready within 30 s of the process starting, after the warmup
POLL_S = 0.2
START_TIMEOUT_S = 600.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_text(url: str) -> str | None:
    """The app's status line for its model (what deploy/replica_ready.py asks), None if no answer."""
    request = urllib.request.Request(
        url + "gradio_api/run/status",
        data=json.dumps({"data": [None]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(json.load(response)["data"][0])
    except (OSError, ValueError, KeyError, IndexError):
        return None


def page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def app_environment(model: str, cache_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "MODULAR_TELEMETRY_ENABLED": "0",
        "GPT2_EXPLORER_CACHE_DIR": str(cache_dir),
        "GPT2_EXPLORER_ALLOWED_MODELS": model,
    }


def warmup(model: str) -> dict:
    """``python -m gpt2_max warmup`` as the README shows it: its wall time and the line it printed."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "gpt2_max", "warmup", "--model", model],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=app_environment(model, Path(tempfile.gettempdir())),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"warmup failed:\n{done.stderr[-3000:]}")
    return {"wall_s": time.perf_counter() - started, "said": done.stdout.strip().splitlines()[-1]}


def one_start(model: str, cache_dir: Path, log_path: Path) -> dict:
    """Starts app.py, polls it until its background load is done, stops it; -> the times (s from launch)."""
    from explorer.loading import STAGES
    from tests.app_process import stop_app

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "app.py", "--model", model, "--port", str(port), "--host", "127.0.0.1"]
    times: dict[str, float] = {}
    with log_path.open("w") as log:
        launched = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPO, env=app_environment(model, cache_dir), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            while "background_done_s" not in times:
                if process.poll() is not None:
                    raise RuntimeError(f"the app exited with {process.returncode}; see {log_path}")
                now = time.perf_counter() - launched
                if now > START_TIMEOUT_S:
                    raise RuntimeError(f"not ready within {START_TIMEOUT_S:.0f} s; see {log_path}")
                if "page_s" not in times:
                    if page_answers(url):
                        times["page_s"] = now
                else:
                    status = status_text(url) or ""
                    if "not available" in status:
                        raise RuntimeError(f"the model did not load: {status}")
                    if "` ready" in status:
                        times.setdefault("runs_live_s", now)
                        if not any(STAGES[stage][0] in status for stage in GRAPH_STAGES):
                            times.setdefault("graphs_ready_s", now)
                        if "In the background" not in status:
                            times["background_done_s"] = now
                            times["status"] = status
                time.sleep(POLL_S)
        finally:
            stop_app(process, timeout_s=30)
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
            times = one_start(model, cache_dir, Path(workdir) / f"app-{index}.log")
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
