"""Every tab stays readable on a model with the real GPT-2's pathologies (tests/pathological_checkpoint.py).

First the checkpoint's phenomena are checked in the MAX trace itself (a huge position 0,
sink heads, LayerNorm scale outliers, neurons that fire at position 0 only). Then each tab's
figures are drawn from that trace: a heatmap whose colours come from the data has its range
set by the bulk of the values, far below the outliers, and is not a few bright cells on a flat
field; leaving position 0 out changes the scales as the titles say; attention keeps 0..1 and
says how much goes to position 0; norms and probabilities use log axes; payloads stay bounded.
"""

from __future__ import annotations

import numpy as np
import pytest
from pathological_checkpoint import BOS_NEURONS, LN_OUTLIER_DIMS, SINK_HEADS, SPIKES, pathological_weights
from reference import reference_trace
from tab_helpers import build_view, token_text
from tiny_checkpoint import TINY_CONFIG

from benchmarks.payload import BUDGET_BYTES, figure_bytes
from components import tab_attention, tab_blocks, tab_embed, tab_logits, tab_mask, tab_mlp, tab_sample, tab_tokenize
from components.common import POSITION_0_SWITCH
from components.plots import POSITION_0_LEFT_OUT

# float32 MAX vs float64 numpy at values up to ~80: fp32 spacing there is ~1e-5, and the
# LayerNorms divide by a std that position 0's spikes make ~10 (see real-gpt2.md: rtol + atol).
TRACE_RTOL = 1e-4
TRACE_ATOL = 1e-4
# A data-driven colour range is "set by the bulk" when its limit is at most this many times the
# bulk's 99th percentile of |x| (bulk: the cells outside position 0's row / column) ...
BULK_FACTOR = 3.0
# ... and "far below the outliers" when the largest |x| drawn is at least this many times the limit.
OUTLIER_FACTOR = 10.0
# Readable: at least this share of the cells is coloured beyond 10% of the colour range.
MIN_VISIBLE_SHARE = 0.25


@pytest.fixture(scope="module")
def run(pathological_run):
    return pathological_run


@pytest.fixture(scope="module")
def display(pathological_service):
    return token_text(pathological_service)


# -- the checkpoint's phenomena, in the MAX trace ------------------------------------------


def test_the_max_trace_matches_the_numpy_reference_at_these_magnitudes(run):
    weights = {k: v.astype(np.float64) for k, v in pathological_weights().items()}
    expected = reference_trace(weights, TINY_CONFIG, list(run.token_ids))
    for key in ("blocks.1.hook_resid_pre", "blocks.1.attn.hook_pattern", "blocks.0.mlp.hook_post"):
        np.testing.assert_allclose(run.trace[key], expected[key], rtol=TRACE_RTOL, atol=TRACE_ATOL, err_msg=key)
    # A Run's trace keeps its last position's logits.
    np.testing.assert_allclose(run.trace["logits"], expected["logits"][-1:], rtol=TRACE_RTOL, atol=TRACE_ATOL)


def test_position_0s_residual_stream_is_dominated_by_a_few_huge_dimensions(run):
    stream = run.trace["blocks.1.hook_resid_pre"]  # [T, E], after block 0
    bulk = float(np.median(np.abs(stream[1:])))
    assert np.abs(stream[0]).max() > 100 * bulk
    # The huge numbers are the planted dimensions: the two largest |x| at position 0.
    assert set(np.argsort(-np.abs(stream[0]))[:2].tolist()) == set(SPIKES)
    # Block 0's MLP made the spike bigger than wpe[0] planted it.
    dim = max(SPIKES, key=SPIKES.get)
    assert stream[0, dim] > 1.5 * run.trace["hook_pos_embed"][0, dim]


def test_sink_heads_send_almost_all_attention_to_position_0_and_others_do_not(run):
    shares = tab_attention.position_0_shares(run)  # [L, H], mean over queries 1..T-1
    for layer, head in SINK_HEADS:
        pattern = run.trace[f"blocks.{layer}.attn.hook_pattern"][head]
        assert pattern[1:, 0].mean() > 0.9 and shares[layer, head] == pytest.approx(pattern[1:, 0].mean())
    others = [shares[layer, head] for layer in range(2) for head in range(4) if (layer, head) not in SINK_HEADS]
    assert min(others) < 0.5


def test_layer_norm_scale_outliers_are_in_the_weights_and_the_normalised_stream(run, pathological_model):
    for name in ("h.0.ln_1.weight", "h.1.ln_2.weight", "ln_f.weight"):
        scale = pathological_model.weights[name]
        assert np.abs(scale[list(LN_OUTLIER_DIMS)]).min() > 10 * np.median(np.abs(scale)), name
    normalised = run.trace["blocks.1.ln1.hook_normalized"][1:]  # [T-1, E]
    assert np.median(np.abs(normalised[:, list(LN_OUTLIER_DIMS)])) > 5 * np.median(np.abs(normalised))


