"""Tokenize tab: the figures show the Run's tokens, ids and the tokenizer's real merges."""

from __future__ import annotations

import time

import numpy as np
import pytest
from tab_helpers import export_with_defaults, refresh_with_defaults

from components import tab_tokenize
from components.common import NO_RUN
from gpt2_max.tokenizer import Tokenizer


def cell_rows(fig, key: str = "text") -> list[list[str]]:
    """A figure of coloured cells read back as rows of ``key`` (text or customdata), left to right;
    cells with no bar are missing from their row."""
    cells = fig.data[0]
    rows: dict[int, list[tuple[int, str]]] = {}
    for x, base, value in zip(cells.x, cells.base, getattr(cells, key)):
        rows.setdefault(int(base), []).append((x, value))
    return [[value for _, value in sorted(rows[r])] for r in sorted(rows)]


def test_token_grid_shows_every_token_with_its_id_in_reading_order(tiny_run, explorer_service):
    views, chunks = tab_tokenize.render_with_chunks(tiny_run, explorer_service.tokenizer)
    grid, counts = views.grid, views.counts
    cells = [t for row in cell_rows(grid) for t in row]
    assert cells == [f"{t.display}<br>{t.id}" for t in tiny_run.tokens]
    hovers = [h for row in cell_rows(grid, "customdata") for h in row]
    assert all(f"position {i}<br>" in h and f"id {t.id}" in h for i, (h, t) in enumerate(zip(hovers, tiny_run.tokens)))
    n_bytes = len(tiny_run.text.encode("utf-8"))
    assert f"{len(tiny_run.text):,} characters · {n_bytes:,} UTF-8 bytes · {tiny_run.n_tokens:,} tokens" in counts
    assert chunks == explorer_service.tokenizer.pretokenize(tiny_run.text)


def test_merge_replay_of_a_chosen_chunk_ends_at_its_tokens(tiny_run, explorer_service):
    tokenizer = explorer_service.tokenizer
    chunks = tokenizer.pretokenize(tiny_run.text)
    index = chunks.index(" cat")
    views = tab_tokenize.render(tiny_run, tokenizer, index)
    merges, table = views.merges, views.table
    rows = cell_rows(merges)
    final = [cell for cell in rows[-1] if cell]
    assert final == [f"␣cat<br>{tokenizer.encode(' cat')[0]}"]
    assert [cell.split("<br>")[0] for cell in rows[0]] == ["␣", "c", "a", "t"]
    assert "| 1 |" in table and "<code>␣cat</code> (vocabulary: <code>Ġcat</code>)" in table


def test_the_merge_table_writes_bytes_as_the_chart_does(explorer_service):
    """The chart wrote é's bytes <0xC3><0xA9>, the table GPT-2's byte alphabet Ã©, unexplained:
    the table now writes the chart's notation and gives the vocabulary's spelling in brackets, explained."""
    run = explorer_service.run("café")
    tokenizer = explorer_service.tokenizer
    chunks = tokenizer.pretokenize(run.text)
    views = tab_tokenize.render(run, tokenizer, len(chunks) - 1)
    merges, table = views.merges, views.table
    chart_parts = [cell.split("<br>")[0] for cell in cell_rows(merges)[0] if cell]
    assert "&lt;0xC3&gt;" in chart_parts and "&lt;0xA9&gt;" in chart_parts
    bytes_row = next(line for line in table.splitlines() if line.startswith("| bytes |"))
    assert "\\<0xC3\\>" in bytes_row and "Ã" not in bytes_row
    assert "(vocabulary: <code>" in table and "spells every byte as one printable character" in table


def test_token_cells_are_tall_enough_for_their_two_lines(tiny_run):
    """A one-row grid was 160 px with 120 px of margins: 40 px for a token and its id."""
    grid = tab_tokenize.token_grid(tiny_run)
    rows = len(cell_rows(grid))
    margin = grid.layout.margin
    assert (grid.layout.height - margin.t - margin.b) / rows >= tab_tokenize.TOKEN_ROW_PX >= 56


def test_out_of_range_chunk_is_clamped_and_no_run_says_what_to_do(tiny_run, explorer_service):
    views = tab_tokenize.render(tiny_run, explorer_service.tokenizer, 10_000)
    assert views.merges.data  # the last chunk, not a crash
    empty = tab_tokenize.render(None, explorer_service.tokenizer)
    assert empty.counts == NO_RUN and empty.grid.layout.annotations[0].text == NO_RUN


def test_built_tab_exports_the_token_ids(explorer_service, tiny_run):
    refresh_with_defaults(tab_tokenize, explorer_service, tiny_run)
    with np.load(export_with_defaults(tab_tokenize, explorer_service, tiny_run)) as data:
        np.testing.assert_array_equal(data["token_ids"], tiny_run.token_ids)


