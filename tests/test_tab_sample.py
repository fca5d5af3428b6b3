"""The Sample tab's render functions on the tiny model: bars, greedy streaming, sample-N, bad settings."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
from tab_helpers import build_tab

from components import tab_sample
from components.common import NO_RUN
from explorer.parts import ServerParts, parts_for
from gpt2_max.errors import InputError
from gpt2_max.sampling import REPORTED_CANDIDATES, SamplingSettings, filtered_distribution, softmax


def stream_views(service, run, *values):
    """The Generate stream of ``run`` with the tab's controls at ``values``, on ``service``'s parts."""
    yield from tab_sample.stream_views(run, *values, **parts_for(tab_sample.stream_views, ServerParts.of(service)))


def test_step_bars_equal_the_sample_steps_probabilities(tiny_model, tiny_run):
    tokenizer = tiny_model.tokenizer
    settings = SamplingSettings(temperature=1.7, top_k=40, top_p=0.9, seed=5)  # wide: draws fall outside the top 20 too
    context = list(tiny_run.token_ids)
    for step in tiny_model.stream(context, 6, settings, keep_logits=True):
        shown = tab_sample.keep_step(step)
        assert shown.step.logits is None
        assert shown.raw_prob == pytest.approx(float(softmax(step.logits)[step.token_id]))
        fig = tab_sample.step_figure(tokenizer, shown, context, "Step")
        raw, filtered = fig.data
        # Points on the log axis (a bar there starts at the axis' edge: its length meant nothing), ticks in full.
        assert raw.type == filtered.type == "scatter" and raw.mode == "markers" and fig.layout.xaxis.type == "log"
        assert all(
            float(text) == pytest.approx(v) for text, v in zip(fig.layout.xaxis.ticktext, fig.layout.xaxis.tickvals)
        )
        n = REPORTED_CANDIDATES
        np.testing.assert_array_equal(np.asarray(raw.x[:n]), step.candidate_probs)
        np.testing.assert_array_equal(np.asarray(filtered.x[:n]), step.candidate_filtered)
        outside = step.token_id not in step.candidate_ids.tolist()
        assert len(raw.x) == n + outside
        chosen_rows = [i for i, label in enumerate(raw.y) if label.startswith("▶")]
        assert len(chosen_rows) == 1
        row = chosen_rows[0]
        assert filtered.x[row] == pytest.approx(step.chosen_prob)
        assert tokenizer.token(step.token_id).display.replace("<", "&lt;").replace(">", "&gt;") in raw.y[row]
        assert raw.marker.color[row] == tab_sample.CHOSEN_COLOUR
        context.append(step.token_id)


def test_greedy_stream_equals_generate(explorer_service, tiny_model, tiny_run, monkeypatch):
    monkeypatch.setattr(tab_sample, "STREAM_UPDATE_INTERVAL_S", 0.0)  # every token sent (see the next test)
    outputs = list(stream_views(explorer_service, tiny_run, 0, 0, 1.0, 0, 8))
    expected = tiny_model.generate(list(tiny_run.token_ids), max_new_tokens=8, temperature=0).ids
    assert len(outputs) == 8 + 1  # one yield per token, then the summary
    drawn = None  # the step the chart on the page shows
    for k, (status, fig, _html_text, slider, generation) in enumerate(outputs[:-1], start=1):
        if isinstance(fig, go.Figure):
            drawn = k
            assert fig.layout.title.text.startswith(f"Step {k} of up to 8 ") and "generating" in fig.layout.title.text
        # The slider follows the chart (it said 17 beside a chart of step 10); its end, the newest token.
        assert "Generating" in status and slider["value"] == drawn and slider["maximum"] == max(k, 2)
        assert [s.step.token_id for s in generation["shown"][:k]] == expected[:k]
    status, fig, html_text, slider, generation = outputs[-1]
    ids = [s.step.token_id for s in generation["shown"]]
    assert ids == expected
    assert "8 tokens generated" in status
    assert all(s.step.chosen_prob == 1.0 and s.step.kept == 1 for s in generation["shown"])
    with np.load(tab_sample.export_generation(generation)) as data:  # written when Export is pressed
        assert data["token_ids"].tolist() == expected
        assert data["prompt_ids"].tolist() == list(tiny_run.token_ids)
        assert data["candidate_probs"].shape == (8, REPORTED_CANDIDATES)
    # the text shows the prompt, then the new tokens marked, the last one strongest
    assert "<mark" in html_text and tab_sample.html.escape(tiny_model.tokenizer.decode(expected[-1:])) in html_text


def test_a_fast_stream_sends_at_most_one_update_per_interval_and_always_the_end(
    explorer_service, tiny_model, tiny_run, monkeypatch
):
    """Tokens that come faster than STREAM_UPDATE_INTERVAL_S are sent together: with an interval
    longer than the whole generation, the page gets the first token, then the end (its chart
    drawn, every token in the text); the chart between is redrawn at most every
    STREAM_FIGURE_INTERVAL_S."""
    monkeypatch.setattr(tab_sample, "STREAM_UPDATE_INTERVAL_S", 60.0)
    outputs = list(stream_views(explorer_service, tiny_run, 0, 0, 1.0, 0, 8))
    assert len(outputs) == 2
    (first_status, first_fig, _, first_slider, _), (status, fig, html_text, slider, generation) = outputs
    assert "Generating… 1 of" in first_status and first_slider["value"] == 1 and isinstance(first_fig, go.Figure)
    expected = tiny_model.generate(list(tiny_run.token_ids), max_new_tokens=8, temperature=0).ids
    assert [s.step.token_id for s in generation["shown"]] == expected and slider["value"] == 8
    assert "8 tokens generated" in status and isinstance(fig, go.Figure) and "Step 8 of 8" in fig.layout.title.text
    monkeypatch.setattr(tab_sample, "STREAM_UPDATE_INTERVAL_S", 0.0)
    monkeypatch.setattr(tab_sample, "STREAM_FIGURE_INTERVAL_S", 60.0)
    outputs = list(stream_views(explorer_service, tiny_run, 0, 0, 1.0, 0, 8))
    figures = [fig for _, fig, _, _, _ in outputs]
    assert len(outputs) == 9 and isinstance(figures[0], go.Figure) and isinstance(figures[-1], go.Figure)
    assert all(not isinstance(fig, go.Figure) for fig in figures[1:-1])  # text only between


def test_streams_share_one_update_budget_and_a_lone_stream_keeps_its_pace():
    """With n generations streaming, each is updated at most every (n - 1) / STREAM_UPDATES_PER_S
    seconds (its chart every (n - 1) / STREAM_FIGURES_PER_S), never more often than a lone one."""
    streams = tab_sample.ActiveStreams()
    with streams.streaming():
        assert streams.intervals() == (tab_sample.STREAM_UPDATE_INTERVAL_S, tab_sample.STREAM_FIGURE_INTERVAL_S)
    class_of_30 = [streams.streaming() for _ in range(30)]
    for stream in class_of_30:
        stream.__enter__()
    update, chart = streams.intervals()
    assert (
        update == pytest.approx(29 / tab_sample.STREAM_UPDATES_PER_S) and update > tab_sample.STREAM_UPDATE_INTERVAL_S
    )
    assert chart == pytest.approx(29 / tab_sample.STREAM_FIGURES_PER_S) and chart > tab_sample.STREAM_FIGURE_INTERVAL_S
    for stream in class_of_30:
        stream.__exit__(None, None, None)
    assert streams.intervals() == (tab_sample.STREAM_UPDATE_INTERVAL_S, tab_sample.STREAM_FIGURE_INTERVAL_S)


def test_seeded_stream_repeats_and_the_preview_is_its_first_step(explorer_service, tiny_run):
    args = (tiny_run, 1.3, 0, 1.0, 21, 4)
    first = [s.step.token_id for s in list(stream_views(explorer_service, *args))[-1][4]["shown"]]
    again = [s.step.token_id for s in list(stream_views(explorer_service, *args))[-1][4]["shown"]]
    assert first == again
    preview = tab_sample.render_preview(tiny_run, explorer_service.tokenizer, 1.3, 0, 1.0, 21)
    fig = preview.distribution
    chosen = [label for label in fig.data[0].y if label.startswith("▶")]
    assert explorer_service.tokenizer.token(first[0]).display in chosen[0]
    assert all(math.isfinite(x) for trace in fig.data for x in trace.x)  # the drawn token's bars too
    assert "seed 21" in preview.status


def test_step_selection_clamps_and_marks_the_selected_token(explorer_service, tiny_run):
    generation = list(stream_views(explorer_service, tiny_run, 0, 0, 1.0, 0, 3))[-1][4]
    fig, html_text = tab_sample.step_view(explorer_service.tokenizer, generation, 99)
    assert fig.layout.title.text.startswith("Step 3 of 3")
    fig, _ = tab_sample.step_view(explorer_service.tokenizer, generation, float("nan"))
    assert fig.layout.title.text.startswith("Step 3 of 3")
    fig, _ = tab_sample.step_view(explorer_service.tokenizer, generation, -4)
    assert fig.layout.title.text.startswith("Step 1 of 3")


@pytest.mark.parametrize(
    "settings",
    [
        SamplingSettings(temperature=1.0, seed=3),
        SamplingSettings(temperature=0.7, top_k=5, seed=3),
        SamplingSettings(temperature=1.0, top_p=0.3, seed=3),
        SamplingSettings(temperature=0.0, seed=3),
    ],
)
def test_sample_n_counts(tiny_run, settings):
    logits = tiny_run.trace["logits"][-1]
    probs = filtered_distribution(logits, settings)
    ids, counts, expected = tab_sample.draw_counts(logits, settings, 300)
    assert counts.sum() == 300
    assert (probs[ids] > 0).all()
    np.testing.assert_array_equal(expected, probs[ids])
    again = tab_sample.draw_counts(logits, settings, 300)
    np.testing.assert_array_equal(again[0], ids)
    np.testing.assert_array_equal(again[1], counts)


def test_sample_n_figure_sums_to_n_and_first_draw_matches_choose(tiny_model, tiny_run):
    tokenizer = tiny_model.tokenizer
    logits = tiny_run.trace["logits"][-1]
    settings = SamplingSettings(temperature=1.0, seed=8)
    fig, note = tab_sample.histogram_figure(tokenizer, logits, settings, 500, tiny_run.token_ids)
    drawn, expected = fig.data
    assert sum(drawn.x) == 500
    assert sum(expected.x) == pytest.approx(500)
    assert "500 draws" in note
    # the first draw is what the generator's first step draws with the same seed
    first = tab_sample.draw_tokens(filtered_distribution(logits, settings), 1, 8)[0]
    step = next(tiny_model.stream(list(tiny_run.token_ids), 1, settings))
    assert first == step.token_id
    # with few kept tokens every row is a token the filters keep, and nothing is summed away
    narrow = SamplingSettings(temperature=1.0, top_k=4, seed=8)
    fig, _ = tab_sample.histogram_figure(tokenizer, logits, narrow, 200, tiny_run.token_ids)
    kept = np.argsort(-filtered_distribution(logits, narrow))[:4]
    assert len(fig.data[0].y) <= 4 and sum(fig.data[0].x) == 200
    assert set(fig.data[0].y) <= set(tab_sample.token_labels(tokenizer, kept.tolist()))


def test_sample_n_is_capped_and_the_same_seed_repeats(explorer_service, tiny_run):
    tokenizer = explorer_service.tokenizer
    cap = explorer_service.settings.max_sample_draws
    samples = tab_sample.render_samples(tiny_run, tokenizer, explorer_service.settings, 1.0, 0, 1.0, 4, 10**9)
    fig = samples.histogram
    assert sum(fig.data[0].x) == cap and f"{cap} draws" in samples.histogram_note
    again = tab_sample.render_samples(tiny_run, tokenizer, explorer_service.settings, 1.0, 0, 1.0, 4, 10**9).histogram
    assert fig.to_dict() == again.to_dict()


@pytest.mark.parametrize(
    "temperature, top_k, top_p, seed, message",
    [
        (1.0, -3, 1.0, 0, "top_k"),
        (float("nan"), 0, 1.0, 0, "temperature"),
        (None, 0, 1.0, 0, "temperature"),
        ("hot", 0, 1.0, 0, "temperature"),
        (1.0, 2.5, 1.0, 0, "top_k"),
        (1.0, 0, 0.0, 0, "top_p"),
        (1.0, 0, float("inf"), 0, "top_p"),
        (-1.0, 0, 1.0, 0, "temperature"),
        (1.0, 0, 1.0, -1, "seed"),
        (1.0, 0, 1.0, float("nan"), "seed"),
    ],
)
def test_bad_settings_give_a_message(explorer_service, tiny_run, temperature, top_k, top_p, seed, message):
    with pytest.raises(InputError, match=message):
        tab_sample.sampling_settings(temperature, top_k, top_p, seed)
    # through the guarded handlers: a message in the status, plots saying it, no exception
    stream = tab_sample.guarded("text", "plot", "text", "keep", "keep", "keep")(stream_views)
    outputs = list(stream(explorer_service, tiny_run, temperature, top_k, top_p, seed, 5))
    assert len(outputs) == 1
    status, fig, *_ = outputs[0]
    assert status.startswith("⚠️") and message in status
    assert message in fig.layout.annotations[0].text.replace("<br>", " ")  # wrapped to fit a phone
    sample = tab_sample.guarded("plot", "text")(tab_sample.render_samples)
    fig, note = sample(
        tiny_run, explorer_service.tokenizer, explorer_service.settings, temperature, top_k, top_p, seed, 10
    )
    assert note.startswith("⚠️") and message in note


def test_blank_seed_draws_a_fresh_one_and_says_which():
    settings = tab_sample.with_seed(tab_sample.sampling_settings(1.0, 0, 1.0, None))
    assert isinstance(settings.seed, int)
    assert f"seed {settings.seed}" in tab_sample.settings_text(settings)


def test_max_new_tokens_is_capped(explorer_service, tiny_run):
    cap = explorer_service.settings.max_new_tokens
    outputs = list(stream_views(explorer_service, tiny_run, 0, 0, 1.0, 0, 10**9))
    assert len(outputs[-1][4]["shown"]) <= cap
    outputs = list(stream_views(explorer_service, tiny_run, 0, 0, 1.0, 0, math.nan))
    assert 1 <= len(outputs[-1][4]["shown"]) <= cap


def test_without_a_run_every_view_says_so(explorer_service):
    tokenizer = explorer_service.tokenizer
    assert tab_sample.render_preview(None, tokenizer, 1.0, 0, 1.0, 0).status == NO_RUN
    samples = tab_sample.render_samples(None, tokenizer, explorer_service.settings, 1.0, 0, 1.0, 0, 10)
    assert samples.histogram_note == NO_RUN
    ((status, *_),) = list(stream_views(explorer_service, None, 1.0, 0, 1.0, 0, 5))
    assert status == NO_RUN


def test_text_is_escaped(tiny_model):
    tokenizer = tiny_model.tokenizer
    prompt = tokenizer.encode("<script>alert(1)</script> &")
    html_text = tab_sample.text_html(tokenizer, prompt, tokenizer.encode(" <b>"), 1)
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text
    assert "<b>" not in html_text and " &lt;</mark>" in html_text and "b&gt;</mark>" in html_text


def test_the_tab_builds(explorer_service):
    _, ctx = build_tab(tab_sample, explorer_service)
    (view,) = ctx.views.values()
    assert view.tab_id == "sample" and len(view.controls) == 5
    assert tab_sample.export_generation(None) is None  # nothing to export before a generation
