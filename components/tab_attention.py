"""Attention: one head's pattern, every head at a glance, a position's q/k/v, and ablating a head."""

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
    fmt_p,
    intro,
    md_text,
    named_outputs,
    slider_moved,
    source_block,
    unique_labels,
)
from components.plots import (
    LABEL_ANGLES,
    SEQUENTIAL,
    attention_blocks,
    attention_pattern,
    bin_starts,
    binned_heatmap,
    block_labels,
    colour_bar,
    heatmap,
    layout,
    layout_properties,
    message_figure,
    template_text,
    tiled_heatmap,
)
from explorer.runs import Run
from gpt2_max import attribution
from gpt2_max.hooks import block_key
from gpt2_max.modules import Attention
from gpt2_max.sampling import softmax
from gpt2_max.scheduling import MODEL_LANE
from gpt2_max.tokenizer import Tokenizer

TOP_NEXT = 10
# Each small multiple is drawn at most GRID_BINS x GRID_BINS cells (longer inputs are
# averaged over blocks of positions), so 12 x 12 heads stay light in the browser:
# the 12 x 12 heads of GPT-2 small at 12 x 12 float32 cells are ~0.23 MB of figure data
# with their axes (16 x 16 would be 0.33 MB, over the tab's 0.3 MB at 64 tokens).
GRID_BINS = 12
# A head whose queries 1..T-1 put more than this share of their attention on position 0 on
# average is named a sink in the text (most heads of the real GPT-2 from layer ~3 on).
SINK_SHARE = 0.5
# Okabe-Ito blue and orange: distinguishable with every common colour-vision deficiency.
BEFORE_COLOUR = "#0072B2"
AFTER_COLOUR = "#E69F00"
NEEDS_MODEL = "Ablating a head runs the model again, which needs the live model; it is still loading (or unavailable)."

# The tab's outputs, by name: one head's pattern, every head's pattern, the head's q/k/v and its ablation,
# the summary, the three controls a Run resets, then the head detectors and their strongest heads, then
# the compare panel (shown with a compare prompt): B's pattern of the head, A − B, and its text.
AttentionViews = named_outputs(
    "pattern",
    "grid",
    "qkv",
    "ablation",
    "summary",
    "layer",
    "head",
    "position",
    "detectors",
    "detector_summary",
    "compare_panel",
    "compare_pattern",
    "difference",
    "compare_summary",
)

INTRO = intro(
    "4 · Attention",
    "In every block each head projects each position's vector to a query, a key and a value (D = E/H numbers "
    "each; 64 in GPT-2 small). A query's scaled dot products with the keys it may read, after the mask and a "
    "softmax, give that head's attention pattern: how much of each readable position's value (its own and "
    "earlier ones') it mixes into this position. Heads learn different patterns (the previous token, the first token, an earlier copy of "
    "the current token); ablating a head zeroes its output, which shows what it contributes to the prediction.",
    [
        ("blocks.{i}.attn.hook_q / hook_k / hook_v", "[T, H, D] per head"),
        ("blocks.{i}.attn.hook_pattern", "[H, T, T] rows = queries, columns = keys, rows sum to 1"),
        ("blocks.{i}.attn.hook_z", "[T, H, D] pattern @ v (0 for an ablated head)"),
        ("logits", "[T, V] next-token scores"),
    ],
)


def _height(T: int) -> int:
    return max(360, min(800, 18 * T + 170))


def pattern_figure(run: Run, layer: int, head: int, whose: str = "") -> go.Figure:
    """One head's pattern; ``whose``: the run's name at the head of the title (the compare prompt's)."""
    pattern = run.trace[block_key(layer, "attn.hook_pattern")][head]
    displays = [t.display for t in run.tokens]
    return attention_pattern(
        pattern,
        run.labels,
        displays,
        (f"{whose}: " if whose else "") + f"Attention pattern, layer {layer} head {head}: each row sums to 1",
        height=_height(run.n_tokens),
    )


def pattern_difference(a: Run, b: Run, layer: int, head: int) -> np.ndarray | None:
    """[T, T] float64: A's pattern of the head minus B's, or None when their token counts differ
    (then no query and key of one is a query and key of the other)."""
    if a.n_tokens != b.n_tokens:
        return None
    key = block_key(layer, "attn.hook_pattern")
    return a.trace[key][head].astype(np.float64) - b.trace[key][head].astype(np.float64)


