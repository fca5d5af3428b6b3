"""Embed: token rows of wte, position rows of wpe, their sum, norms, nearest tokens, position similarity."""

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
    md_text,
    named_outputs,
    position_0_switch,
    slider_moved,
    source_block,
    unique_labels,
    views_only,
)
from components.plots import LABEL_ANGLES, MAX_CELLS_PER_AXIS, bars, binned_heatmap, lines, message_figure
from explorer.runs import Run
from gpt2_max.analysis import Nearest
from gpt2_max.modules import Embedding, GPT2Analysis, GPT2Body
from gpt2_max.tokenizer import Tokenizer

TOP_NEAREST = 10
# The embedding heatmaps show this many of the E dimensions: those that vary most over the input.
TOP_SPREAD_DIMS = 64
# A [N, N] heatmap beyond this many positions costs the browser more than it shows.
MAX_SIMILARITY_POSITIONS = 256
NEEDS_WEIGHTS = (
    "The nearest tokens need the model's weights (wte), which are still loading; this fills in when the model is ready."
)

# The tab's outputs, by name: the heatmaps of the token rows, the position rows and their sum, the norms,
# the nearest tokens, the position similarity, the summary, and the two controls a Run resets (the
# position whose nearest tokens are shown, the positions the similarity compares).
EmbedViews = named_outputs(
    "token", "position", "sum", "norms", "nearest", "similarity", "summary", "nearest_to", "n_positions"
)

INTRO = intro(
    "2 · Embed",
    "Each token id selects one row of the token-embedding matrix `wte` (a learned vector of E numbers; "
    "E = 768 in GPT-2 small), and each position 0..T-1 selects one row of the position-embedding matrix "
    "`wpe`. Their sum is the residual stream that enters block 0: every later stage reads these vectors "
    "and adds to them. GPT-2 reuses `wte` at the very end to score every vocabulary entry (tied weights), "
    "so tokens with similar rows look alike to the model both as input and as candidates for the next token.",
    [
        ("hook_embed", "[T, E] = wte[token_ids]"),
        ("hook_pos_embed", "[T, E] = wpe[0..T-1]"),
        ("blocks.0.hook_resid_pre", "[T, E] = hook_embed + hook_pos_embed"),
        ("wte.weight", "[V, E], V = 50,257"),
        ("wpe.weight", "[P, E], P = 1,024 positions"),
    ],
)


