"""Why did it predict that: the views of direct logit attribution, head detectors and activation
patching (numbers from :mod:`gpt2_max.attribution`), shared by the Logits, Attention and Blocks tabs.

Each tab places these views in its own layout; what they compute, their figures, their controls
and their exports are built here once. L blocks, H heads, T tokens.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from components.common import AppContext, guarded, md_text, preset_with_undo, undo_button
from components.plots import (
    COLOUR_BAR_PX,
    SEQUENTIAL,
    TOP_PX,
    colour_bar,
    figure,
    heatmap,
    layout,
    plot_text,
    thinned_ticks,
    wrap_lines,
)
from explorer.settings import Settings
from gpt2_max import attribution
from gpt2_max.attribution import Attribution, PatchSweep
from gpt2_max.errors import InputError
from gpt2_max.scheduling import LONG_LANE
from gpt2_max.tokenizer import Tokenizer

TOP_CONTRIBUTORS = 15
TOKEN_TEXT_MAX_CHARS = 200

# The indirect-object example (Wang et al. 2022), clean and with the second name swapped: the
# same 14 tokens, so activations can be copied position by position.
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
IOI_ANSWER = " Mary"
IOI_WRONG = " John"
INDUCTION_TEST_LENGTH = 25  # random tokens, repeated once: 50 in all, as TransformerLens' demos

DETECTORS_TEXT = """**Head detectors** (TransformerLens' definitions). For every head, the attention it pays to the keys a
detector looks for, averaged over the queries that have such a key (0..1):
- **previous token**: key = the position just before the query;
- **duplicate token**: keys = earlier positions holding the same token as the query;
- **induction**: keys = the positions *right after* an earlier copy of the query's token: an induction head
  looks back to what followed last time, to predict it again.

Shapes: `blocks.{i}.attn.hook_pattern` [H, T, T] per layer in, three score grids [L, H] out.
A grey cell means your text has no such key (no token repeats). Press **Induction test** for a random
sequence repeated twice: induction heads light up in its second half. Click a cell to open that head above."""

ATTRIBUTION_TEXT = """**Direct logit attribution.** The final residual stream is a sum: the token and position
embeddings plus what every head, every attention bias and every MLP added. With the final layer norm's
scale frozen at this position's value (TransformerLens' convention) the logit is linear in that sum, so it
splits into one share per component, and the shares add up to the logit exactly. A share says how much a
component's output *directly* pushed this token up (+) or down (−); effects through later layers are not
counted here (that is what patching measures). Shapes: `blocks.{i}.attn.hook_z` [T, H, D] and
`c_proj.weight` [H·D, E] give each head's output [E] at the position; shares: heads [L, H], MLPs [L], plus
the embeddings, the attention biases and `ln_f`'s bias."""

PATCHING_TEXT = """**Activation patching.** Run a *clean* and a *corrupted* prompt of the same token length (the
indirect-object sentence and the same with the names swapped). The metric is logit(answer) − logit(wrong)
at the last position. Then rerun the corrupted prompt with one activation copied from the clean run, for
every {what}, and plot how much of the clean metric each patch restores:
(patched − corrupted) / (clean − corrupted), 1 = all of it, 0 = none, negative = the other way. Each patch
is an input of the same compiled MAX trace graph (`keep · z + (1 − keep) · z_clean`), one run per cell,
several runs packed into each execution. Shapes: the source `hook_z` [L, T, H, D] or `hook_resid_pre`
[L, T, E] of the clean run in; a grid [L, H] (heads) or [L, T] (residual stream) out."""


def head_labels(n_layer: int, n_head: int) -> tuple[list[str], list[str]]:
    return [f"head {h}" for h in range(n_head)], [f"layer {layer}" for layer in range(n_layer)]


def first_token(tokenizer: Tokenizer, text: str | None, what: str) -> int:
    """The first token of typed text (a token is how the model scores; " Mary" with its space)."""
    ids = tokenizer.encode(str(text or "")[:TOKEN_TEXT_MAX_CHARS])
    if not ids:
        raise InputError(f"type a token for the {what} (e.g. ' Mary', with its leading space)")
    return ids[0]