def difference_figure(a: Run, b: Run, layer: int, head: int) -> go.Figure:
    """A − B for one head on a colour scale centred on 0 (drawn in blocks as the patterns are, for
    long inputs: the blocks of a difference are the difference of the blocks), or why not."""
    diff = pattern_difference(a, b, layer, head)
    if diff is None:
        return message_figure(different_lengths(a, b))
    labels = compare.position_labels(a, b)
    return binned_heatmap(
        diff,
        labels,
        labels,
        f"A − B, layer {layer} head {head}",
        subtitle="above 0 where A's head attends more than B's, below 0 where less",
        x_title="key (read from)",
        y_title="query (reading)",
        value_name="A − B attention weight",
        mean_name="A − B weight on the key block, mean over the query block",
        attention=True,
        diverging=True,
        height=_height(a.n_tokens),
    )


def different_lengths(a: Run, b: Run) -> str:
    return (
        f"A has {a.n_tokens} tokens and B {b.n_tokens}: a difference needs the same positions. Change a word "
        "for a word of one token to compare them cell by cell."
    )


def difference_markdown(a: Run, b: Run, layer: int, head: int) -> str:
    diff = pattern_difference(a, b, layer, head)
    if diff is None:
        return different_lengths(a, b)
    query, key = np.unravel_index(int(np.argmax(np.abs(diff))), diff.shape)
    pattern = a.trace[block_key(layer, "attn.hook_pattern")][head]
    readable = np.tril(np.ones_like(diff, dtype=bool)) if a.causal and b.causal else np.ones_like(diff, dtype=bool)
    labels = compare.position_labels(a, b)
    return (
        f"**A − B, layer {layer} head {head}:** the largest change is query {md_text(labels[query])} reading key "
        f"{md_text(labels[key])}: {pattern[query, key]:.3f} in A, {pattern[query, key] - diff[query, key]:.3f} in B. "
        f"Mean |A − B| over the cells a query may read: {float(np.abs(diff[readable]).mean()):.4f}."
    )


def compare_views(run: Run | None, other, layer: int, head: int) -> AttentionViews:
    """-> AttentionViews with the compare panel: hidden without a B (``other`` None), else B's
    pattern of the head (drawn by ``pattern_figure``, as A's), A − B and the text; or why B cannot
    be drawn (a Reason)."""
    if run is None or other is None:
        return AttentionViews(compare_panel=compare.panel(None))
    if not isinstance(other, Run):
        return AttentionViews(
            compare_panel=compare.panel(other),
            compare_pattern=message_figure(other),
            difference=message_figure(other),
            compare_summary=str(other),
        )
    return AttentionViews(
        compare_panel=compare.panel(other),
        compare_pattern=pattern_figure(other, layer, head, compare.B.name),
        difference=difference_figure(run, other, layer, head),
        compare_summary=difference_markdown(run, other, layer, head),
    )


def position_0_shares(run: Run) -> np.ndarray:
    """[L, H]: each head's mean attention weight on position 0 over queries 1..T-1 (query 0
    can read only position 0 under the causal mask; with T = 1 that is all there is)."""
    patterns = np.stack(
        [run.trace[block_key(layer, "attn.hook_pattern")] for layer in range(run.config.n_layer)]
    )  # [L, H, T, T]
    queries = slice(1, None) if run.n_tokens > 1 else slice(None)
    return patterns[:, :, queries, 0].astype(np.float64).mean(axis=-1)


def sinks_markdown(shares: np.ndarray) -> str:
    """One sentence on the heads that park most of their attention on position 0."""
    L, H = shares.shape
    sinks = [(layer, head) for layer in range(L) for head in range(H) if shares[layer, head] > SINK_SHARE]
    if not sinks:
        return f"No head puts more than {SINK_SHARE:.0%} of its attention on position 0 (mean over queries 1..T-1)."
    named = ", ".join(f"L{layer}H{head} ({shares[layer, head]:.0%})" for layer, head in sinks[:12]) + (
        ", …" if len(sinks) > 12 else ""
    )
    return (
        f"**{len(sinks)} of {L * H} heads** put more than {SINK_SHARE:.0%} of their attention on position 0 "
        f"(mean over queries 1..T-1): {named}. Such a head parks the attention it does not need on the first "
        "token, whose value vector is small; what is left is where it really reads."
    )


