"""Hardening: bad input through the real HTTP API, many users at once, overload, no network.

The app is served in this process on 127.0.0.1 around the already-compiled tiny
model and driven with ``gradio_client``, as any API user would. Every bad-input
case asserts the message and then that the app still answers a normal request.
"""

from __future__ import annotations

import gc
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import HUB_CACHE, REPO

NORMAL_PROMPT = "Hello world"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(service):
    """Launches the app in this process; returns (demo, url)."""
    from app import build_app

    demo = build_app(service)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=False)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app_client(explorer_service):
    from gradio_client import Client

    demo, url = serve(explorer_service)
    client = Client(url, verbose=False)
    yield client
    client.close()
    demo.close()


def run(client, text):
    """Calls the Run endpoint: returns (request dict or None, note markdown)."""
    return client.predict(text, api_name="/run")


def assert_still_serving(client, tokenizer):
    state, note = run(client, NORMAL_PROMPT)
    assert note.startswith("**Live**"), note
    assert state["token_ids"] == tokenizer.encode(NORMAL_PROMPT)


LIVE = "**Live**"
BAD_TEXTS = {
    # case: (text, what the note must contain)
    "empty": ("", "the prompt is empty"),
    "spaces only": ("   ", "the prompt is empty"),
    "whitespace mix": (" \n\t \r\n ", "the prompt is empty"),
    "NUL only": ("\x00\x00", "the prompt is empty"),
    "1 MB paste": ("a" * 1_000_000, "characters; this explorer takes up to"),
    "just over the char limit": ("b" * 20_001, "characters; this explorer takes up to"),
    "too many tokens": (" token" * 400, "only the first 128 are shown (272 cut)"),
    "control characters": ("\x01\x02\x1b[31mred\x7f", LIVE),
    "NUL inside": ("abc\x00def", LIVE),
    "lone surrogate": ("half \ud800 a pair", LIVE),
    "right-to-left": ("שלום עולם مرحبا بالعالم", LIVE),
    "RTL override": ("abc\u202edef", LIVE),
    "emoji": ("🤗👍🏽👨‍👩‍👧", LIVE),
    "combining marks": ("e\u0301\u0308\u0323 a\u0300", LIVE),
    "zalgo": ("Z̷̢̛̛a̸̧͝l̵̨g̶o̴", LIVE),
    "endoftext typed": ("<|endoftext|>", LIVE),
    "endoftext inside": ("before<|endoftext|>after", LIVE),
    "zero-width": ("a\u200bb\u200dc\ufeff", LIVE),
    "newlines only": ("\n\n\n", "the prompt is empty"),
    "html": ("<script>alert(1)</script><img src=x onerror=alert(2)>", LIVE),
    "markdown": ("**bold** [x](javascript:alert(1)) `code` | a | b |", LIVE),
    "CJK": ("日本語のテキストと中文文本和한국어", LIVE),
    "math letters": ("𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛", LIVE),
    "private use": ("\ue000\uf8ff", LIVE),
    "noncharacter": ("\uffff\ufffe", LIVE),
    "one huge word": ("x" * 5000, "cut"),
    "numbers": ("1e308 -0 NaN inf 0x1F", LIVE),
    "single character": ("a", LIVE),
    "CRLF": ("line one\r\nline two\r\n", LIVE),
    "tabs and text": ("\tindented\tcode", LIVE),
}


@pytest.mark.parametrize("case", list(BAD_TEXTS))
def test_bad_text_gets_a_message_and_the_app_keeps_serving(app_client, explorer_service, case):
    text, expected = BAD_TEXTS[case]
    state, note = run(app_client, text)
    assert expected in note, note
    assert "Traceback" not in note and "File \"" not in note
    if expected == LIVE or "cut" in expected:
        assert note.startswith(LIVE)
        assert 1 <= len(state["token_ids"]) <= explorer_service.settings.max_prompt_tokens
    assert_still_serving(app_client, explorer_service.tokenizer)


def raw_api_cases(state):
    """(endpoint, args) sent straight to the API with values no slider would allow."""
    return [
        ("/render_attention", [state, 99, -5, 10_000]),
        ("/render_attention", [state, -1, 999, -3]),
        ("/render_mask", [state, 50, 50, True]),
        ("/render_mlp", [state, 1_000]),
        ("/render_logits", [state, "\x00" * 10]),
        ("/render_logits", [state, "🤗" * 1000]),
        ("/render_embed", [{**state, "token_ids": [-5, 10**12]}]),
        ("/render_sample", [state, -1.0, -4, 7.5, -3, 10_000]),
        ("/render_sample", [state, 1e9, 10**9, 0.0, 10**30, 0]),
        ("/render_tokenize", [{"text": "x", "token_ids": [10**9], "causal": True, "ablated": [], "source": "live"}]),
        ("/render_blocks", [{"bogus": 1}]),
    ]


