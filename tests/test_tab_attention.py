"""The Attention tab's figures: a head's pattern, every head's pattern, q/k/v at a position, and head ablation."""

from __future__ import annotations

import numpy as np
import pytest

from components import tab_attention
from components.plots import bin_starts
from tab_helpers import build_view, softmax, token_text


@pytest.fixture(scope="module")
def ablated(tiny_run, explorer_service):
    return explorer_service.variant(tiny_run, ablated=[(1, 2)])


def test_pattern_is_the_chosen_heads_with_tokens_on_both_axes(tiny_run, explorer_service):
    pattern_fig = tab_attention.render(tiny_run, token_text(explorer_service), 1, 2)[0]
    np.testing.assert_array_equal(pattern_fig.data[0].z, tiny_run.trace["blocks.1.attn.hook_pattern"][2])
    assert list(pattern_fig.data[0].x) == tiny_run.labels and list(pattern_fig.data[0].y) == tiny_run.labels
    assert (pattern_fig.data[0].zmin, pattern_fig.data[0].zmax) == (0.0, 1.0)
    assert "layer 1 head 2" in pattern_fig.layout.title.text
    assert pattern_fig.layout.height >= 360


def test_grid_has_every_head_on_one_colour_scale(tiny_run, explorer_service):
    grid_fig = tab_attention.render(tiny_run, token_text(explorer_service))[1]
    L, H = tiny_run.config.n_layer, tiny_run.config.n_head
    assert len(grid_fig.data) == L * H
    for layer in range(L):
        for head in range(H):
            trace = grid_fig.data[layer * H + head]
            np.testing.assert_allclose(trace.z, tiny_run.trace[f"blocks.{layer}.attn.hook_pattern"][head], atol=1e-7)
            assert trace.coloraxis == "coloraxis"
            assert f"layer {layer} head {head}" in trace.hovertemplate
            assert list(trace.x) == tiny_run.labels
    assert (grid_fig.layout.coloraxis.cmin, grid_fig.layout.coloraxis.cmax) == (0.0, 1.0)
    assert grid_fig.layout.height == L * 150 + 190


def test_grid_pools_long_inputs_into_block_means(tiny_run, explorer_service):
    T = tiny_run.n_tokens
    values, labels = tab_attention.grid_values(tiny_run, bins=5)
    starts = bin_starts(T, 5)
    stops = list(starts[1:]) + [T]
    assert list(starts) == [0, 2, 4, 7, 9]  # 12 positions in near-equal contiguous blocks
    assert values.shape == (tiny_run.config.n_layer, tiny_run.config.n_head, 5, 5) and len(labels) == 5
    pattern = tiny_run.trace["blocks.1.attn.hook_pattern"][3]
    for i, (a, b) in enumerate(zip(starts, stops)):
        for j, (c, d) in enumerate(zip(starts, stops)):
            assert values[1, 3, i, j] == pytest.approx(pattern[a:b, c:d].mean(), abs=1e-7)
    # 144 small multiples repeat their labels: a block is named by its positions only.
    assert labels == [f"{a}–{b - 1}" for a, b in zip(starts, stops)]
    grid_fig = tab_attention.grid_figure(tiny_run, values, labels)
    trace = grid_fig.data[1 * tiny_run.config.n_head + 3]
    assert trace.z.dtype == np.float32 and list(trace.x) == labels
    np.testing.assert_allclose(trace.z, values[1, 3], rtol=1e-6)
    assert "averaged over blocks of ~2 positions" in grid_fig.layout.title.text


def test_pattern_beyond_a_screenful_averages_blocks_of_positions(tiny_run, explorer_service, monkeypatch):
    monkeypatch.setattr("components.plots.MAX_CELLS_PER_AXIS", 5)
    pattern_fig = tab_attention.render(tiny_run, token_text(explorer_service), 1, 2)[0]
    pattern = tiny_run.trace["blocks.1.attn.hook_pattern"][2].astype(np.float64)
    edges = [0, 2, 4, 7, 9, tiny_run.n_tokens]
    expected = [[pattern[a:b, c:d].mean() for c, d in zip(edges[:-1], edges[1:])] for a, b in zip(edges[:-1], edges[1:])]
    np.testing.assert_allclose(pattern_fig.data[0].z, expected, rtol=1e-6)
    # Each block of queries still sums to 1 over the blocks of keys, weighted by their sizes.
    np.testing.assert_allclose(pattern_fig.data[0].z @ np.diff(edges), 1.0, rtol=1e-6)
    tokens = [t.display for t in tiny_run.tokens]
    assert list(pattern_fig.data[0].y) == [f"{a}–{b - 1} {tokens[a]}…{tokens[b - 1]}" for a, b in zip(edges[:-1], edges[1:])]
    assert "averaged over blocks of ~2.4 positions" in pattern_fig.layout.title.text
    assert "mean attention weight" in pattern_fig.data[0].hovertemplate