def grid_values(run: Run, bins: int = GRID_BINS) -> tuple[np.ndarray, list[str]]:
    """([L, H, G, G] patterns in blocks of positions (exact when T <= bins), G labels): a cell is
    a block of queries' mean weight on a block of keys (``attention_blocks``: rows still sum to 1),
    position 0 a block of its own, so a sink head's column 0 is its exact share.

    A block's label is its positions ("16–31"): each of the 144 tiles repeats them, and
    the single-head pattern above names the tokens."""
    L, H, T = run.config.n_layer, run.config.n_head, run.n_tokens
    starts = bin_starts(T, bins, first_alone=True)
    out = np.empty((L, H, len(starts), len(starts)))
    for layer in range(L):
        out[layer] = attention_blocks(run.trace[block_key(layer, "attn.hook_pattern")], starts)  # [H, G, G]
    return out, block_labels(run.labels, starts)


def grid_figure(run: Run, values: np.ndarray, labels: list[str], shares: np.ndarray | None = None) -> go.Figure:
    """Layers x heads tiles (values [L, H, G, G]) on one shared 0..1 colour scale; each cell's
    hover names its layer, head, query and key, and gives its head's mean share on position 0
    (``shares`` [L, H], default ``position_0_shares``; sent as whole percents)."""
    shares = position_0_shares(run) if shares is None else shares
    L, H, G = values.shape[0], values.shape[1], values.shape[2]
    pooled = G < run.n_tokens
    cell = 90 if L > 4 else 150
    title = "Every head's pattern (rows = queries, columns = keys)"
    note = (
        f"queries averaged, keys summed over blocks of ~{(run.n_tokens - 1) / (G - 1):.0f} positions (0 alone)"
        if pooled
        else ""
    )
    return tiled_heatmap(
        values.astype(np.float32),
        [f"layer {layer}" for layer in range(L)],
        [f"head {h}" for h in range(H)],
        [f"query {label}" for label in labels],
        [f"key {label}" for label in labels],
        row_ticks=[str(layer) for layer in range(L)],
        col_ticks=[str(h) for h in range(H)],
        x_title="head",
        y_title="layer",
        hovertemplate=(
            f"%{{y}}<br>%{{x}}<br>{'weight on the key block, mean over the query block' if pooled else 'attention'}: %{{z:.3f}}<br>"
            # the tab's text says the share is over queries 1..T-1
            "head's share on position 0: %{customdata}%<extra></extra>"
        ),
        customdata=np.rint(np.clip(shares, 0.0, 1.0) * 100).astype(np.uint8),
        layout_extra=layout_properties(
            title,
            height=L * cell + 190,
            notes=[note],
            margin=dict(l=70, r=20, t=110, b=20),  # the colour bar reserves its own row below
            coloraxis=dict(colorscale=SEQUENTIAL, cmin=0.0, cmax=1.0, colorbar=colour_bar("attention weight")),
        ),
    )


def qkv_figure(run: Run, layer: int, head: int, position: int) -> tuple[go.Figure, np.ndarray]:
    rows = np.stack([run.trace[block_key(layer, f"attn.hook_{name}")][position, head] for name in "qkv"])  # [3, D]
    where = f"position {position} {run.tokens[position].display!r}"
    fig = heatmap(
        rows,
        [str(d) for d in range(rows.shape[1])],
        ["query q", "key k", "value v"],
        f"q, k and v of {where}, layer {layer} head {head} ({rows.shape[1]} numbers each)",
        x_title="head dimension",
        y_title="vector",
        value_name="value",
        diverging=True,
        height=300,
    )
    # The same position for every cell: one hovertemplate, not a string per cell.
    fig.update_traces(
        hovertemplate=fig.data[0].hovertemplate.replace("<extra>", f"<br>{template_text(where)}<extra>", 1)
    )
    return fig, rows


