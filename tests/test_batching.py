"""Runs that arrive together: one packed execution of the trace graph, the same numbers as one by one.

Packed and single traces differ only by float32 rounding (test_attribution's
test_packed_traces_equal_single_ones, at the same tolerance).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from test_attribution import PACKED_ATOL
from test_hardening import serve
from tiny_checkpoint import TINY_REPO_ID


def test_requests_waiting_for_a_running_batch_go_together(explorer_service, tiny_model):
    """While one batch runs (the leader lock held), arriving Runs wait; the next leader runs
    all of them in one execution, and each gets its own trace."""
    batcher = explorer_service.scheduler.runs
    texts = [f"Waiting Run number {word}" for word in ("one", "two", "three")]
    results = {}
    _hold(batcher)  # a batch is running
    try:
        threads = [threading.Thread(target=lambda t=t: results.setdefault(t, explorer_service.run(t))) for t in texts]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(batcher._pending) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(batcher._pending) == 3
        before = len(batcher.batches)
    finally:
        _release(batcher)
    for thread in threads:
        thread.join(60)
    assert batcher.batches[before:] == [3]
    for text in texts:
        run = results[text]
        assert run.text == text and run.batched == 3
        alone = tiny_model.trace(list(run.token_ids))
        for key in ("blocks.1.attn.hook_pattern", "blocks.0.hook_resid_post"):
            np.testing.assert_allclose(run.trace[key], alone[key], atol=PACKED_ATOL, rtol=1e-5, err_msg=key)
        # A Run's trace keeps the logits of its last position (the views read the others from the analysis graph).
        np.testing.assert_allclose(run.trace["logits"], alone["logits"][-1:], atol=PACKED_ATOL, rtol=1e-5)
    # A second request for the same text is served from the store: no batch runs for it.
    assert explorer_service.run(texts[0]) is results[texts[0]]
    assert batcher.batches[before:] == [3]


def test_runs_pressed_at_once_over_http_each_keep_their_own_run(explorer_service):
    from gradio_client import Client

    demo, url = serve(explorer_service)
    words = ["apple", "banana", "cherry", "orange", "lemon", "grape"]
    try:
        clients = [Client(url, verbose=False) for _ in range(len(words) + 1)]
        prompts = [f"My favourite fruit is the {word}, said student {i}." for i, word in enumerate(words)] + [
            "x" * 30_000
        ]
        with ThreadPoolExecutor(len(clients)) as pool:
            notes = list(
                pool.map(lambda pair: pair[0].predict(pair[1], TINY_REPO_ID, api_name="/run"), zip(clients, prompts))
            )
        assert all("Live" in note for note in notes[:-1]), notes
        assert notes[-1].startswith("⚠️") and "characters" in notes[-1]
        # Each session's state is its own Run: its Tokenize view lists its own student number
        # (the token " 3" at position 9), no other.
        for i, client in enumerate(clients[:-1]):
            shown = str(client.predict(api_name="/render_tokenize"))
            numbers = [n for n in range(len(words)) if f"9: ␣{n}'" in shown]
            assert numbers == [i], (i, numbers)
        print("batched:", explorer_service.scheduler.runs.batches[-10:])
        for client in clients:
            client.close()
    finally:
        demo.close()


def test_a_cold_start_says_each_stage_in_order_and_saves_examples_first(tmp_path, monkeypatch):
    """The background load names each stage as it starts (the status line shows it): the
    download, the trace graph, the examples (right after the trace graph, so the next start has
    them), then the analysis and decode graphs, then the trace memory's first touch."""
    from explorer.loading import STAGES, ModelSlot, read_stage_record
    from explorer.service import ExplorerService
    from explorer.settings import Settings

    seen: list[tuple[str, str]] = []
    original = ModelSlot.enter

    def recording(slot, stage):
        original(slot, stage)
        if stage:
            seen.append((stage, slot.stage_text()))

    monkeypatch.setattr(ModelSlot, "enter", recording)
    settings = Settings(model=TINY_REPO_ID, examples_dir=str(tmp_path / "committed"), cache_dir=str(tmp_path / "cache"))
    service = ExplorerService(settings, TINY_REPO_ID, ("The cat sat on the mat.",))
    service.loader.start_loading().join(600)
    assert [stage for stage, _ in seen] == ["download", "trace", "examples", "analysis", "decode", "memory"]
    assert service.trace_arena.touched and service.model.engine.trace_arena is service.trace_arena
    for stage, text in seen:
        # No earlier load on this host: the build machine's measured time, called an estimate.
        assert text.startswith(STAGES[stage][0]) and f"estimate: {STAGES[stage][1]} s" in text
    # This load's times are kept: the next start's estimates (issue 19, item 18).
    assert set(read_stage_record(tmp_path / "cache" / "load-seconds.json")[TINY_REPO_ID]) == {
        stage for stage, _ in seen
    }
    assert service.examples.has_any(TINY_REPO_ID)
    assert "ready" in service.status_markdown()


