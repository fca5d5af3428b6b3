"""The bundled demo model (gpt2_max/assets/austen-gpt2): loaded by its short name through the
same code path as any checkpoint, numerically checked like one, and checked for the learned
structure the explorer's views are there to show (its embeddings, its continuations, the
previous-token and induction heads the Attention tab's detectors find).
The app starts on it with no network and an empty Hugging Face cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from reference import reference_trace

REPO = Path(__file__).resolve().parent.parent

# fp16 weights upcast to float32 run in float32 against the float64 reference. A trained model's
# activations are larger than the N(0, 0.02) test weights' (residual norms in the tens), so float32
# rounding grows with them: 1e-4 relative and absolute is ~10x the largest difference seen.
DEMO_ATOL = 1e-4
DEMO_RTOL = 1e-4
AUSTEN_SENTENCE = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a"
)


@pytest.fixture(scope="module")
def demo_model():
    import gpt2_max

    return gpt2_max.load(gpt2_max.DEMO_MODEL)


@pytest.fixture(scope="module")
def training_report() -> dict:
    from gpt2_max.weights import BUNDLED_MODELS, DEMO_MODEL

    return json.loads((BUNDLED_MODELS[DEMO_MODEL] / "training.json").read_text())


def test_the_short_name_loads_the_committed_checkpoint(demo_model):
    from gpt2_max.weights import BUNDLED_MODELS, DEMO_MODEL, SAFETENSORS_FILE, locate

    checkpoint = locate(DEMO_MODEL)
    assert checkpoint.directory == BUNDLED_MODELS[DEMO_MODEL]
    assert (checkpoint.directory / SAFETENSORS_FILE).stat().st_size <= 25 * 2**20  # small enough to commit
    assert demo_model.config.vocab_size == 50257  # GPT-2's whole tokenizer
    assert demo_model.config.n_layer >= 2  # an induction circuit needs two layers


def test_every_key_matches_the_float64_reference(demo_model):
    from gpt2_max.weights import DEMO_MODEL, load_weights, locate

    weights = load_weights(locate(DEMO_MODEL))
    ids = demo_model.tokenizer.encode(AUSTEN_SENTENCE)
    trace = demo_model.trace(ids)
    reference = reference_trace(weights, demo_model.config, ids)
    for key, expected in reference.items():
        actual = trace[key]
        finite = np.isfinite(expected)
        np.testing.assert_allclose(actual[finite], expected[finite], atol=DEMO_ATOL, rtol=DEMO_RTOL, err_msg=key)


def test_the_nearest_tokens_of_a_name_are_names(demo_model):
    """The Embed tab's nearest tokens (the analysis graph's cosine search over wte)."""
    from gpt2_max.analysis import nearest_tokens

    tokenizer = demo_model.tokenizer
    names = [" Elizabeth", " Emma", " Anne", " Catherine"]  # one token each
    ids = [tokenizer.encode(name)[0] for name in names]
    rows = demo_model.trace(ids)["hook_embed"]  # [4, E]: the names' wte rows, as the Embed tab reads them
    nearest = nearest_tokens(demo_model, rows, exclude=ids)
    for name, row in zip(names, nearest.ids, strict=True):
        words = [tokenizer.decode([int(i)]) for i in row[:10]]
        capitalised = [w for w in words if w.startswith(" ") and w[1:2].isupper() and w[1:].isalpha()]
        print(f"{name!r}: {words}")
        assert len(capitalised) >= 6, (name, words)


def test_greedy_continuation_stays_in_austens_vocabulary(demo_model, training_report):
    corpus_ids = set(training_report["corpus_token_ids"])
    generation = demo_model.generate(AUSTEN_SENTENCE, max_new_tokens=24, temperature=0)
    print(f"\n{AUSTEN_SENTENCE!r} -> {generation.text!r}")
    assert all(i in corpus_ids for i in generation.ids), generation.text


def test_the_detectors_find_its_previous_token_and_induction_heads(demo_model, training_report):
    """The Attention tab's induction test and detectors (the app's own code on the MAX trace): a head
    that attends to the previous token and one that attends to the token after an earlier copy, at
    the scores the demo model was trained to (chance: ~0.02 a key over 50 tokens)."""
    from components.interpret import INDUCTION_TEST_LENGTH
    from gpt2_max.attribution import head_scores, induction_test_ids, strongest

    targets = training_report["head_targets"]
    for seed in (0, 1):
        ids = induction_test_ids(INDUCTION_TEST_LENGTH, seed=seed)
        scores = head_scores(demo_model, demo_model.trace(ids), ids)
        print({name: strongest(grid, 2) for name, grid in scores.items()})
        assert scores["previous_token"].max() >= targets["previous_token"]
        assert scores["induction"].max() >= targets["induction"]


def test_the_model_card_reports_what_was_measured(training_report):
    """The card's numbers come from the training run's report, which must beat the baselines."""
    from gpt2_max.weights import BUNDLED_MODELS, DEMO_MODEL

    card = (BUNDLED_MODELS[DEMO_MODEL] / "README.md").read_text()
    held_out = training_report["held_out_full_vocabulary"]
    assert held_out < training_report["baselines_nats_per_token"]["bigram_interpolated"]
    assert f"{held_out:.2f}" in card
    assert "not GPT-2" in card


def test_the_training_recipe_is_what_trained_the_committed_weights(training_report):
    """``python scripts/train_demo_model.py`` runs RECIPE: each of its phases must have the options
    the committed model's phases recorded (their directories and the time limits they never hit
    aside), so the README's one command retrains these weights, and a recipe edited without
    retraining fails here."""
    sys.path.insert(0, str(REPO / "scripts"))
    from demo_model_card import training_phases
    from demo_recipe import RECIPE, parse_arguments, recipe_phases

    recorded = training_phases(training_report)
    assert len(recorded) == len(RECIPE)
    paths = ("out", "init", "minutes", "one_phase")
    for number, (phase, report) in enumerate(zip(recipe_phases(parse_arguments([]), Path("/w")), recorded), 1):
        settings = report["settings"]
        assert {k: v for k, v in vars(phase).items() if k not in paths} == {
            k: v for k, v in settings.items() if k not in paths
        }, f"phase {number}"
        assert (phase.init is None) == (settings["init"] is None), f"phase {number}"
        last = report["curve"][-1]
        assert last["step"] == (phase.stop_step or phase.steps), f"phase {number} ended elsewhere"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_with_no_network_and_an_empty_cache_shows_the_demo_model(tmp_path, demo_model):
    """`python app.py` with no --model, the Hub unreachable and nothing cached: the committed
    example traces answer at once, then the demo model is live."""
    from gradio_client import Client

    from app import EXAMPLES
    from gpt2_max.weights import DEMO_MODEL

    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "empty-hub-cache"),
        "HF_HUB_OFFLINE": "1",
        "GPT2_EXPLORER_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("GPT2_EXPLORER_MODEL", None)
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client, started = None, time.monotonic()
        while client is None and time.monotonic() < started + 120:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        assert client is not None, "the app did not start"
        opened = time.monotonic()
        note = client.predict(EXAMPLES[0], DEMO_MODEL, api_name="/run")
        example_seconds = time.monotonic() - opened
        assert note.startswith(("**Precomputed**", "**Live**")), note
        status = ""
        while time.monotonic() < opened + 600 and "ready" not in status:
            status = client.predict(DEMO_MODEL, api_name="/status")
            time.sleep(1)
        print(f"\nexample trace {example_seconds:.1f} s after the page answered; status: {status[:200]}")
        assert example_seconds < 10
        assert f"`{DEMO_MODEL}` ready" in status and "bundled demo model" in status
        assert "python -m gpt2_max download --model openai-community/gpt2" in status
        note = client.predict("Mr. Darcy looked at Elizabeth", DEMO_MODEL, api_name="/run")
        assert note.startswith("**Live**"), note
        client.close()
    finally:
        server.terminate()
        server.wait(30)
