"""Direct logit attribution, head detectors and activation patching against numpy references.

Tolerances. The attribution's parts are float64 sums over float32 trace rows; their total is
compared with MAX's float32 logit, which has ~sqrt(E) * 1.2e-7 * |terms| of rounding: the
parts here are below 1 in size, so 1e-5 absolute (plus 1e-5 relative) is ~10x the measured
worst case (2e-7). Parts compared with the float64 reference forward pass differ by the float32
rounding of the whole trace (test_trace.py's 1e-5). Patching compares whole traces: a run
patched with its own activations, or with the clean run before block 0, computes the same
kernels on the same inputs, so it is compared exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import layer_norm, reference_trace
from tiny_checkpoint import TINY_CONFIG, tiny_weights, write_save_pretrained

import gpt2_max
from gpt2_max import attribution
from gpt2_max.errors import InputError

SUM_ATOL = 1e-5
SUM_RTOL = 1e-5
REFERENCE_ATOL = 1e-5
REFERENCE_RTOL = 1e-4
# Packed and single runs differ by float32 rounding of differently blocked sums (test_trace.py's
# 1e-5 bound for MAX against float64 holds for both, so they differ by at most twice that).
PACKED_ATOL = 2e-5

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def prompt_ids(tiny_model):
    return tiny_model.tokenizer.encode(PROMPT)


@pytest.fixture(scope="module")
def prompt_trace(tiny_model, prompt_ids):
    return tiny_model.trace(prompt_ids)


@pytest.fixture(scope="module")
def prompt_reference(tiny_weights_by_name, prompt_ids):
    """The float64 reference trace of the clean prompt (computed once for the module)."""
    return reference_trace(tiny_weights_by_name, TINY_CONFIG, prompt_ids)


def test_parts_sum_to_the_logit_and_the_logit_difference_at_every_position(tiny_model, prompt_ids, prompt_trace):
    mary, john = tiny_model.tokenizer.encode(" Mary")[0], tiny_model.tokenizer.encode(" John")[0]
    for position in range(len(prompt_ids)):
        for minus in (None, john):
            parts = attribution.logit_attribution(tiny_model, prompt_trace, position, mary, minus)
            logit = prompt_trace["logits"][position, mary] - (
                0.0 if minus is None else prompt_trace["logits"][position, minus]
            )
            size = sum(abs(v) for v in parts.values())
            assert abs(sum(parts.values()) - logit) <= SUM_ATOL + SUM_RTOL * size, (position, minus)


def test_component_names_are_the_documented_ones(tiny_model, prompt_trace):
    parts = attribution.logit_attribution(tiny_model, prompt_trace, -1, 11)
    L, H = TINY_CONFIG.n_layer, TINY_CONFIG.n_head
    expected = ["embed", "pos_embed"]
    for layer in range(L):
        expected += [f"blocks.{layer}.attn.head.{h}" for h in range(H)]
        expected += [f"blocks.{layer}.attn.bias", f"blocks.{layer}.mlp"]
    assert list(parts) == expected + ["ln_final.bias"]


def test_each_head_part_equals_the_float64_reference(tiny_model, tiny_weights_by_name, prompt_trace, prompt_reference):
    reference = prompt_reference
    w = {k: v.astype(np.float64) for k, v in tiny_weights_by_name.items()}
    D, E = TINY_CONFIG.head_dim, TINY_CONFIG.n_embd
    target, position = 464, 7
    got = attribution.attribute(tiny_model, prompt_trace, position, target)
    final = reference[f"blocks.{TINY_CONFIG.n_layer - 1}.hook_resid_post"][position]
    scale = np.sqrt(final.var() + TINY_CONFIG.layer_norm_epsilon)

    def frozen_readout(vector):
        # ln_f with its scale frozen and no bias, read out by the target's wte row.
        return float(((vector - vector.mean()) / scale * w["ln_f.weight"]) @ w["wte.weight"][target])

    for layer in range(TINY_CONFIG.n_layer):
        c_proj = w[f"h.{layer}.attn.c_proj.weight"]
        for head in range(TINY_CONFIG.n_head):
            z = reference[f"blocks.{layer}.attn.hook_z"][position, head]  # [D]
            written = z @ c_proj[head * D : (head + 1) * D]  # [E]
            assert written.shape == (E,)
            np.testing.assert_allclose(
                got.heads[layer, head], frozen_readout(written), atol=REFERENCE_ATOL, rtol=REFERENCE_RTOL
            )
        np.testing.assert_allclose(
            got.mlp[layer],
            frozen_readout(reference[f"blocks.{layer}.hook_mlp_out"][position]),
            atol=REFERENCE_ATOL,
            rtol=REFERENCE_RTOL,
        )
    np.testing.assert_allclose(
        got.embed, frozen_readout(reference["hook_embed"][position]), atol=REFERENCE_ATOL, rtol=REFERENCE_RTOL
    )
    # The whole frozen readout plus the bias is the reference logit itself.
    logit = (
        layer_norm(final, w["ln_f.weight"], w["ln_f.bias"], TINY_CONFIG.layer_norm_epsilon) @ w["wte.weight"][target]
    )
    np.testing.assert_allclose(got.total, logit, atol=REFERENCE_ATOL, rtol=REFERENCE_RTOL)


def test_attribution_refuses_bad_positions_and_tokens(tiny_model, prompt_trace):
    with pytest.raises(InputError, match="outside this run"):
        attribution.logit_attribution(tiny_model, prompt_trace, 999, 11)
    with pytest.raises(InputError, match="vocabulary"):
        attribution.logit_attribution(tiny_model, prompt_trace, 0, 60000)


# ------------------------------------------------------------------------------ head detectors


def loop_scores(trace, ids, L, H):
    """The detectors written out query by query (no shared code with gpt2_max.attribution)."""
    T = len(ids)
    out = {name: np.zeros((L, H)) for name in attribution.HEAD_SCORE_NAMES}
    for layer in range(L):
        pattern = trace[f"blocks.{layer}.attn.hook_pattern"].astype(np.float64)  # [H, T, T]
        for head in range(H):
            sums = {name: [] for name in out}
            for i in range(T):
                if i >= 1:
                    sums["previous_token"].append(pattern[head, i, i - 1])
                earlier = [j for j in range(i) if ids[j] == ids[i]]
                if earlier:
                    sums["duplicate_token"].append(sum(pattern[head, i, j] for j in earlier))
                    sums["induction"].append(sum(pattern[head, i, j + 1] for j in earlier))
            for name in out:
                out[name][layer, head] = np.mean(sums[name]) if sums[name] else np.nan
    return out


def test_head_scores_equal_a_query_by_query_computation(tiny_model):
    ids = attribution.induction_test_ids(12, seed=3)
    trace = tiny_model.trace(ids)
    scores = attribution.head_scores(tiny_model, trace)
    expected = loop_scores(trace, ids, TINY_CONFIG.n_layer, TINY_CONFIG.n_head)
    for name in attribution.HEAD_SCORE_NAMES:
        assert scores[name].shape == (TINY_CONFIG.n_layer, TINY_CONFIG.n_head)
        np.testing.assert_allclose(scores[name], expected[name], atol=1e-12, err_msg=name)
    # Token identity read from the embedding rows equals the ids themselves.
    given = attribution.head_scores(tiny_model, trace, token_ids=ids)
    for name in attribution.HEAD_SCORE_NAMES:
        np.testing.assert_array_equal(given[name], scores[name])


def test_scores_without_repeated_tokens_are_missing_not_zero(tiny_model):
    trace = tiny_model.trace([10, 20, 30, 40])
    scores = attribution.head_scores(tiny_model, trace)
    assert np.isnan(scores["induction"]).all() and np.isnan(scores["duplicate_token"]).all()
    assert np.isfinite(scores["previous_token"]).all()


def test_induction_test_ids_repeat_a_seeded_sequence():
    ids = attribution.induction_test_ids(25, seed=7)
    assert len(ids) == 50 and ids[:25] == ids[25:]
    assert ids == attribution.induction_test_ids(25, seed=7) != attribution.induction_test_ids(25, seed=8)


PREVIOUS_TOKEN_HEAD = (0, 2)
FREQUENCIES = (0.5, 0.9, 1.7)  # radians per position; incommensurate, so only offset 0 sums to 3


def previous_token_weights():
    """The tiny checkpoint with block 0's head 2 built to attend from each position to the one before.

    wpe writes (cos f t, sin f t) for three frequencies f into dims 0..5, large (1.0) against the
    N(0, 0.02) rest, so ln_1 (made exactly 1 and 0) passes them through scaled. The head's keys
    copy those six dims and its queries rotate them back by one position, so q_i . k_j is
    proportional to sum_f cos(f (i - 1 - j)): largest at j = i - 1.
    """
    weights = {k: v.copy() for k, v in tiny_weights().items()}
    E, D = TINY_CONFIG.n_embd, TINY_CONFIG.head_dim
    layer, head = PREVIOUS_TOKEN_HEAD
    t = np.arange(TINY_CONFIG.n_positions)
    wpe = weights["wpe.weight"]
    for n, f in enumerate(FREQUENCIES):
        wpe[:, 2 * n], wpe[:, 2 * n + 1] = np.cos(f * t), np.sin(f * t)
    weights[f"h.{layer}.ln_1.weight"][:] = 1.0
    weights[f"h.{layer}.ln_1.bias"][:] = 0.0
    c_attn = weights[f"h.{layer}.attn.c_attn.weight"]  # [E, 3E]: q | k | v columns
    q_cols, k_cols = slice(head * D, (head + 1) * D), slice(E + head * D, E + (head + 1) * D)
    c_attn[:, q_cols] = 0.0
    c_attn[:, k_cols] = 0.0
    weights[f"h.{layer}.attn.c_attn.bias"][q_cols] = 0.0
    weights[f"h.{layer}.attn.c_attn.bias"][k_cols] = 0.0
    sharpness = 2.0
    for n, f in enumerate(FREQUENCIES):
        c, s = np.cos(f), np.sin(f)
        rows = [2 * n, 2 * n + 1]
        # q = sharpness * R(-f) p: (cos f(t-1), sin f(t-1)) from (cos ft, sin ft).
        c_attn[np.ix_(rows, [head * D + 2 * n, head * D + 2 * n + 1])] = sharpness * np.array([[c, -s], [s, c]])
        c_attn[np.ix_(rows, [E + head * D + 2 * n, E + head * D + 2 * n + 1])] = np.eye(2)
    return weights


def test_a_constructed_previous_token_head_scores_highest(tmp_path, tiny_model):
    directory = write_save_pretrained(tmp_path / "previous-token", weights=previous_token_weights())
    model = gpt2_max.load(str(directory))  # the tiny shape: the compiled graph is reused warm
    ids = tiny_model.tokenizer.encode("One two three four five six seven eight nine ten eleven twelve")
    trace = model.trace(ids)
    scores = attribution.head_scores(model, trace)["previous_token"]
    best = np.unravel_index(np.nanargmax(scores), scores.shape)
    assert tuple(int(v) for v in best) == PREVIOUS_TOKEN_HEAD, scores
    assert scores[PREVIOUS_TOKEN_HEAD] > 0.9
    np.testing.assert_allclose(
        scores, loop_scores(trace, ids, TINY_CONFIG.n_layer, TINY_CONFIG.n_head)["previous_token"], atol=1e-12
    )


# --------------------------------------------------------------------------- activation patching


def assert_same_trace(actual, expected, skip=()):
    for key, value in expected.items():
        if key not in skip:
            np.testing.assert_array_equal(actual[key], value, err_msg=key)


def test_patching_a_run_with_its_own_activations_changes_nothing(tiny_model, prompt_ids, prompt_trace):
    L, H, T = TINY_CONFIG.n_layer, TINY_CONFIG.n_head, len(prompt_ids)
    heads = [(layer, head) for layer in range(L) for head in range(H)]
    assert_same_trace(tiny_model.trace(prompt_ids, patch=(prompt_trace, heads)), prompt_trace)
    places = [(layer, position) for layer in range(L) for position in range(T)]
    assert_same_trace(tiny_model.trace(prompt_ids, resid_patch=(prompt_trace, places)), prompt_trace)


def test_patching_the_stream_before_block_0_everywhere_reproduces_the_clean_run(tiny_model, prompt_ids, prompt_trace):
    corrupted = tiny_model.tokenizer.encode(CORRUPTED)
    assert len(corrupted) == len(prompt_ids) and corrupted != prompt_ids
    patched = tiny_model.trace(corrupted, resid_patch=(prompt_trace, [(0, t) for t in range(len(corrupted))]))
    # Only the embeddings (recorded before the patch) still show the corrupted tokens.
    assert_same_trace(patched, prompt_trace, skip={"hook_embed"})
    assert not np.array_equal(patched["hook_embed"], prompt_trace["hook_embed"])


def test_patching_one_head_equals_the_reference_making_the_same_replacement(
    tiny_model, tiny_weights_by_name, prompt_trace, prompt_reference
):
    corrupted = tiny_model.tokenizer.encode(CORRUPTED)
    layer, head = 1, 3
    patched = tiny_model.trace(corrupted, patch=(prompt_trace, [(layer, head)]))
    clean_reference = prompt_reference
    expected = reference_trace(
        tiny_weights_by_name,
        TINY_CONFIG,
        corrupted,
        z_replace={(layer, head): clean_reference[f"blocks.{layer}.attn.hook_z"][:, head]},
    )
    for key in ("logits", f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_resid_post"):
        np.testing.assert_allclose(patched[key], expected[key], atol=1e-5, rtol=1e-5, err_msg=key)
    assert not np.allclose(patched["logits"], tiny_model.trace(corrupted)["logits"], atol=1e-5)


def test_patching_one_layer_and_position_equals_the_reference(
    tiny_model, tiny_weights_by_name, prompt_trace, prompt_reference
):
    corrupted = tiny_model.tokenizer.encode(CORRUPTED)
    layer, position = 1, 9
    patched = tiny_model.trace(corrupted, resid_patch=(prompt_trace, [(layer, position)]))
    clean_reference = prompt_reference
    expected = reference_trace(
        tiny_weights_by_name,
        TINY_CONFIG,
        corrupted,
        resid_replace={(layer, position): clean_reference[f"blocks.{layer}.hook_resid_pre"][position]},
    )
    for key in ("logits", f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_resid_post"):
        np.testing.assert_allclose(patched[key], expected[key], atol=1e-5, rtol=1e-5, err_msg=key)


def test_ablation_is_patching_from_zeros_and_matches_the_reference(
    tiny_model, tiny_weights_by_name, prompt_ids, prompt_trace
):
    ablated = tiny_model.trace(prompt_ids, ablate=[(0, 1), (1, 2)])
    keep = np.ones((TINY_CONFIG.n_layer, TINY_CONFIG.n_head))
    keep[0, 1] = keep[1, 2] = 0.0
    expected = reference_trace(tiny_weights_by_name, TINY_CONFIG, prompt_ids, head_keep=keep)
    for key in ("logits", "blocks.1.attn.hook_z", "blocks.1.hook_resid_post"):
        np.testing.assert_allclose(ablated[key], expected[key], atol=1e-5, rtol=1e-5, err_msg=key)
    zeros = {key: np.zeros_like(value) for key, value in prompt_trace.items()}
    assert_same_trace(tiny_model.trace(prompt_ids, patch=(zeros, [(0, 1), (1, 2)])), ablated)
    # Patching other heads on top of an ablation keeps the ablated heads at zero.
    both = tiny_model.trace(prompt_ids, ablate=[(0, 1)], patch=(prompt_trace, [(1, 0)]))
    assert not both["blocks.0.attn.hook_z"][:, 1].any()


def test_bad_patches_are_refused_with_a_message(tiny_model, prompt_ids, prompt_trace):
    with pytest.raises(InputError, match="tokens"):
        tiny_model.trace(prompt_ids[:-1], patch=(prompt_trace, [(0, 0)]))
    with pytest.raises(InputError, match="both ablated and patched"):
        tiny_model.trace(prompt_ids, ablate=[(0, 0)], patch=(prompt_trace, [(0, 0)]))
    with pytest.raises(InputError, match="no position"):
        tiny_model.trace(prompt_ids, resid_patch=(prompt_trace, [(0, 99)]))
    with pytest.raises(InputError, match="no head"):
        tiny_model.trace(prompt_ids, patch=(prompt_trace, [(5, 0)]))
    with pytest.raises(InputError, match="same length"):
        attribution.patch_heads(tiny_model, prompt_ids, prompt_ids[:-1], lambda t: 0.0)


def test_sweeps_match_single_patched_runs(tiny_model, prompt_ids):
    corrupted = tiny_model.tokenizer.encode(CORRUPTED)
    john, mary = tiny_model.tokenizer.encode(" John")[0], tiny_model.tokenizer.encode(" Mary")[0]
    metric = lambda trace: attribution.logit_difference(trace, -1, mary, john)  # noqa: E731
    clean, dirty = tiny_model.trace(prompt_ids), tiny_model.trace(corrupted)
    heads = attribution.patch_heads(tiny_model, prompt_ids, corrupted, metric)
    assert heads.restored.shape == (TINY_CONFIG.n_layer, TINY_CONFIG.n_head)
    # The sweep runs packed (see test_packed_traces_equal_single_ones): float32 rounding apart.
    assert heads.clean_metric == pytest.approx(metric(clean), abs=PACKED_ATOL)
    assert heads.corrupted_metric == pytest.approx(metric(dirty), abs=PACKED_ATOL)
    one = metric(tiny_model.trace(corrupted, patch=(clean, [(1, 2)])))
    assert heads.metric[1, 2] == pytest.approx(one, abs=PACKED_ATOL)
    gap = metric(clean) - metric(dirty)  # ~0.02 here: the restored share's error is ~PACKED_ATOL / gap
    np.testing.assert_allclose(heads.restored[1, 2], (one - metric(dirty)) / gap, atol=PACKED_ATOL / abs(gap) * 4)

    stream = attribution.patch_residual(tiny_model, prompt_ids, corrupted, metric)
    assert stream.restored.shape == (TINY_CONFIG.n_layer, len(prompt_ids))
    # The prompts differ at one position only: before block 0, patching it restores everything,
    # and patching any other position (the same tokens there) restores nothing.
    differ = [i for i, (a, b) in enumerate(zip(prompt_ids, corrupted)) if a != b]
    assert len(differ) == 1
    tolerance = PACKED_ATOL / abs(gap) * 4
    assert stream.restored[0, differ[0]] == pytest.approx(1.0, abs=tolerance)
    others = np.delete(stream.restored[0], differ[0])
    np.testing.assert_allclose(others, 0.0, atol=tolerance)


def test_packed_traces_equal_single_ones(tiny_model, tiny_weights_by_name, prompt_ids, prompt_trace):
    """Several requests of different lengths, masks and patches in one execution: each equals its
    own run (a matrix product over more rows may sum in another order: float32 rounding)."""
    corrupted = tiny_model.tokenizer.encode(CORRUPTED)
    requests = [
        dict(token_ids=prompt_ids),
        dict(token_ids=[464, 3290, 373]),
        dict(token_ids=corrupted, patch=(prompt_trace, [(1, 3)])),
        dict(token_ids=prompt_ids[:7], causal=False, ablate=[(0, 2)]),
        dict(token_ids=corrupted, resid_patch=(prompt_trace, [(1, 9)])),
    ]
    packed = tiny_model.traces(requests)
    assert len(packed) == len(requests)
    for request, trace in zip(requests, packed):
        alone = tiny_model.trace(**request)
        assert set(trace) == set(alone)
        for key, value in alone.items():
            assert trace[key].shape == value.shape, key
            finite = np.isfinite(value)
            np.testing.assert_array_equal(np.isfinite(trace[key]), finite, err_msg=key)  # the same masked cells
            np.testing.assert_allclose(trace[key][finite], value[finite], atol=PACKED_ATOL, rtol=1e-5, err_msg=key)
    # And against the float64 reference, for the unmasked, ablated one.
    keep = np.ones((TINY_CONFIG.n_layer, TINY_CONFIG.n_head))
    keep[0, 2] = 0.0
    expected = reference_trace(tiny_weights_by_name, TINY_CONFIG, prompt_ids[:7], causal=False, head_keep=keep)
    np.testing.assert_allclose(packed[3]["logits"], expected["logits"], atol=1e-5, rtol=1e-5)


def test_cli_attribute_and_heads_print_what_the_api_computes(capsys, tiny_model):
    from tiny_checkpoint import TINY_REPO_ID

    from gpt2_max.__main__ import main

    assert (
        main(["attribute", PROMPT, "--model", TINY_REPO_ID, "--token", " Mary", "--minus", " John", "--top", "3"]) == 0
    )
    printed = capsys.readouterr().out.splitlines()
    ids = tiny_model.tokenizer.encode(PROMPT)
    mary, john = tiny_model.tokenizer.encode(" Mary")[0], tiny_model.tokenizer.encode(" John")[0]
    parts = attribution.logit_attribution(tiny_model, tiny_model.trace(ids), -1, mary, john)
    largest = sorted(parts, key=lambda n: -abs(parts[n]))[:3]
    assert printed[0].startswith("logit('␣Mary') - logit('␣John') at the last position")
    assert [line.split()[0] for line in printed[1:]] == largest
    assert all(abs(float(line.split()[1]) - parts[line.split()[0]]) < 1e-4 for line in printed[1:])

    assert main(["heads", "--model", TINY_REPO_ID, "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(attribution.HEAD_SCORE_NAMES)
    scores = attribution.head_scores(tiny_model, tiny_model.trace(attribution.induction_test_ids(25)))
    best = np.unravel_index(np.nanargmax(scores["induction"]), scores["induction"].shape)
    assert lines[2].split()[1] == f"{best[0]}.{best[1]}"
    assert main(["attribute", "x", "--model", TINY_REPO_ID, "--token", ""]) == 0  # empty: the top prediction
    capsys.readouterr()
