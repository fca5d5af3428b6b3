"""The MLP tab's figures against the trace they claim to show."""

from __future__ import annotations

import numpy as np
import pytest
from tab_helpers import export_with_defaults, refresh_with_defaults

from components import tab_mlp
from components.common import NO_RUN
from components.plots import plot_text


def pre_post(run, layer):
    return run.trace[f"blocks.{layer}.mlp.hook_pre"], run.trace[f"blocks.{layer}.mlp.hook_post"]


@pytest.mark.parametrize("layer", [0, 1])
def test_overlay_points_are_this_layers_activations_and_lie_on_the_curve(tiny_run, layer):
    gelu_fig = tab_mlp.render(tiny_run, layer).gelu
    curve, points = gelu_fig.data
    pre, post = pre_post(tiny_run, layer)
    where = np.asarray(points.customdata).astype(int)
    positions, neurons = where[:, 0], where[:, 1]
    x, y = np.asarray(points.x), np.asarray(points.y)

    # Each point is the (hook_pre, hook_post) pair of the position and neuron it names.
    np.testing.assert_array_equal(x, pre[positions, neurons])
    np.testing.assert_array_equal(y, post[positions, neurons])
    # Its hover names the token (its text, escaped for Plotly) and, from customdata, its position and neuron;
    # the numbers go as typed arrays: float32 values, small ints.
    assert list(points.text) == [plot_text(tiny_run.tokens[p].display) for p in positions]
    assert "%{text}" in points.hovertemplate and "position %{customdata[0]}" in points.hovertemplate
    assert "neuron %{customdata[1]}" in points.hovertemplate
    assert points.x.dtype == np.float32 and points.y.dtype == np.float32 and points.customdata.dtype.kind == "i"
    # MAX's GELU output lies on the tanh-GELU curve (float32 vs float64: < 1e-5 here).
    np.testing.assert_allclose(y, tab_mlp.gelu_tanh(x), atol=1e-5)

    # 12 tokens x 256 neurons = 3,072 values: more than the cap, so a sample without repeats,
    # which keeps the extremes.
    assert pre.size > tab_mlp.MAX_POINTS
    assert len(x) <= tab_mlp.MAX_POINTS
    assert len(set(zip(positions.tolist(), neurons.tolist()))) == len(x)
    assert x.min() == pre.min() and x.max() == pre.max()

    # The curve is the tanh GELU over a range covering every pre-activation.
    cx, cy = np.asarray(curve.x), np.asarray(curve.y)
    assert cx.min() <= pre.min() and cx.max() >= pre.max()
    np.testing.assert_allclose(cy, 0.5 * cx * (1 + np.tanh(np.sqrt(2 / np.pi) * (cx + 0.044715 * cx**3))), rtol=1e-12)
    assert gelu_fig.layout.height


def test_gelu_matches_known_values():
    # GELU_tanh(0) = 0, GELU_tanh(1) ~ 0.841192, and its minimum is ~ -0.170 near x = -0.75.
    np.testing.assert_allclose(tab_mlp.gelu_tanh(np.array([0.0, 1.0])), [0.0, 0.8411920], atol=1e-6)
    xs = np.linspace(-5, 5, 100001)
    assert tab_mlp.gelu_tanh(xs).min() == pytest.approx(-0.170, abs=1e-3)


def test_small_inputs_show_every_point():
    np.testing.assert_array_equal(tab_mlp.sample_indices(10, limit=3000), np.arange(10))
    sample = tab_mlp.sample_indices(10_000, limit=300, keep=(5, 9_999))
    assert len(sample) <= 300 and {5, 9_999} <= set(sample.tolist())
    np.testing.assert_array_equal(sample, np.unique(sample))  # sorted, no repeats
    np.testing.assert_array_equal(sample, tab_mlp.sample_indices(10_000, limit=300, keep=(5, 9_999)))  # seeded


@pytest.mark.parametrize("layer", [0, 1])
def test_neuron_heatmap_shows_the_top_neurons_by_max_abs_activation(tiny_run, layer):
    heat = tab_mlp.render(tiny_run, layer).heatmap
    _, post = pre_post(tiny_run, layer)
    trace = heat.data[0]
    score = np.abs(post).max(axis=0)
    top = np.argsort(-score, kind="stable")[:40]

    assert list(trace.x) == [f"n{n}" for n in top]
    assert list(trace.y) == tiny_run.labels
    np.testing.assert_array_equal(np.asarray(trace.z), post[:, top])
    # Strongest first; every neuron left out is no stronger than the weakest shown.
    assert np.all(np.diff(score[top]) <= 0)
    assert np.delete(score, top).max() <= score[top].min()
    # Diverging colour scale centred on 0, and the hover names token, neuron and value.
    assert trace.zmid == 0
    assert "%{y}" in trace.hovertemplate and "%{x}" in trace.hovertemplate and "%{z" in trace.hovertemplate
    assert heat.layout.height