def test_the_engine_lock_serves_waiters_by_priority_then_arrival():
    """Waiters queue while the lock is held; release hands it to the lowest priority number
    first (a Run's trace before decode steps before analysis chunks), ties in arrival order."""
    from gpt2_max.scheduling import PriorityLock

    lock = PriorityLock()
    order: list[str] = []
    names = [("analysis", 2), ("decode-1", 1), ("trace", 0), ("decode-2", 1)]

    def wait(name, priority):
        with lock.hold(priority):
            order.append(name)

    threads = []
    with lock.hold(0):
        for name, priority in names:
            threads.append(threading.Thread(target=wait, args=(name, priority)))
            threads[-1].start()
            deadline = time.monotonic() + 10
            while len(lock._waiting) < len(threads) and time.monotonic() < deadline:
                time.sleep(0.001)
        assert len(lock._waiting) == len(names)
    for thread in threads:
        thread.join(10)
    assert order == ["trace", "decode-1", "decode-2", "analysis"]


def test_a_waiter_that_waited_past_its_limit_goes_before_the_level_above_it_only():
    """promote_after_s: a decode step (priority 2) waiting longer than its limit goes before the
    analysis chunks (1) that arrived after it, but never before a trace (0)."""
    from gpt2_max.scheduling import PriorityLock

    lock = PriorityLock({2: 0.05})
    order: list[str] = []

    def wait(name, priority):
        with lock.hold(priority):
            order.append(name)

    threads = []
    with lock.hold(0):
        for name, priority, pause in (("decode", 2, 0.1), ("analysis", 1, 0.0), ("trace", 0, 0.0)):
            threads.append(threading.Thread(target=wait, args=(name, priority)))
            threads[-1].start()
            deadline = time.monotonic() + 10
            while len(lock._waiting) < len(threads) and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(pause)  # the decode step has waited 0.1 s when the others arrive
    for thread in threads:
        thread.join(10)
    assert order == ["trace", "decode", "analysis"]


