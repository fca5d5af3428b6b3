"""The MAX analysis graph (logit lens, next-token top-k, nearest tokens) against float64 numpy.

The graph works in float32 over the 50,257-token vocabulary. Tolerances:
- probabilities: relative 1e-4. float32 logits carry ~1e-6 relative error after a
  64-wide dot product, and log-softmax turns an absolute logit error e into a
  relative probability error of about e; 1e-4 leaves a 100x margin (measured worst
  ~3e-6) while a wrong normalisation or a wrong row is off by far more.
- cosines: absolute 1e-5 (unit-length float32 dot products of 64 numbers).
- entropy: absolute 1e-4 bits out of ~15.6.
- top-k order: compared only where the gap between neighbours in the reference is
  larger than the tolerance (the tiny random model's probabilities are nearly flat,
  so near-ties are common; any order among them is right).
"""

from __future__ import annotations

import numpy as np
import pytest
from max.driver import CPU, Buffer
from max.dtype import DType
from max.experimental import functional as F
from max.experimental.nn import Module
from max.graph import DeviceRef, TensorType

from gpt2_max import analysis, engine
from gpt2_max.engine import NEAREST_TOP_K
from gpt2_max.modules import GPT2Analysis, vocabulary_block_width

PROB_RTOL = 1e-4
COSINE_ATOL = 1e-5
ENTROPY_ATOL = 1e-4


def reference_lens(rows, weights, eps):
    """float64 ln_f + tied unembedding + softmax: [N, E] -> [N, V] probabilities."""
    x = np.asarray(rows, dtype=np.float64)
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    logits = (x * weights["ln_f.weight"] + weights["ln_f.bias"]) @ weights["wte.weight"].astype(np.float64).T
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)


def reference_cosines(vectors, wte):
    wte = wte.astype(np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    return (v @ wte.T) / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(wte, axis=1))


def assert_top_k(got_ids, got_values, reference, tol, relative):
    """Each row's top-k values equal the reference's k largest; ids agree wherever the
    reference separates neighbours by more than the tolerance (ties may come in any order)."""
    k = got_ids.shape[1]
    for row in range(got_ids.shape[0]):
        want_ids = np.argsort(-reference[row], kind="stable")[: k + 1]
        want = reference[row][want_ids]
        np.testing.assert_allclose(got_values[row], want[:k], rtol=tol if relative else 0, atol=0 if relative else tol)
        np.testing.assert_allclose(
            reference[row][got_ids[row]], got_values[row], rtol=tol if relative else 0, atol=0 if relative else tol
        )
        gaps = want[:-1] - want[1:]
        scale = want[:-1] if relative else 1.0
        for i in range(k):
            separated = gaps[i] > 4 * tol * scale[i] if relative else gaps[i] > 4 * tol
            before_separated = i == 0 or (gaps[i - 1] > 4 * tol * scale[i - 1] if relative else gaps[i - 1] > 4 * tol)
            if separated and before_separated:
                assert got_ids[row, i] == want_ids[i], (row, i)


@pytest.fixture(scope="module")
def weights(tiny_model):
    return tiny_model.weights


def test_lens_equals_numpy_at_every_block_and_position(tiny_model, tiny_run, weights, full_logits):
    lens = analysis.logit_lens(tiny_model, tiny_run.trace)
    L, T = tiny_model.config.n_layer, tiny_run.n_tokens
    assert lens.top_ids.shape == (L, T) and lens.final_probs.shape == (L, T)
    assert lens.top_k_ids.shape == lens.top_k_probs.shape == (L, T, engine.LENS_TOP_K)
    # The final predictions are the model's own argmax (the trace graph's logits at every
    # position), wherever its top two are clear of the tolerance; in a near-tie either is right.
    reference = np.sort(full_logits.astype(np.float64), axis=-1)
    clear = reference[:, -1] - reference[:, -2] > 1e-4
    np.testing.assert_array_equal(lens.final_ids[clear], full_logits.argmax(-1)[clear])
    assert np.all(full_logits[np.arange(T), lens.final_ids] >= reference[:, -1] - 1e-4)
    final = lens.final_ids
    for layer in range(L):
        probs = reference_lens(
            tiny_run.trace[f"blocks.{layer}.hook_resid_post"], weights, tiny_model.config.layer_norm_epsilon
        )
        assert_top_k(lens.top_k_ids[layer], lens.top_k_probs[layer], probs, PROB_RTOL, relative=True)
        np.testing.assert_array_equal(lens.top_ids[layer], lens.top_k_ids[layer, :, 0])
        target = probs[np.arange(T), final]
        np.testing.assert_allclose(lens.final_probs[layer], target, rtol=PROB_RTOL, atol=0)
        # Rank: 1 + how many are more likely, counted where the reference is clear of the tolerance.
        clearly_above = (probs > target[:, None] * (1 + 4 * PROB_RTOL)).sum(-1)
        possibly_above = (probs > target[:, None] * (1 - 4 * PROB_RTOL)).sum(-1) - 1
        assert np.all(lens.final_ranks[layer] >= 1 + clearly_above) and np.all(
            lens.final_ranks[layer] <= 1 + possibly_above
        )
    # After the last block the lens is the model's own output.
    assert np.all(lens.final_ranks[-1] == 1)


