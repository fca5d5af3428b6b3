"""The shared figure builders' colour limits: from the bulk of the values, clipping said on the colour bar."""

from __future__ import annotations

import numpy as np
import pytest
from tab_helpers import title_of

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
    assert limits.clip_note() == f"clipped to ±{limits.zmax:.3g} (max |x| 3.01e+03)"


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
    left_out = heatmap(
        values,
        list(map(str, range(64))),
        list(map(str, range(12))),
        "t",
        diverging=True,
        position_axes="y",
        leave_out_position_0=True,
    )
    trace = left_out.data[0]
    np.testing.assert_array_equal(trace.z, values.astype(np.float32))  # drawn unclipped: the hover shows z
    assert "%{z" in trace.hovertemplate and trace.zmid == 0
    assert POSITION_0_LEFT_OUT in title_of(left_out)
    assert trace.colorbar.title.text.startswith(f"clipped to ±{trace.zmax:.3g}")
    fixed = heatmap(
        values,
        list(map(str, range(64))),
        list(map(str, range(12))),
        "t",
        zmin=0.0,
        zmax=1.0,
        position_axes="y",
        leave_out_position_0=True,
    )
    assert (fixed.data[0].zmin, fixed.data[0].zmax) == (0.0, 1.0)  # absolute scales stay as asked
    assert POSITION_0_LEFT_OUT not in title_of(fixed) and fixed.data[0].colorbar.title.text is None


@pytest.mark.parametrize(
    ("zmin", "expected"), [(-1, [-1, 0]), (-3, [-3, -2, -1, 0]), (-5, [-4, -2, 0]), (-9, [-9, -6, -3, 0])]
)
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
        [dict(type="bar", marker=dict(color="#3b6fb6", pattern=dict(shape="/")), **bar)],
        "Title",
        300,
        ["a note"],
        barmode="group",
        xaxis=dict(title="probability", type="log"),
        yaxis=dict(type="category", autorange="reversed"),
    )
    by_steps = go.Figure()
    by_steps.add_trace(go.Bar(marker_color="#3b6fb6", marker_pattern_shape="/", **bar))
    layout(by_steps, "Title", 300, ["a note"], barmode="group")
    by_steps.update_xaxes(title="probability", type="log")
    by_steps.update_yaxes(type="category", autorange="reversed")
    assert json.loads(at_once.to_json()) == json.loads(by_steps.to_json())  # the same properties and values


# -- issue 19: downsampled attention, log axes, points on log axes, patching, Markdown cells ----------


def sink_and_previous_token_heads(T: int) -> np.ndarray:
    """[2, T, T] causal patterns: a sink head (95% of every query 1..T-1 on position 0, the rest
    spread evenly over 1..t) and a sharp previous-token head (all of query t on key t - 1)."""
    sink = np.zeros((T, T))
    sink[0, 0] = 1.0
    for t in range(1, T):
        sink[t, 0] = 0.95
        sink[t, 1 : t + 1] = 0.05 / t
    sharp = np.zeros((T, T))
    sharp[0, 0] = 1.0
    sharp[np.arange(1, T), np.arange(T - 1)] = 1.0
    return np.stack([sink, sharp])


@pytest.mark.parametrize("bins", [12, 128])  # the all-heads grid's tiles, a single pattern's screenful
def test_downsampled_attention_keeps_rows_summing_to_1_and_a_sink_its_share(bins):
    """Averaging over blocks of keys divided every cell by its block's size: at 256 tokens a sink
    read 0.08 where it holds 0.95, and no row summed to 1. Keys are now summed, queries averaged,
    and position 0 is a block of its own."""
    from components.plots import attention_blocks, bin_starts

    patterns = sink_and_previous_token_heads(256)
    starts = bin_starts(256, bins, first_alone=True)
    assert starts[0] == 0 and starts[1] == 1 and len(starts) == bins
    blocks = attention_blocks(patterns, starts)  # [2, G, G]
    np.testing.assert_allclose(blocks.sum(axis=-1), 1.0, atol=1e-6)  # every row, both heads
    stops = np.append(starts[1:], 256)
    exact_share = [patterns[0, a:b, 0].mean() for a, b in zip(starts, stops)]
    np.testing.assert_allclose(blocks[0, :, 0], exact_share, atol=1e-6)
    np.testing.assert_allclose(blocks[0, 1:, 0], 0.95, atol=1e-6)  # the sink reads as a sink
    # The sharp head: each block of queries reads its previous tokens, which lie in its own
    # block or the one before: at least half of each row lands in one cell.
    assert (blocks[1].max(axis=-1) >= 0.5 - 1e-9).all()