def test_qkv_are_the_heads_vectors_at_the_position(tiny_run, explorer_service):
    qkv_fig = tab_attention.render(tiny_run, token_text(explorer_service), 1, 3, 4)[2]
    for row, name in enumerate("qkv"):
        np.testing.assert_array_equal(qkv_fig.data[0].z[row], tiny_run.trace[f"blocks.1.attn.hook_{name}"][4, 3])
    assert len(qkv_fig.data[0].x) == tiny_run.config.head_dim
    assert repr(tiny_run.tokens[4].display) in qkv_fig.layout.title.text
    # The position is in the hovertemplate, not in a string per cell.
    assert qkv_fig.data[0].text is None
    assert f"position 4 {tiny_run.tokens[4].display!r}" in qkv_fig.data[0].hovertemplate


def test_ablation_moves_the_next_token_probabilities(tiny_run, explorer_service, ablated):
    ablation_fig, markdown, arrays = tab_attention.render(tiny_run, token_text(explorer_service), 1, 2, None, ablated)[3:6]
    before = softmax(tiny_run.trace["logits"][-1])
    after = softmax(ablated.trace["logits"][-1])
    ids = arrays["top_ids"]
    np.testing.assert_array_equal(ids[:10], np.argsort(-before)[:10])
    assert set(np.argsort(-after)[:10]) <= set(ids)
    assert len(ablation_fig.data) == 2 and ablation_fig.layout.barmode == "group"
    np.testing.assert_allclose(ablation_fig.data[0].y, before[ids], rtol=1e-6)
    np.testing.assert_allclose(ablation_fig.data[1].y, after[ids], rtol=1e-6)
    assert not np.allclose(ablation_fig.data[0].y, ablation_fig.data[1].y, rtol=1e-4, atol=0)
    displays = [explorer_service.tokenizer.token(int(i)).display for i in ids]
    assert list(ablation_fig.data[0].x) == displays
    assert "layer 1 head 2" in ablation_fig.layout.title.text
    # The variant really is that head ablated: its output is zero, the other heads' are not.
    assert not ablated.trace["blocks.1.attn.hook_z"][:, 2].any()
    assert ablated.trace["blocks.1.attn.hook_z"][:, 1].any()
    assert "KL" in markdown


def test_without_ablation_only_before_is_shown(tiny_run, explorer_service):
    ablation_fig, markdown = tab_attention.render(tiny_run, token_text(explorer_service), 1, 2)[3:5]
    assert len(ablation_fig.data) == 1
    assert "Ablate this head" in markdown


def test_out_of_range_controls_are_clamped(tiny_run, explorer_service):
    L, H, T = tiny_run.config.n_layer, tiny_run.config.n_head, tiny_run.n_tokens
    *_, arrays = tab_attention.render_head(tiny_run, token_text(explorer_service), 50, 50, -1)
    assert (arrays["layer"], arrays["head"], arrays["position"]) == (L - 1, H - 1, 0)
    np.testing.assert_array_equal(arrays["q"], tiny_run.trace[f"blocks.{L - 1}.attn.hook_q"][0, H - 1])
    *_, arrays = tab_attention.render_head(tiny_run, token_text(explorer_service), -3, None, 10_000)
    assert (arrays["layer"], arrays["head"], arrays["position"]) == (0, 0, T - 1)
    assert len(tab_attention.render(None, token_text(explorer_service))) == 6


def test_tab_builds_and_its_handlers_clamp_and_export(tiny_run, explorer_service, ablated):
    view = build_view(tab_attention, explorer_service)
    assert len(view.controls) == 3 and len(view.outputs) == 10
    result = view.render(tiny_run.request, 1, 99, True)  # head 99 -> the last head, 3
    assert not result[4].startswith("⚠️")
    assert result[6]["value"] == 3 and result[7]["value"] == tiny_run.n_tokens - 1
    note, update = view.export(tiny_run.request, 1, 3, None, True, None)  # no patching sweep yet
    with np.load(update["value"]) as saved:
        assert saved["head"] == 3 and saved["grid"].shape[:2] == (2, 4)
        after = softmax(explorer_service.variant(tiny_run, ablated=[(1, 3)]).trace["logits"][-1])
        np.testing.assert_allclose(saved["prob_after"], after[saved["top_ids"]], rtol=1e-6)