def cosine_matrix(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def _rows_height(n_rows: int) -> int:
    return max(260, min(900, 18 * n_rows + 150))


def spread_dims(values: np.ndarray, k: int) -> np.ndarray:
    """The k columns of [T, E] ``values`` with the largest std over positions, in dimension order."""
    spread = np.asarray(values, dtype=np.float64).std(axis=0)
    return np.sort(np.argsort(-spread, kind="stable")[: min(k, spread.size)])


def embedding_heatmap(
    values: np.ndarray, run: Run, title: str, k: int | None = None, leave_out_position_0: bool = True
) -> go.Figure:
    """[T, E] rows as a heatmap of the k (default TOP_SPREAD_DIMS) dimensions that vary most over
    these positions (all E when E <= k); positions averaged over blocks beyond a screenful.
    Colours from the bulk of the values (position 0's row left out of them when asked)."""
    T, E = values.shape
    dims = spread_dims(values, TOP_SPREAD_DIMS if k is None else k)
    subtitle = (
        ""
        if dims.size == E
        else f"the {dims.size} of {E} dimensions with the largest spread (std over these {T} positions), in dimension order"
    )
    return binned_heatmap(
        values[:, dims],
        [str(d) for d in dims],
        run.labels,
        title,
        y_short=[t.display for t in run.tokens],
        bin_x=False,
        subtitle=subtitle,
        x_title="embedding dimension",
        y_title="position · token",
        value_name="value",
        diverging=True,
        position_axes="y",
        leave_out_position_0=leave_out_position_0,
        height=_rows_height(min(T, MAX_CELLS_PER_AXIS)),
    )


def position_similarity(run: Run, wpe: np.ndarray | None, n_positions: int) -> tuple[np.ndarray, list[str]]:
    """Cosine similarity between wpe rows 0..N-1 (the trace's rows, or wpe's beyond the input)."""
    if n_positions <= run.n_tokens or wpe is None:
        n = min(n_positions, run.n_tokens)
        rows = run.trace["hook_pos_embed"][:n]
    else:
        n = n_positions
        rows = wpe[:n]
    labels = [run.labels[i] if i < run.n_tokens else f"{i} (beyond input)" for i in range(n)]
    return cosine_matrix(rows), labels


def render_nearest(run: Run, nearest: Nearest | str, tokenizer: Tokenizer, position: int | None):
    """-> (nearest-token bars, markdown, arrays) for the token at ``position`` (default: the last).

    ``nearest`` is the Run's nearest-token analysis (every position's, from the MAX analysis
    graph), or the message saying why it is not available yet."""
    T = run.n_tokens
    position = clamp(T - 1 if position is None else position, 0, T - 1, default=T - 1)
    chosen = run.tokens[position]
    if not isinstance(nearest, Nearest):
        why = nearest or NEEDS_WEIGHTS
        return message_figure(why), f"**Nearest tokens:** {why}", {}
    ids, cosines = nearest.ids[position], nearest.cosines[position]
    texts = [tokenizer.token(int(i)).display for i in ids]
    fig = bars(
        unique_labels(texts, ids),
        cosines,
        f"Nearest {len(ids)} tokens to {chosen.display!r} (position {position}) in wte, itself left out",
        value_name="cosine similarity",
        height=420,
        hover_extra=[f"id {int(i)} · nearest to {chosen.display!r} at position {position}" for i in ids],
    )
    markdown = (
        f"Cosine similarity compares directions only: 1 is the same direction, 0 unrelated. "
        f"The closest other token to **{md_text(chosen.display)}** is **{md_text(texts[0])}** ({cosines[0]:.3f})."
    )
    return (
        fig,
        markdown,
        {"nearest_position": np.int64(position), "nearest_ids": ids.astype(np.int64), "nearest_cosine": cosines},
    )


def similarity_limit(run: Run, wpe: np.ndarray | None) -> int:
    """How many positions the similarity matrix may compare (beyond T only with wpe loaded)."""
    return min(MAX_SIMILARITY_POSITIONS, run.config.n_positions if wpe is not None else run.n_tokens)


def render_similarity(run: Run, wpe: np.ndarray | None, n_positions: int | None):
    """-> (position-similarity heatmap, arrays) over positions 0..N-1 (default N = T)."""
    T = run.n_tokens
    n = clamp(T if n_positions is None else n_positions, 1, max(similarity_limit(run, wpe), 1), default=T)
    similarity, labels = position_similarity(run, wpe, n)
    short = [run.tokens[i].display if i < T else "(beyond input)" for i in range(len(labels))]
    fig = binned_heatmap(
        similarity,
        labels,
        labels,
        f"Cosine similarity of the position embeddings wpe[0..{len(labels) - 1}]",
        x_short=short,
        y_short=short,
        x_title="position",
        y_title="position",
        value_name="cosine",
        diverging=True,
        zmin=-1.0,
        zmax=1.0,
        height=max(380, min(800, 14 * len(labels) + 180)),
    )
    return fig, {"position_cosine": similarity}


def embedding_arrays(run: Run) -> dict[str, np.ndarray]:
    """The tensors behind the embedding plots, and each position's vector lengths."""
    token_rows = run.trace["hook_embed"]
    position_rows = run.trace["hook_pos_embed"]
    summed = run.trace["blocks.0.hook_resid_pre"]
    return {
        "token_ids": np.asarray(run.token_ids, dtype=np.int64),
        "hook_embed": token_rows,
        "hook_pos_embed": position_rows,
        "resid_pre_0": summed,
        "norm_token": np.linalg.norm(token_rows.astype(np.float64), axis=1),
        "norm_position": np.linalg.norm(position_rows.astype(np.float64), axis=1),
        "norm_sum": np.linalg.norm(summed.astype(np.float64), axis=1),
    }


def summary_markdown(arrays: dict[str, np.ndarray]) -> str:
    T, E = arrays["hook_embed"].shape
    norms = arrays["norm_sum"]
    longest = int(np.argmax(norms))
    text = f"**{T} tokens**, each a vector of **{E}** numbers; the sum is longest at position {longest} ({norms[longest]:.3g})."
    if T > 1:
        text += f" Position 0's is {norms[0] / max(float(np.median(norms[1:])), 1e-12):.3g}× the median of the others'."
    return text


def render_embeddings(run: Run, leave_out_position_0: bool = True):
    """-> (token heatmap, position heatmap, sum heatmap, norms figure, markdown, arrays).

    ``leave_out_position_0``: position 0 counts neither for the heatmaps' colour limits nor
    in the norm plot (its norms are in the plot's title)."""
    arrays = embedding_arrays(run)
    T, E = arrays["hook_embed"].shape
    leave_out = dict(leave_out_position_0=leave_out_position_0)
    token_fig = embedding_heatmap(
        arrays["hook_embed"], run, f"Token embeddings wte[id]: {T} rows × {E} dimensions", **leave_out
    )
    position_fig = embedding_heatmap(arrays["hook_pos_embed"], run, f"Position embeddings wpe[0..{T - 1}]", **leave_out)
    sum_fig = embedding_heatmap(
        arrays["resid_pre_0"], run, "Their sum: the residual stream entering block 0", **leave_out
    )
    series = {
        "token ‖wte[id]‖": arrays["norm_token"],
        "position ‖wpe[pos]‖": arrays["norm_position"],
        "sum ‖token + position‖": arrays["norm_sum"],
    }
    norms_fig = lines(
        run.labels,
        series,
        "Vector length (L2 norm) at each position",
        x_title="position · token",
        y_title="L2 norm",
        height=400,
        log_y=True,
        **leave_out,
    )
    norms_fig.update_xaxes(type="category", **LABEL_ANGLES)
    return token_fig, position_fig, sum_fig, norms_fig, summary_markdown(arrays), arrays


def render_with_arrays(
    run: Run | None,
    tokenizer: Tokenizer,
    position: int | None = None,
    n_positions: int | None = None,
    *,
    nearest: Nearest | str = NEEDS_WEIGHTS,
    wpe: np.ndarray | None = None,
    leave_out_position_0: bool = True,
) -> tuple[EmbedViews, dict[str, np.ndarray]]:
    """-> (EmbedViews: the token, position and sum heatmaps, the norms, the nearest tokens, the
    position similarity and the summary (the controls unchanged); the arrays behind them, for the export).

    ``nearest`` is the Run's nearest-token analysis (or why it is missing: the model loads);
    ``wpe`` the model's position embeddings (None while it loads: the similarity stops at T);
    ``position`` picks the token whose nearest neighbours are shown (default: the last);
    ``n_positions`` how many positions the similarity matrix compares (default: the input's T);
    ``leave_out_position_0``: position 0 counts neither for the heatmaps' colours nor in the norms.
    """
    if run is None:
        blank = message_figure(NO_RUN)
        views = EmbedViews(
            token=blank, position=blank, sum=blank, norms=blank, nearest=blank, similarity=blank, summary=NO_RUN
        )
        return views, {}
    token_fig, position_fig, sum_fig, norms_fig, markdown, arrays = render_embeddings(run, leave_out_position_0)
    nearest_fig, nearest_md, nearest_arrays = render_nearest(run, nearest, tokenizer, position)
    sim_fig, sim_arrays = render_similarity(run, wpe, n_positions)
    markdown = " ".join(m for m in (markdown, nearest_md) if m)
    views = EmbedViews(
        token=token_fig,
        position=position_fig,
        sum=sum_fig,
        norms=norms_fig,
        nearest=nearest_fig,
        similarity=sim_fig,
        summary=markdown,
    )
    return views, {**arrays, **nearest_arrays, **sim_arrays}


render = views_only(render_with_arrays)


def position_choices(run: Run) -> list[tuple[str, int]]:
    return [(label, i) for i, label in enumerate(run.labels)]


def build(ctx: AppContext, *, tokenizer: Tokenizer, analysis: Callable, model_for: Callable) -> None:
    with gr.Tab("Embed", elem_id="tab-embed") as tab:
        gr.Markdown(INTRO)
        summary = gr.Markdown()
        leave_out = position_0_switch("embed-leave-out-position-0")
        token_plot = gr.Plot(label="Token embeddings")
        position_plot = gr.Plot(label="Position embeddings")
        sum_plot = gr.Plot(label="Token + position")
        norms_plot = gr.Plot(label="Norms")
        with gr.Row():
            position = gr.Dropdown(label="Nearest tokens to the token at", choices=[], type="index", interactive=True)
            n_positions = gr.Slider(
                1, MAX_SIMILARITY_POSITIONS, value=16, step=1, label="Positions in the similarity matrix"
            )
            export = export_controls("Export embeddings (.npz)")
        with gr.Row():
            nearest_plot = gr.Plot(label="Nearest tokens")
            similarity_plot = gr.Plot(label="Position similarity")
        source_block(
            Embedding,
            GPT2Body.embed,
            GPT2Analysis,
            label="MAX source of this stage (embeddings; the analysis graph's cosine search)",
        )

    def inputs_of(run: Run):
        """The nearest-token analysis (or why not yet) and wpe, for a Run."""
        result, why = analysis(run, "nearest")
        model = model_for(run.model_name)
        return dict(
            nearest=result if result is not None else why,
            wpe=model.weights["wpe.weight"] if model is not None else None,
        )

    def refresh(request, leave_out_position_0):
        run = ctx.current(request)
        if run is None:
            return render(None, tokenizer)
        extra = inputs_of(run)
        views = render(run, tokenizer, leave_out_position_0=bool(leave_out_position_0), **extra)
        return views._replace(
            nearest_to=gr.update(choices=position_choices(run), value=run.n_tokens - 1),
            n_positions=gr.update(maximum=max(similarity_limit(run, extra["wpe"]), 2), value=run.n_tokens),
        )

    def update(request, chosen, count):
        run = ctx.current(request)
        if run is None:
            return EmbedViews(nearest=message_figure(NO_RUN), similarity=message_figure(NO_RUN), summary=NO_RUN)
        extra = inputs_of(run)
        nearest_fig, nearest_md, _ = render_nearest(run, extra["nearest"], tokenizer, chosen)
        sim_fig, _ = render_similarity(run, extra["wpe"], count)
        markdown = " ".join(m for m in (summary_markdown(embedding_arrays(run)), nearest_md) if m)
        return EmbedViews(nearest=nearest_fig, similarity=sim_fig, summary=markdown)

    def rescale(request, leave_out_position_0):
        """The switch changes the three heatmaps' colour limits and the norm plot only."""
        run = ctx.current(request)
        if run is None:
            blank = message_figure(NO_RUN)
            return EmbedViews(token=blank, position=blank, sum=blank, norms=blank)
        token_fig, position_fig, sum_fig, norms_fig, _, _ = render_embeddings(run, bool(leave_out_position_0))
        return EmbedViews(token=token_fig, position=position_fig, sum=sum_fig, norms=norms_fig)

    def tensors(run: Run, chosen, count):
        _, arrays = render_with_arrays(run, tokenizer, chosen, count, **inputs_of(run))
        return arrays

    outputs = EmbedViews(
        token=token_plot,
        position=position_plot,
        sum=sum_plot,
        norms=norms_plot,
        nearest=nearest_plot,
        similarity=similarity_plot,
        summary=summary,
        nearest_to=position,
        n_positions=n_positions,
    )
    view = ctx.view(tab, refresh, [leave_out], outputs)
    ctx.control(
        view,
        [position.input, slider_moved(n_positions)],
        update,
        [ctx.state, position, n_positions],
        ("nearest", "similarity", "summary"),
        trigger_mode="always_last",
    )
    ctx.control(view, [leave_out.input], rescale, [ctx.state, leave_out], ("token", "position", "sum", "norms"))
    ctx.export(view, export, tensors, [position, n_positions])
