"""The Mask tab's figures: the mask, one head's scores before/after it, its pattern, predictions with it on and off."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tab_helpers import build_view, softmax, title_of, token_text

from components import tab_mask
from components.plots import finite


@pytest.fixture(scope="module")
def unmasked(tiny_run, explorer_service):
    return explorer_service.variant(tiny_run, causal=False)


def next_logits(service, run):
    """[T, V]: the analysis graph's logits at every position, which the predictions read."""
    nxt, why = service.analysis(run, "next")
    assert nxt is not None, why
    return nxt.logits


def test_the_predictions_logits_are_the_trace_graphs_mask_on_and_off(
    tiny_model, tiny_run, explorer_service, unmasked, full_logits
):
    # Same float32 math as the trace graph's logits, summed in another order (see test_tab_logits).
    np.testing.assert_allclose(next_logits(explorer_service, tiny_run), full_logits, atol=1e-5, rtol=0)
    off = tiny_model.trace(tiny_run.token_ids, causal=False)["logits"]
    np.testing.assert_allclose(next_logits(explorer_service, unmasked), off, atol=1e-5, rtol=0)


def test_mask_scores_and_pattern_come_from_the_chosen_layer_and_head(tiny_run, explorer_service):
    views, arrays = tab_mask.render_with_arrays(tiny_run, token_text(explorer_service), 1, 2)
    mask_fig, raw_fig, masked_fig, pattern_fig = views.mask, views.raw, views.masked, views.pattern
    markdown = views.text
    T = tiny_run.n_tokens
    scores = tiny_run.trace["blocks.1.attn.hook_attn_scores"][2]
    # The mask: 1 on and below the diagonal (allowed), 0 above (blocked).
    np.testing.assert_array_equal(mask_fig.data[0].z, np.tril(np.ones((T, T))))
    assert "blocked" in title_of(mask_fig) and list(mask_fig.data[0].colorbar.ticktext)[0].startswith("0 blocked")
    # The masked scores: the trace's, with -inf as a gap (NaN).
    np.testing.assert_array_equal(masked_fig.data[0].z, finite(scores))
    assert np.isnan(masked_fig.data[0].z[0, 1]) and not np.isnan(masked_fig.data[0].z[1, 0])
    np.testing.assert_array_equal(pattern_fig.data[0].z, tiny_run.trace["blocks.1.attn.hook_pattern"][2])
    assert (pattern_fig.data[0].zmin, pattern_fig.data[0].zmax) == (0.0, 1.0)
    # The raw scores: q.k/sqrt(D) of this layer and head, finite everywhere, equal to the trace where allowed.
    q = tiny_run.trace["blocks.1.attn.hook_q"][:, 2].astype(np.float64)
    k = tiny_run.trace["blocks.1.attn.hook_k"][:, 2].astype(np.float64)
    # Heatmaps send float32 (half the bytes): the float64 scores to float32 precision.
    assert raw_fig.data[0].z.dtype == np.float32
    np.testing.assert_allclose(raw_fig.data[0].z, q @ k.T / math.sqrt(q.shape[1]), rtol=1e-6)
    assert np.isfinite(raw_fig.data[0].z).all()
    allowed = np.isfinite(scores)
    np.testing.assert_allclose(raw_fig.data[0].z[allowed], scores[allowed], atol=1e-5)
    assert "layer 1, head 2" in title_of(raw_fig)
    for fig in (mask_fig, raw_fig, masked_fig, pattern_fig):
        assert list(fig.data[0].x) == tiny_run.labels and list(fig.data[0].y) == tiny_run.labels
        assert fig.layout.height >= 340
    assert f"**{T * (T - 1) // 2} of {T * T}**" in markdown
    np.testing.assert_array_equal(arrays["masked_scores"], scores)


def test_raw_scores_equal_the_mask_off_runs_scores_in_layer_0(tiny_run, explorer_service, unmasked):
    # In layer 0 queries and keys do not depend on the mask, so a mask-off run's scores are the raw ones.
    for head in range(tiny_run.config.n_head):
        raw_fig = tab_mask.render(tiny_run, token_text(explorer_service), 0, head).raw
        np.testing.assert_allclose(raw_fig.data[0].z, unmasked.trace["blocks.0.attn.hook_attn_scores"][head], atol=1e-5)


