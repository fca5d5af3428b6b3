"""The service that turns a user's text into a Run: validation, the trace store, live or
precomputed or pending, and the experiments' variants of a Run (same graph, other inputs).

It composes the server's parts and is what the tabs receive: ``loader`` (explorer.loading),
``store`` (explorer.store), ``examples`` (explorer.examples), ``analyses`` (explorer.analyses) and
``scheduler`` (gpt2_max.scheduling: batching, Runs first, the lanes).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from explorer.analyses import Analyses
from explorer.examples import Examples
from explorer.loading import ModelLoader
from explorer.runs import LIVE, PENDING, PRECOMPUTED, Run, RunRequest
from explorer.settings import Settings
from explorer.store import TraceStore
from gpt2_max.errors import ExplorerError, InputError
from gpt2_max.scheduling import Lanes, RunScheduler
from gpt2_max.tokenizer import Tokenizer, clean_text

log = logging.getLogger("explorer")


def trace_batch(items: list[tuple[object, dict]]) -> list[dict]:
    """(model, trace options) pairs that waited together (gpt2_max.scheduling.Batcher) -> their
    traces, each model's requests packed into as few trace-graph executions as fit (``GPT2.traces``)."""
    traces: list = [None] * len(items)
    by_model: dict[int, list[int]] = {}
    for index, (model, _) in enumerate(items):
        by_model.setdefault(id(model), []).append(index)
    for indices in by_model.values():
        model = items[indices[0]][0]
        for index, trace in zip(indices, model.traces([items[i][1] for i in indices]), strict=True):
            traces[index] = trace
    return traces


class ExplorerService:
    """Turns requests into Runs, with the host's models (``loader``) loading in the background.

    The host's model (``model_name``) loads at start; a user may pick another only from
    ``settings.allowed_models``, and it loads on first use.
    """

    def __init__(
        self, settings: Settings, model_name: str | None = None, examples: tuple[str, ...] = (), start_note: str = ""
    ) -> None:
        self.settings = settings
        self.tokenizer = Tokenizer()
        # Committed examples first, then ones this host saved after an earlier start.
        dirs = (Path(settings.examples_dir), Path(settings.cache_dir) / "examples")
        self.examples = Examples(tuple(examples), dirs, self.tokenizer)
        self.loader = ModelLoader(settings, model_name, start_note, self.examples.has_any)
        self.loader.on_trace_ready = self.save_examples
        self.store = TraceStore(settings.trace_cache_mb * 1024 * 1024)
        lanes = Lanes(settings.max_batch_size, settings.concurrency_limit, settings.long_jobs_at_once)
        self.scheduler = RunScheduler(trace_batch, lanes)
        self.analyses = Analyses(self.loader, self.scheduler)

    # What the tabs and the app ask of the parts, by the names they use.
    model_name = property(lambda self: self.loader.model_name)
    allowed_models = property(lambda self: self.loader.allowed_models)
    trace_arena = property(lambda self: self.loader.trace_arena)
    lanes = property(lambda self: self.scheduler.lanes)

    def model_for(self, name: str | None = None):
        return self.loader.model_for(name)

    @property
    def model(self):
        return self.loader.model_for(None)

    def status_markdown(self, name: str | None = None) -> str:
        return self.loader.status_markdown(name)

    def analysis(self, run: Run, kind: str, **options):
        return self.analyses.get(run, kind, **options)

    def yield_to_runs(self, max_wait_s: float | None = None) -> float:
        return self.scheduler.yield_to_runs(max_wait_s)

    def runs_together(self, count: int):
        """A context in which ``count`` Runs pressed together (a prompt and its compare prompt)
        are traced in one execution when they can (gpt2_max.scheduling.RunScheduler.together)."""
        return self.scheduler.together(count)

    def save_examples(self, name: str) -> None:
        """Saves live traces of the examples, so the next start of this host has them at once."""
        for text in self.examples.texts:
            if self.examples.load(text, name) is not None:
                continue
            try:
                self.examples.save(self.run(text, model_name=name))
            except (OSError, ExplorerError) as error:
                log.warning("could not save example %r: %s", text[:40], error)

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

    def run(self, text: str, model_name: str | None = None) -> Run:
        """The Run of a user's text: live when the model is ready, else a precomputed example, else
        pending (its tokens, traced once the model is ready)."""
        name = self.loader.check_allowed(model_name)
        text, ids, notice = self.prepare(text, self.loader.model_for(name))
        return self.trace(RunRequest(text, tuple(ids), name, notice=notice))

    def run_ids(self, text: str, ids, model_name: str | None = None) -> Run:
        """The Run of token ids the page made (the induction test, a preset), through the same path."""
        return self.trace(RunRequest(text, tuple(ids), self.loader.check_allowed(model_name)))

    def variant(self, run: Run, causal: bool | None = None, ablate=None) -> Run:
        """The same tokens with the mask switched or heads ablated: same graph, other inputs."""
        changes = {"causal": causal} if causal is not None else {}
        changes |= {"ablate": tuple(ablate)} if ablate is not None else {}
        return self.trace(run.request.but(source=LIVE, **changes))

    def from_request(self, request: RunRequest | None) -> Run | None:
        """The Run a ``gr.State`` points at (from the store, or recomputed)."""
        return None if request is None else self.trace(request)

    def trace(self, request: RunRequest) -> Run:
        """The Run of a request: from the store, traced live (with the Runs that wait beside it), a
        precomputed example while the model loads, or pending (tokens only) without one."""
        name = self.loader.check_allowed(request.model)
        model = self.loader.model_for(name)
        if model is None:
            slot = self.loader.slot(name)
            precomputed = self.examples.load(request.text, name) if request.source != PENDING else None
            if precomputed is not None:
                return precomputed
            if slot.error:
                examples = "; the example prompts still work" if self.examples.has_any(name) else ""
                raise InputError(f"the model {name} is unavailable ({slot.error}){examples}")
            self.loader.start_loading(name)
            return Run(request.but(source=PENDING), tuple(self.tokenizer.tokens(request.token_ids)), {}, None)
        if request.source == PRECOMPUTED:
            precomputed = self.examples.load(request.text, name)
            if precomputed is not None:
                return precomputed
        request = request.but(source=LIVE)
        cached = self.store.get(request.key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        trace, served = self.scheduler.trace((model, request.trace_options()))
        run = Run(
            request,
            tuple(self.tokenizer.tokens(request.token_ids)),
            trace,
            model.config,
            seconds=time.perf_counter() - started,
            batched=served,
        )
        self.store.put(request.key, run)
        log.info("run of %d tokens traced in %.3f s (a batch of %d)", run.n_tokens, run.seconds, served)
        return run