def token_box_note(tokenizer: Tokenizer, text: str | None, what: str, empty: str = "type a token") -> str:
    """How a token box is read, as markdown: the token used with its leading space made visible
    (␣), and, when the text encodes to several tokens, that only the first is used."""
    ids = tokenizer.encode(str(text or "")[:TOKEN_TEXT_MAX_CHARS])
    if not ids:
        return f"{what}: *{empty}*"
    token = tokenizer.token(ids[0])
    note = f"{what}: **{md_text(token.display)}** (id {token.id})"
    if len(ids) > 1:
        pieces = " · ".join(md_text(tokenizer.token(i).display) for i in ids[:6]) + (" · …" if len(ids) > 6 else "")
        note += f" ⚠️ your text is {len(ids)} tokens ({pieces}): only the first is used"
    return note


def echo_token_boxes(tokenizer: Tokenizer, boxes: list[tuple[gr.Textbox, str, str]], echo: gr.Markdown) -> None:
    """Keeps ``echo`` saying how each (box, what it is, what empty means) is read, as it is typed
    or filled by a preset (tokenizer only: no model, no queue)."""

    def notes(*texts) -> str:
        return " · ".join(
            token_box_note(tokenizer, text, what, empty) for text, (_, what, empty) in zip(texts, boxes, strict=True)
        )

    echo.value = notes(*(box.value for box, _, _ in boxes))
    for box, _, _ in boxes:
        box.change(notes, [b for b, _, _ in boxes], echo, queue=False)


# ------------------------------------------------------------------------------------- attribution


def attribution_figures(result: Attribution, tokenizer: Tokenizer, where: str) -> tuple[go.Figure, go.Figure, str]:
    """-> (top contributors as signed bars, every head as a layers x heads grid centred at 0, summary)."""
    target = tokenizer.token(result.token_id).display
    what = f"logit({target!r})"
    if result.minus_token_id is not None:
        what += f" − logit({tokenizer.token(result.minus_token_id).display!r})"
    parts = result.parts()
    names = list(parts)
    values = np.array([parts[n] for n in names])
    order = np.argsort(-np.abs(values), kind="stable")[:TOP_CONTRIBUTORS]
    shown = [names[i] for i in order]
    fig = go.Figure(
        go.Bar(
            x=values[order],
            y=shown,
            orientation="h",
            marker_color=["#0072B2" if v >= 0 else "#D55E00" for v in values[order]],
            hovertemplate="%{y}<br>share of the " + plot_text(what) + ": %{x:.4g}<extra></extra>",
        )
    )
    layout(fig, f"Largest direct contributions to {plot_text(what)} at {plot_text(where)}", height=460)
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_xaxes(title="share of the logit<br>(+ pushes up, − down)", zeroline=True, zerolinewidth=2)

    L, H = result.heads.shape
    x, y = head_labels(L, H)
    bound = float(np.max(np.abs(result.heads))) or 1.0
    grid = heatmap(
        result.heads,
        x,
        y,
        f"Every head's direct share of {plot_text(what)} (blue +, red −)",
        x_title="head",
        y_title="layer",
        value_name="share",
        diverging=True,
        zmin=-bound,
        zmax=bound,
        height=max(300, 34 * L + 160),
    )
    top = ", ".join(f"`{n}` {parts[n]:+.3g}" for n in shown[:5])
    summary = (
        f"{md_text(what)} at {md_text(where)} = **{result.logit:.4g}**; the {len(parts)} shares sum to "
        f"{result.total:.4g} (difference {abs(result.total - result.logit):.1e}, float32 rounding). "
        f"Final layer-norm scale frozen at {result.scale:.4g}. Largest: {top}."
    )
    return fig, grid, summary


