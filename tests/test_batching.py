"""Runs that arrive together: one packed execution of the trace graph, the same numbers as one by one.

Packed and single traces differ only by float32 rounding (test_attribution's
test_packed_traces_equal_single_ones, at the same tolerance).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpt2_max.errors import InputError
from test_attribution import PACKED_ATOL
from test_hardening import serve
from tiny_checkpoint import TINY_REPO_ID

TEXTS = ["The cat sat on the mat.", "A batch of Runs", "Hello world, again and again"]


def test_run_many_traces_the_live_runs_together_and_keeps_errors_in_place(explorer_service, tiny_model):
    too_long = "x" * (explorer_service.settings.max_prompt_chars + 1)
    texts = [TEXTS[0] + " (batched)", too_long, TEXTS[1] + " (batched)"]
    results = explorer_service.run_many(texts, [TINY_REPO_ID] * 3)
    assert isinstance(results[1], InputError)
    first, third = results[0], results[2]
    assert first.batched == 2 and third.batched == 2 and first.text == texts[0]
    for run in (first, third):
        alone = tiny_model.trace(list(run.token_ids))
        for key in ("logits", "blocks.1.attn.hook_pattern", "blocks.0.hook_resid_post"):
            np.testing.assert_allclose(run.trace[key], alone[key], atol=PACKED_ATOL, rtol=1e-5, err_msg=key)
    # A second request for the same text is served from the store, not traced again.
    again = explorer_service.run_many([texts[0]], [TINY_REPO_ID])[0]
    assert again is first


def test_runs_pressed_at_once_over_http_all_come_back_live(explorer_service):
    from gradio_client import Client

    demo, url = serve(explorer_service)
    try:
        clients = [Client(url, verbose=False) for _ in range(6)]
        prompts = [f"Student {i} asks about prompt number {i}." for i in range(6)] + ["x" * 30_000]
        clients.append(Client(url, verbose=False))
        with ThreadPoolExecutor(len(clients)) as pool:
            notes = list(pool.map(lambda pair: pair[0].predict(pair[1], TINY_REPO_ID, api_name="/run"), zip(clients, prompts)))
        assert all("Live" in note for note in notes[:6]), notes
        assert notes[6].startswith("⚠️") and "characters" in notes[6]
        # Each student's note is about their own prompt (its own token count).
        counts = [len(explorer_service.tokenizer.encode(p)) for p in prompts[:6]]
        assert all(f"{n} tokens" in note for n, note in zip(counts, notes[:6]))
        print("batched notes:", [n.split("(")[1][:50] if "share" in n else "alone" for n in notes[:6]])
        for client in clients:
            client.close()
    finally:
        demo.close()