def test_the_pattern_figure_draws_the_summed_blocks_and_says_so():
    from components.plots import attention_blocks, attention_pattern, bin_starts

    pattern = sink_and_previous_token_heads(256)[0]
    labels = [str(i) for i in range(256)]
    fig = attention_pattern(pattern, labels, labels, "t", height=600)
    z = np.asarray(fig.data[0].z, dtype=np.float64)
    starts = bin_starts(256, 128, first_alone=True)
    np.testing.assert_allclose(z, attention_blocks(pattern, starts), atol=1e-6)
    np.testing.assert_allclose(z.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fig.data[1].x), z[:, 0], atol=1e-6)  # the bars beside it: column 0
    assert list(fig.data[0].y[:2]) == ["0", "1–2 1…2"]  # position 0 alone
    assert "queries averaged, keys summed over blocks of ~2 positions (0 alone)" in title_of(fig)


def tick_values(axis) -> list[float]:
    return [float(v) for v in axis.tickvals]


@pytest.mark.parametrize(("low", "high"), [(0.3, 5.0), (1.0, 50.0), (1.2e-4, 1.7e-4), (2e-5, 0.9), (0.8, 4000.0)])
def test_log_axes_label_every_tick_with_its_full_value(low, high):
    """Plotly's own labels between powers of ten are bare mantissas ("1, 2, 5, 10, 2, 5": the
    last 5 is 50); every log axis of the shared builders now names its ticks in full."""
    from components.plots import lines

    values = np.geomspace(low, high, 7)
    fig = lines([str(i) for i in range(7)], {"norm": values}, "t", y_title="‖x‖", log_y=True)
    axis = fig.layout.yaxis
    assert axis.type == "log" and "(log scale)" in axis.title.text
    ticks = tick_values(axis)
    assert len(ticks) >= 2 and all(float(text) == pytest.approx(v) for text, v in zip(axis.ticktext, ticks))
    shown = [v for v in ticks if 10 ** axis.range[0] <= v <= 10 ** axis.range[1]]
    assert len(shown) >= 2  # two values close together still get labelled ticks
    assert 10 ** axis.range[0] <= values.min() and values.max() <= 10 ** axis.range[1]


def test_values_on_a_log_axis_are_points_not_bars():
    """A bar on a log axis starts at the axis' lower edge, wherever the data put it: 120µ beside
    170µ drew as 1 : 10. The shared builders draw bars on linear axes and points on log ones."""
    from components.plots import bars

    probs = [1.7e-4, 1.2e-4, 1.1e-4]
    logged = bars(["a", "b", "c"], probs, "t", value_name="probability", log_scale=True, hover_extra=["1", "2", "3"])
    (trace,) = logged.data
    assert trace.type == "scatter" and trace.mode == "markers" and list(trace.x) == probs
    assert logged.layout.xaxis.type == "log" and logged.layout.xaxis.ticktext
    linear = bars(["a", "b", "c"], probs, "t")
    assert linear.data[0].type == "bar" and linear.layout.xaxis.type == "linear"


