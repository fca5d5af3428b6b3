"""The Logits tab: candidates, entropy and token ranks against an independent softmax of its logits.

The tab's logits at every position come from the MAX analysis graph (``NextTokens.logits``: a
Run's trace keeps only its last row); they are checked against the trace graph's own logits
at every position first, then the tab's numbers against a float64 softmax of them."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from conftest import EXAMPLE_TEXT as EXAMPLE
from tab_helpers import build_view, export_with_defaults, refresh_with_defaults, title_of

from components import compare, tab_logits
from components.common import NO_RUN
from components.plots import plot_text


def float64_softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# The Logits tab's top-k, entropy and surprise come from the MAX analysis graph in float32:
# the tolerances of tests/test_analysis.py (reasoned there).
PROB_RTOL = 1e-4
ENTROPY_ATOL = 1e-4
# The analysis graph's ln_f(resid) @ wte^T against the trace graph's: the same float32 math
# summed in another order, ~1e-7 relative on logits of order 1.
LOGIT_ATOL = 1e-5


@pytest.fixture(scope="module")
def nxt(explorer_service, tiny_run):
    """The Run's next-token analysis from the MAX analysis graph (tested against numpy in test_analysis)."""
    result, why = explorer_service.analysis(tiny_run, "next")
    assert result is not None, why
    return result


def test_the_tabs_logits_are_the_trace_graphs_at_every_position(tiny_run, nxt, full_logits):
    assert nxt.logits.shape == full_logits.shape == (tiny_run.n_tokens, tiny_run.config.vocab_size)
    np.testing.assert_allclose(nxt.logits, full_logits, atol=LOGIT_ATOL, rtol=0)
    # The Run's own trace keeps the last row, the same graph's.
    assert tiny_run.trace["logits"].shape == (1, tiny_run.config.vocab_size)
    np.testing.assert_allclose(tiny_run.trace["logits"][0], full_logits[-1], atol=LOGIT_ATOL, rtol=0)


def entropy_bits(p):
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@pytest.fixture(scope="module")
def tokenizer(explorer_service):
    return explorer_service.tokenizer


@pytest.mark.parametrize("position", [0, 5, None])
def test_candidates_are_the_sorted_softmax_of_that_positions_logits(tiny_run, tokenizer, position, nxt):
    fig = tab_logits.render(tiny_run, nxt, tokenizer, position).candidates
    p = tiny_run.n_tokens - 1 if position is None else position  # default: the last position
    probs = float64_softmax(nxt.logits[p])
    bar = fig.data[0]
    # The bars are the analysis graph's top 15 (float32; test_analysis checks it against numpy at
    # PROB_RTOL, ties in any order): the 15 largest probabilities, sorted, labelled with their ids.
    order = nxt.top_ids[p, :15]
    np.testing.assert_allclose(np.asarray(bar.x), np.sort(probs)[::-1][:15], rtol=PROB_RTOL)
    np.testing.assert_allclose(probs[order], np.asarray(bar.x), rtol=PROB_RTOL)
    assert np.all(np.diff(np.asarray(bar.x)) <= 0)
    assert list(bar.y) == [f"{r}. {tokenizer.token(int(t)).display}" for r, t in enumerate(order, start=1)]
    assert [f"token id {t}<br>" in text for t, text in zip(order, bar.text)] == [True] * 15
    assert tiny_run.labels[p] in title_of(fig)
    assert fig.layout.height


def test_entropy_per_position_in_bits(tiny_run, tokenizer, nxt):
    fig = tab_logits.render(tiny_run, nxt, tokenizer, 3).entropy
    entropy, surprise, chosen = fig.data
    probs = float64_softmax(nxt.logits)
    expected = [entropy_bits(row) for row in probs]
    np.testing.assert_allclose(np.asarray(entropy.y, dtype=float), expected, atol=ENTROPY_ATOL, rtol=0)
    assert list(entropy.x) == tiny_run.labels
    # Surprise of the actual next token: -log2 p(token t+1) at position t, none at the last.
    ids = tiny_run.token_ids
    expected_surprise = [-np.log2(probs[t, ids[t + 1]]) for t in range(len(ids) - 1)]
    np.testing.assert_allclose(np.asarray(surprise.y[:-1], dtype=float), expected_surprise, atol=ENTROPY_ATOL, rtol=0)
    assert surprise.y[-1] is None or np.isnan(surprise.y[-1])
    assert surprise.text[0] == f"actual next token {tiny_run.tokens[1].display}"
    assert list(chosen.x) == [tiny_run.labels[3]] and chosen.y[0] == pytest.approx(expected[3], abs=ENTROPY_ATOL)
    # The tiny random model is nearly uniform: close to the log2(50,257) maximum.
    assert max(expected) <= np.log2(50257)