def attribution_arrays(result: Attribution) -> dict[str, np.ndarray]:
    parts = result.parts()
    return {
        "attribution_position": np.int64(result.position),
        "attribution_token_id": np.int64(result.token_id),
        "attribution_minus_token_id": np.int64(-1 if result.minus_token_id is None else result.minus_token_id),
        "attribution_logit": np.float64(result.logit),
        "attribution_names": np.array(list(parts)),
        "attribution_shares": np.array(list(parts.values())),
        "attribution_heads": result.heads,
        "attribution_mlp": result.mlp,
        "attribution_ln_scale": np.float64(result.scale),
    }


# --------------------------------------------------------------------------------- head detectors


DETECTOR_NAMES = {"previous_token": "previous token", "duplicate_token": "duplicate token", "induction": "induction"}
DETECTOR_NAME_PX = 30  # the room above the panels for their names, two lines each
DETECTOR_HEAD_LABELS = 4  # head numbers labelled per panel (0, 3, 6, 9 of 12): a panel is ~70 px on a phone


@functools.cache
def detector_grid() -> dict:
    """The layout make_subplots gives 1 x 3 panels titled by DETECTOR_NAMES (axis domains and
    anchors, the titles as annotations), made once: make_subplots and the per-axis updates after
    it were most of a detector figure's cost, paid at every Attention open."""
    grid = make_subplots(rows=1, cols=3, subplot_titles=list(DETECTOR_NAMES.values()), horizontal_spacing=0.06)
    skeleton = grid.layout.to_plotly_json()
    skeleton.pop("template", None)
    return skeleton


def detector_figure(scores: dict[str, np.ndarray]) -> go.Figure:
    """The three detectors as layers x heads grids on one fixed 0..1 scale (scores are shares of attention)."""
    L, H = scores["induction"].shape
    x, y = head_labels(L, H)
    traces = []
    for col, (key, title) in enumerate(DETECTOR_NAMES.items(), start=1):
        suffix = "" if col == 1 else str(col)
        traces.append(
            dict(
                type="heatmap",
                z=scores[key].astype(np.float32),
                x=x,
                y=y,
                coloraxis="coloraxis",
                hoverongaps=False,
                hovertemplate=f"%{{y}}, %{{x}}<br>{title} score: %{{z:.3f}}<br>click to open this head<extra></extra>",
                xaxis=f"x{suffix}",
                yaxis=f"y{suffix}",
            )
        )
    grid = copy.deepcopy(detector_grid())
    for col in range(1, 4):
        suffix = "" if col == 1 else str(col)
        # Category ticks read "head h" in hovers (the click script parses them); the axis shows just h.
        grid[f"xaxis{suffix}"].update(
            type="category",
            title=dict(text="head"),
            tickangle=0,
            **thinned_ticks(x, [str(h) for h in range(H)], DETECTOR_HEAD_LABELS),
        )
        grid[f"yaxis{suffix}"].update(
            type="category", autorange="reversed", **({} if col == 1 else {"showticklabels": False})
        )
    for name in grid["annotations"]:  # the panels' names, a word or two a line: they ran into each other on a phone
        name["text"] = "<br>".join(wrap_lines(name["text"], 10))
    return figure(
        traces,
        "Head detectors on your text (click a cell to open that head)",
        height=max(320, 26 * L + 170) + COLOUR_BAR_PX + DETECTOR_NAME_PX,
        margin=dict(t=TOP_PX + DETECTOR_NAME_PX),
        coloraxis=dict(colorscale=SEQUENTIAL, cmin=0.0, cmax=1.0, colorbar=colour_bar("score")),
        **grid,
    )


def detector_summary(scores: dict[str, np.ndarray]) -> str:
    lines = []
    for key, title in (
        ("previous_token", "previous-token"),
        ("duplicate_token", "duplicate-token"),
        ("induction", "induction"),
    ):
        values = scores[key]
        if not np.isfinite(values).any():
            lines.append(f"- {title}: no query has such a key in this text")
            continue
        best = attribution.strongest(values, 3)
        lines.append(
            f"- strongest {title} heads: " + ", ".join(f"L{layer}H{head} ({value:.2f})" for layer, head, value in best)
        )
    return "\n".join(lines)