def test_lens_of_the_last_positions_only(tiny_model, tiny_run):
    whole = analysis.logit_lens(tiny_model, tiny_run.trace)
    tail = analysis.logit_lens(tiny_model, tiny_run.trace, start=tiny_run.n_tokens - 4)
    assert tail.start == tiny_run.n_tokens - 4 and tail.top_ids.shape[1] == 4
    np.testing.assert_allclose(tail.top_probs, whole.top_probs[:, -4:], rtol=1e-6)
    np.testing.assert_allclose(tail.final_probs, whole.final_probs[:, -4:], rtol=1e-6)


def test_next_tokens_match_the_traces_logits(tiny_model, tiny_run, full_logits):
    nxt = analysis.next_tokens(tiny_model, tiny_run.trace, tiny_run.token_ids)
    # Its logits at every position are the trace graph's (same float32 math, another order).
    np.testing.assert_allclose(nxt.logits, full_logits, atol=1e-5, rtol=0)
    logits = full_logits.astype(np.float64)
    z = logits - logits.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    T = tiny_run.n_tokens
    assert_top_k(nxt.top_ids, nxt.top_probs, probs, PROB_RTOL, relative=True)
    entropy = -(probs * np.log2(probs)).sum(-1)
    np.testing.assert_allclose(nxt.entropy_bits, entropy, atol=ENTROPY_ATOL, rtol=0)
    actual = np.asarray(tiny_run.token_ids[1:])
    np.testing.assert_allclose(nxt.actual_probs[:-1], probs[np.arange(T - 1), actual], rtol=PROB_RTOL, atol=0)
    assert np.isnan(nxt.actual_probs[-1]) and nxt.actual_ranks[-1] == 0
    # The actual next token's rank: 1 + how many logits are above its own, up to the tokens
    # within the logits' tolerance of it (which float32 may order either way).
    target = logits[np.arange(T - 1), actual][:, None]
    surely_above = 1 + (logits[:-1] > target + 1e-5).sum(-1)
    maybe_above = 1 + (logits[:-1] > target - 1e-5).sum(-1)
    assert np.all((surely_above <= nxt.actual_ranks[:-1]) & (nxt.actual_ranks[:-1] <= maybe_above))
    np.testing.assert_allclose(nxt.surprise_bits[:-1], -np.log2(probs[np.arange(T - 1), actual]), atol=1e-3)


def test_nearest_tokens_by_cosine_leave_the_token_out(tiny_model, tiny_run, weights):
    vectors = tiny_run.trace["hook_embed"]
    near = analysis.nearest_tokens(tiny_model, vectors, exclude=tiny_run.token_ids)
    J = NEAREST_TOP_K - 1
    assert near.ids.shape == (tiny_run.n_tokens, J)
    cosines = reference_cosines(vectors, weights["wte.weight"])
    cosines[np.arange(tiny_run.n_tokens), tiny_run.token_ids] = -np.inf  # the token itself is left out
    assert not np.any(near.ids == np.asarray(tiny_run.token_ids)[:, None])
    assert_top_k(near.ids, near.cosines, cosines, COSINE_ATOL, relative=False)


def test_ties_share_the_better_rank_and_a_zero_vector_is_harmless(tiny_model):
    E = tiny_model.config.n_embd
    # A constant row normalises to ln_f's bias alone: every token's logit is wte @ bias.
    rows = np.stack([np.ones(E, np.float32), np.zeros(E, np.float32)])
    out = tiny_model.engine.run_analysis(rows, np.array([0, 0]), rows, np.zeros((1, E), np.float32))
    assert np.all(out["nearest_cosines"] == 0) and np.all(np.isfinite(out["lens_top_probs"]))
    assert np.all(np.isfinite(out["candidate_probs"])) and out["candidate_ids"].shape[0] == 2
    assert np.all(out["lens_target_rank"] >= 1)