def ablation_figure(run: Run, tokens, layer: int, head: int, after: Run | None) -> tuple[go.Figure, str, dict]:
    """Top next tokens at the last position before and (given ``after``) after ablating the head."""
    before = softmax(run.trace["logits"][-1])
    ids = list(np.argsort(-before, kind="stable")[:TOP_NEXT])
    after_probs = None
    if after is not None:
        after_probs = softmax(after.trace["logits"][-1])
        ids += [i for i in np.argsort(-after_probs, kind="stable")[:TOP_NEXT] if i not in ids]
    ids = np.asarray(ids, dtype=np.int64)
    texts = [tokens(int(i)) for i in ids]
    labels = unique_labels(texts, ids)
    last = f"position {run.n_tokens - 1} {run.tokens[-1].display!r}"
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=before[ids],
            name="before",
            marker_color=BEFORE_COLOUR,
            customdata=[f"id {int(i)}" for i in ids],
            hovertemplate=f"next token %{{x}} (%{{customdata}})<br>after {last}<br>before: %{{y:.4g}}<extra></extra>",
        )
    )
    arrays = {"top_ids": ids, "prob_before": before[ids]}
    if after_probs is None:
        title, note = f"Top {TOP_NEXT} next tokens after {last}", "tick “Ablate this head” to compare"
        markdown = f"Tick **Ablate this head** to zero layer {layer} head {head}'s output and rerun the same graph."
    else:
        fig.add_trace(
            go.Bar(
                x=labels,
                y=after_probs[ids],
                name=f"after ablating L{layer}H{head}",
                marker_color=AFTER_COLOUR,
                customdata=[f"id {int(i)}" for i in ids],
                hovertemplate=f"next token %{{x}} (%{{customdata}})<br>after {last}<br>ablated: %{{y:.4g}}<extra></extra>",
            )
        )
        arrays["prob_after"] = after_probs[ids]
        title = f"Next-token probabilities after {last}, before vs after ablating layer {layer} head {head}"
        note = ""
        top_before, top_after = int(np.argmax(before)), int(np.argmax(after_probs))
        kl = float(np.sum(before * (np.log(np.maximum(before, 1e-300)) - np.log(np.maximum(after_probs, 1e-300)))))
        markdown = (
            f"Ablating layer {layer} head {head} moves P(**{md_text(tokens(top_before))}**) from "
            f"{fmt_p(before[top_before])} to {fmt_p(after_probs[top_before])}; the top token is now "
            f"**{md_text(tokens(top_after))}** ({fmt_p(after_probs[top_after])}). "
            f"KL(before ‖ after) = {kl:.4g} nats over the whole vocabulary."
        )
    layout(fig, title, height=440, notes=[note], barmode="group")
    fig.update_xaxes(type="category", **LABEL_ANGLES, title="next token")
    fig.update_yaxes(title="probability")
    return fig, markdown, arrays


def render_head(
    run: Run | None,
    tokens,
    layer: int = 0,
    head: int = 0,
    position: int | None = None,
    after: Run | None = None,
    other: Run | str | None = None,
) -> tuple[AttentionViews, dict]:
    """-> (AttentionViews of one head: its pattern, q/k/v, ablation, summary and the compare
    panel; the arrays behind them).

    ``after`` is ``variant(run, ablate=[(layer, head)])``, or None to show only "before";
    ``other``: the compare prompt's Run (``compare.compare_of``), or why it cannot be drawn, or None.
    """
    if run is None:
        blank = message_figure(NO_RUN)
        return AttentionViews(
            pattern=blank, qkv=blank, ablation=blank, summary=NO_RUN, compare_panel=compare.panel(None)
        ), {}
    layer = clamp(layer, 0, run.config.n_layer - 1)
    head = clamp(head, 0, run.config.n_head - 1)
    T = run.n_tokens
    position = clamp(T - 1 if position is None else position, 0, T - 1, default=T - 1)
    pattern_fig = pattern_figure(run, layer, head)
    qkv_fig, qkv = qkv_figure(run, layer, head, position)
    ablation_fig, markdown, ablation_arrays = ablation_figure(run, tokens, layer, head, after)
    pattern = run.trace[block_key(layer, "attn.hook_pattern")][head]  # [T, T]
    if T > 1:
        markdown = (
            f"Layer {layer} head {head} puts **{pattern[1:, 0].mean():.0%}** of its attention on position 0 "
            f"(mean over queries 1–{T - 1}; the bars beside the pattern give each query's share). " + markdown
        )
    arrays = {
        "token_ids": np.asarray(run.token_ids, dtype=np.int64),
        "layer": np.int64(layer),
        "head": np.int64(head),
        "position": np.int64(position),
        "pattern": pattern,
        "pattern_share_on_position_0": pattern[:, 0],
        "q": qkv[0],
        "k": qkv[1],
        "v": qkv[2],
        **ablation_arrays,
    }
    compared = compare_views(run, other, layer, head)
    views = compared._replace(pattern=pattern_fig, qkv=qkv_fig, ablation=ablation_fig, summary=markdown)
    return views, arrays


