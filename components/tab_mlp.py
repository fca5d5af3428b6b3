"""MLP: each block's per-position feed-forward layer, its GELU and its strongest neurons."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from components.common import (
    NO_RUN,
    AppContext,
    clamp,
    export_controls,
    intro,
    named_outputs,
    position_0_switch,
    slider_moved,
    source_block,
)
from components.plots import (
    MAX_CELLS_PER_AXIS,
    bars,
    binned_heatmap,
    counted_positions,
    figure,
    finite,
    message_figure,
    plot_texts,
)
from explorer.runs import Run
from gpt2_max.hooks import block_key
from gpt2_max.modules import MLP

# The overlay shows at most this many (pre, post) pairs; a prompt of T tokens has T x 4E of them.
MAX_POINTS = 3000
TOP_NEURONS = 40  # columns of the neuron heatmap
TOP_AT_POSITION = 15  # bars for the chosen position
CURVE_POINTS = 400
SAMPLE_SEED = 0  # the same prompt always shows the same sample
# Okabe-Ito: distinguishable with every common colour-vision deficiency.
CURVE_COLOUR = "#000000"
POINT_COLOUR = "#0072B2"

# The tab's outputs, by name: its three figures, the summary, and the two controls a Run resets.
MLPViews = named_outputs("gelu", "heatmap", "bars", "summary", "layer", "position")

INTRO = intro(
    "5 · MLP",
    "After attention, each block's MLP transforms every position on its own, with no mixing between "
    "positions: a dense layer (`c_fc`) widens the E-number vector to 4E numbers, GELU bends each of "
    "them (negative inputs are squashed towards 0, never below −0.17; large positive ones pass "
    "almost unchanged), and a second dense layer (`c_proj`) maps the 4E back to E, which is added to the "
    "residual stream. Each of the 4E GELU outputs is a *neuron*; a few fire strongly on particular "
    "tokens or contexts.",
    [
        ("blocks.{i}.mlp.hook_pre", "[T, 4E] `c_fc` output, the GELU's input (4E = 3,072 in GPT-2 small)"),
        ("blocks.{i}.mlp.hook_post", "[T, 4E] GELU output: the neuron activations"),
        ("blocks.{i}.hook_mlp_out", "[T, E] `c_proj` output: what the MLP adds to the residual stream"),
    ],
)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GPT-2's GELU, the tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def layer_activations(run: Run, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(hook_pre, hook_post) of one block's MLP, each [T, F]."""
    return run.trace[block_key(layer, "mlp.hook_pre")], run.trace[block_key(layer, "mlp.hook_post")]


def sample_indices(n: int, limit: int = MAX_POINTS, keep: tuple[int, ...] = ()) -> np.ndarray:
    """Sorted flat indices: all of 0..n-1 when n <= limit, else a seeded sample of ``limit`` (with ``keep``)."""
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(SAMPLE_SEED)
    chosen = rng.choice(n, size=limit - len(keep), replace=False)
    return np.unique(np.concatenate([chosen, np.asarray(keep, dtype=np.int64)]))


def top_neurons(post: np.ndarray, k: int = TOP_NEURONS) -> np.ndarray:
    """The k neurons with the largest max |activation| over positions, strongest first."""
    score = np.abs(post).max(axis=0)
    return np.argsort(-score, kind="stable")[: min(k, post.shape[1])]


def top_at_position(post: np.ndarray, position: int, k: int = TOP_AT_POSITION) -> tuple[np.ndarray, np.ndarray]:
    """(neuron ids, activations) of the k largest activations at one position, largest first."""
    row = post[position]
    ids = np.argsort(-row, kind="stable")[: min(k, row.size)]
    return ids, row[ids]


