"""The Logits tab: candidates, entropy and token ranks against an independent softmax of its logits.

The tab's logits at every position come from the MAX analysis graph (``NextTokens.logits``: a
Run's trace keeps only its last row); they are checked against the trace graph's own logits
at every position first, then the tab's numbers against a float64 softmax of them."""

from __future__ import annotations

import numpy as np
import pytest
from tab_helpers import export_with_defaults, refresh_with_defaults

from components import tab_logits
from components.common import NO_RUN


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
    assert tiny_run.labels[p] in fig.layout.title.text
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
