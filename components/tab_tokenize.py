"""Tokenize: the text as GPT-2's tokens, with ids, counts and the byte-pair merges replayed."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from components.common import (
    NO_RUN,
    AppContext,
    clamp,
    export_controls,
    intro,
    md_text,
    named_outputs,
    source_block,
    views_only,
)
from components.plots import figure, message_figure, plot_text
from explorer.runs import Run
from explorer.settings import Settings
from gpt2_max.tokenizer import BYTE_TO_SYMBOL, MergeReplay, Tokenizer, display_bytes

TOKENS_PER_ROW = 12
# A row of token cells: two lines of 14 px text (the token, its id) and the gaps around them.
TOKEN_ROW_PX = 60
# A chunk's text in the chunk menu and the merge figure's title: a long one is cut to this.
CHUNK_LABEL_CHARS = 40
# Okabe-Ito: distinguishable with every common colour-vision deficiency.
PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"]

# The tab's outputs, by name: the token grid, the merge figure, the counts, the merge table, and the
# chunk menu a Run refills.
TokenizeViews = named_outputs("grid", "merges", "counts", "table", "chunk")

INTRO = intro(
    "1 · Tokenize",
    "GPT-2 never sees letters: it sees token ids. The text is cut into chunks (words with their "
    "leading space, numbers, punctuation), each chunk's UTF-8 bytes are merged pair by pair into "
    "the longest pieces the 50,257-entry vocabulary knows, and each piece becomes an id. "
    "**␣** marks a leading space (GPT-2's vocabulary writes it **Ġ**), **↵** a newline (**Ċ**); "
    "`<0xE2>` is one byte of a character split across tokens.",
    [("token_ids", "[T] int64"), ("vocabulary", "50,257 entries: 256 bytes + 50,000 merges + &lt;|endoftext|&gt;")],
)


def coloured_cells(colour_index: np.ndarray, text: np.ndarray, hover: np.ndarray) -> dict:
    """Cells coloured by ``colour_index`` [rows, columns] (a PALETTE index, NaN = no colour) and
    labelled with ``text``, as one bar per cell that has a colour or a text, in reading order, row
    ``r`` spanning ``r`` to ``r + 1`` on the y axis. Bars, not a heatmap: Plotly shrinks a bar's text
    to fit its bar (on a phone a 12-token row has ~30 px a cell), where a heatmap's labels ran into
    each other on a narrow screen."""
    rows, columns = np.nonzero(~np.isnan(colour_index) | (text != ""))
    colours = [
        "rgba(0,0,0,0)" if np.isnan(colour_index[r, c]) else PALETTE[int(colour_index[r, c])]
        for r, c in zip(rows, columns)
    ]
    return dict(
        type="bar",
        x=columns.tolist(),
        y=[0.92] * len(rows),  # the gap between rows
        base=(rows + 0.04).tolist(),
        width=0.94,
        marker=dict(color=colours, line=dict(width=0)),
        text=text[rows, columns].tolist(),
        textposition="inside",
        insidetextanchor="middle",
        textangle=0,
        textfont=dict(size=14),
        constraintext="inside",
        customdata=hover[rows, columns].tolist(),
        hovertemplate="%{customdata}<extra></extra>",
        showlegend=False,
    )


def cell_layout(rows: int, row_labels: list[str] | None = None) -> dict:
    """The axes of a figure of ``coloured_cells``: row 0 at the top, a row label (if any) beside each row."""
    y_axis = dict(range=[rows, 0], showgrid=False, zeroline=False, fixedrange=True)
    if row_labels is None:
        y_axis["visible"] = False
    else:
        y_axis |= dict(tickvals=[r + 0.5 for r in range(rows)], ticktext=row_labels, ticks="")
    return dict(
        xaxis=dict(visible=False, fixedrange=True),
        yaxis=y_axis,
        bargap=0,
    )


def token_grid(run: Run) -> go.Figure:
    """The tokens as coloured cells, in reading order, each labelled with its text and id."""
    n = run.n_tokens
    rows = (n + TOKENS_PER_ROW - 1) // TOKENS_PER_ROW
    colour_index = np.full((rows, TOKENS_PER_ROW), np.nan)
    text = np.full((rows, TOKENS_PER_ROW), "", dtype=object)
    hover = np.full((rows, TOKENS_PER_ROW), "", dtype=object)
    for position, token in enumerate(run.tokens):
        r, c = divmod(position, TOKENS_PER_ROW)
        colour_index[r, c] = position % len(PALETTE)
        text[r, c] = f"{plot_text(token.display)}<br>{token.id}"
        hover[r, c] = (
            f"position {position}<br>token {plot_text(repr(token.display))}<br>id {token.id}<br>"
            f"bytes {token.bytes.hex(' ')}<br>vocabulary spelling {token.symbol}"
        )
    return figure(
        [coloured_cells(colour_index, text, hover)],
        f"{n} tokens (text and id per cell)",
        height=TOKEN_ROW_PX * rows + 80,
        margin=dict(l=20, r=20, t=60, b=20),  # no axes to label: the height is the cells'
        **cell_layout(rows),
    )


@dataclass(frozen=True)
class ShownStep:
    """One step of a merge replay as the tab draws it: a window of the parts after that step."""

    step: int  # merges done (0: the bytes)
    first: int  # index of the first part shown
    parts: list[bytes]  # the parts shown, at most max_replay_bytes
    total: int  # parts after this step
    merged: bytes | None  # the part this step made (None for the bytes)

    @property
    def label(self) -> str:
        return "bytes" if self.step == 0 else f"merge {self.step}"


def shown_steps(replay: MergeReplay, max_bytes: int) -> list[ShownStep]:
    """The steps drawn: all of a chunk of up to ``max_bytes`` bytes; of a longer one the first and
    the last ``max_bytes // 2``, each as the ``max_bytes`` parts around the pair it merged."""
    if len(replay.data) <= max_bytes:
        chosen = list(range(replay.steps + 1))
    else:
        half = max_bytes // 2
        chosen = sorted(
            set(range(min(half, replay.steps + 1))) | set(range(max(0, replay.steps + 1 - half), replay.steps + 1))
        )
    rows = []
    for step in chosen:
        cuts = replay.boundaries(step)  # [parts + 1] byte offsets
        total = len(cuts) - 1
        start, _, end = replay.merges[step - 1] if step else (0, 0, 0)
        centre = bisect.bisect_left(cuts, start)  # the merged part's index (0 for the bytes)
        first = max(0, min(centre - max_bytes // 2, total - max_bytes))
        parts = replay.parts(cuts[first : first + max_bytes + 1])
        rows.append(ShownStep(step, first, parts, total, replay.data[start:end] if step else None))
    return rows


def chunk_text(chunk: bytes, limit: int = CHUNK_LABEL_CHARS) -> str:
    """A chunk as readable text for a label or title, cut to ``limit`` characters."""
    shown = display_bytes(chunk)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def replay_note(replay: MergeReplay, rows: list[ShownStep], max_bytes: int) -> str:
    """What a long chunk's replay leaves out ("" when every step and part is shown)."""
    if len(replay.data) <= max_bytes:
        return ""
    return (
        f"{len(replay.data):,} bytes, {replay.steps:,} merges: the first and last {max_bytes // 2} steps are shown "
        f"({replay.steps + 1 - len(rows):,} skipped), each as the {max_bytes} parts around the pair it merged"
    )


def merge_figure(tokenizer: Tokenizer, replay: MergeReplay, rows: list[ShownStep], max_bytes: int) -> go.Figure:
    """One row per shown step: the parts after it, as in token_grid; "…" where parts or steps are left out."""
    # The parts, and a "…" cell before and after them where a row is cut.
    lead = int(any(row.first > 0 for row in rows))
    width = (
        lead + max(len(row.parts) for row in rows) + int(any(row.first + len(row.parts) < row.total for row in rows))
    )
    labels, colour_rows, text_rows, hover_rows = [], [], [], []
    for index, row in enumerate(rows):
        if index and row.step > rows[index - 1].step + 1:
            labels.append(f"⋮ {row.step - rows[index - 1].step - 1:,} merges")
            colour_rows.append([np.nan] * width)
            text_rows.append([""] * width)
            hover_rows.append([""] * width)
        colours, texts, hovers = [np.nan] * width, [""] * width, [""] * width
        if row.first > 0:
            texts[0] = "…"
        for offset, part in enumerate(row.parts):
            part_index = row.first + offset
            rank = tokenizer.rank(part)
            colours[lead + offset] = part_index % len(PALETTE)
            texts[lead + offset] = f"{plot_text(display_bytes(part))}<br>{'' if rank is None else rank}"
            hovers[lead + offset] = f"{row.label}: part {part_index + 1} of {row.total:,}: {texts[lead + offset]}"
        if row.first + len(row.parts) < row.total:
            texts[lead + len(row.parts)] = "…"
        labels.append(row.label)
        colour_rows.append(colours)
        text_rows.append(texts)
        hover_rows.append(hovers)
    note = replay_note(replay, rows, max_bytes)
    return figure(
        [
            coloured_cells(
                np.array(colour_rows, dtype=float),
                np.array(text_rows, dtype=object),
                np.array(hover_rows, dtype=object),
            )
        ],
        f"Byte-pair merges of {plot_text(repr(chunk_text(replay.data)))}",
        height=max(220, 64 * len(labels) + 110),
        notes=[plot_text(note)] if note else (),
        **cell_layout(len(labels), labels),
    )


def counts_markdown(run: Run) -> str:
    n_bytes = len(run.text.encode("utf-8"))
    lines = [
        f"**{len(run.text):,} characters · {n_bytes:,} UTF-8 bytes · {run.n_tokens:,} tokens** "
        f"({n_bytes / max(run.n_tokens, 1):.2f} bytes per token)",
    ]
    if run.notice:
        lines.append(f"⚠️ {run.notice}")
    return "\n\n".join(lines)


def merges_markdown(tokenizer: Tokenizer, replay: MergeReplay, rows: list[ShownStep], max_bytes: int) -> str:
    # One notation in the whole tab (the chart's, the token cells'): display_bytes. The vocabulary
    # file's spelling of a merged pair is given beside it, once, and explained under the table.
    def spelled(part: bytes) -> str:
        return md_text(display_bytes(part))

    def vocabulary_spelling(part: bytes) -> str:
        return md_text("".join(BYTE_TO_SYMBOL[b] for b in part))

    table = ["| step | parts | merged pair | its rank |", "|---|---|---|---|"]
    for index, row in enumerate(rows):
        if index and row.step > rows[index - 1].step + 1:
            table.append(f"| ⋮ | {row.step - rows[index - 1].step - 1:,} merges not shown | | |")
        shown = " · ".join(f"<code>{spelled(p)}</code>" for p in row.parts)
        shown = ("… · " if row.first > 0 else "") + shown + (" · …" if row.first + len(row.parts) < row.total else "")
        if row.merged is None:
            table.append(f"| bytes | {shown} | | |")
        else:
            table.append(
                f"| {row.step} | {shown} | <code>{spelled(row.merged)}</code> (vocabulary: <code>{vocabulary_spelling(row.merged)}</code>) "
                f"| {tokenizer.rank(row.merged)} |"
            )
    note = replay_note(replay, rows, max_bytes)
    table.append(
        ("\n" + md_text(note) + "." if note else "")
        + "\nEach step joins the adjacent pair with the lowest rank (the merge BPE learned earliest); "
        "it stops when no adjacent pair is in the vocabulary. Parts are written as in the chart above: "
        "␣ a space, ↵ a newline, `<0xC3>` one byte of a character whose bytes are not merged yet. GPT-2's "
        "vocabulary file spells every byte as one printable character instead (Ġ a space, Ã© the two bytes of é): "
        "that spelling of each merged pair is in brackets."
    )
    return "\n".join(table)


def render_with_chunks(
    run: Run | None, tokenizer: Tokenizer, chunk_index: int = 0, max_replay_bytes: int = Settings.max_replay_bytes
) -> tuple[TokenizeViews, list[str]]:
    """-> (TokenizeViews: the token grid, the merge figure, the counts and the merge table (the chunk
    menu unchanged); the text's chunks, which the menu lists)."""
    if run is None:
        return TokenizeViews(grid=message_figure(NO_RUN), merges=message_figure(NO_RUN), counts=NO_RUN, table=""), []
    chunks = tokenizer.pretokenize(run.text)
    if not chunks:
        views = TokenizeViews(
            grid=token_grid(run), merges=message_figure("no word to replay"), counts=counts_markdown(run), table=""
        )
        return views, chunks
    replay = tokenizer.merge_replay(chunks[clamp(chunk_index, 0, len(chunks) - 1)])
    rows = shown_steps(replay, max_replay_bytes)
    merge_fig = merge_figure(tokenizer, replay, rows, max_replay_bytes)
    merge_md = merges_markdown(tokenizer, replay, rows, max_replay_bytes)
    return TokenizeViews(grid=token_grid(run), merges=merge_fig, counts=counts_markdown(run), table=merge_md), chunks


render = views_only(render_with_chunks)


def build(ctx: AppContext, *, tokenizer: Tokenizer, settings: Settings) -> None:
    max_replay_bytes = settings.max_replay_bytes
    with gr.Tab("Tokenize", elem_id="tab-tokenize") as tab:
        gr.Markdown(INTRO)
        counts = gr.Markdown()
        grid = gr.Plot(label="Tokens")
        with gr.Row():
            chunk_choice = gr.Dropdown(
                label="Replay the merges of this chunk", choices=[], type="index", interactive=True
            )
            export = export_controls("Export token ids (.npz)")
        merges_plot = gr.Plot(label="Merges")
        merges_text = gr.Markdown()
        source_block(
            Tokenizer.merge_replay,
            Tokenizer.encode,
            label="Source of the tokenizer used (tiktoken ranks, replayed in Python)",
        )

    def chunk_labels(chunks: list[str]) -> list[tuple[str, int]]:
        return [(f"{i}: {chunk_text(c.encode('utf-8'))}", i) for i, c in enumerate(chunks)]

    def refresh(request):
        run = ctx.current(request)
        views, chunks = render_with_chunks(run, tokenizer, 0, max_replay_bytes)
        return views._replace(chunk=gr.update(choices=chunk_labels(chunks), value=0 if chunks else None))

    def replay(request, index):
        run = ctx.current(request)
        return render(run, tokenizer, index or 0, max_replay_bytes)  # only its merges and table are sent

    outputs = TokenizeViews(grid=grid, merges=merges_plot, counts=counts, table=merges_text, chunk=chunk_choice)
    view = ctx.view(tab, refresh, [], outputs, needs_trace=False)  # tokens only: works while the model loads
    ctx.control(view, [chunk_choice.input], replay, [ctx.state, chunk_choice], ("merges", "table"))
    ctx.export(view, export, lambda run: {"token_ids": np.asarray(run.token_ids)})