def test_bos_neurons_fire_at_position_0_only(run):
    post = run.trace["blocks.0.mlp.hook_post"][:, list(BOS_NEURONS)]  # [T, 2]
    assert post[0].min() > 10 and np.abs(post[1:]).max() < 0.1


# -- colour scales ---------------------------------------------------------------------------


def colour_positions(trace) -> np.ndarray:
    """Each finite cell's place in its colour range, 0..1 (diverging: |z| / zmax, 0 = white)."""
    z = np.asarray(trace.z, dtype=np.float64)
    z = z[np.isfinite(z)]
    if trace.zmid == 0:
        return np.clip(np.abs(z) / trace.zmax, 0.0, 1.0)
    return np.clip((z - trace.zmin) / (trace.zmax - trace.zmin), 0.0, 1.0)


def bright_cells_on_a_flat_field(positions: np.ndarray) -> bool:
    """A few cells (at most 3) in the top 10% of the colour range, and nearly all the rest
    (95%) within 5% of its bottom: what a scale fitted to an outlier shows."""
    top = positions >= 0.9
    rest = positions[~top]
    return top.sum() <= 3 and (rest.size == 0 or np.mean(rest <= 0.05) >= 0.95)


def assert_readable(name: str, trace) -> None:
    positions = colour_positions(trace)
    assert not bright_cells_on_a_flat_field(positions), name
    assert np.mean(positions > 0.1) >= MIN_VISIBLE_SHARE, (name, np.mean(positions > 0.1))


def bulk_cells(trace, position_axes: str) -> np.ndarray:
    """The finite cells outside position 0's row ("y") and column ("x")."""
    z = np.asarray(trace.z, dtype=np.float64)
    keep = np.ones(z.shape, dtype=bool)
    if "y" in position_axes:
        keep[0] = False
    if "x" in position_axes:
        keep[:, 0] = False
    return z[keep & np.isfinite(z)]


def data_scaled_heatmaps(run, display, leave_out: bool) -> list[tuple[str, object, str]]:
    """(name, figure, which axes are positions) of every heatmap whose colours come from the data."""
    T = run.n_tokens
    embed = tab_embed.render_embeddings(run, leave_out)
    figures = [(f"embed {what}", fig, "y") for what, fig in zip(("token", "position", "sum"), embed[:3])]
    for layer, head in [*SINK_HEADS, (0, 0)]:
        views = tab_mask.render(run, display, layer, head, leave_out_position_0=leave_out)
        raw, masked = views.raw, views.masked
        figures += [(f"mask raw L{layer}H{head}", raw, "xy"), (f"mask masked L{layer}H{head}", masked, "xy")]
    for layer, head in SINK_HEADS:
        for position in (0, T - 1):
            figures.append(
                (
                    f"attention qkv L{layer}H{head} at {position}",
                    tab_attention.qkv_figure(run, layer, head, position)[0],
                    "",
                )
            )
    for layer in range(run.config.n_layer):
        figures.append((f"mlp neurons block {layer}", tab_mlp.render(run, layer, None, leave_out).heatmap, "y"))
    return figures


def test_every_data_scaled_heatmap_is_scaled_by_the_bulk_and_readable(run, display):
    for name, fig, axes in data_scaled_heatmaps(run, display, leave_out=True):
        trace = fig.data[0]
        bulk = np.percentile(np.abs(bulk_cells(trace, axes)), 99)
        assert trace.zmax <= BULK_FACTOR * bulk, (name, trace.zmax, bulk)
        z = np.asarray(trace.z, dtype=np.float64)
        largest = np.nanmax(np.abs(z))
        if largest > 20 * np.median(np.abs(bulk_cells(trace, axes))):  # the figure holds outliers
            assert largest >= OUTLIER_FACTOR * trace.zmax, (name, largest, trace.zmax)
            # Clipped, and the colour bar says so with the true extreme; the hover shows z, unclipped.
            assert f"clipped to ±{trace.zmax:.3g}" in trace.colorbar.title.text, name
            assert f"max |x| {largest:.3g}" in trace.colorbar.title.text, name
            assert "%{z" in trace.hovertemplate
        assert_readable(name, trace)
        if axes:
            assert POSITION_0_LEFT_OUT in fig.layout.title.text, name


