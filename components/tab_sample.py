"""Sample: how the next token is chosen from the logits, and generation token by token with the KV cache."""

from __future__ import annotations

import dataclasses
import html
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from components.common import (
    NO_RUN,
    AppContext,
    clamp,
    export_npz,
    guarded,
    intro,
    named_outputs,
    slider_moved,
    source_block,
    unique_labels,
)
from components.plots import GROUPED, figure, log_axis, message_figure, plot_text, plot_texts, value_marks
from explorer.runs import Run
from explorer.settings import Settings
from gpt2_max.errors import InputError
from gpt2_max.modules import GPT2DecodeStep
from gpt2_max.sampling import SampleStep, SamplingSettings, choose, filtered_distribution, softmax
from gpt2_max.scheduling import GENERATE_LANE
from gpt2_max.tokenizer import Tokenizer

# Okabe-Ito colours (see tab_tokenize): raw distribution, filtered distribution, the drawn token.
RAW_COLOUR = "#56B4E9"
FILTERED_COLOUR = "#E69F00"
CHOSEN_COLOUR = "#D55E00"
COUNT_COLOUR = "#0072B2"
EXPECTED_COLOUR = "#999999"
CONTEXT_TOKENS = 6  # tokens of context quoted in a figure's title
HISTOGRAM_ROWS = 25  # tokens shown in the sample-N histogram; the rest are summed in one row
ROW_HEIGHT = 30

# The tab's outputs, by name, in the order they are wired: the status, the step's distribution
# figure and the text, the step slider and the generation a Run resets, then the sample-N
# histogram and its note.
SampleViews = named_outputs("status", "distribution", "text", "step", "generation", "histogram", "histogram_note")

INTRO = intro(
    "8 · Sample",
    "GPT-2 only scores every possible next token; a sampler chooses one. The logits at the last "
    "position are divided by the **temperature** (0 = greedy: always the most likely token), cut to "
    "the **top-k** most likely (0 = off), then to the smallest set whose probability reaches "
    "**top-p**; what is kept is renormalised and one token is drawn with the seeded generator. "
    "The drawn token is appended and the model runs again on that one token alone, reusing the "
    "cached keys and values of the earlier ones (the KV cache), so each step costs one pass over the weights. "
    "Students generating at the same time share each step: one pass over the weights for all of them.",
    [
        ("logits[-1]", "[V] float32 (V = 50,257): scores for the token after the last position"),
        ("probabilities", "[V] float64: softmax(logits / T), filtered by top-k and top-p, renormalised to sum 1"),
        ("past_k, past_v", "[L, H, D, P] and [L, H, P, D]: keys and values of the P earlier tokens (the cache)"),
        ("token_id", "[1] int64: the drawn token, the decode step's next input"),
    ],
)

GENERATE_HINT = (
    "Press **Generate** to continue the prompt token by token with these settings. The chart shows "
    "the first step: the next-token distribution after the prompt before and after the filters, "
    "and the token this seed draws."
)


# -- settings ---------------------------------------------------------------


