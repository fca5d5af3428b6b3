"""One Run of the model on the user's text, and the service that makes, caches and replays Runs.

A Run holds plain numpy data only (the trace dict), never the model. Traces
live in a server-side LRU store with a byte budget; the browser's ``gr.State``
holds only the small request (text, ids, experiment settings, store key), so
30 users cost 30 small states, and an evicted trace is recomputed from its
request on the next view.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from components.plots import MAX_CELLS_PER_AXIS, Reason
from components.settings import Settings
from gpt2_max import analysis
from gpt2_max.batching import Batcher
from gpt2_max.config import GPT2Config
from gpt2_max.errors import ExplorerError, InputError
from gpt2_max.memory import Arena
from gpt2_max.tokenizer import Token, Tokenizer, clean_text
from gpt2_max.weights import DEFAULT_MODEL, DEMO_MODEL, available, load_weights, locate

log = logging.getLogger("explorer")

LIVE = "live"
PRECOMPUTED = "precomputed"
# A Run pressed while its model loads: its tokens (the Tokenize tab needs only the tokenizer) and no
# trace; the app traces it live once the model is ready.
PENDING = "pending"


@dataclass(frozen=True)
class Run:
    """A trace of the model on one text, with what the tabs need to label it."""

    text: str
    token_ids: tuple[int, ...]
    tokens: tuple[Token, ...]
    trace: dict[str, np.ndarray]
    config: GPT2Config
    model_name: str
    causal: bool = True
    ablated: tuple[tuple[int, int], ...] = ()
    source: str = LIVE
    notice: str = ""  # e.g. "cut from 900 to 256 tokens"
    seconds: float = 0.0  # from asking for the trace to having it (waiting for a running batch included)
    batched: int = 1  # how many Runs the trace's MAX execution served (dynamic batching)
    # Analyses of this trace made on demand (ExplorerService.analysis), kept with it.
    derived: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @cached_property
    def labels(self) -> list[str]:
        """One unique axis label per position: "3 ␣cat" (position first, so repeats stay apart).

        Computed once per Run: the tabs index it inside per-position loops."""
        return [f"{i} {t.display}" for i, t in enumerate(self.tokens)]

    @property
    def request(self) -> dict:
        """The plain-data request that reproduces this Run (what ``gr.State`` holds)."""
        return {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "causal": self.causal,
            "ablated": [list(p) for p in self.ablated],
            "source": self.source,
            "notice": self.notice,
            "model": self.model_name,
        }


ANALYSES_AT_ONCE = 2
# The longest a view or a generation step waits for Runs being traced (ExplorerService.yield_to_runs):
# about what a class's 30 Runs take together on GPT-2 small.
RUNS_FIRST_MAX_WAIT_S = 10.0
# A Run that finds the engine free waits this long for Runs pressed with it (a class at once):
# a small fraction of one trace, so a lone Run hardly notices it.
RUN_GATHER_S = 0.02


def trace_batch(items: list[tuple[object, dict]]) -> list[dict[str, np.ndarray]]:
    """(model, request) pairs that waited together (see gpt2_max.batching.Batcher) -> their traces,
    each model's requests packed into as few trace-graph executions as fit (``GPT2.traces``)."""
    traces: list = [None] * len(items)
    by_model: dict[int, list[int]] = {}
    for index, (model, _) in enumerate(items):
        by_model.setdefault(id(model), []).append(index)
    for indices in by_model.values():
        model = items[indices[0]][0]
        for index, trace in zip(indices, model.traces([items[i][1] for i in indices]), strict=True):
            traces[index] = trace
    return traces


def request_key(model_name: str, token_ids, causal: bool, ablated) -> str:
    raw = f"{model_name}|{list(token_ids)}|{causal}|{sorted(tuple(p) for p in ablated)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def trace_bytes(trace: dict[str, np.ndarray]) -> int:
    return sum(int(a.nbytes) for a in trace.values())