def test_notes_each_get_their_own_title_line():
    """Joined on one line, a figure's notes ran past a narrow panel's edge (the Mask tab's three in a row)."""
    from components.plots import LINE_PX, TITLE_PAD_PX, layout_properties

    props = layout_properties("Title", notes=["first note", "", "second note"])
    assert props["title"]["text"] == "Title<br><sup>first note</sup><br><sup>second note</sup>"
    for notes in (
        [],
        ["a note"],
        ["a note"] * 3,
        ["a note"] * 6,
    ):  # each line has room above the plot, which keeps its own
        shown = layout_properties("Title", 400, notes)
        assert shown["margin"]["t"] >= TITLE_PAD_PX + 20 + LINE_PX * len(notes) + 12
        assert shown["height"] - shown["margin"]["t"] == 400 - 60


def test_a_patching_sweep_of_prompts_too_close_to_compare_says_so():
    """(patched − corrupted) / (clean − corrupted) with metrics −1.644 and −1.625 made noise into
    shares of ±2 and ranked them; such a sweep now says the prompts are too close to compare."""
    from gpt2_max.attribution import PatchSweep

    def sweep(clean, corrupted, metric):
        metric = np.asarray(metric, dtype=np.float64)
        return PatchSweep((metric - corrupted) / (clean - corrupted), metric, clean, corrupted, 1.0, metric.size + 2)

    close = sweep(-1.625, -1.644, [[-1.644 + 0.044, -1.66], [-1.63, -1.64]])
    assert "differ by only 0.019" in close.too_close() and "2.3×" in close.too_close()
    same = sweep(0.5, 0.5 - 1e-5, [[0.5, 0.5]])
    assert "float32 rounding" in same.too_close()
    fine = sweep(3.2, -3.1, [[3.0, -3.1], [0.2, 1.5]])  # the indirect-object preset's scale
    assert fine.too_close() == ""


def test_the_patching_view_does_not_rank_cells_when_the_prompts_are_too_close():
    from components import interpret
    from gpt2_max.attribution import PatchSweep
    from gpt2_max.tokenizer import Tokenizer

    tokenizer = Tokenizer()
    metric = np.array([[-1.644 + 0.044, -1.66], [-1.63, -1.64]])
    close = PatchSweep((metric + 1.644) / 0.019, metric, -1.625, -1.644, 1.0, 6)
    answer, wrong = tokenizer.encode(" Mary")[0], tokenizer.encode(" John")[0]
    fig, summary = interpret.patching_figure(interpret.PatchingRun("heads", close, [1, 2], answer, wrong), tokenizer)
    assert "Most restoring" not in summary and "Too close to compare" in summary
    np.testing.assert_allclose(
        np.asarray(fig.data[0].z, dtype=np.float64), metric + 1.644, rtol=1e-6
    )  # the move in logits, not shares
    assert "Change of the metric (logits)" in title_of(fig) and (fig.data[0].zmin, fig.data[0].zmax) != (
        -1.0,
        1.0,
    )
    fine = PatchSweep(metric * 0 + 0.5, metric, 1.0, 0.0, 1.0, 6)
    _, summary = interpret.patching_figure(interpret.PatchingRun("heads", fine, [1, 2], answer, wrong), tokenizer)
    assert "Most restoring" in summary


def test_a_pipe_in_an_intro_table_cell_does_not_split_it():
    """The Tokenize intro's vocabulary row read "… + 50,000 merges + <": the | of <|endoftext|> ended the cell."""
    from markdown_it import MarkdownIt

    from components import tab_tokenize

    rendered = MarkdownIt("commonmark").enable("table").render(tab_tokenize.INTRO)
    assert "<td>50,257 entries: 256 bytes + 50,000 merges + &lt;|endoftext|&gt;</td>" in rendered


def test_the_placeholder_does_not_ask_for_the_run_just_pressed():
    """Shown until a Run has finished, also to a student who has just pressed Run: "press Run" told them to do it again."""
    from components.common import NO_RUN

    assert "press run" not in NO_RUN.lower() and "Run" in NO_RUN


# -- issue 19, items 11 and 13: the shared layout on a phone's 324-px plot ------------------------