def parse_head_pick(value: str | None, n_layer: int, n_head: int) -> tuple[int, int] | None:
    """'layer,head' from a click on a detector cell (written by the page's script), checked."""
    try:
        layer, head = (int(v) for v in str(value).split(",")[:2])
    except (TypeError, ValueError):
        return None
    if 0 <= layer < n_layer and 0 <= head < n_head:
        return layer, head
    return None


# Where a picked head is shown: the Attention tab's layer and head controls, its pattern below them.
HEAD_VIEW_ID = "attention-head-view"
# The page's script: a click on a cell of a plot inside an element with class "head-picker"
# writes "layer,head,<time>" into the hidden textbox #head-pick (which an .input event reads),
# and scrolls the head's view into sight: it is far above the detectors on a long page.
HEAD_PICK_JS = """
() => {
  const wire = () => {
    document.querySelectorAll('.head-picker .js-plotly-plot').forEach((plot) => {
      if (plot.dataset.headPick) return;
      plot.dataset.headPick = '1';
      plot.on('plotly_click', (event) => {
        const point = event.points && event.points[0];
        if (!point) return;
        const layer = parseInt(String(point.y).replace('layer ', ''));
        const head = parseInt(String(point.x).replace('head ', ''));
        const box = document.querySelector('#head-pick textarea, #head-pick input');
        if (!box || isNaN(layer) || isNaN(head)) return;
        box.value = `${layer},${head},${Date.now()}`;
        box.dispatchEvent(new Event('input', { bubbles: true }));
        const view = document.getElementById('HEAD_VIEW_ID');
        if (view) view.scrollIntoView({ behavior: 'smooth', block: 'start' });
      });
    });
  };
  setInterval(wire, 700);
}
""".replace("HEAD_VIEW_ID", HEAD_VIEW_ID)
# The hidden textbox must stay in the page (a visible=False component is not rendered at all).
HIDDEN_CSS = "#head-pick { display: none !important; }"


# -------------------------------------------------------------------------------------- patching


@dataclass(frozen=True)
class PatchingInputs:
    clean: gr.Textbox
    corrupted: gr.Textbox
    answer: gr.Textbox
    wrong: gr.Textbox
    preset: gr.Button
    go: gr.Button
    undo: gr.Button  # shown when the preset replaced the student's texts

    @property
    def values(self) -> list:
        return [self.clean, self.corrupted, self.answer, self.wrong]


def patching_inputs(prefix: str, button_label: str, tokenizer: Tokenizer) -> PatchingInputs:
    """The two prompts, the metric's tokens (and how they are read), a preset that can be undone
    and the sweep's button (ids under ``prefix``)."""
    with gr.Row():
        clean = gr.Textbox(label="Clean prompt", value=IOI_CLEAN, max_lines=3, elem_id=f"{prefix}-clean")
        corrupted = gr.Textbox(
            label="Corrupted prompt (same token count)", value=IOI_CORRUPTED, max_lines=3, elem_id=f"{prefix}-corrupted"
        )
    with gr.Row():
        answer = gr.Textbox(
            label="Answer token (metric: its logit …)", value=IOI_ANSWER, max_lines=1, elem_id=f"{prefix}-answer"
        )
        wrong = gr.Textbox(label="… minus this token's logit", value=IOI_WRONG, max_lines=1, elem_id=f"{prefix}-wrong")
        preset = gr.Button("Preset: indirect object, names swapped", size="sm", elem_id=f"{prefix}-preset")
        undo = undo_button("↩ Undo the preset (your prompts and tokens back)", f"{prefix}-undo")
        go_button = gr.Button(button_label, variant="primary", elem_id=f"{prefix}-go")
    echo = gr.Markdown(elem_id=f"{prefix}-tokens")
    echo_token_boxes(tokenizer, [(answer, "answer token", "type a token"), (wrong, "minus", "type a token")], echo)
    boxes = [clean, corrupted, answer, wrong]
    preset_with_undo(preset, boxes, (IOI_CLEAN, IOI_CORRUPTED, IOI_ANSWER, IOI_WRONG), undo)
    return PatchingInputs(clean, corrupted, answer, wrong, preset, go_button, undo.button)