class TraceStore:
    """An LRU of Runs bounded by total trace bytes; safe to use from Gradio's worker threads."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Run | None:
        with self._lock:
            run = self._runs.get(key)
            if run is not None:
                self._runs.move_to_end(key)
            return run

    def put(self, key: str, run: Run) -> None:
        size = trace_bytes(run.trace)
        with self._lock:
            if key in self._runs:
                self._bytes -= trace_bytes(self._runs.pop(key).trace)
            self._runs[key] = run
            self._bytes += size
            while self._bytes > self.budget_bytes and len(self._runs) > 1:
                _, old = self._runs.popitem(last=False)
                self._bytes -= trace_bytes(old.trace)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._runs)


def read_stage_record(path: Path) -> dict[str, dict[str, float]]:
    """{model: {stage: seconds}} of this host's last loads; {} when there is none or it is unreadable."""
    try:
        record = json.loads(path.read_text())
        return {str(m): {str(k): float(v) for k, v in stages.items()} for m, stages in record.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def write_stage_record(path: Path, name: str, took: dict[str, float]) -> None:
    """Keeps how long each stage of ``name``'s load took here, for the next start's estimates."""
    record = read_stage_record(path)
    record[name] = {stage: round(seconds, 1) for stage, seconds in took.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
    except OSError as error:
        log.warning("could not record the load's stage times: %s", error)


def example_path(examples_dir: str | Path, model_name: str, text: str) -> Path:
    slug = model_name.strip("/").replace("/", "--")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Path(examples_dir) / slug / f"{digest}.npz"


DEMO_MODEL_NOTE = (
    f"`{DEMO_MODEL}` is the **bundled demo model**: GPT-2's architecture and tokenizer, trained by this "
    "project on Jane Austen's six novels. A teaching stand-in with real learned structure, not GPT-2. "
    f"For GPT-2 small, run `python -m gpt2_max download --model {DEFAULT_MODEL}` once on a connected "
    "machine, then restart the app."
)


def start_model(requested: str) -> tuple[str, str]:
    """(the model to load at start, why it is not ``requested``): the bundled demo model when
    ``requested`` is neither bundled, a local directory, cached, nor on a Hub that answers."""
    if available(requested):
        return requested, ""
    return DEMO_MODEL, (
        f"`{requested}` is not in this host's Hugging Face cache and the Hub cannot be reached, "
        "so the explorer shows the bundled demo model."
    )


# What the background load does, in order, and how long each step takes on a cold
# 2-core host (measured on the build machine, GPT-2 small; seconds with a warm MAX cache).
STAGES = {
    # The download is not timed here (no network on the build machine): GPT-2 small is 548 MB.
    "download": ("downloading the checkpoint (GPT-2 small: 548 MB) or reading it from the cache", 30),
    "trace": ("compiling the trace graph", 145),
    "analysis": ("compiling the analysis graph (logit lens, next-token and nearest-token views)", 95),
    "decode": ("compiling the decode graph (Generate)", 110),
    "examples": ("tracing the example prompts", 5),
    # 2 GB on the build VM: 0.6-4 s of page faults, which would otherwise fall on the first Runs.
    "memory": ("touching the trace store's memory once (gpt2_max.memory), so Runs do not pay for it", 4),
}

# The stages that compile a graph the app can already serve without (views wait for it).
COMPILE_STAGES = ("analysis", "decode")


@dataclass
class ModelSlot:
    """One allowed model's loading state."""

    model: object = None  # gpt2_max.GPT2 once its trace graph is compiled
    error: str = ""
    seconds: float = 0.0  # how long loading took (or took to fail)
    started: bool = False
    done: threading.Event = field(default_factory=threading.Event)  # trace graph ready (or failed)
    ready: threading.Event = field(default_factory=threading.Event)  # every graph ready (or failed)
    stage: str = ""  # the STAGES key under way, "" when idle
    stage_started: float = 0.0
    # Seconds each stage took on this host: the last load's (read from the service's record), and this one's.
    measured: dict[str, float] = field(default_factory=dict)
    took: dict[str, float] = field(default_factory=dict)

    def enter(self, stage: str) -> None:
        now = time.perf_counter()
        if self.stage:
            self.took[self.stage] = now - self.stage_started
        self.stage, self.stage_started = stage, now

    def stage_text(self) -> str:
        """What the load does now, for how long so far, and an estimate of how long it takes: this
        host's own time at its last load when there is one, else the build machine's measurement."""
        what, cold = STAGES[self.stage]
        elapsed = time.perf_counter() - self.stage_started
        if self.stage in self.measured:
            estimate = f"estimate: {self.measured[self.stage]:.0f} s, as at this host's last start"
        else:
            estimate = f"estimate: {cold} s, measured cold on a 2-core machine; seconds once MAX has cached it"
        return f"{what}: {elapsed:.0f} s so far ({estimate})"


class ExplorerService:
    """Loads models in the background and turns requests into Runs.

    The host's model (``model_name``) loads at start; a user may pick another
    only from ``settings.allowed_models``, and it loads on first use.
    """

    def __init__(
        self, settings: Settings, model_name: str | None = None, examples: tuple[str, ...] = (), start_note: str = ""
    ) -> None:
        self.settings = settings
        self.model_name = model_name or settings.model  # the default for every request
        self.start_note = start_note  # why the host's model is not the one asked for (start_model)
        self.allowed_models = (self.model_name,) + tuple(m for m in settings.allowed_models if m != self.model_name)
        self.examples = tuple(examples)
        # Committed examples first, then ones this host saved after an earlier start.
        self.example_dirs = (Path(settings.examples_dir), Path(settings.cache_dir) / "examples")
        self.tokenizer = Tokenizer()
        self.store = TraceStore(settings.trace_cache_mb * 1024 * 1024)
        # The traces' arrays live here (the loaded models copy into it): the store's budget and a
        # quarter more for the Runs being traced before the store evicts for them (a trace that
        # finds no room gets fresh memory), its pages touched once in the background load and
        # reused as Runs are evicted.
        self.trace_arena = Arena(settings.trace_cache_mb * 1024 * 1024 * 5 // 4)
        # How long each load stage took at this host's last start, per model (ModelSlot.stage_text's estimates).
        self.stage_record = Path(settings.cache_dir) / "load-seconds.json"
        measured = read_stage_record(self.stage_record)
        self._slots = {name: ModelSlot(measured=measured.get(name, {})) for name in self.allowed_models}
        self._slots_lock = threading.Lock()
        # Two analyses may wait for the engine at once: between two decode steps of a class's
        # generations (which always have a step waiting) two lenses then run, not one (the
        # engine serves analysis before decode; with one at a time the two alternated).
        self._analysis_slots = threading.BoundedSemaphore(ANALYSES_AT_ONCE)
        # Runs that arrive while the engine traces others wait, then go through the trace graph
        # together, up to max_batch_size at a time (each Run is its own Gradio event, so each
        # session keeps its own gr.State).
        self.batcher = Batcher(trace_batch, settings.max_batch_size, RUN_GATHER_S)
        # Runs first: while Runs are being traced, other work (opening a tab, a control, a
        # generation step) waits for them, up to RUNS_FIRST_MAX_WAIT_S (see yield_to_runs).
        self._runs_in_flight = 0
        self._runs_cond = threading.Condition()

    # -- model lifecycle -------------------------------------------------

    def check_allowed(self, name: str | None) -> str:
        """The model a request may use: the default, or one of the host's allowed models."""
        if name in (None, ""):
            return self.model_name
        if name not in self._slots:
            raise InputError(
                f"{str(name)[:80]!r} is not one of the models this host offers: {', '.join(self.allowed_models)}"
            )
        return name

    def start_loading(self, name: str | None = None) -> threading.Thread | None:
        """Downloads and compiles a model in a worker thread (once), so the page answers at once."""
        name = self.check_allowed(name)
        slot = self._slots[name]
        with self._slots_lock:
            if slot.started:
                return None
            slot.started = True
        thread = threading.Thread(target=self._load, args=(name,), name=f"load-{name}", daemon=True)
        thread.start()
        return thread

    def _load(self, name: str) -> None:
        import gpt2_max

        slot = self._slots[name]
        started = time.perf_counter()
        slot.enter("download")
        try:
            checkpoint = locate(name)
            weights = load_weights(checkpoint)
            slot.enter("trace")
            model = gpt2_max.GPT2(checkpoint, weights)
            model.engine.trace_arena = self.trace_arena
            slot.model = model
        except ExplorerError as error:
            slot.error = str(error)
        except Exception as error:  # noqa: BLE001 - the page must say something, not die
            slot.error = f"the model could not be loaded ({type(error).__name__}: {error})"
        slot.seconds = time.perf_counter() - started
        slot.done.set()
        if slot.model is not None:
            # The examples first (seconds, trace graph only), so the next start has them at once;
            # then the other graphs, so a Generate or a lens rarely waits for a compile.
            slot.enter("examples")
            self.save_examples(name)
            for graph in ("analysis", "decode"):
                slot.enter(graph)
                try:
                    slot.model.engine.warm(graph)
                except Exception as error:  # noqa: BLE001 - the views that need it say so on use
                    log.error("compiling the %s graph of %s failed: %s", graph, name, error)
            if not self.trace_arena.touched:
                slot.enter("memory")
                self.trace_arena.touch()
        slot.enter("")
        if slot.model is not None:
            write_stage_record(self.stage_record, name, slot.took)
        slot.ready.set()

    def adopt(self, model, name: str | None = None) -> None:
        """Uses an already-loaded model (tests share one compiled model this way; it keeps the
        trace arena of the first service that adopted it)."""
        slot = self._slots[self.check_allowed(name)]
        if model.engine.trace_arena is None:
            model.engine.trace_arena = self.trace_arena
        slot.model, slot.started = model, True
        slot.done.set()
        slot.ready.set()

    def save_examples(self, name: str) -> None:
        """Saves live traces of the examples, so the next start of this host has them at once."""
        for text in self.examples:
            if self.precomputed(text, name) is not None:
                continue
            try:
                run = self.run(text, model_name=name)
                save_example(example_path(self.example_dirs[-1], name, run.text), run)
            except (OSError, ExplorerError) as error:
                log.warning("could not save example %r: %s", text[:40], error)

    def model_for(self, name: str | None = None):
        """The loaded model of that name (default: the host's), or None while it loads."""
        return self._slots[self.check_allowed(name)].model

    @property
    def model(self):
        return self.model_for(None)

    @property
    def load_error(self) -> str:
        return self._slots[self.model_name].error

    def wait_until_loaded(self, timeout: float | None = None, name: str | None = None) -> bool:
        return self._slots[self.check_allowed(name)].done.wait(timeout)

    def wait_until_ready(self, timeout: float | None = None, name: str | None = None) -> bool:
        """True once every graph of the model is compiled (or its load failed)."""
        return self._slots[self.check_allowed(name)].ready.wait(timeout)

    def readiness(self, request: dict | None) -> str:
        """What the views of a request can show now: "loading" without the model, the graph the
        background load is compiling (views that need it say they wait), "" once nothing is pending.
        Part of a tab's view key, so a view drawn while waiting is drawn again when it can be."""
        slot = self._slots[self.check_allowed((request or {}).get("model"))]
        if slot.model is None:
            return "loading"
        return slot.stage if slot.stage in COMPILE_STAGES else ""

    def compiling(self, graph: str, name: str | None = None) -> str:
        """ "" when ``graph`` of the model can run now, else what the background load is doing."""
        slot = self._slots[self.check_allowed(name)]
        if slot.model is None or slot.model.engine.is_compiled(graph) or slot.stage not in COMPILE_STAGES:
            return ""
        return slot.stage_text()

    def status_markdown(self, name: str | None = None) -> str:
        name = self.check_allowed(name)
        notes = [self.start_note] if self.start_note and name == self.model_name else []
        notes += [DEMO_MODEL_NOTE] if name == DEMO_MODEL else []
        return "\n\n".join([self._loading_markdown(name), *notes])

    def _loading_markdown(self, name: str) -> str:
        slot = self._slots[name]
        if slot.model is not None:
            compiled = ", ".join(
                f"{graph} {seconds:.1f} s" for graph, seconds in slot.model.engine.compile_seconds.items()
            )
            line = f"**Model:** `{name}` ready; results below are **live** (MAX graphs compiled: {compiled})."
            if slot.stage in STAGES:
                line += f" In the background: {slot.stage_text()}."
            return line
        examples = (
            "The example prompts still work from precomputed traces."
            if self.has_precomputed(name)
            else "No precomputed example traces are available for this model on this host."
        )
        if slot.error:
            offline = (
                f" The bundled demo model `{DEMO_MODEL}` works with no network: pick it in the model list."
                if name != DEMO_MODEL
                else ""
            )
            return f"**Model `{name}` is not available** (failed after {slot.seconds:.1f} s): {slot.error}\n\n{examples}{offline}"
        doing = slot.stage_text() if slot.stage in STAGES else "starting"
        return f"**Loading `{name}`**: {doing}. {examples}"

    def analysis(self, run: Run, kind: str, **options):
        """-> (result, "") for an analysis of the Run made by the MAX analysis graph, once per Run
        and options; (None, why) while that graph compiles or without the live model.

        kind: "lens" (gpt2_max.analysis.Lens over the last ``positions`` positions, default
        LENS_DEFAULT_POSITIONS, at most LENS_MAX_POSITIONS), "next" (NextTokens) or "nearest"
        (Nearest of every token's wte row, itself left out).
        """
        key = (kind, *sorted(options.items()))
        if key in run.derived:
            return run.derived[key], ""
        model = self.model_for(run.model_name) if run.source == LIVE else None
        if model is None:
            return None, NEEDS_LIVE_MODEL
        waiting = self.compiling("analysis", run.model_name)
        if waiting:
            return None, Reason(
                f"⏳ This view waits for the MAX analysis graph, {waiting}. It draws itself when the graph is ready.",
                "⏳ Waiting for the analysis graph to compile; drawn by itself when it is ready",
            )
        with self._analysis_slots:
            if key not in run.derived:
                started = time.perf_counter()
                run.derived[key] = ANALYSES[kind](model, run, **options)
                log.info("analysis %s of %d tokens: %.3f s", key, run.n_tokens, time.perf_counter() - started)
        return run.derived[key], ""

    def has_precomputed(self, name: str) -> bool:
        return any(example_path(d, name, text).is_file() for d in self.example_dirs for text in self.examples)

    # -- requests --------------------------------------------------------

    def prepare(self, text: str, model=None) -> tuple[str, list[int], str]:
        """Validates and tokenizes text: (text, ids, notice). Refuses what cannot be run."""
        if not isinstance(text, str):
            raise InputError("the prompt must be text")
        if len(text) > self.settings.max_prompt_chars:
            raise InputError(
                f"the prompt has {len(text):,} characters; this explorer takes up to "
                f"{self.settings.max_prompt_chars:,}. Paste a shorter passage."
            )
        # NUL bytes cannot reach the browser back intact, nor lone surrogates be encoded for it.
        text = clean_text(text).replace("\x00", "")
        if not text.strip():
            raise InputError("type some text first: the prompt is empty")
        ids = self.tokenizer.encode(text)
        limit = self.settings.max_prompt_tokens
        if model is not None:
            limit = min(limit, model.config.n_positions)
        notice = ""
        if len(ids) > limit:
            notice = (
                f"The prompt has {len(ids)} tokens; only the first {limit} are shown "
                f"({len(ids) - limit} cut). The host's limit is {limit} tokens."
            )
            ids = ids[:limit]
            text = self.tokenizer.decode(ids)
        return text, ids, notice

    def run(self, text: str, causal: bool = True, ablated=(), model_name: str | None = None) -> Run:
        """The Run for a user's text: live when the model is ready, else a precomputed example."""
        name = self.check_allowed(model_name)
        model = self.model_for(name)
        text, ids, notice = self.prepare(text, model)
        if model is None:
            self.start_loading(name)
            run = self.precomputed(text, name)
            if run is None:
                error = self._slots[name].error
                examples = "; the example prompts still work" if self.has_precomputed(name) else ""
                if error:
                    raise InputError(f"the model {name} is unavailable ({error}){examples}")
                return self.pending(text, ids, notice, name)
            return run
        return self.run_ids(text, ids, causal, ablated, notice, name)

    def pending(self, text: str, ids, notice: str, name: str) -> Run:
        """A Run of ``text`` waiting for its model: its tokens, no trace (source PENDING)."""
        return Run(
            text=text,
            token_ids=tuple(int(i) for i in ids),
            tokens=tuple(self.tokenizer.tokens(ids)),
            trace={},
            config=None,
            model_name=name,
            source=PENDING,
            notice=notice,
        )

    def run_ids(
        self, text: str, ids, causal: bool = True, ablated=(), notice: str = "", model_name: str | None = None
    ) -> Run:
        """The live Run of these token ids; a PENDING one while the model loads."""
        name = self.check_allowed(model_name)
        model = self.model_for(name)
        if model is None:
            if self._slots[name].error:
                raise InputError(f"the model {name} is unavailable ({self._slots[name].error})")
            self.start_loading(name)
            return self.pending(text, ids, notice, name)
        ablated = tuple(sorted((int(a), int(b)) for a, b in ablated))
        key = request_key(name, ids, causal, ablated)
        cached = self.store.get(key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        with self._runs_cond:
            self._runs_in_flight += 1
        try:
            # Traced together with the Runs that wait beside it.
            # Logits at the last position only: the views that read other positions get them from the
            # analysis graph (ANALYSES["next"]), which a class opening one tab at a time can wait for.
            request = dict(token_ids=ids, causal=causal, ablate=ablated, logit_positions=(-1,))
            trace, served = self.batcher.submit((model, request))
        finally:
            with self._runs_cond:
                self._runs_in_flight -= 1
                self._runs_cond.notify_all()
        run = Run(
            text=text,
            token_ids=tuple(int(i) for i in ids),
            tokens=tuple(self.tokenizer.tokens(ids)),
            trace=trace,
            config=model.config,
            model_name=name,
            causal=causal,
            ablated=ablated,
            source=LIVE,
            notice=notice,
            seconds=time.perf_counter() - started,
            batched=served,
        )
        self.store.put(key, run)
        log.info("run of %d tokens traced in %.3f s (a batch of %d)", run.n_tokens, run.seconds, served)
        return run

    def yield_to_runs(self, max_wait_s: float | None = None) -> float:
        """Waits while Runs are being traced, at most ``max_wait_s`` (default RUNS_FIRST_MAX_WAIT_S);
        -> the seconds waited.

        A Run is what a student waits on with nothing on screen; a tab opened or a token
        generated meanwhile would take the 2 cores (and the GIL) from it. So the views and
        generation steps call this first: when a class presses Run at once, their traces go
        through together, and the other work follows. The bound keeps a stream of Runs from
        starving everything else."""
        limit = RUNS_FIRST_MAX_WAIT_S if max_wait_s is None else max_wait_s
        started = time.perf_counter()
        with self._runs_cond:
            self._runs_cond.wait_for(lambda: self._runs_in_flight == 0, timeout=limit)
        return time.perf_counter() - started

    def variant(self, run: Run, causal: bool | None = None, ablated=None) -> Run:
        """The same tokens with the mask switched or heads ablated: same graph, other inputs."""
        return self.run_ids(
            run.text,
            run.token_ids,
            run.causal if causal is None else causal,
            run.ablated if ablated is None else ablated,
            run.notice,
            run.model_name,
        )

    def from_request(self, request: dict | None) -> Run | None:
        """Rebuilds the Run a ``gr.State`` points at (from the store, or recomputed)."""
        if not request:
            return None
        name = self.check_allowed(request.get("model"))
        if request.get("source") == PENDING:  # tokens only until the model is ready, then traced live
            return self.run_ids(
                request["text"], request["token_ids"], notice=request.get("notice", ""), model_name=name
            )
        if request.get("source") == PRECOMPUTED or self.model_for(name) is None:
            return self.precomputed(request["text"], name)
        return self.run_ids(
            request["text"],
            request["token_ids"],
            request["causal"],
            [tuple(p) for p in request["ablated"]],
            request.get("notice", ""),
            name,
        )

    def precomputed(self, text: str, model_name: str | None = None) -> Run | None:
        name = self.check_allowed(model_name)
        paths = [example_path(d, name, text) for d in self.example_dirs]
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            return None
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        ids = [int(i) for i in arrays.pop("token_ids")]
        config = GPT2Config.from_dict({"model_type": "gpt2", **_config_fields(arrays)})
        return Run(
            text=text,
            token_ids=tuple(ids),
            tokens=tuple(self.tokenizer.tokens(ids)),
            trace=arrays,
            config=config,
            model_name=name,
            source=PRECOMPUTED,
        )


NEEDS_LIVE_MODEL = Reason(
    "This view is computed by the live model's MAX analysis graph; the model is still loading "
    "(this trace is precomputed). Run again once the status line says the model is ready.",
    "Needs the live model: press Run again once it is ready",
)
# The logit lens covers at most this many positions (the last ones): a screenful of columns,
# and its cost (L x T rows through the [E, V] unembedding, linear in T) stays within what a
# tab may take to open.
LENS_MAX_POSITIONS = MAX_CELLS_PER_AXIS
# What the Blocks tab asks for first: the last 24 positions, as many as the heatmap can write
# each cell's top token in (tab_blocks.LENS_TEXT_MAX_POSITIONS). It costs what it shows, and a
# class of 30 opens it 30 times.
LENS_DEFAULT_POSITIONS = 24


def lens_start(n_tokens: int, positions: int = LENS_DEFAULT_POSITIONS) -> int:
    """The first position a lens over the last ``positions`` (at most LENS_MAX_POSITIONS) covers."""
    return max(0, n_tokens - max(1, min(int(positions), LENS_MAX_POSITIONS)))


ANALYSES = {
    "lens": lambda model, run, positions=LENS_DEFAULT_POSITIONS: analysis.logit_lens(
        model, run.trace, lens_start(run.n_tokens, positions)
    ),
    "next": lambda model, run: analysis.next_tokens(model, run.trace, run.token_ids),
    "nearest": lambda model, run: analysis.nearest_tokens(model, run.trace["hook_embed"], exclude=run.token_ids),
}

CONFIG_PREFIX = "config."


def _config_fields(arrays: dict[str, np.ndarray]) -> dict:
    fields = {}
    for key in [k for k in arrays if k.startswith(CONFIG_PREFIX)]:
        value = arrays.pop(key)
        fields[key[len(CONFIG_PREFIX) :]] = value.item() if value.ndim == 0 else value
    return {k: (str(v) if isinstance(v, np.str_) else v) for k, v in fields.items()}


def save_example(path: Path, run: Run) -> None:
    """Writes a Run as a precomputed example (what ``scripts/precompute_examples.py`` commits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        f"{CONFIG_PREFIX}{k}": v
        for k, v in run.config.to_dict().items()
        if k in GPT2Config.__dataclass_fields__ and v is not None
    }
    np.savez_compressed(path, token_ids=np.asarray(run.token_ids, dtype=np.int64), **config, **run.trace)