@pytest.fixture(scope="module")
def every_figure():
    """{name: figure} for every figure the tabs draw after a Run of GPT-2 small's shape on 24 tokens
    (no MAX: the numpy reference's trace), and the figures drawn later: the detectors, an
    ablation's before and after, the next-token candidates."""
    from benchmarks.payload import next_tokens, synthetic_run, tab_figures, tokenizer
    from components import interpret, tab_attention, tab_blocks, tab_logits

    run = synthetic_run(24)
    tok = tokenizer()
    figures = {f"{tab} {i}": fig for tab, figs in tab_figures(run).items() for i, fig in enumerate(figs)}
    blocks = tab_blocks.render(run, "the lens is not computed here", tok)
    figures.update({"blocks norms": blocks.norms, "blocks additions": blocks.additions})
    scores = np.random.default_rng(0).uniform(0, 1, (12, 12))
    figures["detectors"] = interpret.detector_figure({name: scores for name in interpret.DETECTOR_NAMES})
    display = lambda token_id: tok.token(token_id).display  # noqa: E731
    figures["ablation"] = tab_attention.ablation_figure(run, display, 0, 0, run)[0]
    figures["candidates"] = tab_logits.candidates_figure(run, next_tokens(run), tok, run.n_tokens - 1)
    return figures


def colour_bars(fig) -> list:
    """Every colour bar a figure draws: its heatmaps' own, and its colour axis' where they share one."""
    heatmaps = [trace for trace in fig.data if trace.type == "heatmap" and trace.showscale is not False]
    own = [trace.colorbar for trace in heatmaps if not trace.coloraxis]
    return own + ([fig.layout.coloraxis.colorbar] if any(trace.coloraxis for trace in heatmaps) else [])


def test_colour_bars_and_legends_lie_under_the_plot_not_beside_it(every_figure):
    """At the right (Plotly's default) a colour bar took ~90 px and a legend ~150 px of a phone's
    324-px plot: the Attention pattern kept 124 px beside its colour bar and bars, the GELU plot
    64. Every colour bar and legend is now a row under the plot, placed against the figure's
    bottom edge, where Plotly reserves the room it needs, its title under it."""
    seen = 0
    for name, fig in every_figure.items():
        for bar in colour_bars(fig):
            assert (bar.orientation, bar.yref, bar.yanchor) == ("h", "container", "bottom"), name
            assert bar.title.text is None or bar.title.side == "bottom", name  # above the bar Plotly drew it on the bar
            seen += 1
        legend = fig.layout.legend
        assert (legend.orientation, legend.yref, legend.y, legend.yanchor) == ("h", "container", 0.0, "bottom"), name
    assert seen >= 10


def plain_lines(text: str) -> tuple[list[str], list[str]]:
    """A title's lines as the reader sees them (tags gone, entities read): (title lines, note lines)."""
    import html
    import re

    lines = [html.unescape(re.sub(r"</?\w+>", "", line)) for line in str(text).split("<br>")]
    notes = ["<sup>" in line for line in str(text).split("<br>")]
    return [line for line, note in zip(lines, notes) if not note], [line for line, note in zip(lines, notes) if note]


def test_every_title_fits_a_phone_in_lines_with_room_for_them(every_figure):
    """Titles ran past the plot's edge on a phone and in the Mask tab's three side by side ("Top 15
    next-token candidates after '11 ␣the" ended there). Every title is wrapped at spaces into
    lines of at most TITLE_LINE_CHARS characters (its notes NOTE_LINE_CHARS), and the plot starts
    below its last line."""
    from components.plots import LINE_PX, NOTE_LINE_CHARS, TITLE_LINE_CHARS, TITLE_PAD_PX

    wrapped = 0
    for name, fig in every_figure.items():
        titles, notes = plain_lines(fig.layout.title.text)
        for line, limit in [(t, TITLE_LINE_CHARS) for t in titles] + [(n, NOTE_LINE_CHARS) for n in notes]:
            assert len(line) <= limit or " " not in line, (name, line)
        wrapped += len(titles) > 1
        last_line_ends = TITLE_PAD_PX + 20 + LINE_PX * (len(titles) + len(notes) - 1)
        assert fig.layout.margin.t >= last_line_ends + 12, name
    assert wrapped >= 5  # the premise: many titles are longer than a phone's line


