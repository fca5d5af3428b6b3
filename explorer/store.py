"""The server-side store of Runs: an LRU bounded by the bytes of their traces.

The browser's ``gr.State`` holds only a ``RunRequest``, so 30 users cost 30 small states, and a
trace evicted here is recomputed from its request on the next view.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from explorer.runs import Run


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
