"""Embed: token rows of wte, position rows of wpe, their sum, norms, nearest tokens, position similarity."""

from __future__ import annotations

from collections.abc import Mapping

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from gpt2_max.modules import Embedding, GPT2Body
from gpt2_max.tokenizer import Tokenizer

from components.common import NO_RUN, AppContext, clamp, export_npz, guarded, intro, md_text, source_block, unique_labels
from components.plots import bars, heatmap, lines, message_figure
from components.run import Run

TOP_NEAREST = 10
# A [N, N] heatmap beyond this many positions costs the browser more than it shows.
MAX_SIMILARITY_POSITIONS = 256
NEEDS_WEIGHTS = "The nearest tokens need the model's weights (wte), which are still loading; this fills in when the model is ready."

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

_row_norms: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def wte_row_norms(wte: np.ndarray) -> np.ndarray:
    """L2 norm of every wte row, computed once per weight array (it is read-only)."""
    cached = _row_norms.get(id(wte))
    if cached is not None and cached[0] is wte:
        return cached[1]
    # Row by row in float32 (a float64 copy of GPT-2's wte would be 300 MB); ~1e-7 relative error.
    norms = np.sqrt(np.einsum("ij,ij->i", wte, wte)).astype(np.float64)
    _row_norms.clear()
    _row_norms[id(wte)] = (wte, norms)
    return norms


def nearest_tokens(wte: np.ndarray, vector: np.ndarray, exclude: int | None, k: int = TOP_NEAREST) -> tuple[np.ndarray, np.ndarray]:
    """(ids, cosines) of the k rows of wte most similar in direction to ``vector``, best first."""
    vector = np.asarray(vector, dtype=np.float64)
    denominator = np.maximum(wte_row_norms(wte) * np.linalg.norm(vector), 1e-12)
    cosine = (wte @ vector.astype(wte.dtype)).astype(np.float64) / denominator
    if exclude is not None:
        cosine[exclude] = -np.inf
    k = min(k, cosine.size - (exclude is not None))
    top = np.argpartition(-cosine, k - 1)[:k]
    top = top[np.argsort(-cosine[top], kind="stable")]
    return top, cosine[top]