SWEEPS: dict[str, Callable] = {"heads": attribution.patch_heads, "residual": attribution.patch_residual}


@dataclass(frozen=True)
class PatchingRun:
    kind: str  # "heads" or "residual"
    sweep: PatchSweep
    clean_ids: list[int]
    answer_id: int
    wrong_id: int


def run_patching(
    model,
    tokenizer: Tokenizer,
    kind: str,
    clean: str,
    corrupted: str,
    answer: str,
    wrong: str,
    progress: attribution.Progress | None = None,
    limit: int = Settings().max_patch_tokens,
) -> PatchingRun:
    """The sweep of ``kind`` on the typed prompts, of at most ``limit`` tokens each (one trace per
    cell: L x T runs for the residual sweep); clear messages for what cannot be patched.
    ``progress(runs done, runs in all)`` is told as the sweep goes."""
    clean, corrupted = str(clean or ""), str(corrupted or "")
    # No text of more characters can be `limit` tokens: refused before tokenizing it.
    if max(len(clean), len(corrupted)) > limit * tokenizer.max_token_bytes:
        raise InputError(f"patching sweeps run the model once per cell: keep the prompts to {limit} tokens")
    clean_ids, corrupted_ids = tokenizer.encode(clean), tokenizer.encode(corrupted)
    if not clean_ids or not corrupted_ids:
        raise InputError("type both a clean and a corrupted prompt")
    if len(clean_ids) > limit:
        raise InputError(
            f"patching sweeps run the model once per cell: keep the prompts to {limit} tokens (these have {len(clean_ids)})"
        )
    answer_id, wrong_id = first_token(tokenizer, answer, "answer"), first_token(tokenizer, wrong, "wrong answer")
    sweep = SWEEPS[kind](
        model,
        clean_ids,
        corrupted_ids,
        lambda trace: attribution.logit_difference(trace, -1, answer_id, wrong_id),
        progress,
    )
    return PatchingRun(kind, sweep, clean_ids, answer_id, wrong_id)


def patching_figure(result: PatchingRun, tokenizer: Tokenizer) -> tuple[go.Figure, str]:
    sweep = result.sweep
    restored = sweep.restored
    if result.kind == "heads":
        L, H = restored.shape
        x, y = head_labels(L, H)
        title = "Share of the clean metric restored by patching each head's output (all positions)"
        x_title, height = "head", max(320, 34 * L + 160)
    else:
        L, T = restored.shape
        y = [f"before block {layer}" for layer in range(L)]
        x = [f"{i} {tokenizer.token(t).display}" for i, t in enumerate(result.clean_ids)]
        title = "Share of the clean metric restored by patching the residual stream at one layer and position"
        x_title, height = "position (clean token)", max(420, 30 * L + 240)
    answer, wrong = tokenizer.token(result.answer_id).display, tokenizer.token(result.wrong_id).display
    metric = f"Metric logit({md_text(repr(answer))}) − logit({md_text(repr(wrong))}) at the last position: clean **{sweep.clean_metric:.3f}**, corrupted **{sweep.corrupted_metric:.3f}**."
    runs = f"{sweep.runs} runs of the MAX trace graph, packed several to an execution, in {sweep.seconds:.1f} s."
    too_close = sweep.too_close()
    if too_close:
        # Shares of a difference this small are noise amplified: the grid shows each patch's move of
        # the metric in logits instead, on a scale from its own values, and no cell is ranked.
        moved = sweep.metric - sweep.corrupted_metric
        title = title.replace("Share of the clean metric restored", "Change of the metric (logits)")
        fig = heatmap(
            moved,
            x,
            y,
            title,
            x_title=x_title,
            y_title="layer",
            value_name="patched − corrupted metric",
            diverging=True,
            height=height,
            notes=["the prompts' metrics are too close to compare: no shares"],
        )
        summary = (
            f"{metric} ⚠️ **Too close to compare:** {too_close}, so a share of that difference would be noise "
            "amplified, and no cell is ranked. The grid shows how far each patch moves the corrupted metric, in logits. "
            f"Try prompts whose metrics differ more (the preset's differ by several logits on GPT-2). {runs}"
        )
        return fig, summary
    # A fixed −1..1 scale: "1 = all of the clean metric" means the same on every prompt.
    fig = heatmap(
        restored,
        x,
        y,
        title,
        x_title=x_title,
        y_title="layer",
        value_name="restored",
        diverging=True,
        zmin=-1.0,
        zmax=1.0,
        height=height,
    )
    name = (
        (lambda row, col: f"L{row}H{col}")
        if result.kind == "heads"
        else (lambda row, col: f"layer {row}, position {col}")
    )
    summary = (
        f"{metric} Most restoring: "
        + ", ".join(f"{name(row, col)} ({value:.2f})" for row, col, value in attribution.strongest(restored, 3))
        + f". {runs}"
    )
    return fig, summary


