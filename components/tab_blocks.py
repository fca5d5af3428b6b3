"""Blocks: the residual stream through the layers, what each block adds, and the logit lens."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from components import compare, interpret
from components.common import (
    NO_RUN,
    AppContext,
    clamp,
    export_controls,
    intro,
    md_text,
    named_outputs,
    position_0_switch,
    source_block,
)
from components.plots import (
    GROUPED,
    LABEL_ANGLES,
    colour_bar,
    counted_positions,
    decade_ticks,
    figure,
    finite,
    heatmap,
    lines,
    log_axis,
    message_figure,
    plot_text,
    value_marks,
)
from explorer.analyses import LENS_DEFAULT_POSITIONS, LENS_MAX_POSITIONS
from explorer.runs import Run
from gpt2_max.analysis import Lens
from gpt2_max.hooks import block_key
from gpt2_max.modules import Block, GPT2Analysis
from gpt2_max.tokenizer import Tokenizer

MEAN = "mean"  # the position control's value for "averaged over positions"
# Okabe-Ito: distinguishable with every common colour-vision deficiency.
ATTN_COLOUR = "#E69F00"
MLP_COLOUR = "#0072B2"
# Write the top token inside the heatmap cells up to this width: the lens's default width.
LENS_TEXT_MAX_POSITIONS = LENS_DEFAULT_POSITIONS
LENS_CELL_CHARS = 7  # characters of a top token written in its lens cell (see lens_heatmap)
# The lens's widths on offer: the default (each cell's top token written in it), then colour only.
LENS_POSITION_CHOICES = [
    (f"the last {LENS_DEFAULT_POSITIONS} positions (top tokens written in the cells)", LENS_DEFAULT_POSITIONS),
    ("the last 64 positions", 64),
    (f"the last {LENS_MAX_POSITIONS} positions (the most it shows)", LENS_MAX_POSITIONS),
]
NO_WEIGHTS = "The logit lens needs the model's weights (ln_f and wte); they are still loading. Run again once the model is ready."

# The tab's outputs, by name: the residual norms, the block additions, the logit lens, the final
# prediction through the layers, the summary, and the position control a Run resets; then the
# compare panel (shown with a compare prompt): B's logit lens, where A's and B's top tokens part, its text.
BlocksViews = named_outputs(
    "norms",
    "additions",
    "lens",
    "final",
    "summary",
    "position",
    "compare_panel",
    "compare_lens",
    "parting",
    "compare_summary",
)

INTRO = intro(
    "6 · Blocks",
    "Each block reads the residual stream and adds two things back: what attention moved between "
    "positions (`hook_attn_out`), then what the MLP computed at each position (`hook_mlp_out`), so "
    "`resid_post = resid_pre + attn_out + mlp_out`; nothing is overwritten. The *logit lens* applies "
    "the model's own final layer norm (`ln_f`) and unembedding (`wte`ᵀ) to the stream after every "
    "block, as if the model stopped there, to show at which layer each prediction takes shape.",
    [
        ("blocks.{i}.hook_resid_pre / hook_resid_post", "[T, E] the stream entering / leaving block i"),
        ("blocks.{i}.hook_attn_out, blocks.{i}.hook_mlp_out", "[T, E] what attention and the MLP add"),
        ("logit lens", "[L, T, V] ln_f(resid_post) @ wteᵀ for every block L and position T"),
    ],
)


def stage_names(n_layer: int) -> list[str]:
    return ["embed"] + [f"after block {i}" for i in range(n_layer)]


def residual_norms(run: Run) -> np.ndarray:
    """[L+1, T]: ‖stream‖ at each position after the embedding and after each block."""
    L = run.config.n_layer
    stages = [run.trace[block_key(0, "hook_resid_pre")]] + [
        run.trace[block_key(i, "hook_resid_post")] for i in range(L)
    ]
    return np.stack([np.linalg.norm(s.astype(np.float64), axis=-1) for s in stages])


def addition_norms(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """([L, T], [L, T]): ‖attn_out‖ and ‖mlp_out‖ of each block at each position."""
    L = run.config.n_layer
    attn = np.stack(
        [np.linalg.norm(run.trace[block_key(i, "hook_attn_out")].astype(np.float64), axis=-1) for i in range(L)]
    )
    mlp = np.stack(
        [np.linalg.norm(run.trace[block_key(i, "hook_mlp_out")].astype(np.float64), axis=-1) for i in range(L)]
    )
    return attn, mlp


# -- figures -------------------------------------------------------------------


def resolve(run: Run, position) -> int | None:
    """None for "averaged over positions", else a position kept in range."""
    if position is None or position == MEAN or position == "":
        return None
    return clamp(position, 0, run.n_tokens - 1, default=run.n_tokens - 1)


def where(run: Run, position: int | None, leave_out_position_0: bool = False) -> str:
    if position is not None:
        return f"at {run.labels[position]!r}"
    return (
        f"averaged over positions 1–{run.n_tokens - 1}"
        if leave_out_position_0 and run.n_tokens > 1
        else "averaged over positions"
    )


def position_0_note(run: Run, position: int | None, leave_out_position_0: bool, values: np.ndarray) -> list[str]:
    """The title note of a mean over positions that leaves position 0 out, with position 0's own
    largest value (``values``: [L, T]), so nothing is hidden."""
    if position is not None or not leave_out_position_0 or run.n_tokens < 2:
        return []
    return [f"position 0 left out of the mean (its largest: {float(values[:, 0].max()):.4g})"]


def norms_figure(run: Run, position: int | None, leave_out_position_0: bool = True) -> go.Figure:
    """‖x‖ after each stage: the mean over positions (1..T-1 when position 0 is left out), the
    chosen position and the last; log y, since position 0 can be 10-100x the others."""
    norms = residual_norms(run)
    T = run.n_tokens
    counted = counted_positions(T, leave_out_position_0)
    x = stage_names(run.config.n_layer)
    mean_name = f"mean over positions 1–{T - 1}" if counted.start else f"mean over the {T} positions"
    series = {mean_name: norms[:, counted].mean(axis=1)}
    hover = {mean_name: [f"averaged over {len(range(T)[counted])} tokens"] * len(x)}
    shown = [T - 1] if position is None or position == T - 1 else [position, T - 1]
    for p in shown:
        name = f"{'last position ' if p == T - 1 else ''}{run.labels[p]}"
        series[name] = norms[:, p]
        hover[name] = [f"token {run.labels[p]}<br>position {p}"] * len(x)
    fig = lines(
        x,
        series,
        "Size of the residual stream, ‖x‖, after each stage",
        x_title="stage",
        y_title="‖residual stream‖",
        height=400,
        hover_text=hover,
        log_y=True,
        notes=position_0_note(run, None, leave_out_position_0, norms),
    )
    return fig


def additions_figure(run: Run, position: int | None, leave_out_position_0: bool = True) -> go.Figure:
    """‖attn_out‖ and ‖mlp_out‖ per block, at a position or averaged over positions (1..T-1 when
    position 0 is left out); log y, since the additions at position 0 can dwarf the others."""
    attn, mlp = addition_norms(run)
    if position is None:
        counted = counted_positions(run.n_tokens, leave_out_position_0)
        attn_v, mlp_v = attn[:, counted].mean(axis=1), mlp[:, counted].mean(axis=1)
        note = f"mean over {attn[:, counted].shape[1]} positions"
    else:
        attn_v, mlp_v = attn[:, position], mlp[:, position]
        note = f"token {run.labels[position]}<br>position {position}"
    x = [f"block {i}" for i in range(run.config.n_layer)]
    # Points, not bars: the axis is log (see value_marks).
    series = (
        ("attn_out", "attention adds", attn_v, ATTN_COLOUR, "circle"),
        ("mlp_out", "MLP adds", mlp_v, MLP_COLOUR, "diamond"),
    )
    data = [
        value_marks(
            x,
            finite(values),
            horizontal=False,
            log=True,
            colour=colour,
            symbol=symbol,
            name=f"‖{tensor}‖ ({name})",
            hovertemplate=f"%{{x}}: {name} a vector of norm %{{y:.4g}}<br>{note}<extra></extra>",
        )
        for tensor, name, values, colour, symbol in series
    ]
    notes = position_0_note(run, position, leave_out_position_0, np.maximum(attn, mlp))
    return figure(
        data,
        f"How much each block's attention and MLP add, {where(run, position, leave_out_position_0)}",
        height=400,
        notes=notes,
        **GROUPED,
        xaxis=dict(type="category", title="block", **LABEL_ANGLES),
        yaxis=log_axis(np.concatenate([attn_v, mlp_v]), "‖added vector‖"),
    )


def lens_heatmap(run: Run, lens: Lens, display, whose: str = "") -> go.Figure:
    """[L, T'] cells: each block's top next token (text) and its probability (colour, log scale:
    top probabilities run from 1/V ≈ 2e-5 to ~1, and an early layer's 0.001 differs from 0.01).
    ``whose``: the run's name at the head of the title (the compare prompt's lens)."""
    top_ids, top_probs = lens.top_ids, lens.top_probs
    L, T = top_ids.shape
    text = np.array([[display(int(t)) for t in row] for row in top_ids], dtype=object)
    log_probs = np.log10(np.maximum(top_probs.astype(np.float64), 1e-30))  # a top-1 probability is >= 1/V > 0
    lowest = float(np.floor(log_probs.min())) if log_probs.size else -1.0
    fig = heatmap(
        log_probs,
        run.labels[lens.start :],
        [f"after block {i}" for i in range(L)],
        (f"{whose}: " if whose else "") + "Logit lens: the top next token after each block",
        notes=["colour = its probability, log scale" + (f", last {T} positions" if lens.start else "")],
        x_title="position",
        y_title="layer",
        value_name="log10 probability",
        zmin=min(lowest, -1.0),
        zmax=0.0,
        height=max(400, min(900, 46 * L + 220)),  # angled token labels need ~150 px below a short grid
        hover_text=text,
    )
    # The cell's other likely tokens after its top one (already in the hover), with probabilities.
    runners_up = np.array(
        [
            [
                " · ".join(f"{plot_text(display(int(t)))} {p:.2g}" for t, p in zip(ids[1:], probs[1:]))
                for ids, probs in zip(layer_ids, layer_probs)
            ]
            for layer_ids, layer_probs in zip(lens.top_k_ids, lens.top_k_probs)
        ],
        dtype=object,
    )
    whole = np.array([[plot_text(t) for t in row] for row in text], dtype=object)
    fig.update_traces(
        # customdata [L, T', 5]: the final prediction's probability and rank in that cell, the
        # cell's own (top) probability, which the colour shows as log10, the runners-up, and the
        # top token whole (the cell may write it cut).
        customdata=np.stack([lens.final_probs, lens.final_ranks, top_probs, runners_up, whole], axis=-1),
        hovertemplate=(
            "%{y}<br>position %{x}<br>top next token: %{customdata[4]}<br>probability %{customdata[2]:.4g}"
            f"<br>next {lens.top_k_ids.shape[-1] - 1}: %{{customdata[3]}}"
            "<br>the final prediction here: p %{customdata[0]:.3g}, rank %{customdata[1]}<extra></extra>"
        ),
        colorbar=colour_bar("probability (log scale)", **decade_ticks(min(lowest, -1.0), 0.0)),
    )
    if T <= LENS_TEXT_MAX_POSITIONS:
        # Written in the cell only as far as it fits (the hover has it whole): 24 cells across a
        # plot of ~1,200 px are ~50 px each, ~7 characters at 11 px, and longer texts ran into each other.
        cut = np.array(
            [
                [plot_text(t if len(t) <= LENS_CELL_CHARS else t[: LENS_CELL_CHARS - 1] + "…") for t in row]
                for row in text
            ],
            dtype=object,
        )
        # A heatmap's texttemplate reads only x, y, z and text (customdata shows "-" in the cell).
        fig.update_traces(text=cut, texttemplate="%{text}", textfont=dict(size=11))
    return fig


def final_figure(run: Run, lens: Lens, display) -> go.Figure:
    L = lens.final_probs.shape[0]
    final = display(lens.final_id)
    name = f"p({final})"
    hover = [
        f"position {run.n_tokens - 1} ({run.labels[-1]})<br>"
        f"final prediction {final} (id {lens.final_id}), rank {int(r)} here<br>this layer's top guess: "
        f"{display(int(lens.top_ids[i, -1]))} (p={lens.top_probs[i, -1]:.3g})"
        for i, r in enumerate(lens.final_ranks[:, -1])
    ]
    fig = lines(
        [f"after block {i}" for i in range(L)],
        {name: lens.final_probs[:, -1]},
        f"How the final prediction {final!r} at the last position {run.labels[-1]!r} grows through the layers",
        x_title="layer",
        y_title="probability",
        height=380,
        hover_text={name: hover},
        log_y=True,  # from ~1/V in the first layers to ~1 at the end
    )
    return fig


def parting_layer(top_a: np.ndarray, top_b: np.ndarray) -> int | None:
    """The first block from which two runs' top tokens ([L] ids, one per block) differ to the end:
    where they part. None when they agree after the last block (the same prediction); 0 when they
    never agree."""
    same = np.asarray(top_a) == np.asarray(top_b)
    if same[-1]:
        return None
    agree = np.flatnonzero(same)
    return 0 if agree.size == 0 else int(agree[-1]) + 1


def parting_figure(a: Run, lens_a: Lens, b: Run, lens_b: Lens, display) -> go.Figure:
    """Each block's top next token at A's and at B's last position (written at the points, the
    probability on a log axis), with a dashed line where they part (``parting_layer``)."""
    L = lens_a.top_ids.shape[0]
    x = [f"after block {i}" for i in range(L)]
    tops = {side: lens.top_ids[:, -1] for side, lens in ((compare.A, lens_a), (compare.B, lens_b))}
    names = {
        side: f"{side.letter}: top token at {plot_text(run.labels[-1])}"
        for side, run in ((compare.A, a), (compare.B, b))
    }
    fig = lines(
        x,
        {names[compare.A]: lens_a.top_probs[:, -1], names[compare.B]: lens_b.top_probs[:, -1]},
        "Where A's and B's predictions part",
        x_title="layer",
        y_title="probability of that top token",
        height=420,
        hover_text={names[side]: [plot_text(display(int(t))) for t in top] for side, top in tops.items()},
        log_y=True,
        notes=[
            "the logit lens's top next token at each one's last position",
            parting_note(tops[compare.A], tops[compare.B]),
        ],
    )
    for trace, side, place in zip(fig.data, (compare.A, compare.B), ("top center", "bottom center")):
        trace.update(
            mode="lines+markers+text",
            textposition=place,
            line=dict(color=side.colour),
            marker=dict(color=side.colour, symbol=side.symbol, size=9),
        )
    part = parting_layer(tops[compare.A], tops[compare.B])
    if part is not None:
        # Between the last block where they agree and the first where they part (categories are indices).
        fig.add_vline(x=part - 0.5, line=dict(color="#555555", dash="dash", width=1))
    return fig


def parting_note(top_a: np.ndarray, top_b: np.ndarray) -> str:
    part = parting_layer(top_a, top_b)
    if part is None:
        return "the same top token after the last block: they do not part"
    if part == 0:
        return "different top tokens after every block"
    return f"the same top token through block {part - 1}, different from block {part} on (dashed line)"


def parting_markdown(a: Run, lens_a: Lens, b: Run, lens_b: Lens, display) -> str:
    top_a, top_b = lens_a.top_ids[:, -1], lens_b.top_ids[:, -1]
    part = parting_layer(top_a, top_b)
    final_a, final_b = md_text(repr(display(int(top_a[-1])))), md_text(repr(display(int(top_b[-1]))))
    if part is None:
        return (
            f"**Where they part:** A and B end on the same prediction, {final_a}; "
            f"their top tokens agree after {int(np.count_nonzero(top_a == top_b))} of the {top_a.size} blocks."
        )
    if part == 0:
        agreed = "their top tokens differ after every block"
    else:
        shared = md_text(repr(display(int(top_a[part - 1]))))
        agreed = f"their top tokens agree through block {part - 1} ({shared} there) and part from block {part} on"
    return f"**Where they part:** {agreed}; A ends on {final_a}, B on {final_b}."


def compare_views(run: Run | None, lens, other, other_lens, display) -> BlocksViews:
    """-> BlocksViews with the compare panel: hidden without a B (``other`` None), else B's lens
    (drawn by ``lens_heatmap``, as A's), where the two runs' top tokens part, and the text; or why
    one of them cannot be drawn (a Reason, in the figures and the text)."""
    if run is None or other is None:
        return BlocksViews(compare_panel=compare.panel(None))
    if not isinstance(other, Run):
        why = other
    elif not isinstance(other_lens, Lens) or not isinstance(lens, Lens):
        why = (other_lens if not isinstance(other_lens, Lens) else lens) or NO_WEIGHTS
    else:
        why = None
    if why is not None:
        return BlocksViews(
            compare_panel=compare.panel(other),
            compare_lens=message_figure(why),
            parting=message_figure(why),
            compare_summary=str(why),
        )
    return BlocksViews(
        compare_panel=compare.panel(other),
        compare_lens=lens_heatmap(other, other_lens, display, compare.B.name),
        parting=parting_figure(run, lens, other, other_lens, display),
        compare_summary=parting_markdown(run, lens, other, other_lens, display),
    )


def summary_markdown(
    run: Run, position: int | None, lens: Lens | None, display, leave_out_position_0: bool = True
) -> str:
    norms = residual_norms(run)
    attn, mlp = addition_norms(run)
    if position is None:
        counted = counted_positions(run.n_tokens, leave_out_position_0)
        a, m, n = attn[:, counted].mean(axis=1), mlp[:, counted].mean(axis=1), norms[:, counted].mean(axis=1)
    else:
        a, m, n = attn[:, position], mlp[:, position], norms[:, position]
    layer, kind = (int(np.argmax(m)), "MLP") if m.max() > a.max() else (int(np.argmax(a)), "attention")
    lines_md = [
        f"**Residual stream {md_text(where(run, position, leave_out_position_0))}:** ‖x‖ goes from {n[0]:.3g} after the embedding "
        f"to {n[-1]:.3g} after the last block. The largest single addition is block {layer}'s {kind}."
    ]
    if run.n_tokens > 1:
        ratio = norms[-1, 0] / max(float(np.median(norms[-1, 1:])), 1e-12)
        lines_md[0] += f" After the last block position 0's ‖x‖ is {ratio:.3g}× the median of the others'."
    if lens is not None:
        final = display(lens.final_id)
        settled = next((i for i in range(lens.top_ids.shape[0]) if (lens.top_ids[i:, -1] == lens.final_id).all()), None)
        when = (
            f"is the lens's top guess from block {settled} on"
            if settled is not None
            else "is never the lens's top guess"
        )
        lines_md.append(
            f"**Logit lens:** the final prediction at the last position is {md_text(repr(final))} "
            f"(p = {lens.final_probs[-1, -1]:.3g} after the last block); it {when}. "
            "The lens after the last block is exactly the model's output."
        )
    return "\n\n".join(lines_md)


def token_display(tokenizer):
    if tokenizer is None:
        return lambda token_id: f"id {token_id}"

    def display(token_id: int) -> str:
        return tokenizer.token(token_id).display if 0 <= token_id < tokenizer.n_vocab else f"id {token_id}"

    return display


def render(
    run: Run | None,
    lens: Lens | str,
    tokenizer,
    position=MEAN,
    leave_out_position_0: bool = True,
    other: Run | str | None = None,
    other_lens: Lens | str | None = None,
) -> BlocksViews:
    """-> BlocksViews: the residual norms, the additions, the lens heatmap, the final-prediction line
    and the summary (the position control unchanged), and the compare panel (``compare_views``).

    ``lens`` is the Run's logit lens from the MAX analysis graph, or why it is missing;
    ``leave_out_position_0``: the means over positions count positions 1..T-1 only; ``other``
    and ``other_lens``: the compare prompt's Run and lens (or why they are missing), or None."""
    compared = compare_views(run, lens, other, other_lens, token_display(tokenizer))
    if run is None:
        return compared._replace(
            norms=message_figure(NO_RUN),
            additions=message_figure(NO_RUN),
            lens=message_figure(NO_RUN),
            final=message_figure(NO_RUN),
            summary=NO_RUN,
        )
    position = resolve(run, position)
    display = token_display(tokenizer)
    waiting = ""
    if not isinstance(lens, Lens):
        waiting = lens or NO_WEIGHTS  # said once, under the summary; the two lens figures say it briefly
        lens_fig = final_fig = message_figure(waiting)
        lens = None
    else:
        lens_fig, final_fig = lens_heatmap(run, lens, display), final_figure(run, lens, display)
    leave_out_position_0 = bool(leave_out_position_0)
    summary = summary_markdown(run, position, lens, display, leave_out_position_0)
    return compared._replace(
        norms=norms_figure(run, position, leave_out_position_0),
        additions=additions_figure(run, position, leave_out_position_0),
        lens=lens_fig,
        final=final_fig,
        summary=summary + (f"\n\n**Logit lens:** {waiting}" if waiting else ""),
    )


def tensors(run: Run, lens: Lens | str) -> dict[str, np.ndarray]:
    """What the plots show, for the .npz download (per position; the plots' means are over axis 1)."""
    attn, mlp = addition_norms(run)
    arrays = {
        "token_ids": np.asarray(run.token_ids),
        "residual_norms": residual_norms(run),
        "attn_out_norms": attn,
        "mlp_out_norms": mlp,
    }
    if isinstance(lens, Lens):
        arrays.update(
            lens_first_position=np.asarray(lens.start),
            lens_top_ids=lens.top_ids,
            lens_top_probs=lens.top_probs,
            final_token_ids=lens.final_ids,
            final_token_probs=lens.final_probs,
            final_token_ranks=lens.final_ranks,
        )
    return arrays


def build(ctx: AppContext, *, tokenizer: Tokenizer, analysis: Callable) -> None:
    with gr.Tab("Blocks", elem_id="tab-blocks") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            position_control = gr.Dropdown(
                label="Position for the block additions",
                choices=[("mean over positions", MEAN)],
                value=MEAN,
                interactive=True,
                elem_id="blocks-position",
            )
            lens_positions = gr.Dropdown(
                label="Logit lens over",
                choices=LENS_POSITION_CHOICES,
                value=LENS_DEFAULT_POSITIONS,
                interactive=True,
                elem_id="blocks-lens-positions",
            )
            export = export_controls("Export norms and logit lens (.npz)")
        leave_out = position_0_switch("blocks-leave-out-position-0")
        summary = gr.Markdown()
        norms_plot = gr.Plot(label="Residual stream norm")
        additions_plot = gr.Plot(label="What each block adds")
        # Its cells' tokens only where cells are wide enough to read them (PAGE_CSS): a phone's are ~12 px.
        lens_plot = gr.Plot(label="Logit lens", elem_classes=["cell-text-wide-only"])
        with gr.Column(visible=False, elem_id="blocks-compare") as compare_panel:
            gr.Markdown(compare.PANEL_TITLE)
            compare_text = gr.Markdown()
            compare_lens_plot = gr.Plot(
                label="B's logit lens", elem_id="blocks-compare-lens", elem_classes=["cell-text-wide-only"]
            )
            parting_plot = gr.Plot(label="Where A's and B's predictions part", elem_id="blocks-parting")
        final_plot = gr.Plot(label="The final prediction through the layers")
        source_block(
            Block, GPT2Analysis, label="MAX source of this stage (Block; the analysis graph that runs the lens)"
        )
        patching = ctx.build(
            interpret.patching_section,
            "residual",
            "layer and position (the stream entering that block there)",
            "Patch every layer and position",
        )

    def lens_of(run: Run, positions=LENS_DEFAULT_POSITIONS):
        lens, why = analysis(run, "lens", positions=clamp(positions, 1, LENS_MAX_POSITIONS, LENS_DEFAULT_POSITIONS))
        return lens if lens is not None else why

    def compared(run: Run | None, compare_request, positions):
        """(B's Run or why not, B's lens or None) for a compare request beside ``run``."""
        other = compare.compare_of(ctx.current, run, compare_request)
        return other, lens_of(other, positions) if isinstance(other, Run) else None

    def refresh(request, leave_out_position_0, positions, compare_request=None):
        run = ctx.current(request)
        other, other_lens = compared(run, compare_request, positions)
        views = render(
            run,
            lens_of(run, positions) if run is not None else NO_RUN,
            tokenizer,
            MEAN,
            leave_out_position_0,
            other,
            other_lens,
        )
        choices = [("mean over positions", MEAN)]
        if run is not None:
            choices += [(label, i) for i, label in enumerate(run.labels)]
        return views._replace(position=gr.update(choices=choices, value=MEAN))

    def change(request, position, leave_out_position_0, positions):
        """A position or the position-0 switch changes the norms, the additions and the summary; the lens stays."""
        run = ctx.current(request)
        if run is None:
            return BlocksViews(norms=message_figure(NO_RUN), additions=message_figure(NO_RUN), summary=NO_RUN)
        lens = lens_of(run, positions)  # made when the tab rendered: kept with the Run
        where_ = resolve(run, position)
        display = token_display(tokenizer)
        leave_out_position_0 = bool(leave_out_position_0)
        return BlocksViews(
            norms=norms_figure(run, where_, leave_out_position_0),
            additions=additions_figure(run, where_, leave_out_position_0),
            summary=summary_markdown(
                run, where_, lens if isinstance(lens, Lens) else None, display, leave_out_position_0
            ),
        )

    def widen(request, positions, compare_request):
        """The lens's width changes its heatmaps (A's and B's) and nothing else (the final-prediction
        line, where the two part and the summaries read the last position, which every width covers)."""
        run = ctx.current(request)
        if run is None:
            return BlocksViews(lens=message_figure(NO_RUN), final=message_figure(NO_RUN))
        other, other_lens = compared(run, compare_request, positions)
        lens = lens_of(run, positions)
        compare_lens = compare_views(run, lens, other, other_lens, token_display(tokenizer)).compare_lens
        if not isinstance(lens, Lens):
            return BlocksViews(lens=message_figure(lens), final=message_figure(lens), compare_lens=compare_lens)
        display = token_display(tokenizer)
        return BlocksViews(
            lens=lens_heatmap(run, lens, display), final=final_figure(run, lens, display), compare_lens=compare_lens
        )

    outputs = BlocksViews(
        norms=norms_plot,
        additions=additions_plot,
        lens=lens_plot,
        final=final_plot,
        summary=summary,
        position=position_control,
        compare_panel=compare_panel,
        compare_lens=compare_lens_plot,
        parting=parting_plot,
        compare_summary=compare_text,
    )
    view = ctx.view(tab, refresh, [leave_out, lens_positions, ctx.compare], outputs)
    ctx.control(
        view,
        [position_control.input, leave_out.input],
        change,
        [ctx.state, position_control, leave_out, lens_positions],
        ("norms", "additions", "summary"),
        trigger_mode="always_last",
    )
    ctx.control(
        view,
        [lens_positions.input],
        widen,
        [ctx.state, lens_positions, ctx.compare],
        ("lens", "final", "compare_lens"),
        trigger_mode="always_last",
    )
    ctx.export(
        view,
        export,
        lambda run, patched, positions: {**tensors(run, lens_of(run, positions)), **interpret.patching_arrays(patched)},
        [patching.result, lens_positions],
    )