def test_out_of_range_values_sent_to_the_api_never_crash(app_client, explorer_service):
    state, _ = run(app_client, "The cat sat on the mat")
    endpoints = {name for name in app_client.view_api(print_info=False, return_format="dict")["named_endpoints"]}
    for endpoint, args in raw_api_cases(state):
        assert endpoint in endpoints, (endpoint, sorted(endpoints))
        try:
            result = app_client.predict(*args, api_name=endpoint)
        except Exception as error:  # noqa: BLE001 - Gradio's own validation refusing a value is fine
            message = str(error)
            assert "Traceback" not in message
        else:
            flat = str(result)
            assert "Traceback" not in flat
        assert_still_serving(app_client, explorer_service.tokenizer)


def test_bad_sampling_settings_sent_to_the_api(app_client, explorer_service):
    state, _ = run(app_client, "Once upon a time")
    endpoints = app_client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/generate" in endpoints
    # temperature, top-k, top-p, seed, max new tokens
    for settings in ([float("nan"), 0, 1.0, 0, 4], [1.0, 0, 1.0, 0, 0], [1.0, 0, 0.0, 0, 4], [1.0, -3, 1.0, -1, 10**6]):
        try:
            result = app_client.predict(state, *settings, api_name="/generate")
            assert "Traceback" not in str(result)
        except Exception as error:  # noqa: BLE001
            assert "Traceback" not in str(error)
        assert_still_serving(app_client, explorer_service.tokenizer)


def test_bad_models_are_refused_with_a_message(tmp_path):
    from components.run import ExplorerService
    from components.settings import Settings
    from tiny_checkpoint import TINY_CONFIG

    import json

    not_gpt2 = tmp_path / "llama"
    not_gpt2.mkdir()
    (not_gpt2 / "config.json").write_text(json.dumps({**TINY_CONFIG.to_dict(), "model_type": "llama"}))
    (not_gpt2 / "model.safetensors").write_bytes(b"")
    pickle_only = tmp_path / "pickle"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text(json.dumps(TINY_CONFIG.to_dict()))
    (pickle_only / "pytorch_model.bin").write_bytes(b"")
    cases = {
        "nobody/no-such-model": "not in the Hugging Face cache",
        str(not_gpt2): "not 'gpt2'",
        str(pickle_only): "safetensors only",
    }
    for name, expected in cases.items():
        service = ExplorerService(Settings(cache_dir=str(tmp_path / "cache")), name)
        service.start_loading().join(30)
        assert service.model is None
        assert expected in service.status_markdown()
        with pytest.raises(Exception, match="unavailable"):
            service.run("Hello")


def test_32_users_at_once_each_get_their_own_answer(app_client, explorer_service):
    """Bounded load on 127.0.0.1: 32 clients, 3 rounds, each answer checked against its own prompt."""
    from gradio_client import Client

    model = explorer_service.model
    tokenizer = explorer_service.tokenizer
    users = 32
    prompts = [f"User {i} asks about the number {i * 7919 % 1000} and the colour {['red', 'blue', 'green'][i % 3]}" for i in range(users)]
    expected_best = [int(np.argmax(model.trace(tokenizer.encode(p))["logits"][-1])) for p in prompts]
    clients = [Client(app_client.src, verbose=False) for _ in range(users)]
    process = psutil.Process()
    rss_mb = []
    latencies: list[float] = []

    def one(i: int) -> float:
        started = time.perf_counter()
        state, note = run(clients[i], prompts[i])
        elapsed = time.perf_counter() - started
        assert state["token_ids"] == tokenizer.encode(prompts[i]), i
        assert f"(id {expected_best[i]}," in note, (i, note)
        return elapsed

    try:
        throughput = []
        for _round in range(3):
            gc.collect()
            rss_mb.append(process.memory_info().rss / 2**20)
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=users) as pool:
                round_latencies = list(pool.map(one, range(users)))
            throughput.append(users / (time.perf_counter() - started))
            latencies += round_latencies
        gc.collect()
        rss_mb.append(process.memory_info().rss / 2**20)
    finally:
        for client in clients:
            client.close()
    p50 = statistics.median(latencies)
    p95 = float(np.percentile(latencies, 95))
    print(
        f"\nload test: {users} clients x 3 rounds; throughput {', '.join(f'{t:.1f}' for t in throughput)} req/s; "
        f"latency p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms; RSS MB by round {[round(m) for m in rss_mb]}; "
        f"trace store {len(explorer_service.store)} runs, {explorer_service.store.nbytes / 2**20:.1f} MB"
    )
    # No growth across rounds once the first round has filled caches: the
    # same 32 requests hit the trace store, which is bounded anyway.
    assert rss_mb[-1] - rss_mb[1] < 100, rss_mb
    assert explorer_service.store.nbytes <= explorer_service.store.budget_bytes