def test_promotions_never_leave_the_lock_free_with_everyone_waiting():
    """Many waiters, promotions passing all the time: every hold is served (the releaser hands the
    lock on; waiters that each chose by their own clock could all wait for another)."""
    from gpt2_max.scheduling import PriorityLock

    lock = PriorityLock({2: 0.0005, 1: 0.001})
    done: list[int] = []

    def work(index):
        for _ in range(30):
            with lock.hold(index % 3):
                time.sleep(0.0002)
        done.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(done) == list(range(12))


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_runs():
    from gpt2_max.scheduling import Batcher

    def run_batch(items):
        if "bad" in items:
            raise ValueError("a bad item")
        return [item.upper() for item in items]

    batcher = Batcher(run_batch, max_batch=4)
    _hold(batcher)  # a batch is running: the next three wait together
    results, errors = {}, {}

    def call(item):
        try:
            results[item] = batcher.submit(item)
        except ValueError as error:
            errors[item] = str(error)

    threads = [threading.Thread(target=call, args=(item,)) for item in ("a", "bad", "b")]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(batcher._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    _release(batcher)
    for thread in threads:
        thread.join(10)
    assert errors == {"a": "a bad item", "bad": "a bad item", "b": "a bad item"} and batcher.batches == [3]
    assert batcher.submit("c") == ("C", 1)  # a lone call runs at once, as a batch of one


def test_a_lone_run_never_waits_to_gather_and_runs_announced_together_share_one_execution(monkeypatch):
    """Issue 20: a Run that found the engine free waited RUN_GATHER_S for company that a lone user
    never has (15% of a GPT-2 small Run here, benchmarks/profile.py). Now only Runs announced
    together (a prompt and its compare prompt) or a class whose last batch was shared gather. The
    window is made a minute long here, so a Run that waited in it could not finish in the test."""
    from gpt2_max import scheduling

    monkeypatch.setattr(scheduling, "RUN_GATHER_S", 60.0)
    scheduler = scheduling.RunScheduler(lambda items: [item.upper() for item in items], scheduling.Lanes(8, 4, 2))
    batcher = scheduler.runs
    results = {}
    alone = threading.Thread(target=lambda: results.setdefault("alone", scheduler.trace("alone")))
    alone.start()
    alone.join(10)
    assert results["alone"] == ("ALONE", 1) and batcher.batches == [1]

    with scheduler.together(2):
        first = threading.Thread(target=lambda: results.setdefault("a", scheduler.trace("a")))
        first.start()
        deadline = time.monotonic() + 10
        while not (batcher._running and batcher._pending) and time.monotonic() < deadline:
            time.sleep(0.001)  # A is the runner, gathering for the announced B
        assert "a" not in results
        results["b"] = scheduler.trace("b")
        first.join(10)
    assert results["a"] == ("A", 2) and results["b"] == ("B", 2) and batcher.batches == [1, 2]

    # After a shared batch the next Run gathers for as many (a class at work); a lone one then stops waiting.
    monkeypatch.setattr(batcher, "gather_s", 0.05)
    assert scheduler.trace("next") == ("NEXT", 1) and scheduler.trace("then") == ("THEN", 1)
    assert batcher.batches == [1, 2, 1, 1]


def test_views_wait_for_runs_being_traced_but_not_forever(explorer_service):
    """While a Run is traced, yield_to_runs (what opening a tab, a control and each generation
    step call first) waits for it; with none in flight it returns at once; its bound holds."""
    service = explorer_service
    assert service.yield_to_runs(max_wait_s=5.0) < 0.5  # nothing in flight
    batcher = service.scheduler.runs
    _hold(batcher)  # the engine is busy: the Run below waits in flight
    done = {}
    thread = threading.Thread(target=lambda: done.setdefault("run", service.run("A Run the views wait for")))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while service.scheduler._runs_in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert service.scheduler._runs_in_flight == 1
        waited = service.yield_to_runs(max_wait_s=0.3)  # the bound: the Run is still waiting
        assert 0.25 <= waited < 2.0 and "run" not in done
        releaser = threading.Timer(0.2, lambda: _release(batcher))
        releaser.start()
        waited = service.yield_to_runs(max_wait_s=30.0)  # returns when the Run is done
        assert waited < 10.0 and service.scheduler._runs_in_flight == 0
    finally:
        _release(batcher)
        thread.join(30)
    assert done["run"].text == "A Run the views wait for"


def _hold(batcher) -> None:
    """Marks the batcher's runner busy, as while a batch runs: callers now wait, together."""
    with batcher._cond:
        batcher._running = True


def _release(batcher) -> None:
    """Ends _hold: the waiting callers run as one batch."""
    with batcher._cond:
        batcher._running = False
        batcher._cond.notify_all()
