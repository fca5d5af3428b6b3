"""Logits: the next-token distribution at each position, its entropy, and where any token ranks."""

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
    preset_with_undo,
    source_block,
    undo_button,
)
from components.plots import (
    GROUPED,
    LABEL_ANGLES,
    bars,
    brief,
    figure,
    lines,
    log_axis,
    message_figure,
    plot_text,
    plot_texts,
    value_marks,
)
from explorer.runs import Run
from gpt2_max import attribution
from gpt2_max.analysis import NextTokens
from gpt2_max.modules import GPT2Analysis, GPT2Body, LayerNorm
from gpt2_max.sampling import softmax
from gpt2_max.tokenizer import Tokenizer

TOP_CANDIDATES = 15
TYPED_MAX_CHARS = 200  # only the first token of the typed text is used
CHOSEN_COLOUR = "#D55E00"  # Okabe-Ito vermillion
TYPED_HINT = "Type a token above (for example ` mat`, with its leading space) to see its rank and probability here."

# How many of one run's most likely next tokens the compare view shows with their probability after the other.
TOP_COMPARED = 10

# The tab's outputs, by name, in the order they are wired: its two figures and two texts, the
# position control a Run resets, then the attribution's two figures and its summary, then the
# compare panel (shown with a compare prompt): A's top tokens under B, B's under A, and its text.
LogitsViews = named_outputs(
    "candidates",
    "entropy",
    "summary",
    "typed",
    "position",
    "contributors",
    "heads",
    "attribution_summary",
    "compare_panel",
    "a_under_b",
    "b_under_a",
    "compare_summary",
)

INTRO = intro(
    "7 · Logits",
    "The final layer norm (`ln_f`) and the unembedding turn each position's vector into one score, a "
    "*logit*, per vocabulary token: GPT-2 reuses the token-embedding matrix `wte`, so a token's "
    "logit is the dot product of the normalised vector with that token's embedding. Softmax turns the "
    "scores into probabilities that sum to 1. The logits at position t are the model's guess for "
    "token t+1: every position is a next-token prediction, and only the last one predicts past the text.",
    [
        ("ln_final.hook_normalized", "[T, E] ln_f output"),
        (
            "logits",
            "[T, V] = ln_f(last block's output) @ wteᵀ (V = 50,257 tokens), from the MAX analysis graph (a Run's trace keeps the last position's row)",
        ),
        ("probabilities", "[V] per position, softmax of that position's logits"),
    ],
)


def probabilities(nxt: NextTokens, position: int) -> np.ndarray:
    """[V] float64: softmax of the logits at one position (the analysis graph's rows: a Run's
    trace keeps its last position's logits only)."""
    return softmax(nxt.logits[position])


def rank_of(probs: np.ndarray, token_id: int) -> int:
    """1 for the most likely token: 1 + how many tokens are strictly more likely."""
    return 1 + int(np.count_nonzero(probs > probs[token_id]))