def gelu_figure(run: Run, layer: int, leave_out_position_0: bool = True) -> go.Figure:
    """The GELU curve and a sample of this input's (pre, post) pairs. The axes span the
    pre-activations of the positions that count (all, or 1..T-1 when position 0 is left out:
    its few huge values would squeeze the bend of the curve into a few pixels)."""
    pre, post = layer_activations(run, layer)
    T, F = pre.shape
    flat_pre = pre.reshape(-1)
    counted = pre[counted_positions(T, leave_out_position_0)].reshape(-1)
    finite_pre = counted[np.isfinite(counted)]
    low = min(-4.0, float(finite_pre.min()) if finite_pre.size else -4.0)
    high = max(4.0, float(finite_pre.max()) if finite_pre.size else 4.0)
    pad = 0.05 * (high - low)
    xs = np.linspace(low - pad, high + pad, CURVE_POINTS)
    # Position 0's values beyond that range (only when it is left out) are named in the title.
    first = pre[0][np.isfinite(pre[0])] if leave_out_position_0 and T > 1 else np.empty(0)
    outside = int(np.count_nonzero((first < xs[0]) | (first > xs[-1])))
    notes = (
        [
            f"position 0 left out of the axes: {outside} of its {F:,} pre-activations lie beyond them ({first.min():.3g} to {first.max():.3g})"
        ]
        if outside
        else []
    )

    keep = (int(np.argmin(flat_pre)), int(np.argmax(flat_pre))) if flat_pre.size else ()
    index = sample_indices(flat_pre.size, MAX_POINTS, keep)
    positions, neurons = np.divmod(index, F)
    # Numbers go as small typed arrays (customdata, float32 x and y); each point's token is its
    # short text alone (the position is in customdata), escaped for Plotly's pseudo-HTML.
    tokens = np.asarray(plot_texts([t.display for t in run.tokens]), dtype=object)[positions]

    curve = gelu_tanh(xs)
    y_pad = 0.05 * (curve.max() - curve.min())
    shown = "all" if index.size == flat_pre.size else f"a sample of {index.size:,}"
    traces = [
        dict(
            type="scatter",
            x=xs,
            y=curve,
            mode="lines",
            name="GELU (tanh approximation)",
            line=dict(color=CURVE_COLOUR, width=2),
            hovertemplate="GELU(%{x:.3f}) = %{y:.4g}<extra></extra>",
        ),
        dict(
            type="scatter",
            x=finite(pre.reshape(-1)[index]).astype(np.float32),
            y=finite(post.reshape(-1)[index]).astype(np.float32),
            mode="markers",
            name=f"this input ({index.size:,} of {flat_pre.size:,} values)",
            marker=dict(color=POINT_COLOUR, size=6, opacity=0.55),
            customdata=np.column_stack([positions, neurons]),  # int64: Plotly sends the smallest int type that fits
            text=list(tokens),
            hovertemplate=(
                "token %{text}<br>position %{customdata[0]}<br>neuron %{customdata[1]}"
                "<br>pre (input) %{x:.4g}<br>post (GELU) %{y:.4g}<extra></extra>"
            ),
        ),
    ]
    return figure(
        traces,
        f"Block {layer}: GELU, with {shown} of this input's {T} × {F} pre-activations",
        height=440,
        notes=notes,
        xaxis=dict(title="pre-activation (mlp.hook_pre)", zeroline=True, range=[xs[0], xs[-1]]),
        yaxis=dict(title="activation (mlp.hook_post)", zeroline=True, range=[curve.min() - y_pad, curve.max() + y_pad]),
    )


def neuron_heatmap(run: Run, layer: int, leave_out_position_0: bool = True) -> go.Figure:
    _, post = layer_activations(run, layer)
    top = top_neurons(post)
    return binned_heatmap(
        post[:, top],
        [f"n{n}" for n in top],
        run.labels,
        f"Block {layer}: the {top.size} neurons with the largest |activation|",
        subtitle="on this input, strongest left",
        y_short=[t.display for t in run.tokens],
        bin_x=False,
        x_title="neuron",
        y_title="token",
        value_name="activation",
        diverging=True,
        position_axes="y",
        leave_out_position_0=leave_out_position_0,
        height=max(300, min(900, 22 * min(run.n_tokens, MAX_CELLS_PER_AXIS) + 160)),
    )


def position_bars(run: Run, layer: int, position: int) -> go.Figure:
    pre, post = layer_activations(run, layer)
    ids, values = top_at_position(post, position)
    label = run.labels[position]
    return bars(
        [f"neuron {n}" for n in ids],
        values.tolist(),
        f"Block {layer}: strongest neurons at {label!r}",
        value_name="activation",
        height=max(300, 26 * ids.size + 120),
        hover_extra=[f"token {label}<br>position {position}<br>pre-activation {pre[position, n]:.4g}" for n in ids],
    )


def summary_markdown(run: Run, layer: int, position: int) -> str:
    pre, post = layer_activations(run, layer)
    F = post.shape[1]
    positive = float((pre > 0).mean())
    strongest = np.unravel_index(int(np.argmax(post)), post.shape)
    out = run.trace[block_key(layer, "hook_mlp_out")]
    resid = run.trace[block_key(layer, "hook_resid_mid")]
    ratio = float(np.linalg.norm(out[position]) / max(np.linalg.norm(resid[position]), 1e-12))
    return (
        f"**Block {layer}** has {F:,} neurons per position. On this input {positive:.0%} of the "
        f"pre-activations are positive (GELU keeps those positive, nearly unchanged above about 2); the "
        f"rest come out between −0.17 and 0. "
        f"The strongest activation is neuron **{strongest[1]}** at **{run.labels[strongest[0]]!r}** "
        f"({post[strongest]:.3f}). At {run.labels[position]!r} the MLP's output has "
        f"{ratio:.2f}× the norm of the residual stream it reads."
    )


