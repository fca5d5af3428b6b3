"""The Attention tab's figures: a head's pattern, every head's pattern, q/k/v at a position, and head ablation."""

from __future__ import annotations

import numpy as np
import pytest
from tab_helpers import build_view, softmax, title_of, token_text

from components import compare, tab_attention
from components.plots import bin_starts


@pytest.fixture(scope="module")
def ablated(tiny_run, explorer_service):
    return explorer_service.variant(tiny_run, ablate=[(1, 2)])


def test_pattern_is_the_chosen_heads_with_tokens_on_both_axes(tiny_run, explorer_service):
    pattern_fig = tab_attention.render(tiny_run, token_text(explorer_service), 1, 2).pattern
    np.testing.assert_array_equal(pattern_fig.data[0].z, tiny_run.trace["blocks.1.attn.hook_pattern"][2])
    assert list(pattern_fig.data[0].x) == tiny_run.labels and list(pattern_fig.data[0].y) == tiny_run.labels
    assert (pattern_fig.data[0].zmin, pattern_fig.data[0].zmax) == (0.0, 1.0)
    assert "layer 1 head 2" in title_of(pattern_fig)
    assert pattern_fig.layout.height >= 360


def test_grid_has_every_head_on_one_colour_scale(tiny_run, explorer_service):
    """One heatmap of L x H tiles: tile (layer, head) is that head's whole pattern (T <= 12:
    unpooled), its cells named by layer, head, query and key, every tile on one 0..1 scale."""
    grid_fig = tab_attention.render(tiny_run, token_text(explorer_service)).grid
    L, H, T = tiny_run.config.n_layer, tiny_run.config.n_head, tiny_run.n_tokens
    [trace] = grid_fig.data
    z = np.asarray(trace.z)
    for layer in range(L):
        for head in range(H):
            tile = z[layer * (T + 1) : layer * (T + 1) + T, head * (T + 1) : head * (T + 1) + T]
            np.testing.assert_allclose(tile, tiny_run.trace[f"blocks.{layer}.attn.hook_pattern"][head], atol=1e-7)
            assert list(trace.x[head * (T + 1) : head * (T + 1) + T]) == [
                f"head {head} · key {label}" for label in tiny_run.labels
            ]
        assert list(trace.y[layer * (T + 1) : layer * (T + 1) + T]) == [
            f"layer {layer} · query {label}" for label in tiny_run.labels
        ]
    assert trace.coloraxis == "coloraxis" and trace.hoverongaps is False
    assert "%{y}<br>%{x}<br>attention: %{z:.3f}" in trace.hovertemplate
    assert (grid_fig.layout.coloraxis.cmin, grid_fig.layout.coloraxis.cmax) == (0.0, 1.0)
    # The tiles keep their height: the lines a title wraps to on top of the 110-px top margin are added to it.
    assert grid_fig.layout.height - grid_fig.layout.margin.t == L * 150 + 190 - 110


def test_grid_pools_long_inputs_into_block_means(tiny_run, explorer_service):
    T = tiny_run.n_tokens
    values, labels = tab_attention.grid_values(tiny_run, bins=5)
    starts = bin_starts(T, 5, first_alone=True)
    stops = list(starts[1:]) + [T]
    assert list(starts) == [0, 1, 3, 6, 9]  # position 0 alone, 1..11 in near-equal contiguous blocks
    assert values.shape == (tiny_run.config.n_layer, tiny_run.config.n_head, 5, 5) and len(labels) == 5
    pattern = tiny_run.trace["blocks.1.attn.hook_pattern"][3].astype(np.float64)
    # A cell is a block of queries' mean weight on a block of keys, summed over the keys (a mean
    # over keys divided it by the block's size: a sharp head or a sink read flat), so rows sum to 1.
    for i, (a, b) in enumerate(zip(starts, stops)):
        for j, (c, d) in enumerate(zip(starts, stops)):
            assert values[1, 3, i, j] == pytest.approx(pattern[a:b, c:d].sum(axis=1).mean(), abs=1e-7)
    np.testing.assert_allclose(values.sum(axis=-1), 1.0, atol=1e-6)
    # 144 tiles repeat their labels: a block is named by its positions only (position 0 by its label).
    assert labels == [tiny_run.labels[0]] + [f"{a}–{b - 1}" for a, b in zip(starts[1:], stops[1:])]
    shares = tab_attention.position_0_shares(tiny_run)
    grid_fig = tab_attention.grid_figure(tiny_run, values, labels, shares)
    # One heatmap: layer l's tile is rows 6l..6l+4, head h's columns 6h..6h+4, gaps between.
    [trace] = grid_fig.data
    L, H = tiny_run.config.n_layer, tiny_run.config.n_head
    z = np.asarray(trace.z)
    assert z.dtype == np.float32 and z.shape == (L * 6 - 1, H * 6 - 1)
    np.testing.assert_allclose(z[6:11, 18:23], values[1, 3], rtol=1e-6)
    assert (
        np.isnan(z[5]).all()
        and np.isnan(z[:, 5]).all()
        and not np.isnan(np.delete(np.delete(z, np.s_[5::6], 0), np.s_[5::6], 1)).any()
    )
    assert list(trace.x[18:23]) == [f"head 3 · key {label}" for label in labels]
    assert list(trace.y[6:11]) == [f"layer 1 · query {label}" for label in labels]
    # The hover's share on position 0 is its head's, in whole percents, in every cell of its tile.
    assert (np.asarray(trace.customdata)[6:11, 18:23] == round(shares[1, 3] * 100)).all()
    # Heads and layers by number under the axis' title: twelve "head h" labels overlapped on a phone.
    assert (
        list(grid_fig.layout.xaxis.ticktext) == [str(h) for h in range(H)]
        and grid_fig.layout.xaxis.title.text == "head"
    )
    assert list(grid_fig.layout.yaxis.ticktext) == [str(layer) for layer in range(L)]
    assert "queries averaged, keys summed over blocks of ~3 positions (0 alone)" in title_of(grid_fig)


