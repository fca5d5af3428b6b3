"""Who runs when: every scheduling decision of the engine and the app, and its constants.

The policy, in one place (tuning for a class means reading this file only):

1. **One execution at a time.** The engine's graphs share 2 cores (and one compiled model is
   not documented as thread-safe), so each execution holds the engine's ``PriorityLock``. When
   several wait, a **trace** goes first (``TRACE_PRIORITY``: a Run, whose first view a student
   waits for with nothing on screen), then an **analysis chunk** (a tab being opened, e.g. the
   logit lens), then a **decode step** (one token of a streaming generation: while a class
   generates one nearly always waits). A decode step that has waited ``DECODE_MAX_WAIT_S`` goes
   before analyses, so generations keep moving while a class opens its Blocks tabs.
2. **Batching** (``Batcher``): calls that arrive while an execution runs wait, and the first of
   them to find the runner free runs all that wait as one batch. Runs (``RunScheduler.runs``):
   up to the host's ``max_batch_size`` sequences packed into one trace execution; a Run that
   finds the engine free gathers for ``RUN_GATHER_S`` only when company is known to come (the
   previous batch was shared: a class at work; or Runs announced together, ``together``: a
   prompt and its compare prompt), so a lone Run never waits. Decode steps (the engine's ``decode_batcher``): up to ``DECODE_MAX_BATCH`` sessions'
   next tokens in one execution, which reads the weights once for all; a lone generation never
   waits to gather.
3. **Runs first** (``RunScheduler.yield_to_runs``): while Runs are being traced, opening a tab,
   a control and a generation step wait for them (at most ``RUNS_FIRST_MAX_WAIT_S``, so a stream
   of Runs cannot starve the rest), then take the engine lock at their own priority.
4. **Analyses** two at a time (``ANALYSES_AT_ONCE``): between two decode steps of a class's
   generations, two lenses run, not one.
5. **Lanes** (``Lanes``): Gradio's queue admits each kind of event in its own lane, so one kind
   never queues behind another: Runs (two batches' worth, so the next gathers while one runs),
   tab opens and controls (``model``), the first view after a Run (``visible``), generation
   (two decode batches' worth), long jobs (patching sweeps: a few at a time for the whole
   class, and a per-session limit in components/guard.py) and the status poll (unbounded).

An idle engine adds no delay anywhere: a lone call runs at once, as a batch of one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Generic, TypeVar

# -- the engine's order (PriorityLock) --------------------------------------------------
TRACE_PRIORITY, ANALYSIS_PRIORITY, DECODE_PRIORITY = 0, 1, 2
# A decode step that has waited this long goes before analysis chunks: with ANALYSES_AT_ONCE
# analyses queued, a class's lenses would otherwise run two per decode step and the generations
# pressed first wait for every Blocks tab being opened. About one lens under a class's load (the
# classroom benchmark chose it: docs/performance.md, "Measurements behind the constants").
DECODE_MAX_WAIT_S = 0.16

# -- decode batching (the engine's decode_batcher) --------------------------------------
# Steps per decode execution: a step reads all the weights whatever the batch, so B sessions'
# steps cost far less than B steps; 32 lets a class of 30 step together, so that behind each
# lens every generation still gets a token.
DECODE_MAX_BATCH = 32
# While steps are shared, the runner waits at most this long for the other sessions' next steps
# (their sampling and drawing between steps, under one GIL), less once the last batch's sessions
# are all back. Short: it gathers while holding the engine lock, which is when most steps come in.
DECODE_GATHER_S = 0.005

# -- the app's Runs and views (RunScheduler) --------------------------------------------
# A Run that finds the engine free waits at most this long for the Runs known to come with it (a
# class whose last batch was shared, a compare prompt's B): a small fraction of one trace.
RUN_GATHER_S = 0.02
# The longest a view or a generation step waits for Runs being traced: about what a class's 30
# Runs take together on GPT-2 small.
RUNS_FIRST_MAX_WAIT_S = 10.0
ANALYSES_AT_ONCE = 2

# -- Gradio's lanes (concurrency ids) ---------------------------------------------------
RUN_LANE, MODEL_LANE, VISIBLE_LANE, GENERATE_LANE, LONG_LANE, STATUS_LANE = (
    "run",
    "model",
    "visible",
    "generate",
    "long",
    "status",
)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs ``run_batch(items) -> results`` (one result per item, in order) over the items that
    wait together, at most ``max_batch`` at a time; safe to call from many threads."""

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Sequence[Result]],
        max_batch: int,
        gather_s: float = 0.0,
        gather_when_alone: bool = True,
        hold: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        """``gather_s``: the longest a caller that finds the runner free waits for others to join
        before it runs what waits (callers that arrive together, e.g. a class pressing Run,
        then share the first batch instead of the first one running alone). It stops waiting
        as soon as as many wait as the last batch held (while batches are shared, its callers
        come back, e.g. each generation for its next step), or ``max_batch``.
        ``gather_when_alone=False``: wait only while batches are shared (the previous one held
        more than one item) or items are announced (``expecting``), so a lone user's calls never wait.
        ``hold()``: a context the runner enters before it takes a batch and keeps while the batch
        runs (the engine's lock: a batch formed before waiting there would leave out the items
        that arrive during the wait)."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.gather_s = gather_s
        self.gather_when_alone = gather_when_alone
        self.hold = hold
        self._pending: list[dict] = []
        # Guards _pending and _running; a finished batch wakes the waiting callers (no polling:
        # a class of waiting threads polling would take the GIL from the ones doing work).
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        # Wakes only the caller gathering a batch when another item arrives (the same lock).
        self._arrived = threading.Condition(lock)
        self._running = False  # a batch is being run
        self._expected = 0  # items announced by ``expecting`` contexts now open
        self.batches: list[int] = []  # sizes of the batches run, in order (for notes, benchmarks, tests)

    def submit(self, item: Item) -> tuple[Result, int]:
        """-> (the result for ``item``, how many items its batch held). Re-raises the batch's error."""
        slot = dict(item=item, done=False, result=None, error=None, served=0)
        with self._cond:
            self._pending.append(slot)
            self._arrived.notify()
        while True:
            with self._cond:
                while self._running and not slot["done"]:
                    self._cond.wait()
                if slot["done"]:
                    break
                # The runner is free: this caller runs what waits (its own item among the first).
                self._running = True
            try:
                # It takes the resource first (waiting behind other work there), then what waits:
                # items that arrive meanwhile join this batch instead of waiting for the next.
                with self.hold():
                    with self._cond:
                        batch = self._take()
                    self._run(batch)
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
        if slot["error"] is not None:
            raise slot["error"]
        return slot["result"], slot["served"]

    @contextmanager
    def expecting(self, count: int) -> Iterator[None]:
        """Inside it, ``count`` items are about to be submitted together (from several threads):
        the runner gathers for them (at most ``gather_s``) even when it would not otherwise."""
        with self._cond:
            self._expected += count
        try:
            yield
        finally:
            with self._cond:
                self._expected -= count

    def _take(self) -> list[dict]:
        """The next batch from what waits (the caller holds the lock), after gathering."""
        shared = bool(self.batches) and self.batches[-1] > 1
        if self.gather_s > 0 and (self.gather_when_alone or shared or self._expected):
            # Others may join; the runner stays taken.
            if shared:
                want = min(self.max_batch, self.batches[-1])
            elif self.gather_when_alone:
                want = self.max_batch
            else:
                want = min(self.max_batch, self._expected)  # only the announced ones
            deadline = time.monotonic() + self.gather_s
            while len(self._pending) < want and (left := deadline - time.monotonic()) > 0:
                self._arrived.wait(left)
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        return batch

    def _run(self, batch: list[dict]) -> None:
        try:
            results = self.run_batch([slot["item"] for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
            for slot, result in zip(batch, results):
                slot["result"], slot["served"] = result, len(batch)
        except Exception as error:  # noqa: BLE001 - each caller in the batch re-raises it
            for slot in batch:
                slot["error"] = error
        finally:
            self.batches.append(len(batch))
            for slot in batch:
                slot["done"] = True


class PriorityLock:
    """A lock whose waiters are served by priority (lower first), then in arrival order.

    The engine's graphs share one CPU: when a Run's trace waits beside a class's lens chunks and
    decode steps, it goes next, so the view a student waits for after pressing Run is not queued
    behind work another student's open tab or generation asked for. ``promote_after_s``
    {priority: seconds}: a waiter of that priority that has waited longer goes before the level
    above it (not before the one above that), so work of a lower priority that always has
    something waiting above it still gets a turn."""

    def __init__(self, promote_after_s: dict[int, float] | None = None) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._waiting: list[tuple[int, int, float]] = []  # (priority, ticket, arrived)
        self._tickets = 0
        self.promote_after_s = dict(promote_after_s or {})
        self._granted: tuple[int, int, float] | None = None  # the waiter the lock is handed to

    def _next(self) -> tuple[int, int, float]:
        """The waiter served next (the caller holds _cond): the lowest priority, promotions
        counted at this moment, then the earliest ticket."""
        now = time.monotonic()

        def rank(waiter: tuple[int, int, float]) -> tuple[float, int]:
            priority, ticket, arrived = waiter
            limit = self.promote_after_s.get(priority)
            if limit is not None and now - arrived > limit:
                return priority - 1.5, ticket  # ahead of priority - 1, behind priority - 2
            return priority, ticket

        return min(self._waiting, key=rank)

    @contextmanager
    def hold(self, priority: int) -> Iterator[None]:
        """``with lock.hold(priority): ...`` runs the block holding the lock."""
        with self._cond:
            self._tickets += 1
            me = (priority, self._tickets, time.monotonic())
            self._waiting.append(me)
            if not self._held and self._granted is None:
                self._granted = self._next()  # free: the choice is made now, once
            while self._granted != me:
                self._cond.wait()
            self._granted = None
            self._waiting.remove(me)
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                # The releaser chooses, once: waiters that each chose by their own clock could
                # each name another (a promotion passing between their checks) and all wait.
                self._granted = self._next() if self._waiting else None
                self._cond.notify_all()


@dataclass(frozen=True)
class Lanes:
    """Gradio's queue lanes and their widths for a host: ``lanes.event(MODEL_LANE)`` is the
    keyword arguments of an event in that lane."""

    max_batch_size: int  # Runs per trace execution (the host's setting)
    concurrency_limit: int  # tab opens and controls at once (the host's setting)
    long_jobs_at_once: int  # patching sweeps at once for the whole class (the host's setting)

    def limit(self, lane: str) -> int | None:
        return {
            RUN_LANE: 2 * self.max_batch_size,
            MODEL_LANE: self.concurrency_limit,
            VISIBLE_LANE: self.concurrency_limit,
            GENERATE_LANE: 2 * DECODE_MAX_BATCH,
            LONG_LANE: self.long_jobs_at_once,
            STATUS_LANE: None,
        }[lane]

    def event(self, lane: str) -> dict:
        return {"concurrency_id": lane, "concurrency_limit": self.limit(lane)}


class RunScheduler:
    """The app's side of the policy (points 2-4 above): Runs batched into trace executions and
    served first, analyses a few at a time, and the lanes."""

    def __init__(self, trace_batch: Callable[[list], Sequence], lanes: Lanes) -> None:
        """``trace_batch(items) -> traces``: one trace per (model, trace options) item."""
        self.lanes = lanes
        self.runs = Batcher(trace_batch, lanes.max_batch_size, RUN_GATHER_S, gather_when_alone=False)
        self.analyses = threading.BoundedSemaphore(ANALYSES_AT_ONCE)
        self._runs_in_flight = 0
        self._runs_cond = threading.Condition()

    def trace(self, item) -> tuple[object, int]:
        """-> (the trace of ``item``, how many Runs its execution served), traced with the Runs
        that wait beside it; other work yields to it meanwhile."""
        with self._runs_cond:
            self._runs_in_flight += 1
        try:
            return self.runs.submit(item)
        finally:
            with self._runs_cond:
                self._runs_in_flight -= 1
                self._runs_cond.notify_all()

    def together(self, count: int) -> AbstractContextManager:
        """A context in which ``count`` Runs are about to be traced together (several threads):
        they share one execution when they can, even on an idle engine."""
        return self.runs.expecting(count)

    def yield_to_runs(self, max_wait_s: float | None = None) -> float:
        """Waits while Runs are being traced, at most ``max_wait_s`` (default
        RUNS_FIRST_MAX_WAIT_S); -> the seconds waited."""
        limit = RUNS_FIRST_MAX_WAIT_S if max_wait_s is None else max_wait_s
        started = time.perf_counter()
        with self._runs_cond:
            self._runs_cond.wait_for(lambda: self._runs_in_flight == 0, timeout=limit)
        return time.perf_counter() - started