def resolve(run: Run, layer, position) -> tuple[int, int]:
    """Layer and position from controls or raw API values, kept in range (position defaults to last)."""
    return (
        clamp(layer, 0, run.config.n_layer - 1),
        clamp(position, 0, run.n_tokens - 1, default=run.n_tokens - 1),
    )


def render(run: Run | None, layer=0, position=None, leave_out_position_0: bool = True) -> MLPViews:
    """-> MLPViews: the GELU figure, the neuron heatmap, the top neurons at a position and the
    summary (the controls unchanged).

    ``leave_out_position_0``: position 0 counts neither for the heatmap's colours nor for the
    GELU plot's axes."""
    if run is None:
        return MLPViews(
            gelu=message_figure(NO_RUN), heatmap=message_figure(NO_RUN), bars=message_figure(NO_RUN), summary=NO_RUN
        )
    layer, position = resolve(run, layer, position)
    leave_out_position_0 = bool(leave_out_position_0)
    return MLPViews(
        gelu=gelu_figure(run, layer, leave_out_position_0),
        heatmap=neuron_heatmap(run, layer, leave_out_position_0),
        bars=position_bars(run, layer, position),
        summary=summary_markdown(run, layer, position),
    )


def tensors(run: Run, layer=0, position=None) -> dict[str, np.ndarray]:
    """What the plots show, for the .npz download."""
    layer, position = resolve(run, layer, position)
    pre, post = layer_activations(run, layer)
    top = top_neurons(post)
    ids, values = top_at_position(post, position)
    return {
        "layer": np.asarray(layer),
        "position": np.asarray(position),
        "token_ids": np.asarray(run.token_ids),
        "mlp_hook_pre": pre,
        "mlp_hook_post": post,
        "top_neurons": top,
        "top_neurons_post": post[:, top],
        "position_top_neurons": ids,
        "position_top_post": values,
    }


def build(ctx: AppContext, *, model_for: Callable) -> None:
    model = model_for(None)  # the host's model sets the layer slider's range
    n_layer = model.config.n_layer if model is not None else 12
    with gr.Tab("MLP", elem_id="tab-mlp") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            layer_control = gr.Slider(
                0, max(n_layer - 1, 1), value=0, step=1, label="Block (layer)", interactive=True, elem_id="mlp-layer"
            )
            position_control = gr.Dropdown(
                label="Token position for the strongest neurons", choices=[], interactive=True, elem_id="mlp-position"
            )
            export = export_controls("Export this block's MLP activations (.npz)")
        leave_out = position_0_switch("mlp-leave-out-position-0")
        summary = gr.Markdown()
        gelu_plot = gr.Plot(label="GELU and this input's activations")
        heatmap_plot = gr.Plot(label="Neuron activations")
        bars_plot = gr.Plot(label="Strongest neurons at one position")
        source_block(MLP, label="MAX source of this stage (gpt2_max.modules.MLP)")

    def refresh(request, layer, leave_out_position_0):
        run = ctx.current(request)
        views = render(run, layer, None, leave_out_position_0)
        if run is None:
            return views._replace(position=gr.update(choices=[], value=None))
        layer, position = resolve(run, layer, None)
        choices = [(label, i) for i, label in enumerate(run.labels)]
        return views._replace(
            layer=gr.update(maximum=max(run.config.n_layer - 1, 1), value=layer),
            position=gr.update(choices=choices, value=position),
        )

    def change(request, layer, position, leave_out_position_0):
        return render(ctx.current(request), layer, position, leave_out_position_0)

    def change_position(request, layer, position):
        """A position changes only its bars (and the summary that quotes it)."""
        run = ctx.current(request)
        if run is None:
            return MLPViews(bars=message_figure(NO_RUN), summary=NO_RUN)
        layer, position = resolve(run, layer, position)
        return MLPViews(bars=position_bars(run, layer, position), summary=summary_markdown(run, layer, position))

    outputs = MLPViews(
        gelu=gelu_plot,
        heatmap=heatmap_plot,
        bars=bars_plot,
        summary=summary,
        layer=layer_control,
        position=position_control,
    )
    view = ctx.view(tab, refresh, [layer_control, leave_out], outputs)
    inputs = [ctx.state, layer_control, position_control]
    figures = ("gelu", "heatmap", "bars", "summary")
    ctx.control(
        view,
        [slider_moved(layer_control)],
        change,
        [*inputs, leave_out],
        figures,
        api_name="change_mlp",
        trigger_mode="always_last",
    )
    ctx.control(view, [leave_out.input], change, [*inputs, leave_out], figures, trigger_mode="always_last")
    ctx.control(
        view,
        [position_control.input],
        change_position,
        inputs,
        ("bars", "summary"),
        api_name="change_mlp_position",
        trigger_mode="always_last",
    )
    ctx.export(view, export, tensors, [layer_control, position_control])