def test_pattern_beyond_a_screenful_averages_blocks_of_positions(tiny_run, explorer_service, monkeypatch):
    monkeypatch.setattr("components.plots.MAX_CELLS_PER_AXIS", 5)
    pattern_fig = tab_attention.render(tiny_run, token_text(explorer_service), 1, 2).pattern
    pattern = tiny_run.trace["blocks.1.attn.hook_pattern"][2].astype(np.float64)
    edges = [0, 1, 3, 6, 9, tiny_run.n_tokens]  # position 0 alone
    # Keys summed over their block, queries averaged over theirs (averaging keys too drew a
    # block's weight divided by its size): each row of blocks still sums to 1.
    expected = [
        [pattern[a:b, c:d].sum(axis=1).mean() for c, d in zip(edges[:-1], edges[1:])]
        for a, b in zip(edges[:-1], edges[1:])
    ]
    np.testing.assert_allclose(pattern_fig.data[0].z, expected, rtol=1e-6)
    np.testing.assert_allclose(np.sum(pattern_fig.data[0].z, axis=1), 1.0, rtol=1e-6)
    tokens = [t.display for t in tiny_run.tokens]
    assert list(pattern_fig.data[0].y) == [tiny_run.labels[0]] + [
        f"{a}–{b - 1} {tokens[a]}…{tokens[b - 1]}" for a, b in zip(edges[1:-1], edges[2:])
    ]
    assert "queries averaged, keys summed over blocks of ~2.8 positions (0 alone)" in title_of(pattern_fig)
    assert "weight on the key block, mean over the query block" in pattern_fig.data[0].hovertemplate


def test_qkv_are_the_heads_vectors_at_the_position(tiny_run, explorer_service):
    qkv_fig = tab_attention.render(tiny_run, token_text(explorer_service), 1, 3, 4).qkv
    for row, name in enumerate("qkv"):
        np.testing.assert_array_equal(qkv_fig.data[0].z[row], tiny_run.trace[f"blocks.1.attn.hook_{name}"][4, 3])
    assert len(qkv_fig.data[0].x) == tiny_run.config.head_dim
    assert repr(tiny_run.tokens[4].display) in title_of(qkv_fig)
    # The position is in the hovertemplate, not in a string per cell.
    assert qkv_fig.data[0].text is None
    assert f"position 4 {tiny_run.tokens[4].display!r}" in qkv_fig.data[0].hovertemplate


def test_ablation_moves_the_next_token_probabilities(tiny_run, explorer_service, ablated):
    views = tab_attention.render(tiny_run, token_text(explorer_service), 1, 2, None, ablated)
    ablation_fig, markdown = views.ablation, views.summary
    _, arrays = tab_attention.render_head(tiny_run, token_text(explorer_service), 1, 2, None, ablated)
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
    assert "layer 1 head 2" in title_of(ablation_fig)
    # The variant really is that head ablated: its output is zero, the other heads' are not.
    assert not ablated.trace["blocks.1.attn.hook_z"][:, 2].any()
    assert ablated.trace["blocks.1.attn.hook_z"][:, 1].any()
    assert "KL" in markdown


def test_without_ablation_only_before_is_shown(tiny_run, explorer_service):
    views = tab_attention.render(tiny_run, token_text(explorer_service), 1, 2)
    ablation_fig, markdown = views.ablation, views.summary
    assert len(ablation_fig.data) == 1
    assert "Ablate this head" in markdown


def test_out_of_range_controls_are_clamped(tiny_run, explorer_service):
    L, H, T = tiny_run.config.n_layer, tiny_run.config.n_head, tiny_run.n_tokens
    _, arrays = tab_attention.render_head(tiny_run, token_text(explorer_service), 50, 50, -1)
    assert (arrays["layer"], arrays["head"], arrays["position"]) == (L - 1, H - 1, 0)
    np.testing.assert_array_equal(arrays["q"], tiny_run.trace[f"blocks.{L - 1}.attn.hook_q"][0, H - 1])
    _, arrays = tab_attention.render_head(tiny_run, token_text(explorer_service), -3, None, 10_000)
    assert (arrays["layer"], arrays["head"], arrays["position"]) == (0, 0, T - 1)
    assert type(tab_attention.render(None, token_text(explorer_service))) is tab_attention.AttentionViews