def token_display(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.token(token_id).display if 0 <= token_id < tokenizer.n_vocab else f"id {token_id}"


def resolve(run: Run, position) -> int:
    """A position from the control or a raw API value, kept in range (default: the last)."""
    return clamp(position, 0, run.n_tokens - 1, default=run.n_tokens - 1)


def candidates_figure(run: Run, nxt: NextTokens, tokenizer: Tokenizer, position: int) -> go.Figure:
    logits = nxt.logits[position]
    top = nxt.top_ids[position, :TOP_CANDIDATES]
    actual = run.token_ids[position + 1] if position + 1 < run.n_tokens else None
    label = run.labels[position]
    hover = [
        f"token id {t}<br>logit {logits[t]:.4g}<br>predicted at position {position} ({label}) for position {position + 1}"
        + ("<br><b>the actual next token</b>" if t == actual else "")
        for t in top
    ]
    fig = bars(
        [f"{rank}. {token_display(tokenizer, int(t))}" for rank, t in enumerate(top, start=1)],
        nxt.top_probs[position, :TOP_CANDIDATES].tolist(),
        f"Top {top.size} next-token candidates after {label!r}",
        value_name="probability",
        height=max(320, 26 * top.size + 130),
        hover_extra=hover,
        log_scale=True,  # a confident model's top token at 0.9 beside the 15th at 0.001
    )
    if actual is not None and actual in top:
        colours = [CHOSEN_COLOUR if t == actual else "#3b6fb6" for t in top]
        fig.update_traces(marker_color=colours)
    return fig


def entropy_figure(run: Run, nxt: NextTokens, position: int) -> go.Figure:
    entropy, surprise = nxt.entropy_bits, nxt.surprise_bits
    next_labels = [f"actual next token {run.tokens[t + 1].display}" for t in range(run.n_tokens - 1)] + [
        "no next token in the text"
    ]
    series = {"entropy (bits)": entropy, "surprise of the actual next token (bits)": surprise}
    fig = lines(
        run.labels,
        series,
        "Uncertainty at each position",
        x_title="position",
        y_title="bits",
        height=380,
        hover_text={
            "entropy (bits)": [f"perplexity {2.0**h:.3g}" for h in entropy],
            "surprise of the actual next token (bits)": next_labels,
        },
    )
    fig.add_trace(
        go.Scatter(
            x=[run.labels[position]],
            y=[entropy[position]],
            mode="markers",
            name="chosen position",
            marker=dict(color=CHOSEN_COLOUR, size=14, symbol="diamond"),
            hovertemplate="chosen position %{x}<br>entropy %{y:.4g} bits<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", **LABEL_ANGLES)
    fig.update_yaxes(rangemode="tozero")
    return fig


def summary_markdown(run: Run, nxt: NextTokens, tokenizer: Tokenizer, position: int) -> str:
    probs = probabilities(nxt, position)
    V = probs.size
    entropy, surprise = float(nxt.entropy_bits[position]), nxt.surprise_bits
    best = int(np.argmax(probs))
    parts = [
        f"**Position {position} ({md_text(repr(run.labels[position]))}) predicts position {position + 1}.** "
        f"The most likely next token is {md_text(repr(token_display(tokenizer, best)))} with p = {probs[best]:.4g}.",
        f"**Entropy: {entropy:.3f} bits** (0 = certain; the maximum, every token equally likely, is "
        f"log2 {V:,} = {np.log2(V):.2f} bits). 2^{entropy:.2f} ≈ **{2.0**entropy:,.1f}**: the model is as "
        "uncertain as a fair choice among that many tokens (the distribution's perplexity).",
    ]
    if position + 1 < run.n_tokens:
        actual = run.token_ids[position + 1]
        parts.append(
            f"**The actual next token** {md_text(repr(token_display(tokenizer, actual)))} (id {actual}) has p = "
            f"{probs[actual]:.4g}, rank {rank_of(probs, actual):,} of {V:,}."
        )
    else:
        parts.append(
            "This is the last position: the token it predicts is not in the text yet; generation "
            "samples the next token from this distribution."
        )
    if run.n_tokens > 1:
        mean = float(surprise[:-1].mean())
        parts.append(
            f"Over the whole text the actual next tokens cost {mean:.2f} bits each on average "
            f"(the cross-entropy loss GPT-2 was trained to lower, here in bits): a perplexity of 2^{mean:.2f} ≈ {2.0**mean:,.1f}."
        )
    return "\n\n".join(parts)


def typed_markdown(run: Run | None, nxt: NextTokens | str, tokenizer: Tokenizer, position, typed: str | None) -> str:
    """Rank and probability of the first token of the typed text at the chosen position."""
    if run is None:
        return NO_RUN
    if not typed:
        return TYPED_HINT
    if not isinstance(nxt, NextTokens):
        return brief(nxt)  # the tab's summary says it in full
    position = resolve(run, position)
    ids = tokenizer.encode(str(typed)[:TYPED_MAX_CHARS])
    if not ids:
        return TYPED_HINT
    token_id = ids[0]
    probs = probabilities(nxt, position)
    if token_id >= probs.size:
        return f"Token id {token_id} is outside this model's {probs.size:,}-token vocabulary."
    shown = token_display(tokenizer, token_id)
    used = f"Used token {md_text(repr(shown))} (id {token_id})"
    if len(ids) > 1:
        pieces = ", ".join(md_text(repr(token_display(tokenizer, i))) for i in ids[:8]) + (
            ", …" if len(ids) > 8 else ""
        )
        used += f", the first of the {len(ids)} tokens your text encodes to ({pieces}); the model scores one token at a time"
    return (
        f"{used}.\n\nAfter {md_text(repr(run.labels[position]))} it has **rank {rank_of(probs, token_id):,}** of "
        f"{probs.size:,} (1 = most likely) and **probability {probs[token_id]:.4g}** "
        f"(logit {nxt.logits[position][token_id]:.4g})."
    )


def last_probabilities(run: Run) -> np.ndarray:
    """[V] float64: the next-token distribution after a Run's last position, from its own trace
    (which keeps that row of the logits), so comparing two prompts needs no analysis graph."""
    return softmax(run.trace["logits"][-1])


def cross_figure(top: Run, other: Run, tokenizer: Tokenizer, sides=(compare.A, compare.B)) -> go.Figure:
    """The TOP_COMPARED most likely next tokens after ``top``'s last position, each with its
    probability there and after ``other``'s: A's top tokens under B, and (the runs and ``sides``
    swapped) B's under A, drawn by this one function. Points on a log axis, as the candidates."""
    top_side, other_side = sides
    p_top, p_other = last_probabilities(top), last_probabilities(other)
    ids = np.argsort(-p_top, kind="stable")[:TOP_COMPARED]
    labels = [f"{rank}. {token_display(tokenizer, int(t))}" for rank, t in enumerate(ids, start=1)]
    data = [
        value_marks(
            plot_texts(labels),
            probs[ids],
            horizontal=True,
            log=True,
            colour=side.colour,
            symbol=side.symbol,
            name=f"after {side.name}",
            customdata=[int(t) for t in ids],
            hovertemplate=f"next token %{{y}} (id %{{customdata}})<br>after {side.name}: p %{{x:.4g}}<extra></extra>",
        )
        for side, probs in ((top_side, p_top), (other_side, p_other))
    ]
    title = f"{top_side.letter}'s top {ids.size} next tokens, and their probability after {other_side.letter}"
    where = (
        f"after {top_side.letter}'s last token {plot_text(repr(top.labels[-1]))} and "
        f"{other_side.letter}'s {plot_text(repr(other.labels[-1]))}"
    )
    return figure(
        data,
        title,
        max(360, 30 * ids.size + 160),
        [where],
        **GROUPED,
        yaxis=dict(type="category", autorange="reversed"),
        xaxis=log_axis(np.concatenate([p_top[ids], p_other[ids]]), "probability"),
    )


def compare_markdown(a: Run, b: Run, tokenizer: Tokenizer) -> str:
    """What the two distributions say of each other: each top token's probability under the other,
    and how far apart they are in total variation."""
    pa, pb = last_probabilities(a), last_probabilities(b)
    ta, tb = int(np.argmax(pa)), int(np.argmax(pb))

    def shown(token_id: int) -> str:
        return md_text(repr(token_display(tokenizer, token_id)))

    distance = 0.5 * float(np.abs(pa - pb).sum())
    parts = [
        f"**A** predicts {shown(ta)} (p = {pa[ta]:.4g}), which has p = {pb[ta]:.4g} after **B**; "
        f"**B** predicts {shown(tb)} (p = {pb[tb]:.4g}), which has p = {pa[tb]:.4g} after A."
        + (" Both put the same token first." if ta == tb else ""),
        f"The two next-token distributions differ by **{distance:.3f}** in total variation "
        "(half the summed |p_A − p_B| over the vocabulary: 0 = the same, 1 = nothing in common).",
    ]
    return "\n\n".join(parts)


def compare_views(run: Run | None, other, tokenizer: Tokenizer) -> LogitsViews:
    """-> LogitsViews with the compare panel: hidden without a B (``other`` None), else A's top
    tokens under B, B's under A and the text (or why B cannot be drawn: a Reason)."""
    if run is None or other is None:
        return LogitsViews(compare_panel=compare.panel(None))
    if not isinstance(other, Run):
        return LogitsViews(
            compare_panel=compare.panel(other),
            a_under_b=message_figure(other),
            b_under_a=message_figure(other),
            compare_summary=str(other),
        )
    return LogitsViews(
        compare_panel=compare.panel(other),
        a_under_b=cross_figure(run, other, tokenizer, (compare.A, compare.B)),
        b_under_a=cross_figure(other, run, tokenizer, (compare.B, compare.A)),
        compare_summary=compare_markdown(run, other, tokenizer),
    )


def render(
    run: Run | None,
    nxt: NextTokens | str,
    tokenizer: Tokenizer,
    position=None,
    typed: str | None = "",
    other: Run | str | None = None,
) -> LogitsViews:
    """-> LogitsViews: the candidates figure, the entropy figure, the summary and the typed-token
    markdown (the control and the attribution unchanged), and the compare panel (``compare_views``).

    ``nxt`` is the Run's next-token analysis from the MAX analysis graph (top-k, entropy and
    the actual next token at every position), or why it is missing; ``other``: the compare
    prompt's Run (``compare.compare_of``), or why it cannot be drawn, or None."""
    compared = compare_views(run, other, tokenizer)
    if run is None:
        return compared._replace(
            candidates=message_figure(NO_RUN), entropy=message_figure(NO_RUN), summary=NO_RUN, typed=""
        )
    position = resolve(run, position)
    typed_md = typed_markdown(run, nxt, tokenizer, position, typed)
    if not isinstance(nxt, NextTokens):
        return compared._replace(
            candidates=message_figure(nxt), entropy=message_figure(nxt), summary=nxt, typed=typed_md
        )
    return compared._replace(
        candidates=candidates_figure(run, nxt, tokenizer, position),
        entropy=entropy_figure(run, nxt, position),
        summary=summary_markdown(run, nxt, tokenizer, position),
        typed=typed_md,
    )


NEEDS_MODEL = "Attribution reads the model's weights, which need the live model; it is still loading."


def attribution_view(
    run: Run | None,
    nxt: NextTokens | str,
    model,
    tokenizer: Tokenizer,
    position=None,
    target: str | None = "",
    minus: str | None = "",
) -> tuple[LogitsViews, dict[str, np.ndarray]]:
    """-> (LogitsViews with the top contributors figure, the heads grid figure and the attribution
    summary set, arrays): the direct logit attribution of ``target``'s logit (default: the top
    prediction) minus ``minus``'s (default: none) at ``position``.
    ``nxt``: the Run's next-token analysis (its logits at ``position``), or why it is missing."""
    if run is None or model is None or not isinstance(nxt, NextTokens):
        why = NO_RUN if run is None else NEEDS_MODEL if model is None else nxt
        views = LogitsViews(
            contributors=message_figure(why),
            heads=message_figure(why),
            attribution_summary=brief(why),  # the tab's summary says it in full
        )
        return views, {}
    position = resolve(run, position)
    target_id = (
        interpret.first_token(tokenizer, target, "target")
        if str(target or "").strip()
        else int(np.argmax(nxt.logits[position]))
    )
    minus_id = interpret.first_token(tokenizer, minus, "token to subtract") if str(minus or "").strip() else None
    result = attribution.attribute(model, run.trace, position, target_id, minus_id, logits=nxt.logits[position])
    where = f"position {position} {run.tokens[position].display!r}"
    contributors, heads, summary = interpret.attribution_figures(result, tokenizer, where)
    views = LogitsViews(contributors=contributors, heads=heads, attribution_summary=summary)
    return views, interpret.attribution_arrays(result)


def tensors(run: Run, nxt: NextTokens | str, position=None) -> dict[str, np.ndarray]:
    """What the plots show, for the .npz download: this position's full logits, every position's top-k."""
    position = resolve(run, position)
    arrays = {
        "token_ids": np.asarray(run.token_ids),
        "position": np.asarray(position),
    }
    if isinstance(nxt, NextTokens):
        arrays.update(logits=nxt.logits[position], probabilities=probabilities(nxt, position))
        arrays.update(
            top_ids=nxt.top_ids,
            top_probs=nxt.top_probs,
            entropy_bits=nxt.entropy_bits,
            next_token_probs=nxt.actual_probs,
            next_token_ranks=nxt.actual_ranks,
            next_token_surprise_bits=nxt.surprise_bits,
        )
    return arrays


def build(ctx: AppContext, *, tokenizer: Tokenizer, analysis: Callable, model_for: Callable) -> None:
    with gr.Tab("Logits", elem_id="tab-logits") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            position_control = gr.Dropdown(
                label="Position (its logits predict the next token)",
                choices=[],
                interactive=True,
                elem_id="logits-position",
            )
            typed = gr.Textbox(
                label="Where does this token rank? (first token of the text is used)",
                placeholder=" mat",
                max_lines=1,
                elem_id="logits-typed",
            )
            export = export_controls("Export this position's logits (.npz)")
        summary = gr.Markdown()
        typed_text = gr.Markdown()
        candidates_plot = gr.Plot(label="Next-token candidates")
        with gr.Column(visible=False, elem_id="logits-compare") as compare_panel:
            gr.Markdown(compare.PANEL_TITLE)
            compare_text = gr.Markdown()
            with gr.Row():
                a_under_b_plot = gr.Plot(label="A's top tokens under B", elem_id="logits-a-under-b")
                b_under_a_plot = gr.Plot(label="B's top tokens under A", elem_id="logits-b-under-a")
        entropy_plot = gr.Plot(label="Entropy per position")
        source_block(
            GPT2Body.unembed,
            LayerNorm,
            GPT2Analysis,
            label="MAX source of this stage (unembed and its ln_f; the analysis graph's top-k)",
        )
        gr.Markdown(interpret.ATTRIBUTION_TEXT)
        with gr.Row():
            target = gr.Textbox(
                label="Token to explain (empty: the top prediction)", max_lines=1, elem_id="attribution-target"
            )
            minus = gr.Textbox(label="… minus this token's logit (optional)", max_lines=1, elem_id="attribution-minus")
            preset = gr.Button(
                f"Preset: indirect object, {interpret.IOI_ANSWER!r} − {interpret.IOI_WRONG!r}",
                size="sm",
                elem_id="attribution-preset",
            )
            undo = undo_button("↩ Undo the preset (your tokens back)", "attribution-undo")
        target_tokens = gr.Markdown(elem_id="attribution-tokens")
        attribution_text = gr.Markdown()
        contributors_plot = gr.Plot(label="Largest contributions", elem_id="attribution-plot")
        heads_plot = gr.Plot(label="Every head's share")
        source_block(
            attribution.Attribution, attribution.attribute, label="Source of the attribution (on the MAX trace)"
        )

    def next_of(run: Run):
        nxt, why = analysis(run, "next")
        return nxt if nxt is not None else why

    def explained(run: Run | None, position, target_text, minus_text):
        if run is None:
            return attribution_view(None, NO_RUN, None, tokenizer)
        return attribution_view(
            run, next_of(run), model_for(run.model_name), tokenizer, position, target_text, minus_text
        )

    def refresh(request, text, target_text, minus_text, compare_request=None):
        run = ctx.current(request)
        if run is None:
            views = render(None, NO_RUN, tokenizer)
            position = gr.update(choices=[], value=None)
            attributed, _ = explained(None, None, "", "")
        else:
            other = compare.compare_of(ctx.current, run, compare_request)
            views = render(run, next_of(run), tokenizer, None, text, other)
            choices = [(label, i) for i, label in enumerate(run.labels)]
            position = gr.update(choices=choices, value=run.n_tokens - 1)
            attributed, _ = explained(run, None, target_text, minus_text)
        return views._replace(
            position=position,
            contributors=attributed.contributors,
            heads=attributed.heads,
            attribution_summary=attributed.attribution_summary,
        )

    def explain(request, position, target_text, minus_text):
        attributed, _ = explained(ctx.current(request), position, target_text, minus_text)
        return attributed

    def change(request, position, text):
        run = ctx.current(request)
        return render(run, next_of(run) if run is not None else NO_RUN, tokenizer, position, text)

    def rank(request, position, text):
        run = ctx.current(request)
        return LogitsViews(
            typed=typed_markdown(run, next_of(run) if run is not None else NO_RUN, tokenizer, position, text)
        )

    def export_tensors(run: Run, position, target_text, minus_text) -> dict[str, np.ndarray]:
        arrays = tensors(run, next_of(run), position)
        _, attribution_arrays = explained(run, position, target_text, minus_text)
        return {**arrays, **attribution_arrays}

    outputs = LogitsViews(
        candidates=candidates_plot,
        entropy=entropy_plot,
        summary=summary,
        typed=typed_text,
        position=position_control,
        contributors=contributors_plot,
        heads=heads_plot,
        attribution_summary=attribution_text,
        compare_panel=compare_panel,
        a_under_b=a_under_b_plot,
        b_under_a=b_under_a_plot,
        compare_summary=compare_text,
    )
    view = ctx.view(tab, refresh, [typed, target, minus, ctx.compare], outputs)
    ctx.control(
        view,
        [position_control.input, target.submit, minus.submit, target.blur, minus.blur],
        explain,
        [ctx.state, position_control, target, minus],
        ("contributors", "heads", "attribution_summary"),
        trigger_mode="always_last",
    )
    # The preset runs the indirect-object sentence and explains ' Mary' against ' John' at its end.
    preset_with_undo(preset, [target, minus], (interpret.IOI_ANSWER, interpret.IOI_WRONG), undo)
    interpret.echo_token_boxes(
        tokenizer,
        [(target, "token explained", "empty: the top prediction"), (minus, "minus", "empty: nothing subtracted")],
        target_tokens,
    )
    ctx.run_ids_on(preset.click, lambda: tokenizer.encode(interpret.IOI_CLEAN), "the indirect-object preset")
    ctx.control(
        view,
        [position_control.input],
        change,
        [ctx.state, position_control, typed],
        ("candidates", "entropy", "summary", "typed"),
        trigger_mode="always_last",
    )
    ctx.control(
        view,
        [typed.submit, typed.blur],
        rank,
        [ctx.state, position_control, typed],
        ("typed",),
        trigger_mode="always_last",
    )
    ctx.export(view, export, export_tensors, [position_control, target, minus])
