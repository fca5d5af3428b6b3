"""Classroom benchmark: N students on one explorer server at once, through its HTTP API.

    .venv/bin/python -m benchmarks classroom --students 30 [--prompt-tokens 64] [--new-tokens 20]
        [--timeout 900] [--model DIR] [--app-dir PATH] [--port N] [--out FILE]

Starts ``app.py`` from ``--app-dir`` (default: this checkout; point it at a worktree of an
older commit to compare) on 127.0.0.1 around GPT-2 small's shape with random weights
(speed does not depend on the values; ``--model`` takes a directory or Hub id instead),
waits until the model is loaded, warms up as the teacher would (a Run, its first render
and a 2-token generation, which builds the decode graph on apps that build it on first
use), then opens N students' pages (a client each, which fetches the config and polls
``/status`` once, as the page's status timer does on load) and starts them together. Each is
a thread with its own ``gradio_client`` session and does, in order:

1. **Run** a prompt of its own, exactly ``--prompt-tokens`` tokens long, then what the page
   does after a Run: ``/render_visible`` if the app has it, else (the older app, which
   re-rendered all eight tabs after every Run) every ``/render_<tab>`` in tab order. Rows:
   "run → visible tab" (until the first tab is back) and "run → all tabs" (older app only);
2. **open** the Attention, MLP and Blocks tabs (``/render_<tab>``);
3. move the MLP tab's **layer slider** to 5 (``/change_mlp``; the last layer of a model with fewer);
4. **generate** ``--new-tokens`` tokens (``/generate``, streamed): rows for the first
   streamed token and for the end.

Every control an action does not set keeps the value the page starts with (from
``view_api``). Per call: wall latency, and the response-body bytes received (counted at
httpx's transport, so the SSE stream is included; HTTP headers are not). Percentiles are
nearest-rank. Also the server's peak resident memory (``VmHWM``, and ``VmRSS`` sampled every
0.5 s while the students work). The benchmark process runs on the same machine as the
server, so on a small host the clients' own CPU use is part of what is measured.
Prints a table and writes JSON (default ``benchmarks/classroom-results.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.app_process import stop_app

if TYPE_CHECKING:
    from gradio_client import Client

REPO = Path(__file__).resolve().parent.parent
SERVER_LOG = Path(tempfile.gettempdir()) / "gpt2-explorer-classroom-server.log"

TAB_ORDER = ("tokenize", "embed", "mask", "attention", "mlp", "blocks", "logits", "sample")
OPENED_TABS = ("attention", "mlp", "blocks")
MLP_LAYER = 5
PAGE_TIMEOUT_S = 120.0  # the page answers at once; the model loads in the background
LOAD_TIMEOUT_S = 900.0  # a cold MAX compile of GPT-2 small takes ~4-5 min
RSS_INTERVAL_S = 0.5
POLL_S = 0.005  # how often a student checks for its first streamed token
STUDENT_HEADER = "x-classroom-client"  # tells the byte counter whose response it is

RUN_VISIBLE = "run → visible tab"
RUN_ALL = "run → all tabs"
FIRST_TOKEN = "generate: first token"

STORY = (
    "Student {n} opened the notebook and read the story again. The cat sat on the mat while "
    "the dog slept by the door, and the rain kept falling on the old house. Student {n} "
    "wondered what the model would say next, and typed one more line about the garden. "
)


# -- bytes received ---------------------------------------------------------


class _CountingStream(httpx.SyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream, counter: WireCounter, key: str) -> None:
        self._stream, self._counter, self._key = stream, counter, key

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            self._counter.add(self._key, len(chunk))
            yield chunk

    def close(self) -> None:
        self._stream.close()


class WireCounter:
    """Response-body bytes received, per client, as they arrive (before any decompression).

    gradio_client hands its ``httpx_kwargs`` to ``httpx.post``/``get``/``stream`` as well,
    which take no transport, so the count wraps ``httpx.HTTPTransport`` itself (in this
    process) and tells clients apart by a header each one sends with every request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, int] = {}
        original = httpx.HTTPTransport.handle_request

        def handle_request(transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
            response = original(transport, request)
            key = request.headers.get(STUDENT_HEADER)
            if key is not None:
                response.stream = _CountingStream(response.stream, self, key)
            return response

        httpx.HTTPTransport.handle_request = handle_request

    def headers(self, key: str) -> dict[str, str]:
        with self._lock:
            self._totals[key] = 0
        return {STUDENT_HEADER: key}

    def add(self, key: str, n: int) -> None:
        with self._lock:
            self._totals[key] += n

    def total(self, key: str) -> int:
        with self._lock:
            return self._totals[key]


def share_ssl_contexts() -> None:
    """One SSL context per setting for the whole process, instead of one per request.

    gradio_client makes every call with a fresh ``httpx.post``/``stream``, and each builds an
    SSL context from the CA bundle (~30 ms of CPU, even for plain http): measured with py-spy,
    69% of this process's CPU went there, ~24 s per class of 30, taken from the 2 cores the
    server runs on. A browser does nothing of the kind, so that cost is an artifact of the
    measuring tool, not of the app; the contexts are immutable once made, so sharing them
    changes nothing else."""
    import httpx._transports.default as transports

    made: dict[tuple, object] = {}
    original = transports.create_ssl_context

    def shared(verify=True, cert=None, trust_env=True):
        key = (id(verify) if not isinstance(verify, (bool, str)) else verify, cert, trust_env)
        if key not in made:
            made[key] = original(verify=verify, cert=cert, trust_env=trust_env)
        return made[key]

    transports.create_ssl_context = shared


def new_client(url: str, counter: WireCounter, key: str) -> Client:
    from gradio_client import Client  # after main() has set HF_HUB_OFFLINE for huggingface_hub

    # download_files=False: an export's file stays on the server, as in a browser until clicked.
    return Client(url, verbose=False, download_files=False, analytics_enabled=False, headers=counter.headers(key))


# -- the server -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_status_mb(pid: int, field_name: str) -> float | None:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in MB; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field_name}:"):
                    return int(line.split()[1]) / 1024.0  # kB -> MB
    except FileNotFoundError:
        return None
    return None


class Server:
    """``app.py`` in a subprocess, its output in a log file, its resident memory sampled."""

    def __init__(self, app_dir: Path, model: str, port: int, cache_dir: str) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "MODULAR_TELEMETRY_ENABLED": "0",
            "GPT2_EXPLORER_CACHE_DIR": cache_dir,
            "GPT2_EXPLORER_ALLOWED_MODELS": model,
        }
        self._log = SERVER_LOG.open("w")
        command = [sys.executable, "app.py", "--model", model, "--port", str(port), "--host", "127.0.0.1"]
        self.process = subprocess.Popen(command, cwd=app_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.rss_samples: list[tuple[float, float]] = []  # (time.perf_counter(), MB)
        self._stop_sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample_rss, daemon=True)
        self._sampler.start()

    def _sample_rss(self) -> None:
        while not self._stop_sampling.wait(RSS_INTERVAL_S):
            mb = read_status_mb(self.process.pid, "VmRSS")
            if mb is not None:
                self.rss_samples.append((time.perf_counter(), mb))

    def peak_rss_mb(self) -> float | None:
        return read_status_mb(self.process.pid, "VmHWM")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the app exited with code {self.process.returncode}")

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(SERVER_LOG.read_text(errors="replace").splitlines()[-lines:])

    def wait_until_ready(self, model: str, counter: WireCounter) -> Client:
        """Waits for the page, then for the model; returns a client (key "probe") on the ready app."""
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            self.check_alive()
            try:
                if httpx.get(self.url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the page did not answer within {PAGE_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        client = new_client(self.url, counter, "probe")
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        started = time.monotonic()
        while True:
            self.check_alive()
            answer = client.predict(model, api_name="/status")  # the text (older apps: a 1-tuple)
            status = str(answer if isinstance(answer, str) else answer[0])
            # Ready, and done with the background work (the other graphs' compiles, the examples):
            # a teacher opens the page before class, and a compile would run beside the students.
            if "ready" in status and "In the background" not in status:
                print(f"model ready after {time.monotonic() - started:.1f} s: {status}", flush=True)
                return client
            if "not available" in status:
                raise RuntimeError(f"the model did not load: {status}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the model did not load within {LOAD_TIMEOUT_S:.0f} s: {status}")
            time.sleep(1.0)

    def stop(self) -> None:
        self._stop_sampling.set()
        stop_app(self.process, timeout_s=30)
        self._log.close()


@contextmanager
def serving(app_dir: Path, model: str, port: int) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="classroom-cache-") as cache_dir:
        server = Server(app_dir, model, port, cache_dir)
        try:
            yield server
        except BaseException:
            print(f"\nserver log ({SERVER_LOG}), last lines:\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            server.stop()


@contextmanager
def checkpoint(model: str | None) -> Iterator[str]:
    """``--model`` as given, or a temporary GPT-2 small-shaped checkpoint with random weights."""
    if model is not None:
        yield model
        return
    from gpt2_max.config import GPT2Config
    from tests.tiny_checkpoint import write_save_pretrained

    with tempfile.TemporaryDirectory(prefix="classroom-gpt2-small-") as tmp:
        yield str(write_save_pretrained(Path(tmp), GPT2Config(), seed=0))


# -- what the students send -------------------------------------------------


def student_prompts(count: int, n_tokens: int) -> list[str]:
    """One prompt per student, its number woven in, exactly ``n_tokens`` tokens long."""
    from gpt2_max.tokenizer import Tokenizer

    tokenizer = Tokenizer()
    prompts = []
    for student in range(1, count + 1):
        story = STORY.format(n=student)
        while len(tokenizer.encode(story)) < n_tokens:
            story += STORY.format(n=student)
        text = tokenizer.decode(tokenizer.encode(story)[:n_tokens])
        if len(tokenizer.encode(text)) != n_tokens:
            raise ValueError(f"student {student}'s prompt does not re-encode to {n_tokens} tokens: {text!r}")
        prompts.append(text)
    if len(set(prompts)) != count:
        raise ValueError(f"--prompt-tokens {n_tokens} is too short for {count} distinct prompts")
    return prompts


def initial_values(endpoint: dict) -> list[Any]:
    """The values the page starts with for an endpoint's inputs (a text box without one is empty)."""
    return [
        p["parameter_default"] if p["parameter_has_default"] else ("" if p["python_type"]["type"] == "str" else None)
        for p in endpoint["parameters"]
    ]


@dataclass(frozen=True)
class Plan:
    """Every call a student makes, with its arguments, read from the app's API."""

    model: str
    mlp_layer: int
    after_run: tuple[str, ...]  # what the page renders after a Run, in order
    renders_every_tab: bool  # the older app: all eight tabs after each Run
    args: dict[str, list[Any]]
    new_tokens: int

    @classmethod
    def from_api(cls, api: dict, model: str, n_layer: int, new_tokens: int) -> Plan:
        endpoints = api["named_endpoints"]
        if "/render_visible" in endpoints:
            after_run = ("/render_visible",)
        else:
            after_run = tuple(f"/render_{tab}" for tab in TAB_ORDER if f"/render_{tab}" in endpoints)
        needed = {*after_run, *(f"/render_{tab}" for tab in OPENED_TABS), "/change_mlp", "/generate"}
        missing = needed - set(endpoints)
        if missing:
            raise RuntimeError(f"the app has no {sorted(missing)}; it has {sorted(endpoints)}")
        args = {name: initial_values(endpoints[name]) for name in needed}
        mlp_layer = min(MLP_LAYER, n_layer - 1)
        args["/change_mlp"][0] = mlp_layer  # (layer, position): position None = the last one
        args["/generate"][-1] = new_tokens  # (temperature, top_k, top_p, seed, max_new_tokens)
        return cls(model, mlp_layer, after_run, after_run != ("/render_visible",), args, new_tokens)

    def actions(self) -> list[str]:
        return [
            RUN_VISIBLE,
            RUN_ALL,
            *(f"open {tab}" for tab in OPENED_TABS),
            self.slider(),
            FIRST_TOKEN,
            self.last_token(),
        ]

    def slider(self) -> str:
        return f"mlp layer slider → {self.mlp_layer}"

    def last_token(self) -> str:
        return f"generate: {self.new_tokens} tokens"


# -- the students -----------------------------------------------------------


class OutOfTime(Exception):
    pass


@dataclass
class Sample:
    action: str
    seconds: float
    bytes: int
    ended: float = 0.0  # time.perf_counter() when the call ended (the timeline, for reading where a class waits)


@dataclass
class StudentResult:
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False
    done: bool = False


class Student:
    """One student's session: the calls in order, each one's latency and bytes recorded."""

    def __init__(
        self, key: str, client: Client, counter: WireCounter, prompt: str, plan: Plan, deadline: float
    ) -> None:
        self.key, self.client, self.counter, self.prompt, self.plan = key, client, counter, prompt, plan
        self.deadline = deadline  # time.perf_counter() after which no new call starts
        self.result = StudentResult()

    def mark(self) -> tuple[float, int]:
        if time.perf_counter() > self.deadline:
            raise OutOfTime
        return time.perf_counter(), self.counter.total(self.key)

    def record(self, action: str, since: tuple[float, int]) -> None:
        started, received = since
        now = time.perf_counter()
        self.result.samples.append(Sample(action, now - started, self.counter.total(self.key) - received, now))

    def call(self, api_name: str, *args: Any) -> Any:
        return self.client.predict(*args, api_name=api_name)

    def timed(self, action: str, api_name: str) -> None:
        since = self.mark()
        self.call(api_name, *self.plan.args[api_name])
        self.record(action, since)

    def work(self, barrier: threading.Barrier) -> None:
        barrier.wait()
        plan = self.plan
        try:
            since = self.mark()
            note = str(self.call("/run", self.prompt, plan.model))
            if "Live" not in note:
                raise RuntimeError(f"/run gave no live trace: {note[:200]}")
            for name in plan.after_run:
                self.call(name, *plan.args[name])
                if name == plan.after_run[0]:
                    self.record(RUN_VISIBLE, since)
            if plan.renders_every_tab:
                self.record(RUN_ALL, since)
            for tab in OPENED_TABS:
                self.timed(f"open {tab}", f"/render_{tab}")
            self.timed(plan.slider(), "/change_mlp")
            since = self.mark()
            job = self.client.submit(*plan.args["/generate"], api_name="/generate")
            while not job.outputs() and not job.done():  # Job's own iterator polls every 1 ms
                time.sleep(POLL_S)
            if job.outputs():
                self.record(FIRST_TOKEN, since)
            job.result()  # raises the endpoint's error, if any
            self.record(plan.last_token(), since)
        except OutOfTime:
            self.result.timed_out = True
        except Exception as error:  # noqa: BLE001 - reported, and the others go on
            self.result.error = f"{type(error).__name__}: {error}"
        finally:
            self.result.done = True


def warm_up(client: Client, counter: WireCounter, plan: Plan) -> str:
    """A Run, its first render and a short generation on the probe client.

    Checks the byte counter on that render (it must have seen at least the result's JSON)
    and returns what it saw.
    """
    client.predict("A warm-up prompt, unlike any student's.", plan.model, api_name="/run")
    before = counter.total("probe")
    result = client.predict(*plan.args[plan.after_run[0]], api_name=plan.after_run[0])
    received = counter.total("probe") - before
    payload = len(json.dumps(result, ensure_ascii=False, default=str).encode())
    if received < payload:
        raise RuntimeError(f"byte counter saw {received} B for {plan.after_run[0]}, less than its {payload} B result")
    client.predict(*plan.args["/generate"][:-1], 2, api_name="/generate")
    return f"{plan.after_run[0]} after the warm-up Run: {received} B received for a {payload} B JSON result"


def run_students(
    url: str, counter: WireCounter, plan: Plan, prompts: list[str], timeout_s: float
) -> tuple[list[StudentResult], float, float, list[threading.Thread]]:
    """All students at once; returns their results, the start time, the wall time and the
        threads of students still busy at the deadline.

        Clients are made first (each fetches the app's config and polls /status once, as the page's
    status timer does when it opens), then all start at one barrier.
        A student still busy at the deadline is reported as timed out with what it has done;
        its call ends when the server is stopped.
    """
    clients = [new_client(url, counter, f"student-{i}") for i in range(len(prompts))]
    for client in clients:
        # What each student's page does when it opens: the status line's timer polls /status
        # (every 2 s from load, until the model is ready), which also starts the session's state.
        client.predict(plan.model, api_name="/status")
    deadline = time.perf_counter() + timeout_s
    students = [
        Student(f"student-{i}", clients[i], counter, prompt, plan, deadline) for i, prompt in enumerate(prompts)
    ]
    barrier = threading.Barrier(len(students) + 1, timeout=120)
    threads = [threading.Thread(target=s.work, args=(barrier,), daemon=True) for s in students]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    wall = time.perf_counter() - started
    results = []
    for student in students:
        done = student.result.done
        results.append(
            replace(
                student.result, samples=list(student.result.samples), timed_out=student.result.timed_out or not done
            )
        )
        if done:
            student.client.close()
    return results, started, wall, [thread for thread in threads if thread.is_alive()]


# -- the report -------------------------------------------------------------


def nearest_rank(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def summarise(plan: Plan, results: list[StudentResult]) -> list[dict]:
    rows = []
    for action in plan.actions():
        samples = [s for r in results for s in r.samples if s.action == action]
        row: dict[str, Any] = {"action": action, "count": len(samples)}
        if samples:
            seconds = [s.seconds for s in samples]
            mb = [s.bytes / 1e6 for s in samples]
            row.update(
                p50_s=nearest_rank(seconds, 50),
                p95_s=nearest_rank(seconds, 95),
                max_s=max(seconds),
                mean_mb=sum(mb) / len(mb),
                max_mb=max(mb),
            )
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    columns = (
        ("p50_s", "p50 s", 2),
        ("p95_s", "p95 s", 2),
        ("max_s", "max s", 2),
        ("mean_mb", "mean MB", 3),
        ("max_mb", "max MB", 3),
    )
    lines = [
        f"| {'action':24} | {'calls':>5} | " + " | ".join(f"{title:>7}" for _, title, _ in columns) + " |",
        f"|{'-' * 26}|{'-' * 6}:|" + "|".join(f"{'-' * 8}:" for _ in columns) + "|",
    ]
    for row in rows:
        cells = [f"{row[key]:.{digits}f}" if key in row else "-" for key, _, digits in columns]
        lines.append(f"| {row['action']:24} | {row['count']:>5} | " + " | ".join(f"{c:>7}" for c in cells) + " |")
    return "\n".join(lines)


def fmt_mb(mb: float | None) -> str:
    return f"{mb:.0f}" if mb is not None else "-"


def main(argv: list[str] | None = None) -> int:
    share_ssl_contexts()
    parser = argparse.ArgumentParser(prog="python -m benchmarks classroom", description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument(
        "--new-tokens", type=int, default=20, help="the app allows up to GPT2_EXPLORER_MAX_NEW_TOKENS (64)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for all students together")
    parser.add_argument(
        "--model", default=None, help="checkpoint directory or Hub id (default: GPT-2 small's shape, random weights)"
    )
    parser.add_argument("--app-dir", type=Path, default=REPO, help="the checkout whose app.py is measured")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "classroom-results.json"))
    args = parser.parse_args(argv)

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # gradio_client reads it too
    os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: locate() only reads the cache
    from gpt2_max.weights import locate

    app_dir = args.app_dir.resolve()
    if not (app_dir / "app.py").is_file():
        parser.error(f"--app-dir {app_dir} has no app.py")
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"machine: {machine}\napp: {app_dir / 'app.py'}\nserver log: {SERVER_LOG}", flush=True)
    prompts = student_prompts(args.students, args.prompt_tokens)
    counter = WireCounter()
    with checkpoint(args.model) as model, serving(app_dir, model, args.port or free_port()) as server:
        probe = server.wait_until_ready(model, counter)
        n_layer = locate(model).config.n_layer
        plan = Plan.from_api(probe.view_api(return_format="dict", print_info=False), model, n_layer, args.new_tokens)
        warm_up_started = time.perf_counter()
        byte_check = warm_up(probe, counter, plan)
        probe.close()
        print(
            f"warm-up: {time.perf_counter() - warm_up_started:.1f} s\n"
            f"after a Run: {', '.join(plan.after_run)}\nbyte count check: {byte_check}",
            flush=True,
        )
        results, started, wall, busy = run_students(server.url, counter, plan, prompts, args.timeout)
        during = [mb for t, mb in server.rss_samples if started <= t <= started + wall]
        rss = {
            "before_students_mb": next((mb for t, mb in reversed(server.rss_samples) if t < started), None),
            "peak_sampled_during_students_mb": max(during, default=None),
            "peak_vmhwm_mb": server.peak_rss_mb(),
        }
        server_exit = server.process.poll()
        if busy:
            print(f"{len(busy)} students timed out; stopping the server ends their calls", flush=True)
    for thread in busy:  # so that what gradio_client prints about them comes before the report
        thread.join(10)

    rows = summarise(plan, results)
    errors = [r.error for r in results if r.error]
    timed_out = sum(r.timed_out for r in results)
    model_note = args.model or "GPT-2 small shape, random weights N(0, 0.02)"
    totals = [
        f"students: {args.students}; prompt tokens: {args.prompt_tokens}; new tokens: {args.new_tokens}; model: {model_note}",
        f"total wall time: {wall:.1f} s; timed out: {timed_out}; errored: {len(errors)}"
        + (f"; first error: {errors[0]}" if errors else "")
        + (f"; the server exited with code {server_exit}" if server_exit is not None else ""),
        f"server RSS MB: {fmt_mb(rss['before_students_mb'])} before the students, "
        f"{fmt_mb(rss['peak_sampled_during_students_mb'])} peak sampled during, {fmt_mb(rss['peak_vmhwm_mb'])} peak (VmHWM)",
        "latency: wall seconds per call, nearest-rank percentiles; MB: response bodies received "
        "(httpx transport, SSE stream included, headers not), 1 MB = 10^6 B",
    ]
    report = "\n".join(
        [
            f"machine: {machine}",
            f"app: {app_dir / 'app.py'} (after a Run: {', '.join(plan.after_run)})",
            *totals,
            "",
            table(rows),
        ]
    )
    print("\n" + report)
    Path(args.out).write_text(
        json.dumps(
            {
                "machine": machine,
                "app_dir": str(app_dir),
                "model": model_note,
                "students": args.students,
                "prompt_tokens": args.prompt_tokens,
                "new_tokens": args.new_tokens,
                "timeout_s": args.timeout,
                "after_run": list(plan.after_run),
                "byte_check": byte_check,
                "wall_s": wall,
                "timed_out": timed_out,
                "errored": len(errors),
                "first_error": errors[0] if errors else None,
                "server_rss": rss,
                "server_exit_code": server_exit,
                "rows": rows,
                # Each sample's "ended": seconds after the students started.
                "students_detail": [
                    {**asdict(r), "samples": [{**asdict(x), "ended": x.ended - started} for x in r.samples]}
                    for r in results
                ],
                "table": report,
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.out}")
    return 0
