"""One Run of the model on the user's text, and the service that makes, caches and replays Runs.

A Run holds plain numpy data only (the trace dict), never the model. Traces
live in a server-side LRU store with a byte budget; the browser's ``gr.State``
holds only the small request (text, ids, experiment settings, store key), so
30 users cost 30 small states, and an evicted trace is recomputed from its
request on the next view.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpt2_max.config import GPT2Config
from gpt2_max.errors import ExplorerError, InputError
from gpt2_max.tokenizer import Token, Tokenizer

from components.settings import Settings

log = logging.getLogger("explorer")

LIVE = "live"
PRECOMPUTED = "precomputed"


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
    seconds: float = 0.0  # MAX time for the trace

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def labels(self) -> list[str]:
        """One unique axis label per position: "3 ␣cat" (position first, so repeats stay apart)."""
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
        }


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


def example_path(examples_dir: str | Path, model_name: str, text: str) -> Path:
    slug = model_name.strip("/").replace("/", "--")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Path(examples_dir) / slug / f"{digest}.npz"


class ExplorerService:
    """Loads the model in the background and turns requests into Runs."""

    def __init__(self, settings: Settings, model_name: str | None = None, examples: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.model_name = model_name or settings.model
        self.examples = tuple(examples)
        # Committed examples first, then ones this host saved after an earlier start.
        self.example_dirs = (Path(settings.examples_dir), Path(settings.cache_dir) / "examples")
        self.tokenizer = Tokenizer()
        self.store = TraceStore(settings.trace_cache_mb * 1024 * 1024)
        self.model = None
        self.load_error = ""
        self.load_seconds = 0.0
        self._loaded = threading.Event()

    # -- model lifecycle -------------------------------------------------

    def start_loading(self) -> threading.Thread:
        """Downloads and compiles in a worker thread, so the page answers at once."""
        thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        thread.start()
        return thread

    def _load(self) -> None:
        import gpt2_max

        started = time.perf_counter()
        try:
            self.model = gpt2_max.load(self.model_name)
        except ExplorerError as error:
            self.load_error = str(error)
        except Exception as error:  # noqa: BLE001 - the page must say something, not die
            self.load_error = f"the model could not be loaded ({type(error).__name__}: {error})"
        self.load_seconds = time.perf_counter() - started
        self._loaded.set()
        if self.model is not None:
            self.save_examples()

    def save_examples(self) -> None:
        """Saves live traces of the examples, so the next start of this host has them at once."""
        for text in self.examples:
            if self.precomputed(text) is not None:
                continue
            try:
                run = self.run(text)
                save_example(example_path(self.example_dirs[-1], self.model_name, run.text), run)
            except (OSError, ExplorerError) as error:
                log.warning("could not save example %r: %s", text[:40], error)

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    @property
    def ready(self) -> bool:
        return self.model is not None

    def status_markdown(self) -> str:
        if self.model is not None:
            return f"**Model:** `{self.model_name}` ready (MAX graph compiled in {self.model.compile_seconds:.1f} s). Results below are **live**."
        if self.load_error:
            return (
                f"**Model `{self.model_name}` is not available** (failed after {self.load_seconds:.1f} s): "
                f"{self.load_error}\n\nThe example prompts still work from precomputed traces."
            )
        return (
            f"**Loading `{self.model_name}`** (download and MAX compile; a few seconds when cached, "
            "minutes on a cold host). Meanwhile the example prompts show **precomputed** traces."
        )

    # -- requests --------------------------------------------------------

    def prepare(self, text: str) -> tuple[str, list[int], str]:
        """Validates and tokenizes text: (text, ids, notice). Refuses what cannot be run."""
        if not isinstance(text, str):
            raise InputError("the prompt must be text")
        if len(text) > self.settings.max_prompt_chars:
            raise InputError(
                f"the prompt has {len(text):,} characters; this explorer takes up to "
                f"{self.settings.max_prompt_chars:,}. Paste a shorter passage."
            )
        text = text.replace("\x00", "")  # NUL bytes cannot reach the browser back intact
        if not text.strip():
            raise InputError("type some text first: the prompt is empty")
        ids = self.tokenizer.encode(text)
        limit = self.settings.max_prompt_tokens
        if self.model is not None:
            limit = min(limit, self.model.config.n_positions)
        notice = ""
        if len(ids) > limit:
            notice = (
                f"The prompt has {len(ids)} tokens; only the first {limit} are shown "
                f"({len(ids) - limit} cut). The host's limit is {limit} tokens."
            )
            ids = ids[:limit]
            text = self.tokenizer.decode(ids)
        return text, ids, notice

    def run(self, text: str, causal: bool = True, ablated=()) -> Run:
        """The Run for a user's text: live when the model is ready, else a precomputed example."""
        text, ids, notice = self.prepare(text)
        if self.model is None:
            run = self.precomputed(text)
            if run is None:
                raise InputError(
                    "the model is still loading; try one of the example prompts, "
                    "which have precomputed traces, or wait a moment"
                    if not self.load_error
                    else f"the model is unavailable ({self.load_error}); the example prompts still work"
                )
            return run
        return self.run_ids(text, ids, causal, ablated, notice)

    def run_ids(self, text: str, ids, causal: bool = True, ablated=(), notice: str = "") -> Run:
        if self.model is None:
            raise InputError("the model is not loaded yet")
        ablated = tuple(sorted((int(a), int(b)) for a, b in ablated))
        key = request_key(self.model_name, ids, causal, ablated)
        cached = self.store.get(key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        trace = self.model.trace(ids, causal=causal, ablate=ablated)
        run = Run(
            text=text,
            token_ids=tuple(int(i) for i in ids),
            tokens=tuple(self.tokenizer.tokens(ids)),
            trace=trace,
            config=self.model.config,
            model_name=self.model_name,
            causal=causal,
            ablated=ablated,
            source=LIVE,
            notice=notice,
            seconds=time.perf_counter() - started,
        )
        self.store.put(key, run)
        return run

    def variant(self, run: Run, causal: bool | None = None, ablated=None) -> Run:
        """The same tokens with the mask switched or heads ablated: same graph, other inputs."""
        return self.run_ids(
            run.text,
            run.token_ids,
            run.causal if causal is None else causal,
            run.ablated if ablated is None else ablated,
            run.notice,
        )

    def from_request(self, request: dict | None) -> Run | None:
        """Rebuilds the Run a ``gr.State`` points at (from the store, or recomputed)."""
        if not request:
            return None
        if request.get("source") == PRECOMPUTED or self.model is None:
            return self.precomputed(request["text"])
        return self.run_ids(
            request["text"], request["token_ids"], request["causal"], [tuple(p) for p in request["ablated"]],
            request.get("notice", ""),
        )

    def precomputed(self, text: str) -> Run | None:
        paths = [example_path(d, self.model_name, text) for d in self.example_dirs]
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
            model_name=self.model_name,
            source=PRECOMPUTED,
        )


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
    config = {f"{CONFIG_PREFIX}{k}": v for k, v in run.config.to_dict().items() if k in GPT2Config.__dataclass_fields__ and v is not None}
    np.savez_compressed(path, token_ids=np.asarray(run.token_ids, dtype=np.int64), **config, **run.trace)
