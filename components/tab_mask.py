"""Mask: the causal mask, one head's scores before and after it, the pattern, and predictions without it."""

from __future__ import annotations

import math
from collections.abc import Callable

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from components.common import (
    NO_RUN,
    AppContext,
    clamp,
    export_controls,
    fmt_p,
    intro,
    md_text,
    named_outputs,
    position_0_switch,
    slider_moved,
    source_block,
    views_only,
)
from components.plots import (
    LABEL_ANGLES,
    attention_pattern,
    binned_heatmap,
    lines,
    message_figure,
    position_0_cells,
    robust_limits,
)
from explorer.runs import Run
from gpt2_max.hooks import block_key
from gpt2_max.modules import Attention, GPT2Trace
from gpt2_max.sampling import softmax
from gpt2_max.scheduling import MODEL_LANE
from gpt2_max.tokenizer import Tokenizer

NEEDS_MODEL = (
    "Switching the mask off runs the model again, which needs the live model; it is still loading (or unavailable)."
)
NEEDS_ANALYSIS = "The predictions read every position's logits from the MAX analysis graph; none were given."

# The tab's outputs, by name: the mask, one head's scores before and after it, its pattern, the
# predictions, the text, and the two controls a Run resets.
MaskViews = named_outputs("mask", "raw", "masked", "pattern", "predictions", "text", "layer", "head")

INTRO = intro(
    "3 · Mask",
    "GPT-2 predicts each next token from the tokens before it, so in every attention head the query at "
    "position i may read only the keys at positions j ≤ i. The causal mask enforces this: it sets the scaled "
    "scores q·k/√D of later keys to −inf before the softmax, which makes their attention weight exactly 0. "
    "Here the mask is an input of the one compiled MAX graph, so switching it off reruns the same graph and "
    "lets every position read later tokens too; GPT-2 was never trained that way, so the predictions change.",
    [
        ("mask (allowed)", "[T, T] bool, query i may read key j when j ≤ i"),
        ("blocks.{i}.attn.hook_attn_scores", "[H, T, T] q·k/√D, −inf where masked"),
        ("blocks.{i}.attn.hook_pattern", "[H, T, T] softmax over keys; rows sum to 1"),
        ("logits", "[T, V] next-token scores at each position (the MAX analysis graph's rows, mask on and off)"),
    ],
)


