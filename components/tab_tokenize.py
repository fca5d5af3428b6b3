"""Tokenize: the text as GPT-2's tokens, with ids, counts and the byte-pair merges replayed."""

from __future__ import annotations

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from gpt2_max.tokenizer import BYTE_TO_SYMBOL, Tokenizer, display_bytes

from components.common import NO_RUN, AppContext, clamp, export_controls, guarded, intro, source_block
from components.plots import figure, message_figure, plot_text
from components.run import Run

TOKENS_PER_ROW = 12
# Okabe-Ito: distinguishable with every common colour-vision deficiency.
PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"]

INTRO = intro(
    "1 · Tokenize",
    "GPT-2 never sees letters: it sees token ids. The text is cut into chunks (words with their "
    "leading space, numbers, punctuation), each chunk's UTF-8 bytes are merged pair by pair into "
    "the longest pieces the 50,257-entry vocabulary knows, and each piece becomes an id. "
    "**␣** marks a leading space (GPT-2's vocabulary writes it **Ġ**), **↵** a newline (**Ċ**); "
    "`<0xE2>` is one byte of a character split across tokens.",
    [("token_ids", "[T] int64"), ("vocabulary", "50,257 entries: 256 bytes + 50,000 merges + &lt;|endoftext|&gt;")],
)


def coloured_cells(colour_index: np.ndarray, text: np.ndarray, hover: np.ndarray, y_labels=None) -> dict:
    """Cells coloured by ``colour_index`` (a PALETTE index, NaN = empty) and labelled with ``text``."""
    top = len(PALETTE) - 1
    return dict(
        type="heatmap",
        z=colour_index,
        y=y_labels,
        text=text,
        texttemplate="%{text}",
        textfont=dict(size=14),
        customdata=hover,
        hovertemplate="%{customdata}<extra></extra>",
        colorscale=[[i / top, colour] for i, colour in enumerate(PALETTE)],
        zmin=0,
        zmax=top,
        showscale=False,
        xgap=3,
        ygap=3,
        hoverongaps=False,
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
        [coloured_cells(colour_index, text, hover)], f"{n} tokens (text and id per cell)", height=max(160, 70 * rows + 80),
        xaxis=dict(visible=False), yaxis=dict(visible=False, autorange="reversed"),
    )


def merge_figure(tokenizer: Tokenizer, chunk: str) -> go.Figure:
    """One row per merge step: the parts after that step, as in token_grid."""
    steps = tokenizer.merge_steps(chunk)
    shape = (len(steps), len(steps[0]))
    colour_index = np.full(shape, np.nan)
    text = np.full(shape, "", dtype=object)
    hover = np.full(shape, "", dtype=object)
    labels = ["bytes"] + [f"merge {i}" for i in range(1, len(steps))]
    for row, parts in enumerate(steps):
        for col, part in enumerate(parts):
            colour_index[row, col] = col % len(PALETTE)
            rank = tokenizer.rank(part)
            text[row, col] = f"{plot_text(display_bytes(part))}<br>{'' if rank is None else rank}"
            hover[row, col] = f"{labels[row]}: {text[row, col]}"
    return figure(
        [coloured_cells(colour_index, text, hover, labels)],
        f"Byte-pair merges of {plot_text(repr(display_bytes(chunk.encode('utf-8'))))}", height=max(220, 64 * len(steps) + 110),
        xaxis=dict(visible=False), yaxis=dict(type="category", autorange="reversed"),
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


def merges_markdown(tokenizer: Tokenizer, chunk: str) -> str:
    steps = tokenizer.merge_steps(chunk)
    rows = ["| step | parts | merged pair | its rank |", "|---|---|---|---|"]
    for i, parts in enumerate(steps):
        shown = " · ".join(f"`{''.join(BYTE_TO_SYMBOL[b] for b in p)}`" for p in parts)
        if i == 0:
            rows.append(f"| bytes | {shown} | | |")
            continue
        previous = steps[i - 1]
        merged = next(p for p in parts if p not in previous or parts.count(p) > previous.count(p))
        rows.append(f"| {i} | {shown} | `{''.join(BYTE_TO_SYMBOL[b] for b in merged)}` | {tokenizer.rank(merged)} |")
    rows.append(
        "\nEach step joins the adjacent pair with the lowest rank (the merge BPE learned earliest); "
        "it stops when no adjacent pair is in the vocabulary. Parts are written in GPT-2's vocabulary "
        "spelling (Ġ = space)."
    )
    return "\n".join(rows)


def render(run: Run | None, tokenizer: Tokenizer, chunk_index: int = 0):
    """-> (token grid, merge figure, counts markdown, merges markdown, chunk choices)."""
    if run is None:
        return message_figure(NO_RUN), message_figure(NO_RUN), NO_RUN, "", []
    chunks = tokenizer.pretokenize(run.text)
    chunk = chunks[clamp(chunk_index, 0, len(chunks) - 1)] if chunks else ""
    merge_fig = merge_figure(tokenizer, chunk) if chunk else message_figure("no word to replay")
    merge_md = merges_markdown(tokenizer, chunk) if chunk else ""
    return token_grid(run), merge_fig, counts_markdown(run), merge_md, chunks


def build(ctx: AppContext) -> None:
    tokenizer = ctx.service.tokenizer
    with gr.Tab("Tokenize", elem_id="tab-tokenize") as tab:
        gr.Markdown(INTRO)
        counts = gr.Markdown()
        grid = gr.Plot(label="Tokens")
        with gr.Row():
            chunk_choice = gr.Dropdown(label="Replay the merges of this chunk", choices=[], type="index", interactive=True)
            export = export_controls("Export token ids (.npz)")
        merges_plot = gr.Plot(label="Merges")
        merges_text = gr.Markdown()
        source_block(Tokenizer.merge_steps, Tokenizer.encode, label="Source of the tokenizer used (tiktoken ranks, replayed in Python)")

    def chunk_labels(chunks: list[str]) -> list[tuple[str, int]]:
        return [(f"{i}: {display_bytes(c.encode('utf-8'))}", i) for i, c in enumerate(chunks)]

    @guarded("plot", "plot", "text", "text", "keep")
    def refresh(request):
        run = ctx.current(request)
        grid_fig, merge_fig, counts_md, merges_md, chunks = render(run, tokenizer, 0)
        choice = gr.update(choices=chunk_labels(chunks), value=0 if chunks else None)
        return grid_fig, merge_fig, counts_md, merges_md, choice

    @guarded("plot", "text")
    def replay(request, index):
        run = ctx.current(request)
        _, merge_fig, _, merges_md, _ = render(run, tokenizer, index or 0)
        return merge_fig, merges_md

    view = ctx.view(tab, refresh, [], [grid, merges_plot, counts, merges_text, chunk_choice])
    ctx.control(view, [chunk_choice.input], replay, [ctx.state, chunk_choice], [merges_plot, merges_text])
    ctx.export(view, export, lambda run: {"token_ids": np.asarray(run.token_ids)})
