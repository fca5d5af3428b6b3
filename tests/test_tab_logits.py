"""The Logits tab: candidates, entropy and token ranks against an independent softmax of the trace."""

from __future__ import annotations

import numpy as np
import pytest

from components import tab_logits
from components.common import NO_RUN
from tab_helpers import refresh_with_defaults


def float64_softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy_bits(p):
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@pytest.fixture(scope="module")
def tokenizer(explorer_service):
    return explorer_service.tokenizer


@pytest.mark.parametrize("position", [0, 5, None])
def test_candidates_are_the_sorted_softmax_of_that_positions_logits(tiny_run, tokenizer, position):
    fig = tab_logits.render(tiny_run, tokenizer, position)[0]
    p = tiny_run.n_tokens - 1 if position is None else position  # default: the last position
    probs = float64_softmax(tiny_run.trace["logits"][p])
    order = np.argsort(-probs, kind="stable")[:15]
    bar = fig.data[0]
    np.testing.assert_allclose(bar.x, probs[order], rtol=1e-9)
    assert np.all(np.diff(np.asarray(bar.x)) <= 0)
    assert list(bar.y) == [f"{r}. {tokenizer.token(int(t)).display}" for r, t in enumerate(order, start=1)]
    assert [f"token id {t}<br>" in text for t, text in zip(order, bar.text)] == [True] * 15
    assert tiny_run.labels[p] in fig.layout.title.text
    assert fig.layout.height


def test_entropy_per_position_in_bits(tiny_run, tokenizer):
    fig = tab_logits.render(tiny_run, tokenizer, 3)[1]
    entropy, surprise, chosen = fig.data
    probs = float64_softmax(tiny_run.trace["logits"])
    expected = [entropy_bits(row) for row in probs]
    np.testing.assert_allclose(entropy.y, expected, rtol=1e-9)
    assert list(entropy.x) == tiny_run.labels
    # Surprise of the actual next token: -log2 p(token t+1) at position t, none at the last.
    ids = tiny_run.token_ids
    expected_surprise = [-np.log2(probs[t, ids[t + 1]]) for t in range(len(ids) - 1)]
    np.testing.assert_allclose(np.asarray(surprise.y[:-1], dtype=float), expected_surprise, rtol=1e-9)
    assert surprise.y[-1] is None or np.isnan(surprise.y[-1])
    assert surprise.text[0] == f"actual next token {tiny_run.tokens[1].display}"
    assert list(chosen.x) == [tiny_run.labels[3]] and chosen.y[0] == pytest.approx(expected[3])
    # The tiny random model is nearly uniform: close to the log2(50,257) maximum.
    assert max(expected) <= np.log2(50257)


def test_summary_entropy_and_actual_next_token(tiny_run, tokenizer):
    position = 4
    summary = tab_logits.render(tiny_run, tokenizer, position)[2]
    probs = float64_softmax(tiny_run.trace["logits"][position])
    actual = tiny_run.token_ids[position + 1]
    rank = 1 + int(np.count_nonzero(probs > probs[actual]))
    assert f"**Entropy: {entropy_bits(probs):.3f} bits**" in summary
    assert f"{2.0 ** entropy_bits(probs):,.1f}" in summary
    assert f"(id {actual}) has p = {probs[actual]:.4g}, rank {rank:,} of 50,257" in summary
    last = tab_logits.render(tiny_run, tokenizer, None)[2]
    assert "This is the last position" in last


@pytest.mark.parametrize("typed", [" the", " mat", "cat", "!"])
def test_typed_token_rank_and_probability(tiny_run, tokenizer, typed):
    position = 6
    text = tab_logits.render(tiny_run, tokenizer, position, typed)[3]
    token_id = tokenizer.encode(typed)[0]
    probs = float64_softmax(tiny_run.trace["logits"][position])
    rank = 1 + int(np.count_nonzero(probs > probs[token_id]))
    assert f"Used token {tokenizer.token(token_id).display!r} (id {token_id})" in text
    assert f"**rank {rank:,}**" in text and f"**probability {probs[token_id]:.4g}**" in text
    assert tab_logits.rank_of(probs, token_id) == rank
    # The most likely token ranks 1.
    assert tab_logits.rank_of(probs, int(np.argmax(probs))) == 1


def test_typed_text_of_several_tokens_uses_the_first(tiny_run, tokenizer):
    typed = " unbelievably"
    ids = tokenizer.encode(typed)
    text = tab_logits.typed_markdown(tiny_run, tokenizer, None, typed)
    assert f"(id {ids[0]})" in text
    if len(ids) > 1:
        assert f"the first of the {len(ids)} tokens" in text


@pytest.mark.parametrize("typed", ["", None])
def test_empty_typed_text_shows_a_hint(tiny_run, tokenizer, typed):
    assert tab_logits.render(tiny_run, tokenizer, 2, typed)[3] == tab_logits.TYPED_HINT


def test_out_of_range_positions_are_clamped(tiny_run, tokenizer):
    T = tiny_run.n_tokens
    for raw, expected in ((10_000, T - 1), (-3, 0), ("2", 2), (None, T - 1), ("junk", T - 1)):
        got = tab_logits.render(tiny_run, tokenizer, raw, " the")
        want = tab_logits.render(tiny_run, tokenizer, expected, " the")
        assert got[0].to_json() == want[0].to_json()
        assert got[2:] == want[2:]


def test_tensors_for_download(tiny_run):
    arrays = tab_logits.tensors(tiny_run, 2)
    probs = float64_softmax(tiny_run.trace["logits"][2])
    np.testing.assert_array_equal(arrays["logits"], tiny_run.trace["logits"][2])
    np.testing.assert_allclose(arrays["top_probs"], np.sort(probs)[::-1][:15], rtol=1e-9)
    assert arrays["entropy_bits"].shape == (tiny_run.n_tokens,)


def test_no_run_shows_a_message(tokenizer):
    candidates, entropy, summary, typed = tab_logits.render(None, tokenizer, 0, " the")
    assert summary == NO_RUN and candidates.layout.annotations[0].text == NO_RUN
    assert tab_logits.typed_markdown(None, tokenizer, 0, " the") == NO_RUN


def test_built_tab_refreshes_after_a_run(explorer_service, tiny_run):
    values = refresh_with_defaults(tab_logits, explorer_service, tiny_run)
    path = values[-1]  # the download button's .npz
    assert str(path).endswith(".npz")
    with np.load(path) as data:
        assert list(data["token_ids"]) == list(tiny_run.token_ids)
