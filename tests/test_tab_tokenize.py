"""Tokenize tab: the figures show the Run's tokens, ids and the tokenizer's real merges."""

from __future__ import annotations

import numpy as np

from components import tab_tokenize
from components.common import NO_RUN
from tab_helpers import export_with_defaults, refresh_with_defaults


def test_token_grid_shows_every_token_with_its_id_in_reading_order(tiny_run, explorer_service):
    grid, _, counts, _, chunks = tab_tokenize.render(tiny_run, explorer_service.tokenizer)
    cells = [t for row in grid.data[0].text for t in row if t]
    assert cells == [f"{t.display}<br>{t.id}" for t in tiny_run.tokens]
    hovers = [h for row in grid.data[0].customdata for h in row if h]
    assert all(f"position {i}<br>" in h and f"id {t.id}" in h for i, (h, t) in enumerate(zip(hovers, tiny_run.tokens)))
    n_bytes = len(tiny_run.text.encode("utf-8"))
    assert f"{len(tiny_run.text):,} characters · {n_bytes:,} UTF-8 bytes · {tiny_run.n_tokens:,} tokens" in counts
    assert chunks == explorer_service.tokenizer.pretokenize(tiny_run.text)


def test_merge_replay_of_a_chosen_chunk_ends_at_its_tokens(tiny_run, explorer_service):
    tokenizer = explorer_service.tokenizer
    chunks = tokenizer.pretokenize(tiny_run.text)
    index = chunks.index(" cat")
    _, merges, _, table, _ = tab_tokenize.render(tiny_run, tokenizer, index)
    rows = merges.data[0].text
    final = [cell for cell in rows[-1] if cell]
    assert final == [f"␣cat<br>{tokenizer.encode(' cat')[0]}"]
    assert [cell.split("<br>")[0] for cell in rows[0]] == ["␣", "c", "a", "t"]
    assert "| 1 |" in table and "`Ġcat`" in table


def test_out_of_range_chunk_is_clamped_and_no_run_says_what_to_do(tiny_run, explorer_service):
    figures = tab_tokenize.render(tiny_run, explorer_service.tokenizer, 10_000)
    assert figures[1].data  # the last chunk, not a crash
    empty = tab_tokenize.render(None, explorer_service.tokenizer)
    assert empty[2] == NO_RUN and empty[0].layout.annotations[0].text == NO_RUN


def test_built_tab_exports_the_token_ids(explorer_service, tiny_run):
    refresh_with_defaults(tab_tokenize, explorer_service, tiny_run)
    with np.load(export_with_defaults(tab_tokenize, explorer_service, tiny_run)) as data:
        np.testing.assert_array_equal(data["token_ids"], tiny_run.token_ids)


def test_partial_utf8_and_special_tokens_survive_plotly_markup(explorer_service):
    """Plotly reads '<...>' in labels as markup; token text like '<0xF0>' must be escaped."""
    run = explorer_service.run("🤗 <|endoftext|>")
    grid = tab_tokenize.render(run, explorer_service.tokenizer)[0]
    cells = [t for row in grid.data[0].text for t in row if t]
    assert any(c.startswith("&lt;0xF0&gt;") for c in cells), cells
    assert "<0x" not in "".join(cells).replace("<br>", "")
    from components.plots import heatmap

    fig = heatmap(np.zeros((1, run.n_tokens)), run.labels, ["row"], "t")
    assert all("<" not in label for label in fig.data[0].x)