def cosine_matrix(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def _rows_height(n_rows: int) -> int:
    return max(260, min(900, 18 * n_rows + 150))


def embedding_heatmap(values: np.ndarray, run: Run, title: str) -> go.Figure:
    dims = [str(d) for d in range(values.shape[1])]
    return heatmap(
        values, dims, run.labels, title,
        x_title="embedding dimension", y_title="position · token", value_name="value",
        diverging=True, height=_rows_height(run.n_tokens),
    )


def position_similarity(run: Run, weights: Mapping[str, np.ndarray] | None, n_positions: int) -> tuple[np.ndarray, list[str]]:
    """Cosine similarity between wpe rows 0..N-1 (the trace's rows, or wpe's beyond the input)."""
    if n_positions <= run.n_tokens or weights is None:
        n = min(n_positions, run.n_tokens)
        rows = run.trace["hook_pos_embed"][:n]
    else:
        n = n_positions
        rows = weights["wpe.weight"][:n]
    labels = [run.labels[i] if i < run.n_tokens else f"{i} (beyond input)" for i in range(n)]
    return cosine_matrix(rows), labels


def render_nearest(run: Run, weights: Mapping[str, np.ndarray] | None, tokenizer: Tokenizer, position: int | None):
    """-> (nearest-token bars, markdown, arrays) for the token at ``position`` (default: the last)."""
    T = run.n_tokens
    position = clamp(T - 1 if position is None else position, 0, T - 1, default=T - 1)
    chosen = run.tokens[position]
    if weights is None:
        return message_figure(NEEDS_WEIGHTS), "", {}
    ids, cosines = nearest_tokens(weights["wte.weight"], run.trace["hook_embed"][position], exclude=chosen.id)
    texts = [tokenizer.token(int(i)).display for i in ids]
    fig = bars(
        unique_labels(texts, ids), cosines,
        f"Nearest {len(ids)} tokens to {chosen.display!r} (position {position}) in wte, itself left out",
        value_name="cosine similarity", height=420, hover_extra=[f"id {int(i)} · nearest to {chosen.display!r} at position {position}" for i in ids],
    )
    markdown = (
        f"Cosine similarity compares directions only: 1 is the same direction, 0 unrelated. "
        f"The closest other token to **{md_text(chosen.display)}** is **{md_text(texts[0])}** ({cosines[0]:.3f})."
    )
    return fig, markdown, {"nearest_position": np.int64(position), "nearest_ids": ids.astype(np.int64), "nearest_cosine": cosines}


def similarity_limit(run: Run, weights: Mapping[str, np.ndarray] | None) -> int:
    """How many positions the similarity matrix may compare (beyond T only with wpe loaded)."""
    return min(MAX_SIMILARITY_POSITIONS, run.config.n_positions if weights is not None else run.n_tokens)


def render_similarity(run: Run, weights: Mapping[str, np.ndarray] | None, n_positions: int | None):
    """-> (position-similarity heatmap, arrays) over positions 0..N-1 (default N = T)."""
    T = run.n_tokens
    n = clamp(T if n_positions is None else n_positions, 1, max(similarity_limit(run, weights), 1), default=T)
    similarity, labels = position_similarity(run, weights, n)
    fig = heatmap(
        similarity, labels, labels,
        f"Cosine similarity of the position embeddings wpe[0..{len(labels) - 1}]",
        x_title="position", y_title="position", value_name="cosine", diverging=True, zmin=-1.0, zmax=1.0,
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
    longest = int(np.argmax(arrays["norm_sum"]))
    return (
        f"**{T} tokens**, each a vector of **{E}** numbers; the sum is longest at "
        f"position {longest} ({arrays['norm_sum'][longest]:.3g})."
    )


def render_embeddings(run: Run):
    """-> (token heatmap, position heatmap, sum heatmap, norms figure, markdown, arrays)."""
    arrays = embedding_arrays(run)
    T, E = arrays["hook_embed"].shape
    token_fig = embedding_heatmap(arrays["hook_embed"], run, f"Token embeddings wte[id]: {T} rows × {E} dimensions")
    position_fig = embedding_heatmap(arrays["hook_pos_embed"], run, f"Position embeddings wpe[0..{T - 1}]")
    sum_fig = embedding_heatmap(arrays["resid_pre_0"], run, "Their sum: the residual stream entering block 0")
    series = {
        "token ‖wte[id]‖": arrays["norm_token"],
        "position ‖wpe[pos]‖": arrays["norm_position"],
        "sum ‖token + position‖": arrays["norm_sum"],
    }
    norms_fig = lines(run.labels, series, "Vector length (L2 norm) at each position", x_title="position · token", y_title="L2 norm", height=380)
    norms_fig.update_xaxes(type="category", tickangle=-45)
    return token_fig, position_fig, sum_fig, norms_fig, summary_markdown(arrays), arrays


def render(
    run: Run | None,
    weights: Mapping[str, np.ndarray] | None,
    tokenizer: Tokenizer,
    position: int | None = None,
    n_positions: int | None = None,
):
    """-> (token fig, position fig, sum fig, norms fig, nearest fig, position-similarity fig, markdown, arrays).

    ``weights`` is the model's weight dict (None while it loads: the nearest tokens wait);
    ``position`` picks the token whose nearest neighbours are shown (default: the last);
    ``n_positions`` how many positions the similarity matrix compares (default: the input's T).
    """
    if run is None:
        blank = message_figure(NO_RUN)
        return blank, blank, blank, blank, blank, blank, NO_RUN, {}
    token_fig, position_fig, sum_fig, norms_fig, markdown, arrays = render_embeddings(run)
    nearest_fig, nearest_md, nearest_arrays = render_nearest(run, weights, tokenizer, position)
    sim_fig, sim_arrays = render_similarity(run, weights, n_positions)
    markdown = " ".join(m for m in (markdown, nearest_md) if m)
    return token_fig, position_fig, sum_fig, norms_fig, nearest_fig, sim_fig, markdown, {**arrays, **nearest_arrays, **sim_arrays}


def position_choices(run: Run) -> list[tuple[str, int]]:
    return [(label, i) for i, label in enumerate(run.labels)]


def build(ctx: AppContext) -> None:
    service = ctx.service
    with gr.Tab("Embed", id="embed"):
        gr.Markdown(INTRO)
        summary = gr.Markdown()
        token_plot = gr.Plot(label="Token embeddings")
        position_plot = gr.Plot(label="Position embeddings")
        sum_plot = gr.Plot(label="Token + position")
        norms_plot = gr.Plot(label="Norms")
        with gr.Row():
            position = gr.Dropdown(label="Nearest tokens to the token at", choices=[], type="index", interactive=True)
            n_positions = gr.Slider(1, MAX_SIMILARITY_POSITIONS, value=16, step=1, label="Positions in the similarity matrix")
            download = gr.DownloadButton("Download embeddings (.npz)", variant="secondary")
        with gr.Row():
            nearest_plot = gr.Plot(label="Nearest tokens")
            similarity_plot = gr.Plot(label="Position similarity")
        source_block(Embedding, GPT2Body.embed)

    def weights(run: Run | None):
        model = service.model_for(run.model_name) if run is not None else None
        return model.weights if model is not None else None

    @guarded("plot", "plot", "plot", "plot", "plot", "plot", "text", "keep", "keep", "keep")
    def refresh(request):
        run = ctx.current(request)
        *figures, markdown, arrays = render(run, weights(run), service.tokenizer)
        if run is None:
            return *figures, markdown, gr.update(), gr.update(), None
        choice = gr.update(choices=position_choices(run), value=run.n_tokens - 1)
        count = gr.update(maximum=max(similarity_limit(run, weights(run)), 2), value=run.n_tokens)
        return *figures, markdown, choice, count, export_npz("embed", arrays)

    @guarded("plot", "plot", "text", "keep")
    def update(request, chosen, count):
        run = ctx.current(request)
        if run is None:
            return message_figure(NO_RUN), message_figure(NO_RUN), NO_RUN, None
        arrays = embedding_arrays(run)
        markdown = summary_markdown(arrays)
        nearest_fig, nearest_md, nearest_arrays = render_nearest(run, weights(run), service.tokenizer, chosen)
        sim_fig, sim_arrays = render_similarity(run, weights(run), count)
        markdown = " ".join(m for m in (markdown, nearest_md) if m)
        return nearest_fig, sim_fig, markdown, export_npz("embed", {**arrays, **nearest_arrays, **sim_arrays})

    ctx.on_run(
        refresh,
        [ctx.state],
        [token_plot, position_plot, sum_plot, norms_plot, nearest_plot, similarity_plot, summary, position, n_positions, download],
    )
    for control in (position, n_positions):
        control.change(update, [ctx.state, position, n_positions], [nearest_plot, similarity_plot, summary, download])
