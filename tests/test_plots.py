"""The shared figure builders' colour limits: from the bulk of the values, clipping said on the colour bar."""

from __future__ import annotations

import numpy as np
import pytest

from components.plots import (
    CLIP_ONLY_BEYOND,
    POSITION_0_LEFT_OUT,
    decade_ticks,
    heatmap,
    position_0_cells,
    robust_limits,
)


def gaussian(shape, seed=0, scale=0.05):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def test_an_ordinary_distribution_is_drawn_whole():
    values = gaussian((20, 50))
    limits = robust_limits(values, diverging=True)
    extreme = np.abs(values).max()
    assert extreme <= CLIP_ONLY_BEYOND * np.percentile(np.abs(values), 99)  # the premise
    assert limits.zmax == pytest.approx(extreme) and limits.zmin == -limits.zmax and not limits.clipped
    assert limits.clip_note() == ""


def test_outliers_are_clipped_at_the_bulks_99th_percentile_of_abs():
    values = gaussian((20, 50))
    values[0, 3], values[5, 7] = 3010.0, -138.0
    limits = robust_limits(values, diverging=True)
    assert limits.zmax == pytest.approx(np.percentile(np.abs(values), 99)) and limits.zmax < 1.0
    assert limits.clipped and (limits.low, limits.high) == (-138.0, 3010.0)
    assert limits.clip_note() == f"clipped to ±{limits.zmax:.3g}<br>(max |x| 3.01e+03)"


def test_masked_cells_do_not_count():
    values = gaussian((10, 10))
    values[np.triu_indices(10, 1)] = -np.inf  # the causal mask's cells
    values[0, 0] = np.nan
    limits = robust_limits(values, diverging=True)
    finite = values[np.isfinite(values)]
    assert limits.zmax == pytest.approx(np.abs(finite).max())  # nothing infinite reached the limits
    empty = robust_limits(np.full((3, 3), -np.inf), diverging=False)  # nothing finite: a plain 0..1, nothing clipped
    assert (empty.zmin, empty.zmax, empty.clipped) == (0.0, 1.0, False)


def test_counted_cells_set_the_limits_and_every_cell_the_true_range():
    values = gaussian((12, 64))
    values[0] *= 40  # a whole row of position 0 far larger: 1/12 of the cells, above the 1%
    counted = position_0_cells(values.shape, "y")
    assert not counted[0].any() and counted[1:].all()
    left_in = robust_limits(values, diverging=True)
    left_out = robust_limits(values, diverging=True, counted=counted)
    assert left_in.zmax > 5 * left_out.zmax
    assert left_out.zmax == pytest.approx(np.percentile(np.abs(values[1:]), 99))
    assert left_out.high == values.max() and left_out.clipped


def test_sequential_limits_are_the_1st_and_99th_percentiles():
    values = np.random.default_rng(1).random((30, 30))
    values[0, 0], values[1, 1] = 500.0, -400.0
    limits = robust_limits(values, diverging=False)
    assert (limits.zmin, limits.zmax) == pytest.approx(tuple(np.percentile(values, [1, 99])))
    assert "clipped to" in limits.clip_note() and "true -400…500" in limits.clip_note()


def test_the_heatmap_says_what_it_did():
    values = gaussian((12, 64))
    values[0] *= 40
    values[0, 5] = 3000.0
    left_out = heatmap(values, list(map(str, range(64))), list(map(str, range(12))), "t", diverging=True,
                       position_axes="y", leave_out_position_0=True)
    trace = left_out.data[0]
    np.testing.assert_array_equal(trace.z, values.astype(np.float32))  # drawn unclipped: the hover shows z
    assert "%{z" in trace.hovertemplate and trace.zmid == 0
    assert POSITION_0_LEFT_OUT in left_out.layout.title.text
    assert trace.colorbar.title.text.startswith(f"clipped to ±{trace.zmax:.3g}")
    fixed = heatmap(values, list(map(str, range(64))), list(map(str, range(12))), "t", zmin=0.0, zmax=1.0,
                    position_axes="y", leave_out_position_0=True)
    assert (fixed.data[0].zmin, fixed.data[0].zmax) == (0.0, 1.0)  # absolute scales stay as asked
    assert POSITION_0_LEFT_OUT not in fixed.layout.title.text and fixed.data[0].colorbar.title.text is None


@pytest.mark.parametrize(("zmin", "expected"), [(-1, [-1, 0]), (-3, [-3, -2, -1, 0]), (-5, [-4, -2, 0]), (-9, [-9, -6, -3, 0])])
def test_decade_ticks_label_at_most_four_powers_of_ten(zmin, expected):
    ticks = decade_ticks(zmin, 0.0)
    assert ticks["tickvals"] == expected and ticks["ticktext"] == [f"{10.0**k:g}" for k in expected]


def test_a_figure_built_at_once_equals_one_built_step_by_step():
    """plots.figure (one validated construction: 4x faster) sends the JSON that adding the traces
    and then calling update_layout and update_axes would: the tabs moved to it on that basis."""
    import json

    import plotly.graph_objects as go

    from components.plots import figure, layout

    labels = ["a", "b", "c"]
    bar = dict(y=labels, x=[0.5, 0.3, 0.2], orientation="h", name="p", text=["1", "2", "3"], textposition="none")
    at_once = figure(
        [dict(type="bar", marker=dict(color="#3b6fb6", pattern=dict(shape="/")), **bar)], "Title", 300, ["a note"],
        barmode="group", xaxis=dict(title="probability", type="log"), yaxis=dict(type="category", autorange="reversed"),
    )
    by_steps = go.Figure()
    by_steps.add_trace(go.Bar(marker_color="#3b6fb6", marker_pattern_shape="/", **bar))
    layout(by_steps, "Title", 300, ["a note"], barmode="group")
    by_steps.update_xaxes(title="probability", type="log")
    by_steps.update_yaxes(type="category", autorange="reversed")
    assert json.loads(at_once.to_json()) == json.loads(by_steps.to_json())  # the same properties and values
