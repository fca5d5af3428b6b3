"""Loading models in the background, and what the page says meanwhile.

The host's model loads at start: the checkpoint (downloaded or from the cache), then the trace
graph (Runs go live), then the example traces, the analysis and decode graphs and the trace
store's memory. A user may pick another model only from the host's allowed list; it loads on
first use. ``ModelSlot`` keeps one model's state; the status line and the views read it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from explorer.settings import Settings
from gpt2_max.errors import ExplorerError, InputError
from gpt2_max.memory import Arena
from gpt2_max.weights import DEFAULT_MODEL, DEMO_MODEL, available, load_weights, locate

log = logging.getLogger("explorer")


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


class ModelLoader:
    """The host's models: loads each in a worker thread (once), so the page answers at once."""

    def __init__(self, settings: Settings, model_name: str | None, start_note: str, has_examples: Callable) -> None:
        self.settings = settings
        self.model_name = model_name or settings.model  # the default for every request
        self.start_note = start_note  # why the host's model is not the one asked for (start_model)
        self.allowed_models = (self.model_name,) + tuple(m for m in settings.allowed_models if m != self.model_name)
        self.has_examples = has_examples  # model name -> whether precomputed examples exist
        # Called with a model's name once its trace graph is ready, before the other graphs compile.
        self.on_trace_ready: Callable[[str], None] = lambda name: None
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

    def check_allowed(self, name: str | None) -> str:
        """The model a request may use: the default, or one of the host's allowed models."""
        if name in (None, ""):
            return self.model_name
        if name not in self._slots:
            raise InputError(
                f"{str(name)[:80]!r} is not one of the models this host offers: {', '.join(self.allowed_models)}"
            )
        return name

    def slot(self, name: str | None) -> ModelSlot:
        return self._slots[self.check_allowed(name)]

    def start_loading(self, name: str | None = None) -> threading.Thread | None:
        """Downloads and compiles a model in a worker thread (once)."""
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
            self.on_trace_ready(name)
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
        trace arena of the first loader that adopted it)."""
        slot = self.slot(name)
        if model.engine.trace_arena is None:
            model.engine.trace_arena = self.trace_arena
        slot.model, slot.started = model, True
        slot.done.set()
        slot.ready.set()

    def model_for(self, name: str | None = None):
        """The loaded model of that name (default: the host's), or None while it loads."""
        return self.slot(name).model

    def wait_until_loaded(self, timeout: float | None = None, name: str | None = None) -> bool:
        return self.slot(name).done.wait(timeout)

    def wait_until_ready(self, timeout: float | None = None, name: str | None = None) -> bool:
        """True once every graph of the model is compiled (or its load failed)."""
        return self.slot(name).ready.wait(timeout)

    def readiness(self, name: str | None) -> str:
        """What the views of a model's Runs can show now: "loading" without the model, the graph the
        background load is compiling (views that need it say they wait), "" once nothing is pending.
        Part of a tab's view key, so a view drawn while waiting is drawn again when it can be."""
        slot = self.slot(name)
        if slot.model is None:
            return "loading"
        return slot.stage if slot.stage in COMPILE_STAGES else ""

    def compiling(self, graph: str, name: str | None = None) -> str:
        """ "" when ``graph`` of the model can run now, else what the background load is doing."""
        slot = self.slot(name)
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
            if self.has_examples(name)
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