def test_a_scale_fitted_to_the_largest_value_would_show_bright_cells_on_a_flat_field(run, display):
    # The failure the robust scales prevent, on this checkpoint: the check above can fail.
    sum_fig = tab_embed.render_embeddings(run, True)[2]
    z = np.asarray(sum_fig.data[0].z, dtype=np.float64)
    np.testing.assert_array_equal(z, run.trace["blocks.0.hook_resid_pre"])  # true values, unclipped
    assert bright_cells_on_a_flat_field(np.abs(z).ravel() / np.abs(z).max())
    assert not bright_cells_on_a_flat_field(colour_positions(sum_fig.data[0]))


def test_leaving_position_0_out_changes_the_scales_as_the_titles_say(run, display):
    on = {name: fig for name, fig, _ in data_scaled_heatmaps(run, display, leave_out=True)}
    off = {name: fig for name, fig, _ in data_scaled_heatmaps(run, display, leave_out=False)}
    # Where position 0's whole row (wpe[0]) or column (a sink's key) is large, leaving it in sets
    # the scale: its 1/T of the cells hold the 99th percentile. Leaving it out gives the bulk its
    # colours back. (A few huge cells alone, like block 0's BOS neurons, are under 1% of the
    # cells: the percentile clips them either way.)
    for name in ("embed position", "embed sum", *(f"mask raw L{layer}H{head}" for layer, head in SINK_HEADS)):
        assert off[name].data[0].zmax > 2 * on[name].data[0].zmax, (name, off[name].data[0].zmax, on[name].data[0].zmax)
    for name, fig in off.items():
        assert POSITION_0_LEFT_OUT not in fig.layout.title.text, name
        np.testing.assert_array_equal(fig.data[0].z, on[name].data[0].z, err_msg=name)  # the same values, drawn


# -- attention: fixed 0..1, and the share on position 0 ---------------------------------------


@pytest.mark.parametrize(("layer", "head"), SINK_HEADS)
def test_attention_patterns_keep_0_to_1_and_give_each_rows_share_on_position_0(run, display, layer, head):
    pattern = run.trace[f"blocks.{layer}.attn.hook_pattern"][head]
    share = pattern[1:, 0].mean()
    for fig in (tab_attention.pattern_figure(run, layer, head), tab_mask.render(run, display, layer, head).pattern):
        heat, bars = fig.data[0], fig.data[1]
        assert (heat.zmin, heat.zmax) == (0.0, 1.0)
        np.testing.assert_array_equal(heat.z, pattern)
        np.testing.assert_allclose(bars.x, pattern[:, 0], rtol=1e-6)  # one bar per query row
        assert list(bars.y) == list(heat.y) and "on position 0" in bars.hovertemplate
        assert f"mean share on position 0 over queries 1–{run.n_tokens - 1}: {share:.0%}" in fig.layout.title.text
    markdown = tab_attention.render(run, display, layer, head).summary
    assert f"puts **{share:.0%}** of its attention on position 0" in markdown
    for sink_layer, sink_head in SINK_HEADS:
        assert f"L{sink_layer}H{sink_head} (" in markdown
    assert "L0H0 (" not in markdown
    [grid] = tab_attention.render(run, display, layer, head).grid.data  # one heatmap of L x H tiles
    tile = (np.asarray(grid.z).shape[0] + 1) // run.config.n_layer  # G cells and a gap
    assert "head's share on position 0: %{customdata}%" in grid.hovertemplate
    assert np.asarray(grid.customdata)[layer * tile, head * tile] == round(share * 100)
    np.testing.assert_allclose(
        tab_attention.position_0_shares(run)[layer, head], share, rtol=1e-6
    )  # the export's grid share


# -- norm plots and GELU axes ------------------------------------------------------------------


def test_embed_norms_leave_position_0_out_on_a_log_axis(run):
    norms = np.linalg.norm(run.trace["blocks.0.hook_resid_pre"].astype(np.float64), axis=1)
    on, off = tab_embed.render_embeddings(run, True)[3], tab_embed.render_embeddings(run, False)[3]
    sum_on, sum_off = on.data[2], off.data[2]
    assert on.layout.yaxis.type == off.layout.yaxis.type == "log"
    assert list(sum_on.x) == run.labels[1:] and list(sum_off.x) == run.labels
    assert max(sum_off.y) / min(sum_off.y) > 50  # position 0 is one spike ...
    assert max(sum_on.y) / min(sum_on.y) < 10  # ... and without it the rest have a shape
    assert f"{sum_on.name} {norms[0]:.4g}" in on.layout.title.text  # position 0's norm, not hidden