def top_predictions(
    logits: np.ndarray, also: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """For each position: (top token id, its probability, probability of ``also[t]`` if given).

    Row by row, so a [T, 50257] float64 softmax is never held whole.
    """
    T = logits.shape[0]
    ids = np.empty(T, dtype=np.int64)
    probs = np.empty(T)
    other = None if also is None else np.empty(T)
    for t in range(T):
        p = softmax(logits[t])
        ids[t] = int(np.argmax(p))
        probs[t] = p[ids[t]]
        if other is not None:
            other[t] = p[also[t]]
    return ids, probs, other


def raw_scores(run: Run, layer: int) -> np.ndarray:
    """[H, T, T] q·k/√D from the trace's queries and keys: the scores before the mask is applied.

    They equal ``hook_attn_scores`` wherever the mask allows (same float32 inputs) and
    show the values the mask replaced with −inf.
    """
    q = run.trace[block_key(layer, "attn.hook_q")].astype(np.float64)  # [T, H, D]
    k = run.trace[block_key(layer, "attn.hook_k")].astype(np.float64)
    return np.einsum("thd,shd->hts", q, k) / math.sqrt(q.shape[-1])


def _height(T: int) -> int:
    return max(340, min(720, 16 * T + 170))


def square_heatmap(values: np.ndarray, run: Run, title: str, **kwargs) -> go.Figure:
    """A [T, T] (query, key) heatmap, averaged over blocks of positions beyond a screenful, with
    position 0 a block of its own: the blocks of the attention pattern beside it."""
    displays = [t.display for t in run.tokens]
    return binned_heatmap(
        values, run.labels, run.labels, title, x_short=displays, y_short=displays, first_alone=True, **kwargs
    )


def mask_figure(allowed: np.ndarray, run: Run, mask_off: bool) -> go.Figure:
    title = (
        "Mask OFF: every query may read every key"
        if mask_off
        else "Causal mask: yellow = allowed (1), purple = blocked (0)"
    )
    fig = square_heatmap(
        allowed.astype(np.float32),
        run,
        title,
        x_title="key (read)",
        y_title="query (reading)",
        value_name="allowed (1: the query reads this key) or blocked (0: score −inf, weight 0)",
        mean_name="fraction of the block's (query, key) pairs allowed",
        zmin=0.0,
        zmax=1.0,
        height=_height(run.n_tokens),
    )
    fig.update_traces(colorbar=dict(tickvals=[0, 1], ticktext=["0 blocked (−inf)", "1 allowed"]))
    if len(fig.data[0].x) <= 64:  # gaps between cells only while they are wide enough to see
        fig.update_traces(xgap=1, ygap=1)
    return fig


def predictions(
    run: Run, logits: np.ndarray, unmasked_logits: np.ndarray | None, tokenizer_tokens
) -> tuple[go.Figure, str, dict[str, np.ndarray]]:
    """Top next token per position with the mask on (``logits`` [T, V], the Run's), and (when
    given) what the mask-off run gives (``unmasked_logits`` [T, V])."""
    on_ids, on_probs, _ = top_predictions(logits)
    on_text = [tokenizer_tokens(int(i)) for i in on_ids]
    arrays = {"top_on_ids": on_ids, "top_on_prob": on_probs}
    series = {"mask on: P(its top token)": on_probs}
    hover = {"mask on: P(its top token)": [f"top next token {t!r}" for t in on_text]}
    header = "| position · token | next in text | mask on: top next (P) |"
    rule = "|---|---|---|"
    if unmasked_logits is not None:
        off_ids, off_probs, off_of_on = top_predictions(unmasked_logits, also=on_ids)
        off_text = [tokenizer_tokens(int(i)) for i in off_ids]
        arrays.update(top_off_ids=off_ids, top_off_prob=off_probs, off_prob_of_on_top=off_of_on)
        series["mask off: P(the mask-on top token)"] = off_of_on
        hover["mask off: P(the mask-on top token)"] = [f"token {t!r}" for t in on_text]
        series["mask off: P(its own top token)"] = off_probs
        hover["mask off: P(its own top token)"] = [f"top next token {t!r}" for t in off_text]
        header += " mask off: top next (P) | mask off: P(mask-on top) |"
        rule += "---|---|"
    rows = [header, rule]
    for t, label in enumerate(run.labels):
        following = md_text(run.tokens[t + 1].display) if t + 1 < run.n_tokens else "—"
        row = f"| {md_text(label)} | {following} | {md_text(on_text[t])} ({fmt_p(on_probs[t])}) |"
        if unmasked_logits is not None:
            changed = " ⚠️" if off_ids[t] != on_ids[t] else ""
            row += f" {md_text(off_text[t])} ({fmt_p(off_probs[t])}){changed} | {fmt_p(off_of_on[t])} |"
        rows.append(row)
    if unmasked_logits is None:
        title, note = "Probability of the top next token at each position", "tick “Turn the causal mask off” to compare"
        summary = "Tick **Turn the causal mask off** to rerun the same graph without the mask and compare."
    else:
        changed = int(np.sum(off_ids != on_ids))
        title, note = "Next-token probability at each position, mask on vs off", ""
        summary = (
            f"Without the mask the top next token changes at **{changed} of {run.n_tokens}** positions (⚠️ below). "
            "Earlier positions now also read later tokens, including the very token they should predict; "
            "even the last position can change, because in later layers it reads earlier positions' vectors, "
            "which were themselves computed without the mask."
        )
    fig = lines(
        run.labels,
        series,
        title,
        x_title="position · token",
        y_title="probability",
        height=400,
        hover_text=hover,
        notes=[note],
    )
    fig.update_xaxes(type="category", **LABEL_ANGLES)
    fig.update_yaxes(rangemode="tozero")
    # Collapsed: a row per position makes a long page on a projector.
    table = (
        "<details><summary>Top next token at every position (table)</summary>\n\n" + "\n".join(rows) + "\n\n</details>"
    )
    return fig, summary + "\n\n" + table, arrays


def score_figures(run: Run, shown: Run, layer: int, head: int, mask_off: bool, leave_out_position_0: bool = True):
    """-> (raw scores fig, masked scores fig, pattern fig, arrays) of one head of ``shown``
    (the Run drawn: ``run``, or its mask-off variant); the only figures layer and head change.

    The two score heatmaps share one colour scale, from the bulk of the raw scores [T, T]
    (position 0's row and column left out of it when asked: a sink head gives key 0 scores far
    above the rest); the pattern keeps 0..1, with each query's share on position 0 beside it."""
    scores = shown.trace[block_key(layer, "attn.hook_attn_scores")][head]  # [T, T], -inf where masked
    pattern = shown.trace[block_key(layer, "attn.hook_pattern")][head]
    raw = raw_scores(shown, layer)[head]
    counted = position_0_cells(raw.shape, "xy") if leave_out_position_0 else None
    limits = robust_limits(raw, diverging=True, counted=counted)
    where = f"layer {layer}, head {head}" + (", mask off" if mask_off else "")
    common = dict(x_title="key", y_title="query", height=_height(run.n_tokens))
    scale = dict(diverging=True, limits=limits, position_axes="xy", leave_out_position_0=leave_out_position_0)
    raw_fig = square_heatmap(
        raw, run, f"Scores q·k/√D before the mask ({where})", value_name="score", **scale, **common
    )
    # A block mixing allowed and blocked pairs averages the allowed (finite) scores.
    masked_fig = square_heatmap(
        scores,
        run,
        "After the mask: −inf cells left blank",
        value_name="score",
        mean_name="mean of the allowed scores",
        **scale,
        **common,
    )
    pattern_fig = attention_pattern(
        pattern,
        run.labels,
        [t.display for t in run.tokens],
        "Softmax over keys: the attention pattern",
        x_title="key",
        y_title="query",
        height=_height(run.n_tokens),
    )
    arrays = {"allowed": np.isfinite(scores), "raw_scores": raw, "masked_scores": scores, "pattern": pattern}
    return raw_fig, masked_fig, pattern_fig, arrays


def render_with_arrays(
    run: Run | None,
    tokens,
    layer: int = 0,
    head: int = 0,
    mask_off: bool = False,
    unmasked: Run | None = None,
    leave_out_position_0: bool = True,
    logits: np.ndarray | str = "",
    unmasked_logits: np.ndarray | str = "",
) -> tuple[MaskViews, dict[str, np.ndarray]]:
    """-> (MaskViews: the mask, the raw and masked scores, the pattern, the predictions and the text
    (the controls unchanged); the arrays behind them, for the export).

    ``run`` is the causal Run; ``unmasked`` the same tokens with the mask off
    (``variant(run, causal=False)``), used when ``mask_off`` is set. ``logits`` and
    ``unmasked_logits``: their [T, V] next-token logits (``NextTokens.logits`` of the analysis
    graph), or why they are missing (the predictions then say so).
    ``tokens(id)`` gives a token id's display text; ``leave_out_position_0``: position 0's
    scores do not count for the score heatmaps' colour scale.
    """
    if run is None:
        blank = message_figure(NO_RUN)
        return MaskViews(mask=blank, raw=blank, masked=blank, pattern=blank, predictions=blank, text=NO_RUN), {}
    layer = clamp(layer, 0, run.config.n_layer - 1)
    head = clamp(head, 0, run.config.n_head - 1)
    notice = ""
    if mask_off and unmasked is None:
        notice = f"⚠️ {NEEDS_MODEL}\n\n"
        mask_off = False
    shown = unmasked if mask_off else run
    raw_fig, masked_fig, pattern_fig, head_arrays = score_figures(
        run, shown, layer, head, mask_off, bool(leave_out_position_0)
    )
    allowed = head_arrays["allowed"]
    T = run.n_tokens
    missing = next((why for why in (logits, unmasked_logits if mask_off else None) if isinstance(why, str)), None)
    if missing is not None:
        why = missing or NEEDS_ANALYSIS
        prediction_fig, prediction_md, prediction_arrays = message_figure(why), why, {}
    else:
        prediction_fig, prediction_md, prediction_arrays = predictions(
            run, logits, unmasked_logits if mask_off else None, tokens
        )
    blocked = int(np.sum(~allowed))
    markdown = (
        f"{notice}**{blocked} of {T * T}** (query, key) pairs are blocked"
        + (" (the mask is off)" if mask_off else f": the {T * (T - 1) // 2} above the diagonal")
        + ". Every row of the pattern sums to 1 over the keys it may read.\n\n"
        + prediction_md
    )
    arrays = {
        "token_ids": np.asarray(run.token_ids, dtype=np.int64),
        "layer": np.int64(layer),
        "head": np.int64(head),
        "mask_off": np.bool_(mask_off),
        **head_arrays,
        **prediction_arrays,
    }
    views = MaskViews(
        mask=mask_figure(allowed, run, mask_off),
        raw=raw_fig,
        masked=masked_fig,
        pattern=pattern_fig,
        predictions=prediction_fig,
        text=markdown,
    )
    return views, arrays


render = views_only(render_with_arrays)


def build(ctx: AppContext, *, tokenizer: Tokenizer, analysis: Callable, model_for: Callable, variant: Callable) -> None:
    with gr.Tab("Mask", elem_id="tab-mask") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            layer = gr.Slider(0, 11, value=0, step=1, label="Layer")
            head = gr.Slider(0, 11, value=0, step=1, label="Head")
            mask_off = gr.Checkbox(label="Turn the causal mask off", value=False)
            export = export_controls("Export mask, scores and predictions (.npz)")
        leave_out = position_0_switch("mask-leave-out-position-0")
        mask_plot = gr.Plot(label="Causal mask")
        with gr.Row():
            raw_plot = gr.Plot(label="Scores before the mask")
            masked_plot = gr.Plot(label="Scores after the mask")
            pattern_plot = gr.Plot(label="Attention pattern")
        predictions_plot = gr.Plot(label="Predictions with and without the mask")
        text = gr.Markdown()
        source_block(
            GPT2Trace.forward,
            Attention.forward,
            label="MAX source: where the mask is built (GPT2Trace) and applied (Attention)",
        )

    def token_text(token_id: int) -> str:
        return tokenizer.token(token_id).display

    def runs_of(run: Run, off) -> tuple[Run, Run | None]:
        """(the causal Run, its mask-off variant when asked for and the model can make it)."""
        if not run.causal:
            run = variant(run, causal=True)
        unmasked = variant(run, causal=False) if off and model_for(run.model_name) is not None else None
        return run, unmasked

    def next_logits(run: Run | None) -> np.ndarray | str:
        """[T, V] of the analysis graph (shared with the Logits tab), or why they are missing."""
        if run is None:
            return ""
        nxt, why = analysis(run, "next")
        return nxt.logits if nxt is not None else why

    def view_of(
        run: Run | None, layer_value, head_value, off, leave_out_position_0=True
    ) -> tuple[MaskViews, dict[str, np.ndarray]]:
        if run is None:
            return render_with_arrays(None, token_text)
        run, unmasked = runs_of(run, off)
        return render_with_arrays(
            run,
            token_text,
            layer_value,
            head_value,
            bool(off),
            unmasked,
            leave_out_position_0,
            logits=next_logits(run),
            unmasked_logits=next_logits(unmasked),
        )

    def refresh(request, layer_value, head_value, off, leave_out_position_0):
        run = ctx.current(request)
        views, _ = view_of(run, layer_value, head_value, off, leave_out_position_0)
        if run is None:
            return views
        return views._replace(
            layer=gr.update(maximum=run.config.n_layer - 1, value=clamp(layer_value, 0, run.config.n_layer - 1)),
            head=gr.update(maximum=run.config.n_head - 1, value=clamp(head_value, 0, run.config.n_head - 1)),
        )

    def update_head(request, layer_value, head_value, off, leave_out_position_0):
        """Layer, head and the position-0 switch change the three score heatmaps only (the mask,
        predictions and text stay)."""
        run = ctx.current(request)
        if run is None:
            return render(None, token_text)  # only its three score heatmaps are sent
        run, unmasked = runs_of(run, off)
        layer = clamp(layer_value, 0, run.config.n_layer - 1)
        head = clamp(head_value, 0, run.config.n_head - 1)
        mask_off = bool(off) and unmasked is not None
        raw_fig, masked_fig, pattern_fig, _ = score_figures(
            run, unmasked if mask_off else run, layer, head, mask_off, bool(leave_out_position_0)
        )
        return MaskViews(raw=raw_fig, masked=masked_fig, pattern=pattern_fig)

    def update_mask(request, layer_value, head_value, off, leave_out_position_0):
        views, _ = view_of(ctx.current(request), layer_value, head_value, off, leave_out_position_0)
        return views

    figures = ("mask", "raw", "masked", "pattern", "predictions", "text")
    inputs = [ctx.state, layer, head, mask_off, leave_out]
    outputs = MaskViews(
        mask=mask_plot,
        raw=raw_plot,
        masked=masked_plot,
        pattern=pattern_plot,
        predictions=predictions_plot,
        text=text,
        layer=layer,
        head=head,
    )
    view = ctx.view(tab, refresh, [layer, head, mask_off, leave_out], outputs)
    # Turning the mask off runs the model: share the model's concurrency queue.
    model_queue = dict(**ctx.lane(MODEL_LANE), trigger_mode="always_last")
    ctx.control(
        view,
        [slider_moved(layer), slider_moved(head), leave_out.input],
        update_head,
        inputs,
        ("raw", "masked", "pattern"),
        **model_queue,
    )
    ctx.control(view, [mask_off.input], update_mask, inputs, figures, api_name="change_mask", **model_queue)

    def tensors(run: Run, layer_value, head_value, off, leave_out_position_0):
        _, arrays = view_of(run, layer_value, head_value, off, leave_out_position_0)
        return arrays

    ctx.export(view, export, tensors)
