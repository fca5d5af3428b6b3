"""Dynamic batching, as serving systems do it: calls that arrive while a batch runs wait, and the
first of them to find the runner free runs all that are waiting as one batch.

One mechanism for every graph that gains from running many requests in one execution: the app's
Runs (several sequences packed into one trace-graph execution) and generation steps (several
sessions' next tokens in one decode-graph execution, which reads the weights once for all).
An idle runner adds no delay: a lone call runs at once, as a batch of one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Generic, TypeVar

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
        more than one item), so a lone user's steps never wait.
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

    def _take(self) -> list[dict]:
        """The next batch from what waits (the caller holds the lock), after gathering."""
        shared = bool(self.batches) and self.batches[-1] > 1
        if self.gather_s > 0 and (self.gather_when_alone or shared):
            # Others may join; the runner stays taken.
            want = min(self.max_batch, self.batches[-1]) if shared else self.max_batch
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
