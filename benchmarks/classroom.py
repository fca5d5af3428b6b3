"""Classroom benchmark: N students on one explorer server at once, through its HTTP API.

    .venv/bin/python -m benchmarks classroom --students 30 [--prompt-tokens 64] [--new-tokens 20]
        [--timeout 900] [--model DIR] [--app-dir PATH] [--port N] [--replicas N] [--out FILE]

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

``--replicas N`` measures a school instead: N ``app.py`` of this checkout behind HAProxy
(deploy/replicas.py, as ``bash run.sh replicas N`` starts them), the students sent to HAProxy,
which spreads them over the replicas and keeps each on its own; the memory rows are the replicas'
sums, and the report says how many sessions each replica held. ``--kill-replica-after S`` (with
``--replicas`` 2 or more) kills the first replica (SIGKILL) S seconds after the students start: a
student whose session was on it and whose call fails then presses Run again, which must work on
another replica (the row "run again after the kill"), and the report says whether the other
replicas' students all finished untouched. With replicas, each student's first tab must show its
own prompt's number ("Student 17" is the token " 17"), else the student errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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
RUN_AGAIN = "run again after the kill"
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

    def exit_code(self) -> int | None:
        return self.process.poll()

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


def deploy_scripts():
    """deploy/replicas.py as a module (deploy/ holds scripts, not a package)."""
    if str(REPO / "deploy") not in sys.path:
        sys.path.insert(0, str(REPO / "deploy"))
    import replicas

    return replicas


class School:
    """``--replicas N``: N ``app.py`` of this checkout behind HAProxy on loopback (deploy/replicas.py's
    LocalSchool), with Server's interface: the students go to HAProxy, memory is summed over the
    replicas."""

    def __init__(self, model: str, port: int, workdir: str, replicas: int) -> None:
        # The replicas take their settings from this environment, as Server's app does from its own.
        os.environ.update(
            {"HF_HUB_OFFLINE": "1", "MODULAR_TELEMETRY_ENABLED": "0", "GPT2_EXPLORER_ALLOWED_MODELS": model}
        )
        self.school = deploy_scripts().LocalSchool(
            replicas, port, port + replicas + 1, model, workdir=Path(workdir), python=sys.executable
        )
        self.school.start()
        self.url = self.school.url
        self.rss_samples: list[tuple[float, float]] = []  # (time.perf_counter(), MB of all the replicas)
        self._stop_sampling = threading.Event()
        threading.Thread(target=self._sample_rss, daemon=True).start()

    def _pids(self) -> list[int]:
        return [replica.process.pid for replica in self.school.replicas]

    def _sample_rss(self) -> None:
        while not self._stop_sampling.wait(RSS_INTERVAL_S):
            mbs = [read_status_mb(pid, "VmRSS") for pid in self._pids()]
            if None not in mbs:
                self.rss_samples.append((time.perf_counter(), sum(mbs)))

    def peak_rss_mb(self) -> float | None:
        """The replicas' VmHWM, summed (each one's peak: an upper bound of their peak together)."""
        mbs = [read_status_mb(pid, "VmHWM") for pid in self._pids()]
        return None if None in mbs else sum(mbs)

    def exit_code(self) -> int | None:
        return next((r.process.poll() for r in self.school.replicas if r.process.poll() is not None), None)

    def wait_until_ready(self, model: str, counter: WireCounter) -> Client:
        """Every replica's model ready and its background work done; returns a client (key "probe")."""
        from replica_ready import status

        started = time.monotonic()
        self.school.wait_until_ready(LOAD_TIMEOUT_S)
        for replica in self.school.replicas:
            while "In the background" in status(replica.url):
                if time.monotonic() - started > LOAD_TIMEOUT_S:
                    raise RuntimeError(f"{replica.name} still busy after {LOAD_TIMEOUT_S:.0f} s: {status(replica.url)}")
                time.sleep(1.0)
        print(f"{len(self.school.replicas)} replicas ready after {time.monotonic() - started:.1f} s", flush=True)
        return new_client(self.url, counter, "probe")

    def replicas_of_sessions(self) -> dict[str, set[str]]:
        """session hash -> the replicas whose event streams it used (HAProxy's log)."""
        replicas: dict[str, set[str]] = {}
        for name, session in re.findall(r"replicas/(\w+) .*session_hash=([\w-]+)", self.school.haproxy_log.read_text()):
            replicas.setdefault(session, set()).add(name)
        return replicas

    def sessions_per_replica(self) -> dict[str, int]:
        """How many sessions' event streams each replica served (HAProxy's log), the probe's included."""
        counts = {replica.name: 0 for replica in self.school.replicas}
        for names in self.replicas_of_sessions().values():
            for name in names:
                counts[name] = counts.get(name, 0) + 1
        return counts

    def kill_first(self) -> str:
        """SIGKILL to the first replica (mid-class); returns its name."""
        replica = self.school.replicas[0]
        replica.process.kill()
        replica.process.wait()
        return replica.name

    def log_tail(self, lines: int = 40) -> str:
        logs = [self.school.haproxy_log] + [replica.log_path for replica in self.school.replicas]
        return "\n".join(f"{log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) for log in logs)

    def stop(self) -> None:
        self._stop_sampling.set()
        self.school.stop()


@contextmanager
def serving(app_dir: Path, model: str, port: int, replicas: int = 0) -> Iterator[Server | School]:
    with tempfile.TemporaryDirectory(prefix="classroom-cache-") as cache_dir:
        server = School(model, port, cache_dir, replicas) if replicas else Server(app_dir, model, port, cache_dir)
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
        needed = {"/run", *after_run, *(f"/render_{tab}" for tab in OPENED_TABS), "/change_mlp", "/generate"}
        missing = needed - set(endpoints)
        if missing:
            raise RuntimeError(f"the app has no {sorted(missing)}; it has {sorted(endpoints)}")
        args = {name: initial_values(endpoints[name]) for name in needed}
        mlp_layer = min(MLP_LAYER, n_layer - 1)
        args["/change_mlp"][0] = mlp_layer  # (layer, position): position None = the last one
        args["/generate"][-1] = new_tokens  # (temperature, top_k, top_p, seed, max_new_tokens)
        return cls(model, mlp_layer, after_run, after_run != ("/render_visible",), args, new_tokens)

    def run_args(self, prompt: str) -> list[Any]:
        """A Run of ``prompt``: (text, model), the Run's later inputs (a compare prompt) as the page starts them."""
        return [prompt, self.model, *self.args["/run"][2:]]

    def actions(self) -> list[str]:
        return [
            RUN_VISIBLE,
            RUN_ALL,
            *(f"open {tab}" for tab in OPENED_TABS),
            self.slider(),
            FIRST_TOKEN,
            self.last_token(),
            RUN_AGAIN,
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
    recovered: bool = False  # its replica was killed and its Run after that worked


class Student:
    """One student's session: the calls in order, each one's latency and bytes recorded."""

    def __init__(
        self,
        key: str,
        client: Client,
        counter: WireCounter,
        prompt: str,
        plan: Plan,
        deadline: float,
        number: int = 0,
        killed: threading.Event | None = None,
    ) -> None:
        self.key, self.client, self.counter, self.prompt, self.plan = key, client, counter, prompt, plan
        self.deadline = deadline  # time.perf_counter() after which no new call starts
        self.number = number  # the "Student {n}" woven into the prompt; 0: not checked
        self.killed = killed  # set once a replica was killed (--kill-replica-after)
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

    def run_and_show(self, action: str) -> tuple[float, int]:
        """A Run and the first tab drawn from it (``action`` recorded then); checks that the tab shows
        this student's own prompt (its number's token in the Tokenize grid, the tab a session starts on)."""
        plan = self.plan
        since = self.mark()
        note = str(self.call("/run", *plan.run_args(self.prompt)))
        if "Live" not in note:
            raise RuntimeError(f"/run gave no live trace: {note[:200]}")
        shown = self.call(plan.after_run[0], *plan.args[plan.after_run[0]])
        self.record(action, since)
        text = json.dumps(shown, ensure_ascii=False, default=str)
        if self.number and f"␣{self.number}<br>" not in text:  # the Tokenize grid's cell of " {n}"
            raise RuntimeError(f"student {self.number}'s first tab does not show its own prompt")
        return since

    def work(self, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            self.session()
        except OutOfTime:
            self.result.timed_out = True
        except Exception as error:  # noqa: BLE001 - reported, and the others go on
            self.result.error = f"{type(error).__name__}: {error}"
            if self.killed is not None and self.killed.wait(0.5):
                # Its replica died under it: the student presses Run again, as its page asks.
                try:
                    self.run_and_show(RUN_AGAIN)
                    self.result.error = f"lost in the kill, then ran again: {self.result.error}"
                    self.result.recovered = True
                except OutOfTime:
                    self.result.timed_out = True
                except Exception as again:  # noqa: BLE001
                    self.result.error += f"; the Run after the kill failed too: {type(again).__name__}: {again}"
        finally:
            self.result.done = True

    def session(self) -> None:
        plan = self.plan
        since = self.run_and_show(RUN_VISIBLE)
        for name in plan.after_run[1:]:
            self.call(name, *plan.args[name])
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


def warm_up(client: Client, counter: WireCounter, plan: Plan) -> str:
    """A Run, its first render and a short generation on the probe client.

    Checks the byte counter on that render (it must have seen at least the result's JSON)
    and returns what it saw.
    """
    client.predict(*plan.run_args("A warm-up prompt, unlike any student's."), api_name="/run")
    before = counter.total("probe")
    result = client.predict(*plan.args[plan.after_run[0]], api_name=plan.after_run[0])
    received = counter.total("probe") - before
    payload = len(json.dumps(result, ensure_ascii=False, default=str).encode())
    if received < payload:
        raise RuntimeError(f"byte counter saw {received} B for {plan.after_run[0]}, less than its {payload} B result")
    client.predict(*plan.args["/generate"][:-1], 2, api_name="/generate")
    return f"{plan.after_run[0]} after the warm-up Run: {received} B received for a {payload} B JSON result"


def run_students(
    url: str,
    counter: WireCounter,
    plan: Plan,
    prompts: list[str],
    timeout_s: float,
    check_own: bool = False,
    kill: tuple[float, Callable[[], str]] | None = None,
) -> tuple[list[StudentResult], float, float, list[threading.Thread], list[Client], str | None]:
    """All students at once; returns their results, the start time, the wall time and the
        threads of students still busy at the deadline.

        Clients are made first (each fetches the app's config and polls /status once, as the page's
    status timer does when it opens), then all start at one barrier.
        A student still busy at the deadline is reported as timed out with what it has done;
        its call ends when the server is stopped.
        ``check_own``: each student checks that its first tab shows its own prompt. ``kill``: (seconds
        after the start, a function that kills a replica and names it); also returns the clients
        (their session hashes) and the name of the replica killed.
    """
    clients = [new_client(url, counter, f"student-{i}") for i in range(len(prompts))]
    for client in clients:
        # What each student's page does when it opens: the status line's timer polls /status
        # (every 2 s from load, until the model is ready), which also starts the session's state.
        client.predict(plan.model, api_name="/status")
    deadline = time.perf_counter() + timeout_s
    killed = threading.Event() if kill else None
    students = [
        Student(f"student-{i}", clients[i], counter, prompt, plan, deadline, i + 1 if check_own else 0, killed)
        for i, prompt in enumerate(prompts)
    ]
    victim: list[str] = []

    def kill_a_replica() -> None:
        time.sleep(kill[0])
        killed.set()  # first: the calls it breaks fail as soon as it is killed
        victim.append(kill[1]())
        print(f"killed {victim[0]} {kill[0]:.1f} s after the students started", flush=True)

    barrier = threading.Barrier(len(students) + 1, timeout=120)
    threads = [threading.Thread(target=s.work, args=(barrier,), daemon=True) for s in students]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    if kill:
        threading.Thread(target=kill_a_replica, daemon=True).start()
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
    busy = [thread for thread in threads if thread.is_alive()]
    return results, started, wall, busy, clients, victim[0] if victim else None


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
    parser.add_argument(
        "--replicas", type=int, default=0, help="N replicas of this checkout behind HAProxy (deploy/), not one app"
    )
    parser.add_argument(
        "--kill-replica-after",
        type=float,
        default=None,
        metavar="S",
        help="with --replicas 2 or more: kill the first replica S seconds after the students start",
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "classroom-results.json"))
    args = parser.parse_args(argv)
    if args.kill_replica_after is not None and args.replicas < 2:
        parser.error("--kill-replica-after needs --replicas 2 or more (the students move to another replica)")

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # gradio_client reads it too
    os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: locate() only reads the cache
    from gpt2_max.weights import locate

    app_dir = args.app_dir.resolve()
    if not (app_dir / "app.py").is_file():
        parser.error(f"--app-dir {app_dir} has no app.py")
    if args.replicas and app_dir != REPO:
        parser.error("--replicas starts this checkout's app.py (deploy/replicas.py); leave --app-dir out")
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"machine: {machine}\napp: {app_dir / 'app.py'}\nserver log: {SERVER_LOG}", flush=True)
    prompts = student_prompts(args.students, args.prompt_tokens)
    counter = WireCounter()
    port = args.port or (deploy_scripts().free_ports(args.replicas + 2) if args.replicas else free_port())
    with checkpoint(args.model) as model, serving(app_dir, model, port, args.replicas) as server:
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
        kill = (args.kill_replica_after, server.kill_first) if args.kill_replica_after is not None else None
        results, started, wall, busy, clients, victim = run_students(
            server.url, counter, plan, prompts, args.timeout, check_own=bool(args.replicas), kill=kill
        )
        during = [mb for t, mb in server.rss_samples if started <= t <= started + wall]
        rss = {
            "before_students_mb": next((mb for t, mb in reversed(server.rss_samples) if t < started), None),
            "peak_sampled_during_students_mb": max(during, default=None),
            "peak_vmhwm_mb": server.peak_rss_mb(),
        }
        server_exit = server.exit_code()
        sessions = server.sessions_per_replica() if args.replicas else None
        if args.replicas:
            placed = server.replicas_of_sessions()
            where = [sorted(placed.get(client.session_hash, ())) for client in clients]
        if busy:
            print(f"{len(busy)} students timed out; stopping the server ends their calls", flush=True)
    for thread in busy:  # so that what gradio_client prints about them comes before the report
        thread.join(10)

    rows = [row for row in summarise(plan, results) if row["action"] != RUN_AGAIN or victim]
    kill_lines = []
    if victim:
        theirs = [r for r, names in zip(results, where) if victim in names]
        others = [r for r, names in zip(results, where) if victim not in names]
        untouched = sum(
            not r.error and not r.timed_out and any(x.action == plan.last_token() for x in r.samples) for r in others
        )
        lost = [r for r in theirs if r.error]
        kill_lines = [
            f"killed {victim} {args.kill_replica_after:.1f} s after the start: {len(theirs)} students had used it, "
            f"{len(lost)} of them lost a call, {sum(r.recovered for r in lost)} of those ran again on another "
            f"replica (the rest of its students had finished); the other {len(others)} students: {untouched} "
            "finished every action with no error"
        ]
    errors = [r.error for r in results if r.error and not r.recovered]
    timed_out = sum(r.timed_out for r in results)
    model_note = args.model or "GPT-2 small shape, random weights N(0, 0.02)"
    totals = [
        f"students: {args.students}; prompt tokens: {args.prompt_tokens}; new tokens: {args.new_tokens}; model: {model_note}",
        *kill_lines,
        f"total wall time: {wall:.1f} s; timed out: {timed_out}; errored: {len(errors)}"
        + (f"; first error: {errors[0]}" if errors else "")
        + (f"; the server exited with code {server_exit}" if server_exit is not None and not victim else ""),
        *(
            [f"{args.replicas} replicas behind HAProxy; sessions per replica (the probe's included): {sessions}"]
            if sessions
            else []
        ),
        f"server RSS MB{' (the replicas together)' if sessions else ''}: {fmt_mb(rss['before_students_mb'])} before the students, "
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
                "replicas": args.replicas,
                "sessions_per_replica": sessions,
                "killed_replica": victim,
                "kill": kill_lines,
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