def test_overload_gets_busy_try_again_not_a_crash(explorer_service):
    """A queue of 1 behind a concurrency of 1: excess requests are turned away with Gradio's queue-full message."""
    from dataclasses import replace

    from gradio_client import Client

    from components.run import ExplorerService

    settings = replace(explorer_service.settings, max_queue=1, concurrency_limit=1)
    service = ExplorerService(settings, explorer_service.model_name)
    service.model = explorer_service.model
    service._loaded.set()
    demo, url = serve(service)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        client = Client(url, verbose=False)
        try:
            _, note = run(client, f"A long enough prompt number {i} " * 8)
            outcome = "ok" if note.startswith("**Live**") else note
        except Exception as error:  # noqa: BLE001
            outcome = str(error)
        finally:
            client.close()
        with lock:
            outcomes.append(outcome)

    try:
        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        client = Client(url, verbose=False)
        _, note = run(client, NORMAL_PROMPT)
        client.close()
    finally:
        demo.close()
    refused = [o for o in outcomes if o != "ok"]
    print(f"\noverload: {outcomes.count('ok')} served, {len(refused)} turned away: {set(refused)}")
    assert outcomes.count("ok") >= 1
    assert all("queue" in o.lower() and "full" in o.lower() for o in refused), refused
    assert note.startswith("**Live**")


def test_no_network_start_says_so_within_5_s_and_examples_still_work(tmp_path, explorer_service):
    """The app started on an uncached model with the Hub unreachable (loopback port 9 refuses)."""
    from gradio_client import Client

    from app import EXAMPLES
    from components.run import example_path, save_example

    model_name = "openai-community/gpt2"
    examples_dir = tmp_path / "examples"
    # A precomputed example for that model id (made with the tiny model; the
    # test checks that it is served and labelled, not its numbers).
    save_example(example_path(examples_dir, model_name, EXAMPLES[1]), explorer_service.run(EXAMPLES[1]))
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "empty-hub-cache"),
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "GPT2_EXPLORER_EXAMPLES_DIR": str(examples_dir),
        "GPT2_EXPLORER_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("HF_HUB_OFFLINE", None)
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", model_name, "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = None
        deadline = time.monotonic() + 120
        while client is None and time.monotonic() < deadline:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(1)
        assert client is not None, "the app did not start"
        status = ""
        while time.monotonic() < deadline and "not available" not in status:
            status = client.predict(api_name="/status")[0]
            time.sleep(0.5)
        assert "cannot be reached" in status, status
        assert "python -m gpt2_max download" in status and "HF_HUB_OFFLINE" in status
        seconds = float(status.split("failed after ")[1].split(" s")[0])
        print(f"\nno network: the load failed after {seconds:.1f} s")
        assert seconds < 5.0
        _, note = run(client, EXAMPLES[1])
        assert note.startswith("**Precomputed**"), note
        _, note = run(client, "Some text that is not an example")
        assert "unavailable" in note and "example prompts still work" in note
        client.close()
    finally:
        server.terminate()
        server.wait(30)


def test_trace_memory_at_the_host_limit_is_within_budget(explorer_service):
    """Report and bound what one trace costs at the maximum prompt length."""
    from gpt2_max.config import GPT2Config
    from gpt2_max.hooks import trace_nbytes

    small = GPT2Config()
    limit = explorer_service.settings.max_prompt_tokens
    per_trace = trace_nbytes(small, limit)
    budget = explorer_service.settings.trace_cache_mb * 2**20
    print(f"\nGPT-2 small trace at {limit} tokens: {per_trace / 2**20:.0f} MB; store budget {budget / 2**20:.0f} MB")
    assert per_trace < budget / 4  # the store keeps at least 4 maximum-length traces
    assert Path(HUB_CACHE).exists()