def render(
    run: Run | None,
    tokens,
    layer: int = 0,
    head: int = 0,
    position: int | None = None,
    after: Run | None = None,
    other: Run | str | None = None,
) -> AttentionViews:
    """-> AttentionViews: the head's pattern, the all-heads grid, q/k/v, the ablation, the summary
    and the compare panel (the controls and the detectors unchanged). The arrays behind them:
    ``render_head``'s, and ``grid_values`` and ``position_0_shares`` for the grid."""
    views, _ = render_head(run, tokens, layer, head, position, after, other)
    if run is None:
        return views._replace(grid=message_figure(NO_RUN))
    values, labels = grid_values(run)
    shares = position_0_shares(run)
    return views._replace(
        grid=grid_figure(run, values, labels, shares), summary=views.summary + "\n\n" + sinks_markdown(shares)
    )


def detector_views(run: Run | None) -> tuple[go.Figure, str, dict]:
    """-> (the three detector grids, their strongest heads, scores {name: [L, H]}) for a Run."""
    if run is None:
        return message_figure(NO_RUN), "", {}
    scores = attribution.head_scores(run, run.trace, token_ids=run.token_ids)
    return interpret.detector_figure(scores), interpret.detector_summary(scores), scores


def build(ctx: AppContext, *, tokenizer: Tokenizer, model_for: Callable, variant: Callable) -> None:
    with gr.Tab("Attention", elem_id="tab-attention") as tab:
        gr.Markdown(INTRO)
        with gr.Row(elem_id=interpret.HEAD_VIEW_ID):
            layer = gr.Slider(0, 11, value=0, step=1, label="Layer", elem_id="attention-layer")
            head = gr.Slider(0, 11, value=0, step=1, label="Head", elem_id="attention-head")
            position = gr.Dropdown(label="q, k, v of the token at", choices=[], type="index", interactive=True)
            ablate = gr.Checkbox(label="Ablate this head (zero its output)", value=False)
        pattern_plot = gr.Plot(label="Attention pattern", elem_id="attention-pattern-plot")
        with gr.Column(visible=False, elem_id="attention-compare") as compare_panel:
            gr.Markdown(compare.PANEL_TITLE)
            compare_text = gr.Markdown()
            compare_pattern_plot = gr.Plot(label="B's attention pattern", elem_id="attention-compare-pattern")
            difference_plot = gr.Plot(label="A − B", elem_id="attention-difference")
        qkv_plot = gr.Plot(label="Query, key and value")
        ablation_plot = gr.Plot(label="Ablation")
        text = gr.Markdown()
        export = export_controls("Export patterns, q/k/v and probabilities (.npz)")
        grid_plot = gr.Plot(label="All heads")
        source_block(Attention)
        gr.Markdown(interpret.DETECTORS_TEXT)
        induction_button = gr.Button(
            f"Induction test: {interpret.INDUCTION_TEST_LENGTH} seeded random tokens, repeated",
            elem_id="induction-test",
            size="sm",
        )
        detectors_plot = gr.Plot(label="Head detectors", elem_classes=["head-picker"], elem_id="detectors-plot")
        detectors_text = gr.Markdown()
        head_pick = gr.Textbox(elem_id="head-pick", show_label=False, container=False)
        source_block(
            attribution.detection_patterns,
            attribution.head_scores,
            label="Source of the detectors (on the MAX trace's patterns)",
        )
        patching = ctx.build(
            interpret.patching_section, "heads", "head (its output at every position)", "Patch every head"
        )

    def token_text(token_id: int) -> str:
        return tokenizer.token(token_id).display

    def ablated_variant(run: Run, layer_value, head_value, on) -> tuple[Run | None, str]:
        if not on:
            return None, ""
        if model_for(run.model_name) is None:
            return None, f"⚠️ {NEEDS_MODEL}\n\n"
        pair = (clamp(layer_value, 0, run.config.n_layer - 1), clamp(head_value, 0, run.config.n_head - 1))
        return variant(run, ablate=sorted(set(run.ablate) | {pair})), ""

    def refresh(request, layer_value, head_value, on, compare_request=None):
        run = ctx.current(request)
        detector_fig, detector_md, _ = detector_views(run)
        if run is None:
            return render(None, token_text)._replace(detectors=detector_fig, detector_summary=detector_md)
        after, notice = ablated_variant(run, layer_value, head_value, on)
        other = compare.compare_of(ctx.current, run, compare_request)
        views = render(run, token_text, layer_value, head_value, None, after, other)
        L, H = run.config.n_layer, run.config.n_head
        return views._replace(
            summary=notice + views.summary,
            layer=gr.update(maximum=L - 1, value=clamp(layer_value, 0, L - 1)),
            head=gr.update(maximum=H - 1, value=clamp(head_value, 0, H - 1)),
            position=gr.update(choices=[(label, i) for i, label in enumerate(run.labels)], value=run.n_tokens - 1),
            detectors=detector_fig,
            detector_summary=detector_md,
        )

    def head_view(
        run: Run | None, layer_value, head_value, position_value, on, compare_request=None
    ) -> tuple[AttentionViews, dict]:
        if run is None:
            return render_head(None, token_text)
        after, notice = ablated_variant(run, layer_value, head_value, on)
        other = compare.compare_of(ctx.current, run, compare_request)
        views, arrays = render_head(run, token_text, layer_value, head_value, position_value, after, other)
        return views._replace(summary=notice + views.summary), arrays

    def update(request, layer_value, head_value, position_value, on, compare_request):
        """One head's views (A's and B's); the all-heads grid does not depend on the controls."""
        return head_view(ctx.current(request), layer_value, head_value, position_value, on, compare_request)[0]

    def picked(request, pick, position_value, on, compare_request):
        """A click on a detector cell: that head in the views above."""
        run = ctx.current(request)
        chosen = None if run is None else interpret.parse_head_pick(pick, run.config.n_layer, run.config.n_head)
        if chosen is None:
            return AttentionViews(layer=gr.update(), head=gr.update())
        views, _ = head_view(run, *chosen, position_value, on, compare_request)
        return views._replace(layer=chosen[0], head=chosen[1])

    def tensors(run: Run, layer_value, head_value, position_value, on, patched):
        _, arrays = head_view(run, layer_value, head_value, position_value, on)
        arrays["grid"], _ = grid_values(run)
        arrays["grid_share_on_position_0"] = position_0_shares(run)
        arrays.update({f"detector_{name}": value for name, value in detector_views(run)[2].items()})
        arrays.update(interpret.patching_arrays(patched))
        return arrays

    outputs = AttentionViews(
        pattern=pattern_plot,
        grid=grid_plot,
        qkv=qkv_plot,
        ablation=ablation_plot,
        summary=text,
        layer=layer,
        head=head,
        position=position,
        detectors=detectors_plot,
        detector_summary=detectors_text,
        compare_panel=compare_panel,
        compare_pattern=compare_pattern_plot,
        difference=difference_plot,
        compare_summary=compare_text,
    )
    view = ctx.view(tab, refresh, [layer, head, ablate, ctx.compare], outputs)
    ctx.run_ids_on(
        induction_button.click,
        lambda: attribution.induction_test_ids(interpret.INDUCTION_TEST_LENGTH),
        "the induction test",
    )
    ctx.control(
        view,
        [head_pick.change],
        picked,
        [ctx.state, head_pick, position, ablate, ctx.compare],
        ("layer", "head", "pattern", "qkv", "ablation", "summary", "compare_pattern", "difference", "compare_summary"),
        **ctx.lane(MODEL_LANE),
        trigger_mode="always_last",
    )
    # Ablating runs the model: share the model's concurrency queue.
    ctx.control(
        view,
        [slider_moved(layer), slider_moved(head), position.input, ablate.input],
        update,
        [ctx.state, layer, head, position, ablate, ctx.compare],
        ("pattern", "qkv", "ablation", "summary", "compare_pattern", "difference", "compare_summary"),
        **ctx.lane(MODEL_LANE),
        trigger_mode="always_last",
    )
    ctx.export(view, export, tensors, [layer, head, position, ablate, patching.result])