def _number(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be a number") from None


def sampling_settings(temperature, top_k, top_p, seed) -> SamplingSettings:
    """Settings from UI or raw API values; anything out of range raises InputError with a message."""
    t = _number(temperature, "temperature")
    k = _number(top_k, "top_k")
    p = _number(top_p, "top_p")
    if not np.isfinite(k) or k != int(k):
        raise InputError("top_k must be a whole number >= 0")
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        seed_value = None
    else:
        s = _number(seed, "seed")
        if not np.isfinite(s) or s != int(s) or not 0 <= s < 2**63:
            raise InputError("seed must be a whole number >= 0")
        seed_value = int(s)
    return SamplingSettings(temperature=t, top_k=int(k), top_p=p, seed=seed_value)


def with_seed(settings: SamplingSettings) -> SamplingSettings:
    """A blank seed becomes a fresh one, so what was drawn can be shown and repeated."""
    if settings.seed is not None:
        return settings
    return dataclasses.replace(settings, seed=int(np.random.SeedSequence().entropy % 2**31))


def settings_text(settings: SamplingSettings) -> str:
    t = "0 (greedy)" if settings.temperature == 0 else f"{settings.temperature:g}"
    k = "off" if settings.top_k == 0 else str(settings.top_k)
    p = "off" if settings.top_p >= 1 else f"{settings.top_p:g}"
    return f"temperature {t} · top-k {k} · top-p {p} · seed {settings.seed}"


# -- labels -----------------------------------------------------------------


def prob_text(p: float) -> str:
    """0.123, or 3.5e-05 for the tiny probabilities of a flat distribution."""
    return f"{p:.3f}" if p >= 0.001 or p == 0 else f"{p:.1e}"


def grouped_bars(data: Sequence[dict], title: str, note: str, n_rows: int, xaxis: dict) -> go.Figure:
    """Horizontal grouped series (bars, or points on a log axis: ``value_marks``), one row per
    token, ``note`` under the title: both Sample charts."""
    return figure(
        data,
        title,
        height=ROW_HEIGHT * n_rows + 160,
        notes=[note],
        **GROUPED,
        yaxis=dict(type="category", autorange="reversed", automargin=True),
        xaxis=xaxis,
    )


def token_labels(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """One unique, readable label per token id (the id is added where two look alike)."""
    shown = [tokenizer.token(int(i)).display for i in ids]
    return plot_texts(unique_labels(shown, [int(i) for i in ids]))


def context_text(tokenizer: Tokenizer, ids: Sequence[int], n: int = CONTEXT_TOKENS) -> str:
    """The last n tokens of a sequence, as readable text, for a figure title."""
    tail = list(ids)[-n:]
    shown = "".join(tokenizer.token(int(i)).display for i in tail)
    return plot_text(("…" if len(ids) > n else "") + shown)


# -- one generation step ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shown:
    """A generation step as the tab keeps it: the SampleStep without its [V] logits, plus the
    drawn token's probability before the filters (it may lie outside the reported candidates)."""

    step: SampleStep
    raw_prob: float


def keep_step(step: SampleStep) -> Shown:
    """Drops the [V] logits of a step (kept per session), after reading the drawn token's raw probability."""
    if step.logits is not None:
        raw = float(softmax(step.logits)[step.token_id])
    else:
        where = np.flatnonzero(step.candidate_ids == step.token_id)
        raw = float(step.candidate_probs[where[0]]) if len(where) else float("nan")
    return Shown(dataclasses.replace(step, logits=None), raw)


def step_figure(tokenizer: Tokenizer, shown: Shown, context_ids: Sequence[int], title: str) -> go.Figure:
    """Grouped bars: each candidate's probability before (T = 1, no filters) and after the filters."""
    step = shown.step
    ids = [int(i) for i in step.candidate_ids]
    raw = [float(p) for p in step.candidate_probs]
    filtered = [float(p) for p in step.candidate_filtered]
    outside = step.token_id not in ids
    if outside:  # a drawn token outside the most likely ones still gets its bar
        ids.append(step.token_id)
        raw.append(shown.raw_prob)
        filtered.append(step.chosen_prob)
    labels = token_labels(tokenizer, ids)
    chosen_row = ids.index(step.token_id)
    labels[chosen_row] = f"▶ {labels[chosen_row]}" + (" (drawn)" if outside else "")
    hover = [f"id {i}" for i in ids]
    raw_colours = [CHOSEN_COLOUR if r == chosen_row else RAW_COLOUR for r in range(len(ids))]
    filtered_colours = [CHOSEN_COLOUR if r == chosen_row else FILTERED_COLOUR for r in range(len(ids))]
    # Points, not bars: the axis is log (see value_marks); the two series differ by shape too.
    data = [
        value_marks(
            labels,
            values,
            log=True,
            colour=colours,
            symbol=symbol,
            name=name,
            text=hover,
            hovertemplate="%{y}<br>%{text}<br>" + name + ": %{x:.4g}<extra></extra>",
        )
        for name, values, colours, symbol in (
            ("before filters (T = 1, all tokens)", raw, raw_colours, "circle"),
            ("after temperature, top-k, top-p (drawn from)", filtered, filtered_colours, "diamond"),
        )
    ]
    context = context_text(tokenizer, context_ids)
    drawn = plot_text(tokenizer.token(step.token_id).display)
    full_title = (
        f"{title}: drew “{drawn}”, p = {prob_text(step.chosen_prob)} after the filters ({step.kept:,} tokens kept)"
    )
    note = (
        f"after “{context}” · ▶ = the drawn token, in vermilion · log scale: a token the filters removed "
        "has no orange diamond"
    )
    # Log: the probabilities span decades (0.9 for the top token, 1e-4 for the 20th), and on a
    # linear axis only the first bar or two would be visible.
    return grouped_bars(data, full_title, note, len(ids), log_axis(raw + filtered, "probability"))


def step_title(index: int, total: int, position: int, generating: bool = False) -> str:
    """``generating``: ``total`` is the most the running generation may make (its count so far
    grows after the chart is drawn: "Step 10 of 10" stood beside a slider at 17)."""
    return (
        f"Step {index} of up to {total} (position {position}), generating…"
        if generating
        else f"Step {index} of {total} (position {position})"
    )


def text_html(
    tokenizer: Tokenizer, prompt_ids: Sequence[int], new_ids: Sequence[int], selected: int | None = None
) -> str:
    """The prompt, then the generated tokens marked; the token of step ``selected`` (1-based) marked stronger."""
    prompt = html.escape(tokenizer.decode(list(prompt_ids)))
    new_ids = list(new_ids)
    parts = [f'<span style="color:#555555">{prompt}</span>']
    if new_ids:
        k = clamp(selected if selected is not None else len(new_ids), 1, len(new_ids), len(new_ids))
        before = html.escape(tokenizer.decode(new_ids[: k - 1]))
        chosen = html.escape(tokenizer.decode(new_ids[k - 1 : k]))
        after = html.escape(tokenizer.decode(new_ids[k:]))
        mark = "background:#cfe3ff;color:#111111;border-radius:3px"
        strong = f"background:{FILTERED_COLOUR};color:#111111;font-weight:bold;border-radius:3px;outline:2px solid {CHOSEN_COLOUR}"
        parts.append(f'<mark style="{mark}">{before}</mark>' if before else "")
        parts.append(f'<mark style="{strong}" title="step {k}">{chosen}</mark>')
        parts.append(f'<mark style="{mark}">{after}</mark>' if after else "")
    legend = (
        '<div style="font-size:0.85em;color:#555555;margin-top:6px">grey: the prompt · '
        '<mark style="background:#cfe3ff;color:#111111">blue</mark>: generated · '
        f'<mark style="background:{FILTERED_COLOUR};color:#111111;font-weight:bold">orange</mark>: the selected step\'s token</div>'
        if new_ids
        else ""
    )
    body = "".join(parts)
    return (
        '<div id="sample-text-body" style="white-space:pre-wrap;font-family:monospace;font-size:15px;'
        f'line-height:1.6;padding:8px;border:1px solid #dddddd;border-radius:6px">{body}</div>{legend}'
    )


# -- generation (streamed) --------------------------------------------------


def empty_generation(prompt_ids: Sequence[int]) -> dict:
    return {"prompt_ids": [int(i) for i in prompt_ids], "shown": [], "stop": "", "settings": ""}


def step_view(tokenizer: Tokenizer, generation: dict | None, index, up_to: int | None = None) -> tuple[go.Figure, str]:
    """-> (step figure, text html) for step ``index`` (1-based, clamped) of a generation;
    ``up_to``: it is still running, and makes at most that many steps."""
    if not generation or not generation.get("shown"):
        return message_figure("Press Generate to draw tokens."), ""
    shown: list[Shown] = generation["shown"]
    k = clamp(index, 1, len(shown), len(shown))
    context = generation["prompt_ids"] + [s.step.token_id for s in shown[: k - 1]]
    title = step_title(k, up_to or len(shown), shown[k - 1].step.position, generating=up_to is not None)
    fig = step_figure(tokenizer, shown[k - 1], context, title)
    return fig, generation_text(tokenizer, generation, k)


def generation_text(tokenizer: Tokenizer, generation: dict, selected: int) -> str:
    """The text html of a generation: its prompt, then its new tokens, step ``selected`` marked."""
    return text_html(tokenizer, generation["prompt_ids"], [s.step.token_id for s in generation["shown"]], selected)


STOP_TEXT = {
    "end_of_text": "the model chose <|endoftext|>",
    "max_new_tokens": "the requested number of tokens was reached",
    "context_full": "the sequence filled the model's context",
}


def export_generation(generation: dict | None) -> str | None:
    """Writes the steps of a generation as .npz (only when the user asks); None before one."""
    shown: list[Shown] = generation["shown"] if generation else []
    if not shown:
        return None
    steps = [s.step for s in shown]
    return export_npz(
        "sample",
        {
            "prompt_ids": np.asarray(generation["prompt_ids"], dtype=np.int64),
            "token_ids": np.asarray([s.token_id for s in steps], dtype=np.int64),
            "positions": np.asarray([s.position for s in steps], dtype=np.int64),
            "candidate_ids": np.stack([s.candidate_ids for s in steps]).astype(np.int64),
            "candidate_probs": np.stack([s.candidate_probs for s in steps]),
            "candidate_filtered": np.stack([s.candidate_filtered for s in steps]),
            "kept": np.asarray([s.kept for s in steps], dtype=np.int64),
            "chosen_prob": np.asarray([s.chosen_prob for s in steps]),
            "chosen_raw_prob": np.asarray([s.raw_prob for s in shown]),
            "settings": np.asarray(generation["settings"]),
        },
    )


DECODE_POLL_S = 1.0
# While tokens stream, the page is updated at most this often, and the step chart redrawn at
# most that often (seconds)...
STREAM_UPDATE_INTERVAL_S = 0.25
STREAM_FIGURE_INTERVAL_S = 1.0
# ...and, while several generations stream at once, the server sends at most about this many
# updates and charts a second between them all: each update is an event-loop turn and a message
# to parse, and a class's 30 streams at 4 updates a second each cost as much again as their
# decode steps.
STREAM_UPDATES_PER_S = 40
STREAM_FIGURES_PER_S = 10


class ActiveStreams:
    """How many generations are streaming now (thread-safe), for their shared update budget."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    @contextmanager
    def streaming(self) -> Iterator[None]:
        with self._lock:
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1

    def intervals(self) -> tuple[float, float]:
        """(update, chart) intervals in seconds for each stream now: the fixed ones for a lone
        stream, longer as more share the budget."""
        others = max(0, self._count - 1)
        return (
            max(STREAM_UPDATE_INTERVAL_S, others / STREAM_UPDATES_PER_S),
            max(STREAM_FIGURE_INTERVAL_S, others / STREAM_FIGURES_PER_S),
        )


ACTIVE_STREAMS = ActiveStreams()


def wait_for_decode_graph(compiling: Callable, model_name: str) -> Iterator[tuple]:
    """While the decode graph compiles in the background, say so once a second (no figure changes)."""
    while True:
        waiting = compiling("decode", model_name)
        if not waiting:
            return
        status = f"⏳ Generate needs the MAX decode graph, which is compiling: {waiting}. Generation starts by itself when it is ready."
        yield status, gr.update(), gr.update(), gr.update(), gr.update()
        time.sleep(DECODE_POLL_S)


def stream_views(
    run: Run | None,
    temperature,
    top_k,
    top_p,
    seed,
    max_new,
    *,
    tokenizer: Tokenizer,
    settings: Settings,
    model_for: Callable,
    compiling: Callable,
    yield_to_runs: Callable,
) -> Iterator[tuple]:
    """Generation after the Run's tokens, one yield per token (the server's parts as ``build``'s).

    Yields (status markdown, step figure, text html, step slider update, generation); the
    last yield carries the stop reason. While the decode graph compiles, the status says so.
    """
    if run is None:
        yield NO_RUN, message_figure(NO_RUN), "", gr.update(), None
        return
    limit = settings.max_new_tokens
    sampling = with_seed(sampling_settings(temperature, top_k, top_p, seed))
    model = model_for(run.model_name)
    if model is None:
        raise InputError(
            "generation needs the live model, which is still loading (or unavailable); "
            "the chart above shows the first step from the precomputed trace"
        )
    yield from wait_for_decode_graph(compiling, run.model_name)
    n = clamp(max_new, 1, limit, default=min(20, limit))
    generation = empty_generation(run.token_ids)
    generation["settings"] = settings_text(sampling)
    # The Run's own trace is the prefill when it is the plain causal one (its keys, values and
    # logits are what a prefill would compute): the prompt is not traced a second time.
    prefill = run.trace if run.causal and not run.ablate else None
    steps = model.stream(list(run.token_ids), n, sampling, keep_logits=True, prefill=prefill)
    sent_at = drawn_at = -math.inf  # when the page was last updated, and when the step chart was
    drawn = 0  # the step the chart shows: the step slider and the marked token follow it, not the newest token
    with ACTIVE_STREAMS.streaming():
        while True:
            yield_to_runs()  # Runs being traced go before the next token
            try:
                step = next(steps)
            except StopIteration as stop:
                generation["stop"] = stop.value or ""
                break
            generation["shown"].append(keep_step(step))
            k = len(generation["shown"])
            # The page follows at most every update interval (the text, several tokens at a time
            # when they come fast) and redraws the step chart at most every chart interval (see
            # ActiveStreams.intervals); the end is always sent, chart included. No one reads 20
            # charts a second, and a class of 30 generating at once would spend the CPU drawing them.
            now = time.perf_counter()
            update_interval, chart_interval = ACTIVE_STREAMS.intervals()
            if now - sent_at < update_interval:
                continue
            sent_at = now
            status = f"Generating… {k} of up to {n} tokens · {generation['settings']}"
            if now - drawn_at >= chart_interval:
                fig, text = step_view(tokenizer, generation, k, up_to=n)
                drawn_at, drawn = now, k
            else:
                fig, text = gr.update(), generation_text(tokenizer, generation, drawn)
            yield status, fig, text, gr.update(maximum=max(k, 2), value=drawn, interactive=k > 1), generation
    k = len(generation["shown"])
    fig, text = step_view(tokenizer, generation, k)
    status = (
        f"**{k} tokens generated**, stopped because {STOP_TEXT.get(generation['stop'], generation['stop'])}. "
        f"{generation['settings']}. Move the step slider to see each step's distribution; "
        "the same seed and settings repeat the same text."
    )
    yield status, fig, text, gr.update(maximum=max(k, 2), value=k, interactive=k > 1), generation


# -- sample N times -----------------------------------------------------------


def draw_tokens(probs: np.ndarray, n: int, seed: int | None) -> np.ndarray:
    """n tokens drawn from ``probs`` [V] by the inverse CDF, as ``choose`` draws one per step
    (so with the same seed the first draw is the token Generate's first step picks)."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(probs)
    drawn = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    drawn = np.minimum(drawn, len(probs) - 1)
    # Rounding at the top edge of the CDF may land on a filtered-out token: step back to a kept one.
    last_kept = np.maximum.accumulate(np.where(probs > 0, np.arange(len(probs)), -1))
    return last_kept[drawn]


def draw_counts(logits: np.ndarray, settings: SamplingSettings, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (token ids, counts, expected probabilities): every token drawn at least once, most expected first."""
    probs = filtered_distribution(np.asarray(logits), settings)
    if settings.temperature == 0.0:
        drawn = np.full(n, int(np.argmax(probs)))
    else:
        drawn = draw_tokens(probs, n, settings.seed)
    ids, counts = np.unique(drawn, return_counts=True)
    order = np.lexsort((-counts, -probs[ids]))
    return ids[order], counts[order], probs[ids[order]]


def histogram_figure(
    tokenizer: Tokenizer, logits: np.ndarray, settings: SamplingSettings, n: int, context_ids: Sequence[int]
) -> tuple[go.Figure, str]:
    """Counts of n draws per token beside the counts the filtered probabilities predict (n × p)."""
    probs = filtered_distribution(np.asarray(logits), settings)
    drawn_ids, counts, _ = draw_counts(logits, settings, n)
    count_of = dict(zip(drawn_ids.tolist(), counts.tolist(), strict=True))
    # Rows: the most likely kept tokens and the most drawn ones (they differ when the distribution
    # is flat), most likely first; every other kept token shares one last row.
    likely = [int(i) for i in np.argsort(-probs, kind="stable")[: HISTOGRAM_ROWS // 2] if probs[i] > 0]
    most_drawn = [int(i) for i in drawn_ids[np.argsort(-counts, kind="stable")] if int(i) not in likely]
    ids = likely + most_drawn[: HISTOGRAM_ROWS - len(likely)]
    if len(ids) < HISTOGRAM_ROWS:  # few draws: fill with the next most likely tokens
        more = [
            int(i)
            for i in np.argsort(-probs, kind="stable")[: 2 * HISTOGRAM_ROWS]
            if probs[i] > 0 and int(i) not in ids
        ]
        ids += more[: HISTOGRAM_ROWS - len(ids)]
    ids.sort(key=lambda i: (-probs[i], -count_of.get(i, 0), i))
    labels = token_labels(tokenizer, ids)
    observed = [count_of.get(i, 0) for i in ids]
    expected = [n * float(probs[i]) for i in ids]
    hover = [f"id {i} · p = {prob_text(float(probs[i]))}" for i in ids]
    others = int(np.count_nonzero(probs)) - len(ids)
    if others > 0:  # every other kept token, in one row, so both series sum to n
        labels.append(f"(the other {others:,}<br>kept tokens)")  # two lines: one took a phone's plot
        observed.append(n - sum(observed))
        expected.append(max(0.0, n * (1.0 - float(probs[ids].sum()))))
        hover.append("summed over them")
    data = [
        dict(
            type="bar",
            y=labels,
            x=observed,
            orientation="h",
            name=f"drawn (of {n})",
            marker=dict(color=COUNT_COLOUR),
            text=hover,
            textposition="none",
            hovertemplate="%{y}<br>%{text}<br>drawn %{x} times<extra></extra>",
        ),
        dict(
            type="bar",
            y=labels,
            x=expected,
            orientation="h",
            name="expected: n × probability",
            marker=dict(color=EXPECTED_COLOUR),
            text=hover,
            textposition="none",
            hovertemplate="%{y}<br>%{text}<br>expected %{x:.1f} times<extra></extra>",
        ),
    ]
    title = f"{n} draws of the token after “{context_text(tokenizer, context_ids)}”"
    fig = grouped_bars(
        data,
        title,
        plot_text(settings_text(settings)),
        len(labels),
        dict(title=dict(text="count"), rangemode="tozero"),
    )
    frequencies = np.zeros_like(probs)
    frequencies[drawn_ids] = counts / n
    distance = 0.5 * float(np.abs(frequencies - probs).sum())
    note = (
        f"**{n} draws, {len(drawn_ids)} distinct tokens** of {int(np.count_nonzero(probs)):,} kept by the filters. "
        f"Total variation distance between the drawn frequencies and the probabilities: **{distance:.3f}** "
        "(0 = a perfect match; it shrinks as n grows, slowly when many tokens are kept). With the same seed the first draw is the token Generate's first step picks."
    )
    return fig, note


def render_samples(
    run: Run | None, tokenizer: Tokenizer, service_settings, temperature, top_k, top_p, seed, n_draws
) -> SampleViews:
    """-> SampleViews: the sample-N histogram and its note (the rest unchanged)."""
    if run is None:
        return SampleViews(histogram=message_figure(NO_RUN), histogram_note=NO_RUN)
    settings = with_seed(sampling_settings(temperature, top_k, top_p, seed))
    limit = service_settings.max_sample_draws
    n = clamp(n_draws, 1, limit, default=min(200, limit))
    fig, note = histogram_figure(tokenizer, run.trace["logits"][-1], settings, n, run.token_ids)
    return SampleViews(histogram=fig, histogram_note=note)


def render_preview(run: Run | None, tokenizer: Tokenizer, temperature, top_k, top_p, seed) -> SampleViews:
    """After a Run: the first step Generate would make with these settings, from the Run's own logits.
    -> SampleViews: the status, the step's distribution figure and the text (the rest unchanged)."""
    if run is None:
        return SampleViews(status=NO_RUN, distribution=message_figure(NO_RUN), text="")
    settings = with_seed(sampling_settings(temperature, top_k, top_p, seed))
    logits = run.trace["logits"][-1]
    step = choose(logits, settings, np.random.default_rng(settings.seed), position=run.n_tokens)
    shown = keep_step(dataclasses.replace(step, logits=logits))
    fig = step_figure(tokenizer, shown, run.token_ids, f"Next token (position {run.n_tokens})")
    return SampleViews(
        status=f"{GENERATE_HINT} ({settings_text(settings)})",
        distribution=fig,
        text=text_html(tokenizer, run.token_ids, []),
    )


# -- Gradio -----------------------------------------------------------------


def build(
    ctx: AppContext,
    *,
    tokenizer: Tokenizer,
    settings: Settings,
    model_for: Callable,
    compiling: Callable,
    yield_to_runs: Callable,
) -> None:
    decoding = dict(
        tokenizer=tokenizer, settings=settings, model_for=model_for, compiling=compiling, yield_to_runs=yield_to_runs
    )
    with gr.Tab("Sample", elem_id="tab-sample") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            temperature = gr.Slider(
                0, 2, value=1.0, step=0.05, label="Temperature (0 = greedy)", elem_id="sample-temperature"
            )
            top_k = gr.Slider(0, 100, value=0, step=1, label="Top-k (0 = off)", elem_id="sample-top-k")
            top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p (1 = off)", elem_id="sample-top-p")
        with gr.Row():
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (blank = a fresh one)", elem_id="sample-seed")
            max_new = gr.Slider(
                1,
                max(2, settings.max_new_tokens),
                value=min(20, settings.max_new_tokens),
                step=1,
                label=f"Max new tokens (up to {settings.max_new_tokens})",
                elem_id="sample-max-new",
            )
            generate = gr.Button("Generate", variant="primary", elem_id="sample-generate")
        status = gr.Markdown(NO_RUN, elem_id="sample-status")
        text = gr.HTML(elem_id="sample-text")
        step_slider = gr.Slider(1, 2, value=1, step=1, label="Step", interactive=False, elem_id="sample-step")
        step_plot = gr.Plot(label="Next-token distribution before and after the filters")
        with gr.Row():
            export_button = gr.Button("Export the steps (.npz)", variant="secondary", size="sm")
            export_file = gr.File(label="Export", visible=False, interactive=False)
        gr.Markdown(
            "#### Sample N times\nDraw many next tokens after the prompt with the same settings: "
            "the counts approach n × probability."
        )
        with gr.Row():
            n_draws = gr.Slider(
                1,
                max(2, settings.max_sample_draws),
                value=min(200, settings.max_sample_draws),
                step=1,
                label=f"N (up to {settings.max_sample_draws})",
                elem_id="sample-n",
            )
            sample_button = gr.Button("Sample N times", elem_id="sample-n-button")
        hist_note = gr.Markdown()
        hist_plot = gr.Plot(label="Draws of the next token")
        source_block(
            filtered_distribution,
            GPT2DecodeStep,
            label="Source: the filters (numpy) and the MAX decode step that uses the KV cache",
        )
        generation = gr.State(None)  # inside the tab: a State among gr.Tabs' children is taken for a tab
    knobs = [temperature, top_k, top_p, seed]

    def refresh(request, t, k, p, s, n):
        run = ctx.current(request)
        preview = render_preview(run, tokenizer, t, k, p, s)
        samples = render_samples(run, tokenizer, settings, t, k, p, s, n)
        return preview._replace(
            step=gr.update(maximum=2, value=1, interactive=False),
            generation=empty_generation(run.token_ids) if run else None,
            histogram=samples.histogram,
            histogram_note=samples.histogram_note,
        )

    @guarded(status, step_plot, text, step_slider, generation)
    def run_generation(request, t, k, p, s, n):
        yield from stream_views(ctx.current(request), t, k, p, s, n, **decoding)

    @guarded(step_plot, text)
    def select_step(state, index):
        return step_view(tokenizer, state, index)

    def sample(request, t, k, p, s, n):
        return render_samples(ctx.current(request), tokenizer, settings, t, k, p, s, n)

    outputs = SampleViews(
        status=status,
        distribution=step_plot,
        text=text,
        step=step_slider,
        generation=generation,
        histogram=hist_plot,
        histogram_note=hist_note,
    )
    view = ctx.view(tab, refresh, [*knobs, n_draws], outputs)
    # Its own queue lane, two decode batches wide: generations that run together have their
    # steps batched into one decode-graph execution (engine.run_decode), so a class's Generates
    # all start at once instead of queueing, and they do not take the lane the tab views need.
    generate.click(
        run_generation,
        [ctx.state, *knobs, max_new],
        [status, step_plot, text, step_slider, generation],
        **ctx.lane(GENERATE_LANE),
        api_name="generate",
    )
    step_slider.input(select_step, [generation, step_slider], [step_plot, text], trigger_mode="always_last")
    ctx.control(view, [sample_button.click], sample, [ctx.state, *knobs, n_draws], ("histogram", "histogram_note"))
    # The histogram follows the filters at once.
    ctx.control(
        view,
        [slider_moved(k) for k in (temperature, top_k, top_p, n_draws)],
        sample,
        [ctx.state, *knobs, n_draws],
        ("histogram", "histogram_note"),
        trigger_mode="always_last",
    )

    @guarded(export_file)
    def export(state):
        path = export_generation(state)
        return gr.update(value=path, visible=True) if path else gr.update()

    export_button.click(export, [generation], [export_file], api_name="export_sample")
