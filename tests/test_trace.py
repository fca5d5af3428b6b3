"""Every trace key against an independent float64 numpy forward pass, and against transformers' goldens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reference import reference_trace
from tiny_checkpoint import TINY_CONFIG

from gpt2_max.errors import InputError
from gpt2_max.hooks import trace_keys, trace_shapes

# MAX computes in float32 (machine epsilon 1.2e-7); the reference in float64.
# Each value is a sum of at most F = 256 products of numbers of order 1, so
# rounding grows to ~sqrt(256) * 1.2e-7 * |value| ~ 2e-6 relative; layer-norm
# outputs reach |4| and logits stay below 1 here. Measured worst case: 1.2e-6.
# RTOL 1e-5 and ATOL 1e-5 leave ~10x headroom without hiding real errors
# (a wrong mask, head order or GELU moves values by 1e-3 or more).
ATOL = 1e-5
RTOL = 1e-5
# Probabilities lie in [0, 1] and come from well-conditioned softmaxes.
PATTERN_ATOL = 1e-6
# The issue's bar for transformers' goldens (PyTorch float32 vs MAX float32,
# different summation orders): logits 1e-4, attention patterns 1e-5.
GOLDEN_LOGITS_ATOL = 1e-4
GOLDEN_PATTERN_ATOL = 1e-5
GOLDEN_HIDDEN_ATOL = 1e-5

PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox"
GOLDENS = np.load(Path(__file__).parent / "goldens" / "hf_tiny_gpt2.npz")


def assert_trace_matches(trace, reference):
    assert set(trace) == set(reference)
    for key, expected in reference.items():
        actual = trace[key]
        assert actual.shape == expected.shape, key
        assert actual.dtype == np.float32, key
        # -inf exactly where the reference masks, and nowhere else.
        np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg=key)
        finite = np.isfinite(expected)
        atol = PATTERN_ATOL if key.endswith("hook_pattern") else ATOL
        np.testing.assert_allclose(actual[finite], expected[finite], atol=atol, rtol=RTOL, err_msg=key)


def test_keys_and_shapes_are_documented(tiny_model):
    ids = tiny_model.tokenizer.encode(PROMPT)
    trace = tiny_model.trace(ids)
    assert tuple(trace) == trace_keys(TINY_CONFIG.n_layer)
    shapes = trace_shapes(TINY_CONFIG, len(ids))
    assert {k: v.shape for k, v in trace.items()} == shapes


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "mask-off"])
def test_every_key_matches_numpy_reference(tiny_model, tiny_weights_by_name, causal):
    ids = tiny_model.tokenizer.encode(PROMPT)
    trace = tiny_model.trace(ids, causal=causal)
    reference = reference_trace(tiny_weights_by_name, TINY_CONFIG, ids, causal=causal)
    assert_trace_matches(trace, reference)


def test_mask_off_lets_queries_see_later_tokens(tiny_model):
    ids = tiny_model.tokenizer.encode(PROMPT)
    causal = tiny_model.trace(ids)
    open_ = tiny_model.trace(ids, causal=False)
    pattern = causal["blocks.0.attn.hook_pattern"]
    future = np.triu(np.ones((len(ids), len(ids)), dtype=bool), k=1)  # key after query
    assert np.all(pattern[:, future] == 0.0)  # nothing attends to the future
    assert np.all(open_["blocks.0.attn.hook_pattern"][:, future] > 0.0)
    # The last position sees everything either way, so its first-layer attention is the same.
    np.testing.assert_allclose(open_["blocks.0.attn.hook_pattern"][:, -1], pattern[:, -1], atol=PATTERN_ATOL)


def test_head_ablation_matches_reference(tiny_model, tiny_weights_by_name):
    ids = tiny_model.tokenizer.encode(PROMPT)
    ablate = [(0, 1), (1, 3), (1, 0)]
    trace = tiny_model.trace(ids, ablate=ablate)
    keep = np.ones((TINY_CONFIG.n_layer, TINY_CONFIG.n_head))
    for layer, head in ablate:
        keep[layer, head] = 0.0
    assert_trace_matches(trace, reference_trace(tiny_weights_by_name, TINY_CONFIG, ids, head_keep=keep))
    assert np.all(trace["blocks.0.attn.hook_z"][:, 1] == 0.0)
    # A dict of layer -> heads is the same request.
    same = tiny_model.trace(ids, ablate={0: [1], 1: [0, 3]})
    np.testing.assert_array_equal(same["logits"], trace["logits"])
    # Ablation changes the output: the input really reaches the graph.
    assert np.abs(trace["logits"] - tiny_model.trace(ids)["logits"]).max() > 1e-4


@pytest.mark.parametrize("length", [1, 2, TINY_CONFIG.n_positions], ids=["T=1", "T=2", "T=max"])
def test_lengths_from_one_to_the_whole_context(tiny_model, tiny_weights_by_name, length):
    ids = [(7919 * i + 13) % TINY_CONFIG.vocab_size for i in range(length)]
    trace = tiny_model.trace(ids)
    reference = reference_trace(tiny_weights_by_name, TINY_CONFIG, ids)
    for key in ("blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post", "logits"):
        atol = PATTERN_ATOL if key.endswith("pattern") else ATOL
        np.testing.assert_allclose(trace[key], reference[key], atol=atol, rtol=RTOL, err_msg=key)


@pytest.mark.parametrize("prompt", ["a", "b"])
def test_matches_transformers_goldens(tiny_model, prompt):
    ids = GOLDENS[f"{prompt}.input_ids"].tolist()
    trace = tiny_model.trace(ids)
    np.testing.assert_allclose(
        trace["logits"], GOLDENS[f"{prompt}.logits"], atol=GOLDEN_LOGITS_ATOL, rtol=0, err_msg="logits"
    )
    for layer in range(TINY_CONFIG.n_layer):
        np.testing.assert_allclose(
            trace[f"blocks.{layer}.attn.hook_pattern"],
            GOLDENS[f"{prompt}.pattern.{layer}"],
            atol=GOLDEN_PATTERN_ATOL,
            rtol=0,
            err_msg=f"pattern {layer}",
        )
    # transformers' hidden_states: [0] is the embedding sum, [i] the output of
    # block i-1, and the last one is after ln_f.
    np.testing.assert_allclose(
        trace["blocks.0.hook_resid_pre"], GOLDENS[f"{prompt}.hidden.0"], atol=GOLDEN_HIDDEN_ATOL, rtol=0
    )
    for layer in range(TINY_CONFIG.n_layer - 1):
        np.testing.assert_allclose(
            trace[f"blocks.{layer}.hook_resid_post"],
            GOLDENS[f"{prompt}.hidden.{layer + 1}"],
            atol=GOLDEN_HIDDEN_ATOL,
            rtol=0,
        )
    np.testing.assert_allclose(
        trace["ln_final.hook_normalized"],
        GOLDENS[f"{prompt}.hidden.{TINY_CONFIG.n_layer}"],
        atol=GOLDEN_HIDDEN_ATOL * 10,  # normalised values are ~10x larger than the residual stream
        rtol=0,
    )


@pytest.mark.parametrize(
    "ids, ablate, message",
    [
        ([], None, "at least one token"),
        ([1] * (TINY_CONFIG.n_positions + 1), None, "context"),
        ([50257], None, "outside the vocabulary"),
        ([-1], None, "outside the vocabulary"),
        (["x"], None, "integers"),
        ([1, 2], [(2, 0)], "no head"),
        ([1, 2], [(0, 4)], "no head"),
        ([1, 2], [(0,)], "pairs"),
    ],
)
def test_bad_requests_are_refused_with_a_message(tiny_model, ids, ablate, message):
    with pytest.raises(InputError, match=message):
        tiny_model.trace(ids, ablate=ablate)
    assert tiny_model.trace([1, 2])["logits"].shape == (2, TINY_CONFIG.vocab_size)


def test_logits_at_the_positions_asked_for_packed_or_alone(tiny_model, tiny_weights_by_name):
    """logit_positions picks the rows of logits (a Run asks for its last only): packed with other
    requests or alone, they are the reference's rows at those positions, in the order asked."""
    a, b = [5, 17, 3, 99, 42, 7], [8, 1, 64, 2]
    traces = tiny_model.traces(
        [dict(token_ids=a, logit_positions=[-1, 0, 3]), dict(token_ids=b, logit_positions=[2]), dict(token_ids=a)]
    )
    assert [t["logits"].shape[0] for t in traces] == [3, 1, len(a)]
    for ids, trace, rows in ((a, traces[0], [5, 0, 3]), (b, traces[1], [2]), (a, traces[2], list(range(len(a))))):
        reference = reference_trace(tiny_weights_by_name, TINY_CONFIG, ids)
        np.testing.assert_allclose(trace["logits"], reference["logits"][rows], atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(
            trace["blocks.1.hook_resid_post"], reference["blocks.1.hook_resid_post"], atol=ATOL, rtol=RTOL
        )
    alone = tiny_model.trace(b, logit_positions=[-1])
    np.testing.assert_allclose(
        alone["logits"], reference_trace(tiny_weights_by_name, TINY_CONFIG, b)["logits"][-1:], atol=ATOL, rtol=RTOL
    )
    for bad in ([], [len(b)], [-len(b) - 1], ["x"]):
        with pytest.raises(InputError, match="logit positions"):
            tiny_model.trace(b, logit_positions=bad)
