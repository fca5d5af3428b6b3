"""Benchmark: the costliest single requests a visitor can send, on GPT-2 small's shape.

    .venv/bin/python -m benchmarks.hostile [--model DIR] [--out FILE]

Starts ``app.py`` as the classroom benchmark does (GPT-2 small's shape with random weights, or
``--model``), waits until every graph is compiled, then sends one request at a time through the
HTTP API, as an attacker of a public Space would:

1. for each hostile prompt (the 20,000-character pastes of ``0``, ``/`` and ``=``, a passage
   cut at the 256-token limit, script and Markdown in the prompt), a Run (with another
   20,000-character paste as the compare prompt B), then **every named
   endpoint** the app offers, with the page's own default arguments (each tab, each control,
   each export), and the endpoints with a size knob at their largest (the most draws, the most
   new tokens, the widest lens, a temperature of 1e-40);
2. the patching sweeps, the long jobs (their own lane, one per session; reported apart), on
   their preset and on prompts of the most tokens a sweep takes;
3. raw HTTP: a prompt over the character limit, a 10 MB body, an upload, an unknown endpoint.

Per request: wall seconds and response-body bytes (SSE stream included); the server's peak
resident memory. Prints the table, worst first, against the bounds of issue 18 (about 2 s of
server time and 2 MB of response per request), and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.classroom import (
    REPO,
    WireCounter,
    checkpoint,
    fmt_mb,
    free_port,
    initial_values,
    new_client,
    serving,
    share_ssl_contexts,
)
from explorer.analyses import LENS_MAX_POSITIONS
from explorer.settings import Settings
from gpt2_max.tokenizer import Tokenizer

SECONDS_BOUND = 2.0
BYTES_BOUND = 2_000_000
LONG_JOBS = ("/patch_heads", "/patch_residual")
# Not requests a visitor's page sends on its own (the model list is the host's; the status is polled).
SKIPPED = ("/choose_model",)
PASSAGE = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be "
    "in want of a wife. However little known the feelings or views of such a man may be on his first "
    "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that "
    "he is considered as the rightful property of some one or other of their daughters. "
)
PROMPTS = {
    '"0" x 20,000': "0" * 20_000,
    '"/" x 20,000': "/" * 20_000,
    '"=" x 20,000': "=" * 20_000,
    "prose cut at 256 tokens": PASSAGE * 12,
    "script and Markdown": "<script>alert(1)</script> | `x` | **y** $$z$$ <|endoftext|> " * 40,
    "over the character limit": "x" * 20_001,
}
COMPARE_WITH = PROMPTS['"=" x 20,000']


@dataclass
class Request:
    prompt: str
    what: str
    seconds: float
    bytes: int
    error: str = ""

    @property
    def over(self) -> bool:
        return self.seconds > SECONDS_BOUND or self.bytes > BYTES_BOUND


def largest_arguments(endpoint: dict) -> list[list[Any]]:
    """The page's defaults, and for an endpoint with a size knob, the same at the knob's largest."""
    defaults = initial_values(endpoint)
    variants = [defaults]
    labels = [str(p.get("label", "")).lower() for p in endpoint["parameters"]]
    for index, label in enumerate(labels):
        largest = None
        if label.startswith("max new tokens"):
            largest = Settings().max_new_tokens
        elif label.startswith("n (up to"):
            largest = Settings().max_sample_draws
        elif label.startswith("temperature"):
            largest = 1e-40  # inside the slider's range: must behave as greedy, not overflow
        elif label.startswith("logit lens over"):
            largest = LENS_MAX_POSITIONS
        if largest is not None:
            changed = list(defaults)
            changed[index] = largest
            variants.append(changed)
    return variants


def run_arguments(endpoint: dict, prompt: str, model: str) -> list[Any]:
    """/run's arguments: the prompt and the model where the page has them, the rest as the page starts."""
    arguments = initial_values(endpoint)
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    arguments[names.index("text")], arguments[names.index("model_name")] = prompt, model
    if "compare_text" in names:  # prompt B, traced beside A: the most a Run may cost is both at the limit
        arguments[names.index("compare_text")] = COMPARE_WITH if prompt != COMPARE_WITH else PROMPTS['"0" x 20,000']
    return arguments