def test_summary_entropy_and_actual_next_token(tiny_run, tokenizer, nxt):
    position = 4
    summary = tab_logits.render(tiny_run, nxt, tokenizer, position).summary
    probs = float64_softmax(nxt.logits[position])
    actual = tiny_run.token_ids[position + 1]
    rank = 1 + int(np.count_nonzero(probs > probs[actual]))
    shown = nxt.entropy_bits[position]  # the analysis graph's float32 entropy, within ENTROPY_ATOL of numpy's
    assert shown == pytest.approx(entropy_bits(probs), abs=ENTROPY_ATOL)
    assert f"**Entropy: {shown:.3f} bits**" in summary and f"{2.0**shown:,.1f}" in summary
    assert f"(id {actual}) has p = {probs[actual]:.4g}, rank {rank:,} of 50,257" in summary
    last = tab_logits.render(tiny_run, nxt, tokenizer, None).summary
    assert "This is the last position" in last


@pytest.mark.parametrize("typed", [" the", " mat", "cat", "!"])
def test_typed_token_rank_and_probability(tiny_run, tokenizer, typed, nxt):
    position = 6
    text = tab_logits.render(tiny_run, nxt, tokenizer, position, typed).typed
    token_id = tokenizer.encode(typed)[0]
    probs = float64_softmax(nxt.logits[position])
    rank = 1 + int(np.count_nonzero(probs > probs[token_id]))
    # md_text backslash-escapes punctuation in user text; Markdown shows it without the backslashes.
    assert f"Used token {tokenizer.token(token_id).display!r} (id {token_id})" in text.replace("\\", "")
    assert f"**rank {rank:,}**" in text and f"**probability {probs[token_id]:.4g}**" in text
    assert tab_logits.rank_of(probs, token_id) == rank
    # The most likely token ranks 1.
    assert tab_logits.rank_of(probs, int(np.argmax(probs))) == 1


def test_typed_text_of_several_tokens_uses_the_first(tiny_run, tokenizer, nxt):
    typed = " unbelievably"
    ids = tokenizer.encode(typed)
    text = tab_logits.typed_markdown(tiny_run, nxt, tokenizer, None, typed)
    assert f"(id {ids[0]})" in text
    if len(ids) > 1:
        assert f"the first of the {len(ids)} tokens" in text


@pytest.mark.parametrize("typed", ["", None])
def test_empty_typed_text_shows_a_hint(tiny_run, tokenizer, typed, nxt):
    assert tab_logits.render(tiny_run, nxt, tokenizer, 2, typed).typed == tab_logits.TYPED_HINT


def test_out_of_range_positions_are_clamped(tiny_run, tokenizer, nxt):
    T = tiny_run.n_tokens
    for raw, expected in ((10_000, T - 1), (-3, 0), ("2", 2), (None, T - 1), ("junk", T - 1)):
        got = tab_logits.render(tiny_run, nxt, tokenizer, raw, " the")
        want = tab_logits.render(tiny_run, nxt, tokenizer, expected, " the")
        assert got.candidates.to_json() == want.candidates.to_json()
        assert (got.summary, got.typed) == (want.summary, want.typed)


def test_tensors_for_download(tiny_run, nxt):
    arrays = tab_logits.tensors(tiny_run, nxt, 2)
    probs = float64_softmax(nxt.logits[2])
    np.testing.assert_array_equal(arrays["logits"], nxt.logits[2])
    np.testing.assert_allclose(arrays["top_probs"][2, :15], np.sort(probs)[::-1][:15], rtol=PROB_RTOL)
    assert arrays["entropy_bits"].shape == (tiny_run.n_tokens,)


def test_no_run_shows_a_message(tokenizer):
    views = tab_logits.render(None, "", tokenizer, 0, " the")
    assert views.summary == NO_RUN and views.candidates.layout.annotations[0].text == NO_RUN
    assert tab_logits.typed_markdown(None, NO_RUN, tokenizer, 0, " the") == NO_RUN


def test_built_tab_refreshes_after_a_run(explorer_service, tiny_run):
    refresh_with_defaults(tab_logits, explorer_service, tiny_run)
    path = export_with_defaults(
        tab_logits, explorer_service, tiny_run, None, "", ""
    )  # position, attribution target, minus
    assert str(path).endswith(".npz")
    with np.load(path) as data:
        assert list(data["token_ids"]) == list(tiny_run.token_ids)


# -- two prompts side by side ---------------------------------------------------------------------

COMPARE_TEXT = "The dog sat on the mat. The dog sat on the"
# The compare view's probabilities are a float64 softmax of each Run's own last logits row (float32,
# from the trace); the reference is another float64 softmax of the same row. Only the order of the
# sum over the V = 50,257 terms differs (~1e-16 relative each), far inside 1e-12.
CROSS_RTOL = 1e-12


@pytest.fixture(scope="module")
def other_run(explorer_service):
    """B: the example with one word changed, a live Run through the same service."""
    return explorer_service.run(COMPARE_TEXT)