def test_a_wrapped_title_keeps_the_plot_its_height():
    """A figure's height counts a one-line title's top margin (TOP_PX); what more its title takes,
    and the 100 px that gr.Plot gives a titled plot at least (a one-row token grid kept 20 px of
    its 60 for its cells), is added to the height: the plot keeps the height it was given."""
    from components.plots import GRADIO_TOP_PX, LINE_PX, TITLE_LINE_CHARS, TOP_PX, layout_properties, wrap_lines

    assert wrap_lines("a b c &lt;|endoftext|&gt; d<br>e", 5) == ["a b c", "&lt;|endoftext|&gt;", "d", "e"]
    one = layout_properties("Short", 400)
    title = "A title of several words that needs three lines on a phone, if not more: one, two, three"
    long = layout_properties(title, 400, ["a note"])
    lines = len(wrap_lines(title, TITLE_LINE_CHARS)) + 1  # the title's and the note's
    assert lines == 4
    assert one["margin"]["t"] == GRADIO_TOP_PX and long["margin"]["t"] == TOP_PX + LINE_PX * (lines - 1) + 12
    assert long["height"] - long["margin"]["t"] == one["height"] - one["margin"]["t"] == 400 - TOP_PX
    room = layout_properties("Every head", 400, margin=dict(t=110))  # a caller's room for labels above the plot
    assert room["margin"]["t"] == 110 + 12 and room["height"] - room["margin"]["t"] == 400 - 110


def test_category_labels_turn_only_as_far_as_the_width_needs(every_figure):
    """A fixed 45° ran position and token labels into each other on a phone (Embed's position
    similarity, the lens at 24 positions), where Plotly keeps a label per ~17 px. Category axes
    leave the angle to Plotly (level, else 60°, else upright) and Plotly thins their labels; an
    axis whose every label is given is thinned by the builder (``thinned_ticks``)."""
    from components.plots import LABEL_ANGLES

    checked = 0
    for name, fig in every_figure.items():
        for axis_name in [key for key in fig.layout.to_plotly_json() if key.startswith("xaxis")]:
            axis = fig.layout[axis_name]
            if axis.type != "category" or axis.visible is False:
                continue
            if axis.tickmode == "array":
                assert axis.tickangle == 0 and len(axis.tickvals) <= 12, (name, axis_name)
            else:
                assert axis.tickangle is None and list(axis.autotickangles) == LABEL_ANGLES["autotickangles"], name
                checked += 1
    assert checked >= 8


def test_the_detectors_label_a_few_heads_and_wrap_their_names():
    """Three 12-head panels side by side are ~70 px each on a phone: twelve head numbers and the
    names "previous token" and "duplicate token" ran into each other."""
    from components import interpret

    scores = np.random.default_rng(0).uniform(0, 1, (12, 12))
    fig = interpret.detector_figure({name: scores for name in interpret.DETECTOR_NAMES})
    for axis in (fig.layout.xaxis, fig.layout.xaxis2, fig.layout.xaxis3):
        assert list(axis.ticktext) == ["0", "3", "6", "9"] and list(axis.tickvals) == [
            "head 0",
            "head 3",
            "head 6",
            "head 9",
        ]
    names = [note.text for note in fig.layout.annotations]
    assert names == ["previous<br>token", "duplicate<br>token", "induction"]
    np.testing.assert_array_equal(fig.data[0].x, [f"head {h}" for h in range(12)])  # the click script reads these


def test_the_pattern_bars_axis_title_fits_their_column():
    """ "on position 0" under the position-0 bars, a sixth of a phone's plot, ran off the figure."""
    from components.plots import attention_pattern

    pattern = np.tril(np.ones((6, 6)))
    pattern /= pattern.sum(axis=1, keepdims=True)
    fig = attention_pattern(pattern, list("abcdef"), list("abcdef"), "t", height=400)
    assert fig.layout.xaxis2.title.text == "share on<br>position 0"