def test_tab_builds_and_its_handlers_clamp_and_export(tiny_run, explorer_service, ablated):
    view = build_view(tab_attention, explorer_service)
    assert len(view.controls) == 4 and len(view.outputs) == 14  # layer, head, ablate and B's request
    result = view.render(tiny_run.request, 1, 99, True)  # head 99 -> the last head, 3
    assert not result.summary.startswith("⚠️")
    assert result.head["value"] == 3 and result.position["value"] == tiny_run.n_tokens - 1
    note, update = view.export(tiny_run.request, 1, 3, None, True, None)  # no patching sweep yet
    with np.load(update["value"]) as saved:
        assert saved["head"] == 3 and saved["grid"].shape[:2] == (2, 4)
        after = softmax(explorer_service.variant(tiny_run, ablate=[(1, 3)]).trace["logits"][-1])
        np.testing.assert_allclose(saved["prob_after"], after[saved["top_ids"]], rtol=1e-6)


# -- two prompts side by side ---------------------------------------------------------------------

COMPARE_TEXT = "The dog sat on the mat. The dog sat on the"  # the example with one word changed
# A − B is computed in float64 from the two float32 patterns and drawn as float32 (plots.heatmap):
# weights are at most 1, so the cast rounds each cell by at most half float32's spacing at 1 (6e-8).
DIFFERENCE_ATOL = 1e-7


@pytest.fixture(scope="module")
def other_run(explorer_service, tiny_run):
    run = explorer_service.run(COMPARE_TEXT)
    assert run.n_tokens == tiny_run.n_tokens  # " dog" for " cat": one token for one
    return run


def test_compare_draws_bs_pattern_and_the_difference_of_the_two(tiny_run, other_run, explorer_service):
    views = tab_attention.render(tiny_run, token_text(explorer_service), 1, 2, None, None, other_run)
    assert views.compare_panel["visible"] is True
    a = tiny_run.trace["blocks.1.attn.hook_pattern"][2]
    b = other_run.trace["blocks.1.attn.hook_pattern"][2]
    # B's pattern, drawn by A's function.
    np.testing.assert_array_equal(views.compare_pattern.data[0].z, b)
    assert title_of(views.compare_pattern).startswith(compare.B.name)
    assert "layer 1 head 2" in title_of(views.compare_pattern)
    heat = views.difference.data[0]
    np.testing.assert_allclose(np.asarray(heat.z, dtype=np.float64), a.astype(np.float64) - b, atol=DIFFERENCE_ATOL)
    # A diverging scale centred on 0; positions where the tokens differ name both.
    assert heat.zmid == 0.0 and heat.zmin == -heat.zmax
    assert "2 ␣sat" in list(heat.x) and any("|" in label for label in heat.x)
    diff = a.astype(np.float64) - b
    query, key = np.unravel_index(int(np.argmax(np.abs(diff))), diff.shape)
    assert f"{a[query, key]:.3f} in A, {b[query, key]:.3f} in B" in views.compare_summary
    assert f"{np.abs(diff[np.tril_indices(diff.shape[0])]).mean():.4f}" in views.compare_summary


def test_prompts_of_different_lengths_get_both_patterns_and_no_difference(tiny_run, explorer_service):
    shorter = explorer_service.run("The dog sat.")
    views = tab_attention.render(tiny_run, token_text(explorer_service), 0, 1, None, None, shorter)
    np.testing.assert_array_equal(views.compare_pattern.data[0].z, shorter.trace["blocks.0.attn.hook_pattern"][1])
    said = f"A has {tiny_run.n_tokens} tokens and B {shorter.n_tokens}"
    assert said in views.difference.layout.annotations[0].text.replace("<br>", " ")
    assert views.compare_summary.startswith(said)


def test_the_head_controls_redraw_bs_pattern_and_the_difference(tiny_run, other_run, explorer_service):
    view = build_view(tab_attention, explorer_service)
    update = next(h for h, _ in view.handlers if h.__name__ == "update")
    # Inputs: state, layer, head, position, ablate, B's request.
    out = update(tiny_run.request, 0, 3, None, False, other_run.request)
    assert {"compare_pattern", "difference", "compare_summary"} <= set(out._fields)
    np.testing.assert_array_equal(out.compare_pattern.data[0].z, other_run.trace["blocks.0.attn.hook_pattern"][3])
    assert out.rendered_key == view.key(tiny_run.request, [0, 3, False, other_run.request])
    alone = view.render(tiny_run.request, 0, 3, False)  # no B: the panel hidden
    assert alone.compare_panel["visible"] is False