def test_compare_shows_each_runs_top_tokens_with_their_probability_under_the_other(tiny_run, other_run, tokenizer, nxt):
    views = tab_logits.render(tiny_run, nxt, tokenizer, None, "", other_run)
    assert views.compare_panel["visible"] is True
    pa, pb = float64_softmax(tiny_run.trace["logits"][-1]), float64_softmax(other_run.trace["logits"][-1])
    n = tab_logits.TOP_COMPARED
    for fig, (top, other), names in (
        (views.a_under_b, (pa, pb), ("A", "B")),
        (views.b_under_a, (pb, pa), ("B", "A")),
    ):
        own, under = fig.data
        ids = np.asarray(own.customdata)
        assert list(under.customdata) == list(ids)  # the same tokens in both series
        # The top run's n most likely tokens in order, with their probability there and under the other.
        np.testing.assert_allclose(np.asarray(own.x), np.sort(top)[::-1][:n], rtol=CROSS_RTOL)
        np.testing.assert_allclose(np.asarray(own.x), top[ids], rtol=CROSS_RTOL)
        np.testing.assert_allclose(np.asarray(under.x), other[ids], rtol=CROSS_RTOL)
        assert list(own.y) == [plot_text(f"{r}. {tokenizer.token(int(t)).display}") for r, t in enumerate(ids, 1)]
        assert own.name.startswith(f"after {names[0]}") and under.name.startswith(f"after {names[1]}")
        assert title_of(fig).startswith(f"{names[0]}'s top {n} next tokens")
        assert fig.layout.xaxis.type == "log"
    summary = views.compare_summary
    ta, tb = int(np.argmax(pa)), int(np.argmax(pb))
    assert f"(p = {pa[ta]:.4g}), which has p = {pb[ta]:.4g} after **B**" in summary
    assert f"(p = {pb[tb]:.4g}), which has p = {pa[tb]:.4g} after A" in summary
    assert f"**{0.5 * np.abs(pa - pb).sum():.3f}** in total variation" in summary


def test_without_a_compare_prompt_the_panel_is_hidden_and_nothing_is_drawn(tiny_run, tokenizer, nxt):
    views = tab_logits.render(tiny_run, nxt, tokenizer)
    assert views.compare_panel["visible"] is False
    assert all(v == gr.skip() for v in (views.a_under_b, views.b_under_a, views.compare_summary))
    waiting = tab_logits.render(tiny_run, nxt, tokenizer, None, "", compare.WAITS_FOR_MODEL)
    assert waiting.compare_panel["visible"] is True and waiting.compare_summary == str(compare.WAITS_FOR_MODEL)
    assert compare.WAITS_FOR_MODEL.brief in waiting.a_under_b.layout.annotations[0].text.replace("<br>", " ")


def run_both(service, text, model_name, compare_text):
    """The app's Run of A and B (compare.run_both) on ``service``'s parts."""
    return compare.run_both(
        text, model_name, compare_text, run=service.run, settings=service.settings, runs_together=service.runs_together
    )


def test_a_compare_run_is_one_more_trace_through_the_same_batched_path(explorer_service):
    """A and B go through ExplorerService.run together: one trace-graph execution serves both
    (the scheduler's batch), and both are in the trace store for the views."""
    a, b, why = run_both(explorer_service, "A prompt of its own, never run before", None, "And its B, also new")
    assert why == "" and b is not None
    assert (a.batched, b.batched) == (2, 2)  # one execution for the two Runs
    assert explorer_service.store.get(a.request.key) is a and explorer_service.store.get(b.request.key) is b
    assert compare.compare_of(explorer_service.from_request, a, b.request) is b
    alone, none, why = run_both(explorer_service, "A prompt of its own, never run before", None, "  \n")
    assert none is None and why == "" and alone is a  # an empty compare prompt: A alone, from the store


@pytest.mark.parametrize(
    "bad, said",
    [("x" * 20_001, "the compare prompt has 20,001 characters"), (["a list"], "the compare prompt must be text")],
)
def test_a_bad_compare_prompt_is_left_out_with_a_message_and_a_still_runs(explorer_service, bad, said):
    a, b, why = run_both(explorer_service, EXAMPLE, None, bad)
    assert b is None and why.startswith(said) and a.text == EXAMPLE


def test_built_tab_draws_the_compare_prompt_from_its_request(explorer_service, tiny_run, other_run):
    view = build_view(tab_logits, explorer_service)
    assert view.controls[-1] is not None  # the page's compare state, a control of this view
    views = view.render(tiny_run.request, "", "", "", other_run.request)
    assert views.compare_panel["visible"] is True and "total variation" in views.compare_summary
    assert view.key(tiny_run.request, ["", "", "", None]) != view.key(tiny_run.request, ["", "", "", other_run.request])