def test_predictions_with_the_mask_on(tiny_run, explorer_service):
    logits = next_logits(explorer_service, tiny_run)
    views = tab_mask.render(tiny_run, token_text(explorer_service), 0, 0, logits=logits)
    fig, markdown = views.predictions, views.text
    probs = softmax(logits)
    assert len(fig.data) == 1 and list(fig.data[0].x) == tiny_run.labels
    np.testing.assert_allclose(fig.data[0].y, probs.max(axis=1), rtol=1e-6)
    top = explorer_service.tokenizer.token(int(probs[-1].argmax())).display
    assert repr(top) in fig.data[0].text[-1]
    assert "Turn the causal mask off" in markdown


def test_mask_off_shows_the_unmasked_run_and_both_predictions(tiny_run, explorer_service, unmasked):
    views, arrays = tab_mask.render_with_arrays(
        tiny_run,
        token_text(explorer_service),
        1,
        3,
        True,
        unmasked,
        logits=next_logits(explorer_service, tiny_run),
        unmasked_logits=next_logits(explorer_service, unmasked),
    )
    mask_fig, raw_fig, masked_fig, pattern_fig = views.mask, views.raw, views.masked, views.pattern
    fig, markdown = views.predictions, views.text
    T = tiny_run.n_tokens
    np.testing.assert_array_equal(mask_fig.data[0].z, np.ones((T, T)))
    np.testing.assert_array_equal(pattern_fig.data[0].z, unmasked.trace["blocks.1.attn.hook_pattern"][3])
    np.testing.assert_array_equal(masked_fig.data[0].z, unmasked.trace["blocks.1.attn.hook_attn_scores"][3])
    np.testing.assert_allclose(raw_fig.data[0].z, unmasked.trace["blocks.1.attn.hook_attn_scores"][3], atol=1e-5)
    on = softmax(next_logits(explorer_service, tiny_run))
    off = softmax(next_logits(explorer_service, unmasked))
    on_top = on.argmax(axis=1)
    assert len(fig.data) == 3
    np.testing.assert_allclose(fig.data[0].y, on.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(fig.data[1].y, off[np.arange(T), on_top], rtol=1e-6)
    np.testing.assert_allclose(fig.data[2].y, off.max(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(arrays["top_off_ids"], off.argmax(axis=1))
    assert not np.allclose(fig.data[0].y, fig.data[1].y)  # the mask matters at earlier positions
    changed = int(np.sum(off.argmax(axis=1) != on_top))
    assert f"**{changed} of {T}**" in markdown
    assert markdown.count("\n| ") == T + 1  # header and one row per position


def block_means_by_loop(values, edges):
    """Mean of the finite values in each (row block, column block), NaN where there are none."""
    out = np.full((len(edges) - 1, len(edges) - 1), np.nan)
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        for j, (c, d) in enumerate(zip(edges[:-1], edges[1:])):
            block = np.asarray(values[a:b, c:d], dtype=np.float64)
            if np.isfinite(block).any():
                out[i, j] = block[np.isfinite(block)].mean()
    return out


def test_beyond_a_screenful_the_heatmaps_average_blocks_of_positions(tiny_run, explorer_service, monkeypatch):
    # A screen of 5 cells per axis: position 0 alone (the sink of most heads), then 1-2, 3-5, 6-8, 9-11,
    # in all four heatmaps, so that they line up.
    monkeypatch.setattr("components.plots.MAX_CELLS_PER_AXIS", 5)
    T = tiny_run.n_tokens
    edges = [0, 1, 3, 6, 9, T]
    assert T == 12
    views = tab_mask.render(tiny_run, token_text(explorer_service), 1, 2)
    mask_fig, raw_fig, masked_fig, pattern_fig = views.mask, views.raw, views.masked, views.pattern
    scores = tiny_run.trace["blocks.1.attn.hook_attn_scores"][2]
    # A binned mask cell is the fraction of its (query, key) pairs allowed: 1 below the diagonal,
    # 0 above it, in between on it (3 of the 4 pairs of block 1-2 x 1-2).
    np.testing.assert_allclose(mask_fig.data[0].z, block_means_by_loop(np.tril(np.ones((T, T))), edges), rtol=1e-6)
    assert mask_fig.data[0].z[1, 1] == 0.75 and mask_fig.data[0].z[1, 2] == 0 and mask_fig.data[0].z[2, 1] == 1
    assert "fraction" in mask_fig.data[0].hovertemplate
    # The masked scores average the allowed (finite) scores of a block; a block with none is a gap.
    expected = block_means_by_loop(finite(scores), edges)
    np.testing.assert_allclose(masked_fig.data[0].z, expected, rtol=1e-6)
    assert np.isnan(masked_fig.data[0].z[1, 2]) and np.isfinite(masked_fig.data[0].z[2, 1])
    # The pattern: keys summed over their block, queries averaged (rows still sum to 1).
    pattern = tiny_run.trace["blocks.1.attn.hook_pattern"][2].astype(np.float64)
    summed = np.add.reduceat(pattern, edges[:-1], axis=1)
    np.testing.assert_allclose(
        pattern_fig.data[0].z, [summed[a:b].mean(axis=0) for a, b in zip(edges[:-1], edges[1:])], rtol=1e-6
    )
    q = tiny_run.trace["blocks.1.attn.hook_q"][:, 2].astype(np.float64)
    k = tiny_run.trace["blocks.1.attn.hook_k"][:, 2].astype(np.float64)
    np.testing.assert_allclose(
        raw_fig.data[0].z, block_means_by_loop(q @ k.T / math.sqrt(q.shape[1]), edges), rtol=1e-5
    )
    tokens = [t.display for t in tiny_run.tokens]
    labels = [tiny_run.labels[0]] + [f"{a}–{b - 1} {tokens[a]}…{tokens[b - 1]}" for a, b in zip(edges[1:-1], edges[2:])]
    for fig in (mask_fig, raw_fig, masked_fig, pattern_fig):
        trace = fig.data[0]
        assert trace.z.shape == (5, 5) and list(trace.x) == labels and list(trace.y) == labels
        assert "over blocks of ~2.8 positions (0 alone)" in title_of(fig)
        assert (
            trace.text is None and "%{x}" in trace.hovertemplate and "%{z" in trace.hovertemplate
        )  # no string per cell


def test_predictions_without_their_logits_say_why(tiny_run, explorer_service):
    views = tab_mask.render(tiny_run, token_text(explorer_service), 0, 0, logits="the analysis graph is compiling")
    fig, markdown = views.predictions, views.text
    assert fig.layout.annotations[0].text == "the analysis graph is compiling"
    assert "the analysis graph is compiling" in markdown


def test_mask_off_without_a_live_model_says_so(tiny_run, explorer_service):
    views, arrays = tab_mask.render_with_arrays(tiny_run, token_text(explorer_service), 0, 0, True, None)
    mask_fig, markdown = views.mask, views.text
    assert tab_mask.NEEDS_MODEL in markdown
    assert not arrays["mask_off"] and mask_fig.data[0].z[0, 1] == 0


def test_out_of_range_layer_and_head_are_clamped(tiny_run, explorer_service):
    L = tiny_run.config.n_layer
    _, arrays = tab_mask.render_with_arrays(tiny_run, token_text(explorer_service), 99, -4)
    assert (arrays["layer"], arrays["head"]) == (L - 1, 0)
    np.testing.assert_array_equal(arrays["pattern"], tiny_run.trace[f"blocks.{L - 1}.attn.hook_pattern"][0])
    _, arrays = tab_mask.render_with_arrays(tiny_run, token_text(explorer_service), None, "x")
    assert (arrays["layer"], arrays["head"]) == (0, 0)
    views = tab_mask.render(None, token_text(explorer_service))
    assert isinstance(views, tab_mask.MaskViews)


def test_tab_builds_and_its_handlers_clamp_and_export(tiny_run, explorer_service, unmasked):
    view = build_view(tab_mask, explorer_service)
    assert len(view.controls) == 4 and len(view.outputs) == 8
    assert view.controls[-1].value is True  # position 0 left out of the score scale by default
    result = view.render(tiny_run.request, 50, 50, True, True)
    assert not result.text.startswith("⚠️")
    assert result.layer["value"] == tiny_run.config.n_layer - 1 and result.head["value"] == tiny_run.config.n_head - 1
    note, update = view.export(tiny_run.request, 50, 50, True, True)
    with np.load(update["value"]) as saved:
        assert saved["mask_off"] and saved["layer"] == 1 and saved["head"] == 3
        np.testing.assert_array_equal(saved["pattern"], unmasked.trace["blocks.1.attn.hook_pattern"][3])
