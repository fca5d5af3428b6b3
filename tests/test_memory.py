"""The trace arena (gpt2_max.memory): leases carved first-fit, given back when the last view of
them is gone, and the traces copied into it equal to the ones MAX returned."""

from __future__ import annotations

import gc

import numpy as np
from tiny_checkpoint import TINY_REPO_ID

from gpt2_max.hooks import trace_keys, trace_nbytes
from gpt2_max.memory import ALIGN_BYTES, PAGE_BYTES, Arena, copy_into


def test_a_lease_returns_only_when_its_last_view_is_gone():
    arena = Arena(4 * PAGE_BYTES)
    lease = arena.take(1000)
    assert lease.nbytes >= 1000 and arena.lent_bytes == 1024
    matrix = lease[:400].view(np.float32).reshape(10, 10)
    rows = matrix[2:5]
    del lease, matrix
    gc.collect()
    assert arena.lent_bytes == 1024  # rows still reads it
    rows[:] = 7.0
    del rows
    gc.collect()
    assert arena.lent_bytes == 0 and arena.free_runs == [(0, arena.nbytes)]


def test_first_fit_places_leases_and_coalesces_what_comes_back():
    arena = Arena(PAGE_BYTES)
    a, b, c = (arena.take(1024) for _ in range(3))
    assert arena.take(2048) is None and arena.misses == 1  # 1 KiB left
    del b
    gc.collect()
    assert arena.free_runs == [(1024, 1024), (3072, 1024)]
    again = arena.take(1000)  # fits the first hole
    assert arena.free_runs == [(3072, 1024)]
    del a, c, again
    gc.collect()
    assert arena.free_runs == [(0, PAGE_BYTES)] and arena.lent_bytes == 0


def test_copies_into_the_arena_equal_their_sources_and_fall_back_when_full():
    rng = np.random.default_rng(0)
    sources = [
        rng.normal(size=(3, 5)).astype(np.float32),
        np.arange(7, dtype=np.int64),
        rng.normal(size=(2, 4, 4)).astype(np.float32)[:, 1:, :3],
    ]
    arena = Arena(PAGE_BYTES)
    copies = copy_into(arena, sources)
    for copy, source in zip(copies, sources, strict=True):
        np.testing.assert_array_equal(copy, source)
        assert copy.dtype == source.dtype and copy.flags.c_contiguous
        assert copy.ctypes.data % ALIGN_BYTES == 0
    lent = sum(-(-a.nbytes // ALIGN_BYTES) * ALIGN_BYTES for a in sources)  # each copy starts on a cache line
    assert arena.lent_bytes == lent == 256
    big = [np.ones(PAGE_BYTES, dtype=np.float32)]  # 16 KiB: no room, fresh memory instead
    (fresh,) = copy_into(arena, big)
    np.testing.assert_array_equal(fresh, big[0])
    assert arena.misses == 1 and arena.lent_bytes == lent
    arena.touch()  # touching free pages keeps the leases' contents
    for copy, source in zip(copies, sources, strict=True):
        np.testing.assert_array_equal(copy, source)


def test_a_class_of_runs_reuses_the_memory_of_the_runs_evicted(tiny_model, tmp_path_factory, monkeypatch):
    """Runs live in the service's arena, sized to its trace store: as the store evicts old Runs
    (nothing else holding them), their memory comes back, so Run after Run fits with no miss."""
    from explorer.service import ExplorerService
    from explorer.settings import Settings

    settings = Settings(
        model=TINY_REPO_ID,
        trace_cache_mb=2,
        examples_dir=str(tmp_path_factory.mktemp("examples")),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    service = ExplorerService(settings, TINY_REPO_ID)
    monkeypatch.setattr(tiny_model.engine, "trace_arena", service.trace_arena)
    service.loader.adopt(tiny_model)
    arena = service.trace_arena
    arena.touch()
    for i in range(16):
        run = service.run(f"Student {i:02d} asks what comes next in the")
        alone = tiny_model.trace(list(run.token_ids), logit_positions=[-1])
        for key in ("blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern", "logits"):
            np.testing.assert_allclose(run.trace[key], alone[key], atol=1e-5, rtol=1e-5, err_msg=key)
        per_run = trace_nbytes(tiny_model.config, run.n_tokens, logit_positions=1)  # ~0.3 MB: the 2 MiB store keeps ~6
        del run, alone
        gc.collect()
        # What is lent is what the store holds (each array rounded up to a cache line), no more.
        held = service.store.nbytes + ALIGN_BYTES * len(trace_keys(tiny_model.config.n_layer)) * len(service.store)
        assert per_run <= arena.lent_bytes <= held
    assert 4 <= len(service.store) < 16 and arena.misses == 0
