"""A screenful, not a tensor: at GPT-2 small's shape no tab sends more than 1 MB of figure data
at 256 tokens (0.3 MB at 64), and no heatmap draws more cells per axis than a screen shows.

No MAX here: a Run of GPT-2 small's shape (E=768, 12 layers, 12 heads, V=50,257, F=3,072)
with random N(0, 0.02) weights, traced by the float64 numpy reference (tests/reference.py)
and cast to float32 like the engine's trace. ``python -m benchmarks.payload`` prints the
same measurements as a table.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from tab_helpers import title_of

from benchmarks.payload import BUDGET_BYTES, figure_bytes, synthetic_run, tab_figures, tokenizer
from components import tab_attention, tab_embed, tab_mask, tab_mlp
from components.plots import MAX_CELLS_PER_AXIS, bin_starts, figure_json

LENGTHS = sorted(BUDGET_BYTES)


@pytest.fixture(scope="module")
def runs():
    """{T: Run} at T = 64 and 256 (the float64 reference at T=256 takes a few seconds: once per module)."""
    return {n: synthetic_run(n) for n in LENGTHS}


@pytest.fixture(scope="module")
def figures(runs):
    return {n: tab_figures(run) for n, run in runs.items()}


def display(token_id: int) -> str:
    return tokenizer().token(token_id).display


@pytest.mark.parametrize("n_tokens", LENGTHS)
def test_no_tab_sends_more_than_its_budget(figures, n_tokens):
    sizes = {tab: sum(figure_bytes(f) for f in figs) for tab, figs in figures[n_tokens].items()}
    assert set(sizes) == {"tokenize", "embed", "mask", "attention", "mlp", "logits", "sample"}
    over = {tab: size for tab, size in sizes.items() if size > BUDGET_BYTES[n_tokens]}
    assert not over, f"figure bytes over {BUDGET_BYTES[n_tokens]:,} at T={n_tokens}: {over} (all: {sizes})"


@pytest.mark.parametrize("n_tokens", LENGTHS)
def test_the_json_sent_is_plotlys_own_for_every_figure(figures, n_tokens):
    """figure_json (what the app sends) gives the values Plotly's to_json gives, key for key,
    typed arrays included, for every figure of every tab."""
    count = 0
    for tab, figs in figures[n_tokens].items():
        for fig in figs:
            assert json.loads(figure_json(fig)) == json.loads(fig.to_json()), (tab, fig.layout.title.text)
            count += 1
    assert count >= 20


@pytest.mark.parametrize("n_tokens", LENGTHS)
def test_every_heatmap_is_at_most_a_screenful_of_float32_cells(figures, n_tokens):
    count = 0
    for tab, figs in figures[n_tokens].items():
        for fig in figs:
            sent = json.loads(figure_json(fig))["data"]
            for trace, wire in zip(fig.data, sent):
                if trace.type != "heatmap":
                    continue
                count += 1
                z = np.asarray(trace.z)
                # The all-heads grid is 12 x 12 tiles of GRID_BINS cells a side with gaps between
                # (one heatmap; it was 144 small ones), on a figure tall enough for 8 pixels a cell.
                tiled = fig.layout.title.text.startswith("Every head's pattern")
                limit = 12 * (tab_attention.GRID_BINS + 1) - 1 if tiled else MAX_CELLS_PER_AXIS
                assert z.ndim == 2 and max(z.shape) <= limit, (tab, fig.layout.title.text, z.shape)
                assert not tiled or fig.layout.height >= 8 * z.shape[0]
                # Values as a base64 float32 typed array; hover from the template, never a string per cell.
                assert wire["z"]["dtype"] == "f4" and "bdata" in wire["z"], (tab, fig.layout.title.text)
                assert "text" not in wire, (tab, fig.layout.title.text)
                # customdata only as a typed array of small numbers (the grid's per-head shares)
                assert "customdata" not in wire or wire["customdata"]["dtype"] == "u1", (tab, fig.layout.title.text)
                assert "%{z" in trace.hovertemplate
    assert count >= 3 + 1 + 4 + 1 + 1 + 1 + 1  # embed (3 + similarity), mask, attention (pattern, grid, q/k/v), mlp


def blocks_of(values: np.ndarray, edges, keys_summed: bool = False) -> np.ndarray:
    """[T, T] -> one value per (row block, column block) of ``edges``: the mean of the block's finite
    values (NaN where there are none), or with ``keys_summed`` (attention) the mean over its rows of
    each row's sum over the block's columns."""
    G = len(edges) - 1
    out = np.full((G, G), np.nan)
    for i in range(G):
        for j in range(G):
            block = np.asarray(values[edges[i] : edges[i + 1], edges[j] : edges[j + 1]], dtype=np.float64)
            if keys_summed:
                out[i, j] = block.sum(axis=1).mean()
            elif np.isfinite(block).any():
                out[i, j] = block[np.isfinite(block)].mean()
    return out


def test_binned_mask_tab_heatmaps_are_block_means_of_the_full_tensors(runs):
    run = runs[256]  # 256 positions on a 128-cell screen: position 0 alone, then blocks of ~2
    views, arrays = tab_mask.render_with_arrays(run, display, 3, 5)
    mask_fig, raw_fig, masked_fig, pattern_fig = views.mask, views.raw, views.masked, views.pattern
    edges = list(bin_starts(256, 128, first_alone=True)) + [256]
    assert edges[:4] == [0, 1, 3, 5]
    scores = run.trace["blocks.3.attn.hook_attn_scores"][5]
    pattern = run.trace["blocks.3.attn.hook_pattern"][5]
    # The pattern: keys summed over their block, queries averaged over theirs (rows still sum to 1).
    np.testing.assert_allclose(pattern_fig.data[0].z, blocks_of(pattern, edges, keys_summed=True), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.sum(pattern_fig.data[0].z, axis=1), 1.0, atol=1e-5)
    masked = blocks_of(np.where(np.isfinite(scores), scores, np.nan), edges)  # the allowed scores' mean
    np.testing.assert_allclose(masked_fig.data[0].z, masked, rtol=1e-5, equal_nan=True)
    assert np.isnan(masked_fig.data[0].z[1, 2]) and np.isfinite(masked_fig.data[0].z[2, 1])
    q = run.trace["blocks.3.attn.hook_q"][:, 5].astype(np.float64)
    k = run.trace["blocks.3.attn.hook_k"][:, 5].astype(np.float64)
    np.testing.assert_allclose(raw_fig.data[0].z, blocks_of(q @ k.T / 8.0, edges), rtol=1e-4, atol=1e-6)
    # A mask cell is the fraction of its pairs allowed: 1 below the diagonal, 0 above.
    np.testing.assert_allclose(mask_fig.data[0].z, blocks_of(np.tril(np.ones((256, 256))), edges), rtol=1e-6)
    tokens = run.tokens
    assert list(pattern_fig.data[0].y[:2]) == [run.labels[0], f"1–2 {tokens[1].display}…{tokens[2].display}"]
    for fig in (mask_fig, raw_fig, masked_fig, pattern_fig):
        assert "over blocks of ~2 positions (0 alone)" in title_of(fig)
    # What the export keeps: the full tensors.
    assert arrays["pattern"].shape == arrays["masked_scores"].shape == arrays["allowed"].shape == (256, 256)


def test_attention_tab_bins_the_pattern_and_the_all_heads_grid(runs):
    run = runs[256]
    views, arrays = tab_attention.render_head(run, display, 7, 2)
    pattern_fig = views.pattern
    grid_fig = tab_attention.render(run, display, 7, 2).grid
    edges = list(bin_starts(256, 128, first_alone=True)) + [256]
    np.testing.assert_allclose(
        pattern_fig.data[0].z,
        blocks_of(run.trace["blocks.7.attn.hook_pattern"][2], edges, keys_summed=True),
        rtol=1e-5,
        atol=1e-7,
    )
    assert arrays["pattern"].shape == (256, 256)
    # The grid: 12 x 12 heads, each position 0 and 11 blocks of 23 or 24 positions; a cell is the
    # weight a block of queries puts on a block of keys (summed over keys, averaged over queries).
    G = tab_attention.GRID_BINS
    edges = list(bin_starts(256, G, first_alone=True)) + [256]
    [trace] = grid_fig.data  # one heatmap of 12 x 12 tiles, a gap row and column between tiles
    z = np.asarray(trace.z)
    assert z.shape == (12 * (G + 1) - 1, 12 * (G + 1) - 1)
    pattern = run.trace["blocks.5.attn.hook_pattern"][9].astype(np.float64)
    tile = (slice(5 * (G + 1), 5 * (G + 1) + G), slice(9 * (G + 1), 9 * (G + 1) + G))
    np.testing.assert_allclose(z[tile], blocks_of(pattern, edges, keys_summed=True), rtol=1e-5, atol=1e-7)
    # Full resolution's row sums (1) and share on position 0, kept within 1e-6 (float32 cells).
    np.testing.assert_allclose(z[tile].astype(np.float64).sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        z[tile][:, 0], [pattern[a:b, 0].mean() for a, b in zip(edges[:-1], edges[1:])], atol=1e-6
    )
    assert trace.x[0].startswith("head 0 · key 0 ")  # position 0 alone: its token is named too
    assert list(trace.x[1:G]) == [f"head 0 · key {a}–{b - 1}" for a, b in zip(edges[1:-1], edges[2:])]


def test_embed_heatmaps_show_the_64_dimensions_with_the_largest_spread(runs):
    run = runs[256]
    token_fig, position_fig, sum_fig, *_ = tab_embed.render_embeddings(run)
    for fig, key in ((token_fig, "hook_embed"), (position_fig, "hook_pos_embed"), (sum_fig, "blocks.0.hook_resid_pre")):
        rows = run.trace[key]
        assert rows.shape == (256, 768)
        spread = rows.astype(np.float64).std(axis=0)
        dims = np.sort(np.argsort(spread)[-64:])
        assert list(fig.data[0].x) == [str(d) for d in dims]
        assert spread[dims].min() >= np.delete(spread, dims).max()
        # Positions in blocks of 2: each cell the mean of its 2 rows, in that dimension.
        expected = rows[:, dims].astype(np.float64).reshape(128, 2, 64).mean(axis=1)
        np.testing.assert_allclose(fig.data[0].z, expected, rtol=1e-5, atol=1e-8)
        title = title_of(fig)
        assert (
            "the 64 of 768 dimensions with the largest spread" in title
            and "averaged over blocks of ~2 positions" in title
        )
    # The export keeps every dimension of every position.
    arrays = tab_embed.embedding_arrays(run)
    assert arrays["hook_embed"].shape == arrays["resid_pre_0"].shape == (256, 768)


def test_mlp_tab_bins_positions_and_hovers_from_customdata(runs):
    run = runs[256]
    views = tab_mlp.render(run, 4)
    gelu_fig, heat_fig = views.gelu, views.heatmap
    post = run.trace["blocks.4.mlp.hook_post"]
    top = np.argsort(-np.abs(post).max(axis=0), kind="stable")[:40]
    expected = post[:, top].astype(np.float64).reshape(128, 2, 40).mean(axis=1)
    np.testing.assert_allclose(heat_fig.data[0].z, expected, rtol=1e-5, atol=1e-8)
    points = gelu_fig.data[1]
    where = np.asarray(points.customdata)
    np.testing.assert_array_equal(points.x, run.trace["blocks.4.mlp.hook_pre"][where[:, 0], where[:, 1]])
    wire = json.loads(figure_json(gelu_fig))["data"][1]
    assert wire["customdata"]["dtype"] == "i2" and wire["x"]["dtype"] == "f4"  # typed arrays, not lists
    assert tab_mlp.tensors(run, 4)["mlp_hook_post"].shape == (256, 3072)