@dataclass(frozen=True)
class PatchingSection:
    inputs: PatchingInputs
    plot: gr.Plot
    text: gr.Markdown
    result: gr.State  # the last PatchingRun of this session (for the export)


def patching_section(
    ctx: AppContext,
    kind: str,
    what: str,
    button_label: str,
    *,
    tokenizer: Tokenizer,
    model_for: Callable,
    settings: Settings,
) -> PatchingSection:
    """The patching view of one sweep ``kind`` ("heads" or "residual"), built where it is called
    (inside a tab, through ``ctx.build``) and wired: its button runs the sweep on the live model
    (API ``patch_<kind>``)."""
    gr.Markdown(PATCHING_TEXT.format(what=what))
    inputs = patching_inputs(f"patch-{kind}", button_label, tokenizer)
    plot = gr.Plot(label=f"Patching: {kind}", elem_id=f"patch-{kind}-plot")
    text = gr.Markdown()
    result = gr.State(None)

    @guarded(plot, text, result)
    def sweep(request, clean, corrupted, answer, wrong, progress=gr.Progress()):  # noqa: B008 - Gradio's way to ask for a progress bar
        run = ctx.current(request)
        model = model_for(None if run is None else run.model_name)
        if model is None:
            raise InputError("patching runs the model once per cell, which needs the live model; it is still loading")

        def runs_done(done: int, total: int) -> None:
            # Over the plot while the sweep runs: "98/170 runs of the trace graph".
            progress((done, total), desc="Patching", unit="runs of the trace graph")

        patched = run_patching(
            model,
            tokenizer,
            kind,
            clean,
            corrupted,
            answer,
            wrong,
            runs_done,
            settings.max_patch_tokens,
        )
        return (*patching_figure(patched, tokenizer), patched)

    inputs.go.click(
        sweep,
        [ctx.state, *inputs.values],
        [plot, text, result],
        # The long jobs' lane: opening a tab or moving a control never queues behind a sweep, and the
        # guard admits settings.long_jobs_per_session of them per session (components.guard).
        api_name=f"patch_{kind}",
        **ctx.lane(LONG_LANE),
    )
    return PatchingSection(inputs, plot, text, result)


def patching_arrays(result: PatchingRun | None) -> dict[str, np.ndarray]:
    """The tensors behind a patching view, for the tab's .npz (none before a sweep)."""
    if result is None:
        return {}
    return {
        f"patch_{result.kind}_restored": result.sweep.restored,
        f"patch_{result.kind}_metric": result.sweep.metric,
        "patch_clean_metric": np.float64(result.sweep.clean_metric),
        "patch_corrupted_metric": np.float64(result.sweep.corrupted_metric),
        "patch_clean_ids": np.asarray(result.clean_ids, dtype=np.int64),
        "patch_answer_id": np.int64(result.answer_id),
        "patch_wrong_id": np.int64(result.wrong_id),
    }
