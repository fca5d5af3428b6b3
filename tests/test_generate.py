"""Generation with the KV cache: equal to full recomputation, to transformers, and sampling's rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoint import TINY_CONFIG

from gpt2_max import engine as engine_module
from gpt2_max.errors import InputError
from gpt2_max.generate import STOP_CONTEXT_FULL, STOP_END_OF_TEXT, STOP_MAX_TOKENS
from gpt2_max.sampling import SamplingSettings, choose, filtered_distribution, softmax

GOLDENS = np.load(Path(__file__).parent / "goldens" / "hf_tiny_gpt2.npz")
# The decode step sums attention over the cache in a different order from the
# full-sequence graph (one query row vs a [T, T] matmul); float32 rounding of
# logits of order 0.1-1 stays below 1e-5 (measured ~1e-6).
CACHED_LOGITS_ATOL = 1e-5
CACHED_LOGITS_RTOL = 1e-5


def test_greedy_equals_the_argmax_path_of_full_traces(tiny_model):
    prompt = tiny_model.tokenizer.encode("The cat sat on the mat because")
    result = tiny_model.generate(prompt, max_new_tokens=12, temperature=0.0)
    assert len(result.ids) == 12 and result.stop_reason == STOP_MAX_TOKENS
    sequence = list(prompt)
    for step, token in zip(result.steps, result.ids, strict=True):
        full = tiny_model.trace(sequence)["logits"][-1]
        assert int(np.argmax(full)) == token
        assert step.position == len(sequence)
        sequence.append(token)
    assert result.text == tiny_model.tokenizer.decode(result.ids)


@pytest.mark.parametrize("prompt", ["a", "b"])
def test_greedy_equals_transformers_generate(tiny_model, prompt):
    ids = GOLDENS[f"{prompt}.input_ids"].tolist()
    expected = GOLDENS[f"{prompt}.greedy_ids"].tolist()
    result = tiny_model.generate(ids, max_new_tokens=len(expected), temperature=0.0)
    assert result.ids == expected


def test_cached_decode_logits_equal_full_recompute(tiny_model):
    prompt = tiny_model.tokenizer.encode("Once upon a time, in a land far away")
    settings = SamplingSettings(temperature=1.0, seed=7)  # sampled, so tokens vary
    steps = list(tiny_model.stream(prompt, 10, settings, keep_logits=True))
    sequence = list(prompt)
    for step in steps:
        full = tiny_model.trace(sequence)["logits"][-1]
        np.testing.assert_allclose(step.logits, full, atol=CACHED_LOGITS_ATOL, rtol=CACHED_LOGITS_RTOL)
        sequence.append(step.token_id)


def test_a_fixed_seed_repeats_and_another_seed_differs(tiny_model):
    prompt = tiny_model.tokenizer.encode("Numbers:")
    first = tiny_model.generate(prompt, max_new_tokens=8, temperature=1.5, seed=11)
    again = tiny_model.generate(prompt, max_new_tokens=8, temperature=1.5, seed=11)
    other = tiny_model.generate(prompt, max_new_tokens=8, temperature=1.5, seed=12)
    assert first.ids == again.ids
    assert first.ids != other.ids


def test_generation_stops_when_the_context_is_full(tiny_model):
    prompt = [464] * (TINY_CONFIG.n_positions - 3)
    result = tiny_model.generate(prompt, max_new_tokens=50, temperature=0.0)
    assert len(result.ids) == 3 and result.stop_reason == STOP_CONTEXT_FULL
    with pytest.raises(InputError, match="no room"):
        tiny_model.generate([464] * TINY_CONFIG.n_positions, max_new_tokens=1)


def test_generation_stops_at_end_of_text(tmp_path):
    """A checkpoint rigged so <|endoftext|> is always the most likely token.

    With ln_f's scale at 0 the final vector is ln_f's bias b at every position,
    so logit v = wte[v] . b; putting 10 b in wte's row 50256 makes that logit
    10 |b|^2 ~ 0.26 while the others are ~N(0, 0.003). Same shapes, so the
    compiled graphs are reused.
    """
    from tiny_checkpoint import tiny_weights, write_save_pretrained

    import gpt2_max

    weights = tiny_weights()
    weights["ln_f.weight"][:] = 0.0
    weights["wte.weight"][50256] = 10.0 * weights["ln_f.bias"]
    model = gpt2_max.load(str(write_save_pretrained(tmp_path / "eot", weights=weights)))
    result = model.generate("Hello", max_new_tokens=10, temperature=0.0)
    assert result.ids == [50256] and result.stop_reason == STOP_END_OF_TEXT


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": -2}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -5}, "seed"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_sampling_settings_are_refused(tiny_model, kwargs, message):
    with pytest.raises(InputError, match=message):
        tiny_model.generate("Hi", **kwargs)


LOGITS = np.random.default_rng(0).normal(size=1000) * 3.0


@pytest.mark.parametrize("k", [1, 5, 40])
def test_top_k_keeps_exactly_k(k):
    probs = filtered_distribution(LOGITS, SamplingSettings(temperature=1.0, top_k=k))
    assert np.count_nonzero(probs) == k
    assert set(np.flatnonzero(probs)) == set(np.argsort(-LOGITS)[:k])
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_keeps_the_smallest_set_reaching_p(p):
    probs = filtered_distribution(LOGITS, SamplingSettings(temperature=1.0, top_p=p))
    raw = softmax(LOGITS)
    order = np.argsort(-raw)
    kept = np.count_nonzero(probs)
    assert set(np.flatnonzero(probs)) == set(order[:kept])
    assert raw[order[:kept]].sum() >= p - 1e-12  # reaches p
    assert raw[order[: kept - 1]].sum() < p  # one fewer would not
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)


def test_top_k_then_top_p_together():
    settings = SamplingSettings(temperature=0.7, top_k=10, top_p=0.8)
    probs = filtered_distribution(LOGITS, settings)
    after_k = filtered_distribution(LOGITS, SamplingSettings(temperature=0.7, top_k=10))
    order = np.argsort(-after_k)
    kept = np.count_nonzero(probs)
    assert kept <= 10
    assert after_k[order[:kept]].sum() >= 0.8 - 1e-12
    assert after_k[order[: kept - 1]].sum() < 0.8


def test_temperature_zero_and_near_zero_give_the_argmax():
    best = int(np.argmax(LOGITS))
    greedy = filtered_distribution(LOGITS, SamplingSettings(temperature=0.0))
    assert greedy[best] == 1.0 and np.count_nonzero(greedy) == 1
    cold = filtered_distribution(LOGITS, SamplingSettings(temperature=1e-3))
    assert cold[best] > 0.999999


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_tiny_temperatures_behave_like_greedy(temperature):
    """float32 logits / 1e-40 overflow to inf and softmax gives NaN (issue 18: the draw then always
    picked the last token); the maximum is subtracted first, so a tiny temperature is greedy."""
    logits = (LOGITS * 10).astype(np.float32)
    best = int(np.argmax(logits))
    cold = filtered_distribution(logits, SamplingSettings(temperature=temperature, top_k=40, top_p=0.9))
    assert not np.isnan(cold).any() and cold[best] == 1.0 and np.count_nonzero(cold) == 1
    tied = np.array([1.0, 3.0, 3.0, -np.inf], dtype=np.float32)  # ties share, masked logits stay 0
    np.testing.assert_array_equal(softmax(tied, temperature), [0.0, 0.5, 0.5, 0.0])
    rng = np.random.default_rng(0)
    assert all(choose(logits, SamplingSettings(temperature=temperature), rng, 0).token_id == best for _ in range(20))


def test_high_temperature_flattens():
    hot = filtered_distribution(LOGITS, SamplingSettings(temperature=50.0))
    assert hot.max() < 2.0 / len(LOGITS)


def test_cli_generate_and_trace(tmp_path, capsys, tiny_model):
    from tiny_checkpoint import TINY_REPO_ID

    from gpt2_max.__main__ import main

    assert main(["generate", "Hello", "--model", TINY_REPO_ID, "--max-new-tokens", "5", "--temperature", "0"]) == 0
    printed = capsys.readouterr().out
    expected = tiny_model.generate("Hello", max_new_tokens=5, temperature=0.0)
    assert printed == "Hello" + expected.text + "\n"
    out = tmp_path / "trace.npz"
    assert main(["trace", "Hello world", "--model", TINY_REPO_ID, "--out", str(out), "--ablate", "0:1"]) == 0
    saved = np.load(out)
    reference = tiny_model.trace([15496, 995], ablate=[(0, 1)])
    np.testing.assert_array_equal(saved["token_ids"], [15496, 995])
    np.testing.assert_array_equal(saved["logits"], reference["logits"])
    assert main(["trace", "x", "--model", "/no/such/dir"]) == 2
    assert "no directory" in capsys.readouterr().err


def test_batched_decode_steps_equal_single_steps(tiny_model):
    """Three sequences of different lengths in one decode execution, padded to the longest: each
    gets the logits and new keys/values a step alone gives, whatever the padding held before
    (the kept pack buffers are filled with NaN first). Only the product's summation order can
    differ (B rows vs one through the same [out, in] weights), so the float32 tolerance is the
    cached one."""
    engine = tiny_model.engine
    steps = []
    for text, token in (
        ("One two three", 1000),
        ("A longer prompt for the second row, with more tokens", 2000),
        ("x", 3000),
    ):
        trace = tiny_model.trace(tiny_model.tokenizer.encode(text))
        layers = range(TINY_CONFIG.n_layer)
        past_k = np.stack([trace[f"blocks.{layer}.attn.hook_k"].transpose(1, 2, 0) for layer in layers])  # [L, H, D, P]
        past_v = np.stack([trace[f"blocks.{layer}.attn.hook_v"].transpose(1, 0, 2) for layer in layers])  # [L, H, P, D]
        steps.append((token, past_k, past_v))
    lengths = [past_k.shape[-1] for _, past_k, _ in steps]
    assert len(set(lengths)) == 3 and engine_module.decode_groups(lengths, 4) == [[1, 0, 2]]  # one execution
    engine.run_decodes(steps)  # makes the kept buffers, then poisons them
    for name in ("k", "v"):
        engine._kept[("decode", name)].fill(np.nan)
    together = engine.run_decodes(steps)
    for (logits, new_kv), step in zip(together, steps, strict=True):
        [(alone_logits, alone_kv)] = engine.run_decodes([step])
        np.testing.assert_allclose(logits, alone_logits, atol=CACHED_LOGITS_ATOL, rtol=CACHED_LOGITS_RTOL)
        np.testing.assert_allclose(new_kv, alone_kv, atol=CACHED_LOGITS_ATOL, rtol=CACHED_LOGITS_RTOL)
        assert logits.shape == (TINY_CONFIG.vocab_size,) and new_kv.shape == (
            TINY_CONFIG.n_layer,
            2,
            TINY_CONFIG.n_head,
            TINY_CONFIG.head_dim,
        )
    # And a batched step equals the full recompute of each sequence with its new token.
    for (logits, _), (token, _, _), text in zip(
        together, steps, ("One two three", "A longer prompt for the second row, with more tokens", "x")
    ):
        full = tiny_model.trace(tiny_model.tokenizer.encode(text) + [token])["logits"][-1]
        np.testing.assert_allclose(logits, full, atol=CACHED_LOGITS_ATOL, rtol=CACHED_LOGITS_RTOL)


def test_decode_groups_bound_the_padding_and_the_pack_memory():
    """A class's caches (lengths within a few dozen) go as one execution, longest first; a cache
    far longer than the rest goes alone rather than pad them all to its length; the padded pack
    stays within its memory budget; every step is in exactly one group."""
    per_position = 4 * 12 * 12 * 64  # GPT-2 small's keys (or values) per cached position, bytes
    class_lengths = [64 + (7 * i) % 30 for i in range(30)]
    [group] = engine_module.decode_groups(class_lengths, per_position)
    assert sorted(group) == list(range(30)) and class_lengths[group[0]] == max(class_lengths)
    assert [class_lengths[i] for i in group] == sorted(class_lengths, reverse=True)
    mixed = [10] * 20 + [1000]
    groups = engine_module.decode_groups(mixed, per_position)
    padding = [len(g) * mixed[g[0]] - sum(mixed[i] for i in g) for g in groups]
    assert groups[0][0] == 20 and max(padding) <= engine_module.DECODE_MAX_PADDING
    assert groups[-1] == sorted(groups[-1]) and len(groups) == 1 + (len(groups[0]) < 21)
    long_class = [900] * 32  # 32 caches of 900 positions: 1.1 GB of keys padded together
    groups = engine_module.decode_groups(long_class, per_position)
    assert all(len(g) * 900 * per_position <= engine_module.DECODE_PACK_MAX_BYTES for g in groups)
    assert sorted(i for g in groups for i in g) == list(range(32)) and len(groups) > 1
    assert engine_module.decode_groups([5000], per_position) == [[0]]  # alone, whatever its size


def test_generations_at_once_share_decode_executions_and_keep_their_own_tokens(tiny_model):
    """Sessions generating at the same time: their steps go through the decode graph together
    (the batcher records batches of more than one), and each gets the tokens it gets alone."""
    import threading

    prompts = [tiny_model.tokenizer.encode(f"Student {i} wrote a story about") for i in range(4)]
    alone = [tiny_model.generate(p, max_new_tokens=8, temperature=0.0).ids for p in prompts]
    batcher = tiny_model.engine.decode_batcher
    before = len(batcher.batches)
    together: dict[int, list[int]] = {}
    start = threading.Barrier(len(prompts))

    def generate(i: int) -> None:
        start.wait()
        together[i] = tiny_model.generate(prompts[i], max_new_tokens=8, temperature=0.0).ids

    threads = [threading.Thread(target=generate, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [together[i] for i in range(len(prompts))] == alone
    sizes = batcher.batches[before:]
    assert sum(sizes) == 7 * len(prompts)  # 8 tokens: the first comes from the prefill
    assert max(sizes) > 1, sizes


def test_a_given_prefill_gives_the_same_generation(tiny_model):
    prompt = tiny_model.tokenizer.encode("The prefill is the Run's own trace")
    settings = SamplingSettings(temperature=1.0, seed=3)
    traced = [s.token_id for s in tiny_model.stream(prompt, 6, settings)]
    given = [s.token_id for s in tiny_model.stream(prompt, 6, settings, prefill=tiny_model.trace(prompt))]
    assert given == traced
    with pytest.raises(ValueError, match="prefill"):
        next(tiny_model.stream(prompt, 6, settings, prefill=tiny_model.trace(prompt[:-1])))