def test_chunks_of_rows_give_the_same_answer(tiny_model, tiny_run, monkeypatch):
    rows = np.concatenate([tiny_run.trace[f"blocks.{i}.hook_resid_post"] for i in range(tiny_model.config.n_layer)])
    targets = np.arange(rows.shape[0])
    whole = tiny_model.engine.run_analysis(rows, targets, rows[:9], rows[:5])
    assert whole["candidate_ids"].shape[0] == 9 and whole["nearest_ids"].shape[0] == 5
    monkeypatch.setattr(engine, "ANALYSIS_CHUNK_ROWS", 7)
    chunked = tiny_model.engine.run_analysis(rows, targets, rows[:9], rows[:5])
    for key in engine.ANALYSIS_OUTPUTS:
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-6, err_msg=key)


def test_lens_rows_follow_the_top_token_of_a_row_of_their_group(tiny_model, tiny_run, monkeypatch):
    """lens_target_rows: a row's target is the top token of another row of its group (the lens's
    final prediction), the same as passing that token; chunks keep groups whole."""
    L = tiny_model.config.n_layer
    rows = np.stack([tiny_run.trace[f"blocks.{i}.hook_resid_post"] for i in range(L)], axis=1).reshape(
        -1, tiny_model.config.n_embd
    )  # [T * L, E]
    last = np.repeat(np.arange(tiny_run.n_tokens) * L + L - 1, L)
    followed = tiny_model.engine.run_analysis(lens_rows=rows, lens_target_rows=last, lens_group=L)
    given = tiny_model.engine.run_analysis(lens_rows=rows, lens_targets=followed["lens_top_ids"][last, 0])
    for key in ("lens_top_ids", "lens_top_probs", "lens_target_prob", "lens_target_rank"):
        np.testing.assert_array_equal(followed[key], given[key], err_msg=key)
    assert np.all(followed["lens_target_rank"][last] == 1)
    monkeypatch.setattr(engine, "ANALYSIS_CHUNK_ROWS", 3 * L + 1)  # chunks of 3 whole groups
    chunked = tiny_model.engine.run_analysis(lens_rows=rows, lens_target_rows=last, lens_group=L)
    for key in ("lens_top_ids", "lens_target_prob", "lens_target_rank"):
        np.testing.assert_allclose(chunked[key], followed[key], rtol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="its own group"):
        tiny_model.engine.run_analysis(lens_rows=rows, lens_target_rows=np.roll(last, 1), lens_group=L)


def test_vocabulary_top_k_is_exact_where_the_top_values_crowd_one_block_and_tie():
    """GPT2Analysis.vocabulary_top_k (the k best blocks of 29 by their maxima, then the k best of
    those) against numpy's sort, on rows made to break a blocked top-k: the top values crowded
    into one or two blocks, ties at the top across blocks, a constant row, and random rows. The
    values must be exactly numpy's k largest, best first, and each id must hold its value
    (ties may come in any order, each id once)."""
    V, K = 50257, engine.CANDIDATE_TOP_K

    class VocabularyTopK(Module):
        def __init__(self) -> None:
            self.vocab_size, self.block_width = V, vocabulary_block_width(V, K)

        def forward(self, x):
            return GPT2Analysis.vocabulary_top_k(self, x, K)

    assert vocabulary_block_width(V, K) == 29
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(6, V)).astype(np.float32)
    rows[0, 100:140] = 10.0 + np.arange(40, dtype=np.float32) / 64  # the top 40 in two blocks
    rows[1, 29 * 7 : 29 * 8] = 9.0 + np.arange(29, dtype=np.float32) / 64  # one whole block on top
    rows[2, rng.choice(V, 40, replace=False)] = 5.0  # 40 tied at the top, in ~40 blocks
    rows[3] = 1.0  # every value tied
    with F.lazy():
        module = VocabularyTopK()
    compiled = module.compile(TensorType(DType.float32, ["rows", V], device=DeviceRef.from_device(CPU())))
    values, ids = (np.from_dlpack(out).copy() for out in compiled.execute_raw(Buffer.from_numpy(rows)))
    for row in range(len(rows)):
        np.testing.assert_array_equal(values[row], np.sort(rows[row])[::-1][:K])
        np.testing.assert_array_equal(rows[row][ids[row]], values[row])
        assert len(set(ids[row].tolist())) == K and ids[row].min() >= 0 and ids[row].max() < V