def test_partial_utf8_and_special_tokens_survive_plotly_markup(explorer_service):
    """Plotly reads '<...>' in labels as markup; token text like '<0xF0>' must be escaped."""
    run = explorer_service.run("🤗 <|endoftext|>")
    grid = tab_tokenize.render(run, explorer_service.tokenizer).grid
    cells = [t for row in cell_rows(grid) for t in row]
    assert any(c.startswith("&lt;0xF0&gt;") for c in cells), cells
    assert "<0x" not in "".join(cells).replace("<br>", "")
    from components.plots import heatmap

    fig = heatmap(np.zeros((1, run.n_tokens)), run.labels, ["row"], "t")
    assert all("<" not in label for label in fig.data[0].x)


def unescaped_pipes(line: str) -> int:
    return sum(1 for i, c in enumerate(line) if c == "|" and (i == 0 or line[i - 1] != "\\"))


def test_the_merges_table_holds_pipes_and_backticks(explorer_service):
    """A first chunk of | and backticks broke the table (8 pipes against the header's 5): the parts
    go through the one Markdown escaping helper, so every row keeps its 4 columns."""
    run = explorer_service.run("|`|``| `a|b` ** [x](y) <b>")
    for index in range(len(explorer_service.tokenizer.pretokenize(run.text))):
        table = tab_tokenize.render(run, explorer_service.tokenizer, index).table
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert len(rows) >= 3 and all(unescaped_pipes(row) == 5 for row in rows), table
        body = "\n".join(rows)
        assert "`" not in body.replace("\\`", ""), body


@pytest.mark.parametrize("character", ["0", "/", "=", "ÃÂ"])
def test_a_long_chunk_replays_its_first_and_last_steps_within_bounds(character):
    """One chunk of 4-32 KB (20,000 characters of one kind, cut to GPT-2 small's 256 tokens): every merge
    is replayed, but the figure and the table show the first and last steps, each as the parts around
    its merge, and say so; time and bytes stay bounded (issue 18: 10-88 s and 155-641 MB)."""
    from types import SimpleNamespace

    from components.plots import figure_json
    from explorer.settings import Settings

    tokenizer = Tokenizer()
    ids = tokenizer.encode(character * 20_000)[: Settings.max_prompt_tokens]
    text = tokenizer.decode(ids)
    run = SimpleNamespace(text=text, n_tokens=len(ids), tokens=tokenizer.tokens(ids), notice="")
    bound = Settings.max_replay_bytes
    started = time.perf_counter()
    views, chunks = tab_tokenize.render_with_chunks(run, tokenizer, 0, bound)
    grid, merges, counts, table = views.grid, views.merges, views.counts, views.table
    seconds = time.perf_counter() - started
    size = len(figure_json(grid)) + len(figure_json(merges)) + len(counts) + len(table)
    replay = tokenizer.merge_replay(chunks[0])
    print(
        f"\n{character!r}: chunk of {len(replay.data):,} bytes, {replay.steps:,} merges: {seconds:.2f} s, {size / 1e3:.0f} kB"
    )
    assert len(replay.data) > 4000 and seconds < 2.0 and size < 1_000_000
    rows = cell_rows(merges)
    assert len(rows) <= bound + 1 and max(map(len, rows)) <= bound + 2  # + the "⋮" row and the "…" columns
    labels = list(merges.layout.yaxis.ticktext)
    assert (
        labels[0] == "bytes"
        and labels[-1] == f"merge {replay.steps}"
        and any(label.startswith("⋮") for label in labels)
    )
    final = replay.parts(replay.boundaries(replay.steps))
    assert [tokenizer.rank(part) for part in final] == tokenizer.encode(chunks[0])
    assert "first and last" in table and "merges not shown" in table


def test_merge_replay_equals_a_scan_of_every_pair():
    """The heap-ordered replay makes the same merges, in the same order, as scanning every adjacent
    pair for the lowest rank (leftmost of equals) at every step."""
    tokenizer = Tokenizer()

    def scanned(chunk: str) -> list[list[bytes]]:
        parts = [bytes([b]) for b in chunk.encode("utf-8")]
        steps = [list(parts)]
        while len(parts) > 1:
            candidates = [
                (rank, i)
                for i, (a, b) in enumerate(zip(parts, parts[1:]))
                if (rank := tokenizer.rank(a + b)) is not None
            ]
            if not candidates:
                break
            _, i = min(candidates)
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
            steps.append(list(parts))
        return steps

    rng = np.random.default_rng(0)
    alphabet = list("ab /=0é🤗|`")
    texts = ["Hello world, GPT-2!", " tokenization", "/" * 200, "0" * 150, " aaaaaaaaaaaaaaaa"]
    texts += ["".join(rng.choice(alphabet, size=50)) for _ in range(100)]
    for text in texts:
        for chunk in tokenizer.pretokenize(text):
            assert tokenizer.merge_steps(chunk) == scanned(chunk), chunk