def test_neuron_heatmap_beyond_a_screenful_averages_blocks_of_positions(tiny_run, monkeypatch):
    monkeypatch.setattr("components.plots.MAX_CELLS_PER_AXIS", 5)
    trace = tab_mlp.render(tiny_run, 1).heatmap.data[0]
    _, post = pre_post(tiny_run, 1)
    top = np.argsort(-np.abs(post).max(axis=0), kind="stable")[:40]
    edges = [0, 2, 4, 7, 9, tiny_run.n_tokens]  # 12 positions in 5 blocks; the 40 neurons all stay
    expected = np.stack([post[a:b, top].astype(np.float64).mean(axis=0) for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(trace.z, expected, rtol=1e-6)
    assert list(trace.x) == [f"n{n}" for n in top]
    assert list(trace.y)[2] == f"4–6 {tiny_run.tokens[4].display}…{tiny_run.tokens[6].display}"
    assert "mean activation" in trace.hovertemplate


@pytest.mark.parametrize("position", [0, 7, None])
def test_position_bars_are_the_largest_activations_sorted(tiny_run, position):
    bars_fig = tab_mlp.render(tiny_run, 1, position).bars
    _, post = pre_post(tiny_run, 1)
    p = tiny_run.n_tokens - 1 if position is None else position  # default: the last token
    bar = bars_fig.data[0]
    expected_ids = np.argsort(-post[p], kind="stable")[:15]

    np.testing.assert_array_equal(np.asarray(bar.x), np.sort(post[p])[::-1][:15])
    assert list(bar.y) == [f"neuron {n}" for n in expected_ids]
    assert all(f"token {tiny_run.labels[p]}" in text for text in bar.text)
    assert tiny_run.labels[p] in bars_fig.layout.title.text


def test_out_of_range_controls_are_clamped(tiny_run):
    T = tiny_run.n_tokens
    high = tab_mlp.render(tiny_run, 99, 10_000)
    top = tab_mlp.render(tiny_run, 1, T - 1)
    low = tab_mlp.render(tiny_run, -3, -7)
    bottom = tab_mlp.render(tiny_run, 0, 0)
    junk = tab_mlp.render(tiny_run, "not a layer", float("nan"))  # -> layer 0, last position
    for got, want in ((high, top), (low, bottom)):
        for name in ("gelu", "heatmap", "bars"):
            assert getattr(got, name).to_json() == getattr(want, name).to_json()
        assert got.summary == want.summary
    assert junk.bars.to_json() == tab_mlp.render(tiny_run, 0, T - 1).bars.to_json()


def test_tensors_for_download_match_the_plots(tiny_run):
    arrays = tab_mlp.tensors(tiny_run, 5, 3)  # layer 5 clamps to 1
    pre, post = pre_post(tiny_run, 1)
    assert int(arrays["layer"]) == 1 and int(arrays["position"]) == 3
    np.testing.assert_array_equal(arrays["mlp_hook_pre"], pre)
    np.testing.assert_array_equal(arrays["top_neurons_post"], post[:, arrays["top_neurons"]])
    np.testing.assert_array_equal(arrays["position_top_post"], np.sort(post[3])[::-1][:15])


def test_summary_names_layer_and_strongest_neuron(tiny_run):
    summary = tab_mlp.render(tiny_run, 0).summary
    _, post = pre_post(tiny_run, 0)
    position, neuron = np.unravel_index(int(np.argmax(post)), post.shape)
    assert "Block 0" in summary and f"neuron **{neuron}**" in summary and tiny_run.labels[position] in summary


def test_no_run_shows_a_message():
    views = tab_mlp.render(None, 0, 0)
    figures = (views.gelu, views.heatmap, views.bars)
    assert views.summary == NO_RUN
    assert all(fig.layout.annotations[0].text == NO_RUN for fig in figures)


def test_built_tab_refreshes_after_a_run(explorer_service, tiny_run):
    refresh_with_defaults(tab_mlp, explorer_service, tiny_run)
    path = export_with_defaults(tab_mlp, explorer_service, tiny_run, 0, None)
    assert str(path).endswith(".npz")
    with np.load(path) as data:
        assert list(data["token_ids"]) == list(tiny_run.token_ids)