def test_blocks_means_over_positions_leave_position_0_out(run, pathological_service):
    lens, why = pathological_service.analysis(run, "lens")
    assert lens is not None, why
    norms = tab_blocks.residual_norms(run)  # [L+1, T]
    on = tab_blocks.render(run, lens, pathological_service.tokenizer, tab_blocks.MEAN, True)
    off = tab_blocks.render(run, lens, pathological_service.tokenizer, tab_blocks.MEAN, False)
    np.testing.assert_allclose(on.norms.data[0].y, norms[:, 1:].mean(axis=1), rtol=1e-6)
    others = np.median(norms[-1, 1:])
    assert on.norms.data[0].y[-1] < 2 * others  # the mean of the others looks like them
    assert off.norms.data[0].y[-1] > 5 * others  # position 0 alone sets the mean
    assert (
        "position 0 left out of the mean" in on.norms.layout.title.text
        and "position 0 left out" in on.additions.layout.title.text
    )
    assert on.norms.layout.yaxis.type == on.additions.layout.yaxis.type == "log"
    assert "averaged over positions 1–" in on.summary


def test_the_gelu_plot_spans_the_bulk_and_names_position_0s_values(run):
    pre = run.trace["blocks.0.mlp.hook_pre"]
    on = tab_mlp.render(run, 0, None, True).gelu
    off = tab_mlp.render(run, 0, None, False).gelu
    assert on.layout.xaxis.range[1] < pre[0].max() <= off.layout.xaxis.range[1]
    assert "position 0 left out of the axes" in on.layout.title.text and f"{pre[0].max():.3g}" in on.layout.title.text
    np.testing.assert_array_equal(on.data[1].x, off.data[1].x)  # the same points; only the axes differ


# -- log scales for probabilities --------------------------------------------------------------


def test_probabilities_use_log_scales(run, pathological_service):
    tokenizer = pathological_service.tokenizer
    lens, _ = pathological_service.analysis(run, "lens")
    nxt, why = pathological_service.analysis(run, "next")
    assert nxt is not None, why
    views = tab_blocks.render(run, lens, tokenizer)
    lens_fig, final_fig = views.lens, views.final
    heat = lens_fig.data[0]
    np.testing.assert_allclose(heat.z, np.log10(lens.top_probs), atol=1e-6)  # colour: log10 p
    np.testing.assert_allclose(
        np.asarray(heat.customdata)[..., 2].astype(np.float64), lens.top_probs, rtol=1e-6
    )  # hover: p
    assert heat.zmax == 0 and heat.zmin <= np.log10(lens.top_probs).min()
    assert final_fig.layout.yaxis.type == "log"
    candidates = tab_logits.render(run, nxt, tokenizer).candidates
    assert candidates.layout.xaxis.type == "log"
    step = tab_sample.render_preview(run, tokenizer, 1.0, 0, 1.0, 0).distribution
    assert step.layout.xaxis.type == "log"


# -- the switch in the built tabs, and payloads ---------------------------------------------------


@pytest.mark.parametrize("tab", [tab_embed, tab_mask, tab_mlp, tab_blocks])
def test_each_tab_with_position_dependent_scales_has_the_switch_on_by_default(tab, run, pathological_service):
    view = build_view(tab, pathological_service)
    (switch,) = [c for c in view.controls if getattr(c, "label", "") == POSITION_0_SWITCH]
    assert switch.value is True
    values = [getattr(c, "value", None) for c in view.controls]
    flipped = [(not v) if c is switch else v for c, v in zip(view.controls, values)]
    on, off = view.render(run.request, *values), view.render(run.request, *flipped)
    changed = [i for i, (a, b) in enumerate(zip(on, off)) if hasattr(a, "to_json") and a.to_json() != b.to_json()]
    assert changed, tab.__name__  # some figure follows the switch
    assert view.key(run.request, values) != view.key(run.request, flipped)


def test_payloads_stay_bounded(run, display, pathological_service):
    tokenizer = pathological_service.tokenizer
    nearest, _ = pathological_service.analysis(run, "nearest")
    nxt, _ = pathological_service.analysis(run, "next")
    lens, _ = pathological_service.analysis(run, "lens")
    views = {
        "tokenize": tab_tokenize.render(run, tokenizer),
        "embed": tab_embed.render(
            run, tokenizer, nearest=nearest, wpe=pathological_service.model.weights["wpe.weight"]
        ),
        "mask": tab_mask.render(run, display, 1, 0),
        "attention": tab_attention.render(run, display, 1, 0),
        "mlp": tab_mlp.render(run, 0),
        "blocks": tab_blocks.render(run, lens, tokenizer),
        "logits": tab_logits.render(run, nxt, tokenizer),
        "sample": tab_sample.render_preview(run, tokenizer, 1.0, 0, 1.0, 0),
    }
    # Every figure each tab draws on a Run (its named outputs that are figures).
    figures = {tab: [v for v in values if hasattr(v, "to_json")] for tab, values in views.items()}
    assert all(figures.values()), figures
    sizes = {tab: sum(figure_bytes(f) for f in figs) for tab, figs in figures.items()}
    assert max(sizes.values()) <= BUDGET_BYTES[64], sizes