def main(argv: list[str] | None = None) -> int:
    share_ssl_contexts()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint directory (default: GPT-2 small's shape)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "hostile-results.json"))
    args = parser.parse_args(argv)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"

    counter = WireCounter()
    rows: list[Request] = []

    def timed(client, prompt_name: str, what: str, api_name: str, arguments: list, key: str = "probe") -> None:
        started, received = time.perf_counter(), counter.total(key)
        error = ""
        try:
            client.predict(*arguments, api_name=api_name)
        except Exception as failure:  # noqa: BLE001 - a refusal is an answer; recorded
            error = f"{type(failure).__name__}: {str(failure)[:120]}"
        rows.append(Request(prompt_name, what, time.perf_counter() - started, counter.total(key) - received, error))

    with checkpoint(args.model) as model, serving(REPO, model, free_port()) as server:
        probe = server.wait_until_ready(model, counter)
        endpoints = probe.view_api(return_format="dict", print_info=False)["named_endpoints"]
        # Each tab's first drawing first (a control or another tab's open may draw it before, and a
        # tab already drawn for this Run answers with nothing), then everything else.
        others = sorted(
            (name for name in endpoints if name not in ("/run", *LONG_JOBS, *SKIPPED)),
            key=lambda name: (not name.startswith("/render_"), name),
        )
        for prompt_name, prompt in PROMPTS.items():
            client = new_client(server.url, counter, prompt_name)
            timed(client, prompt_name, "/run", "/run", run_arguments(endpoints["/run"], prompt, model), prompt_name)
            for name in others:
                for arguments in largest_arguments(endpoints[name]):
                    # Some endpoints set another prompt (a preset, a lesson, a link): each starts
                    # from the hostile Run again (the store has it: untimed, and cheap).
                    client.predict(*run_arguments(endpoints["/run"], prompt, model), api_name="/run")
                    changed = [a for a, d in zip(arguments, initial_values(endpoints[name])) if a != d]
                    what = name + (f" ({', '.join(map(str, changed))})" if changed else "")
                    timed(client, prompt_name, what, name, arguments, prompt_name)
            client.close()
        sweeper = new_client(server.url, counter, "sweeps")
        tokenizer = Tokenizer()
        limit = Settings().max_patch_tokens
        clean = tokenizer.decode(tokenizer.encode(PASSAGE)[:limit])  # as long as a sweep's prompt may be
        corrupted = clean.replace(" man in possession", " woman in possession")  # the same token count
        for name in LONG_JOBS:
            timed(sweeper, "long job", f"{name}, the preset", name, initial_values(endpoints[name]), "sweeps")
            arguments = initial_values(endpoints[name])
            arguments[:4] = [clean, corrupted, " wife", " husband"]
            timed(sweeper, "long job", f"{name}, {limit}-token prompts", name, arguments, "sweeps")
        sweeper.close()
        raw = [
            ("a 10 MB body", "/gradio_api/call/run", {"data": ["x" * 10_000_000, model]}),
        ]
        for what, path, body in raw:
            started = time.perf_counter()
            response = httpx.post(server.url.rstrip("/") + path, json=body, timeout=60)
            rows.append(
                Request(
                    "raw HTTP", f"{what} → {response.status_code}", time.perf_counter() - started, len(response.content)
                )
            )
        for what, path in (("an upload", "/gradio_api/upload"), ("an unknown endpoint", "/gradio_api/call/nothing")):
            started = time.perf_counter()
            response = httpx.post(
                server.url.rstrip("/") + path, files={"files": ("x.bin", b"\0" * 1_000_000)}, timeout=60
            )
            rows.append(
                Request(
                    "raw HTTP", f"{what} → {response.status_code}", time.perf_counter() - started, len(response.content)
                )
            )
        peak = server.peak_rss_mb()
        server.check_alive()
        probe.close()

    rows.sort(key=lambda r: (r.prompt != "long job", r.seconds), reverse=True)
    short = [r for r in rows if r.prompt != "long job"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    lines = [
        f"machine: {machine}; model: {args.model or 'GPT-2 small shape, random weights'}; requests: {len(rows)}",
        f"bounds per request: {SECONDS_BOUND:.0f} s, {BYTES_BOUND / 1e6:.0f} MB (long jobs apart); "
        f"over a bound: {sum(r.over for r in short)}; server peak RSS (VmHWM): {fmt_mb(peak)} MB",
        "",
        "| prompt | request | seconds | MB | note |",
        "|---|---|---:|---:|---|",
    ]
    lines += [
        f"| {r.prompt} | {r.what} | {r.seconds:.2f} | {r.bytes / 1e6:.3f} | {('**over** ' if r.over and r.prompt != 'long job' else '') + r.error} |"
        for r in [*(r for r in rows if r.prompt == "long job"), *short[:25]]
    ]
    print("\n".join(lines))
    Path(args.out).write_text(
        json.dumps({"machine": machine, "peak_rss_mb": peak, "requests": [asdict(r) for r in rows]}, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
