"""GPT-2 Explorer on MAX: type text, watch GPT-2 process it stage by stage.

    python app.py [--model ID_OR_DIR] [--port N] [--share]

One prompt and one Run make one trace of the compiled MAX graph; the tab on screen
renders from it at once, every other tab when it is opened (once per Run and
setting), and a control re-renders only the figures that depend on it.
"""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("MODULAR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue rebuilds a pandas summary of its recent events after every event, for a
# monitoring page this app does not show, at a cost that grows with the log: once per 1,000
# events, over the last 1,000 (docs/performance.md, "Measurements behind the constants").
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from components import (  # noqa: E402
    compare,
    lessons,
    share,
    tab_attention,
    tab_blocks,
    tab_embed,
    tab_logits,
    tab_mask,
    tab_mlp,
    tab_sample,
    tab_tokenize,
)
from components.common import AppContext, ExplorerBlocks, fmt_p, guarded, is_pending, md_text, undo_button  # noqa: E402
from components.interpret import HEAD_PICK_JS, HIDDEN_CSS  # noqa: E402
from components.reconnect import page_script  # noqa: E402
from explorer.loading import start_model  # noqa: E402
from explorer.parts import ServerParts  # noqa: E402
from explorer.runs import PENDING, PRECOMPUTED, Run  # noqa: E402
from explorer.service import ExplorerService  # noqa: E402
from explorer.settings import Settings  # noqa: E402
from gpt2_max.errors import InputError  # noqa: E402
from gpt2_max.sampling import softmax  # noqa: E402
from gpt2_max.scheduling import MODEL_LANE, RUN_LANE, STATUS_LANE  # noqa: E402
from gpt2_max.weights import DEMO_MODEL  # noqa: E402

# The status line's poll: first soon after the page opens, then every STATUS_POLL_S while a model loads.
STATUS_FIRST_POLL_S = 0.5
STATUS_POLL_S = 2.0
TABS = (tab_tokenize, tab_embed, tab_mask, tab_attention, tab_mlp, tab_blocks, tab_logits, tab_sample)

# Chosen for teaching: each shows one behaviour clearly, on GPT-2 and on the bundled demo model
# (trained on Jane Austen: it knows her sentences and names, not code or French).
EXAMPLES = [
    "The cat sat on the mat. The cat sat on the",  # repeated phrase: induction-like attention
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a",  # a famous line
    "def add(a, b):\n    return a +",  # code
    "1, 2, 3, 4, 5, 6, 7,",  # numbers
    "Le chat est assis sur le tapis.",  # not English
    "When Mary and John went to the store, John gave a drink to",  # indirect object
]

HEADER = """# GPT-2 Explorer on MAX
Every number below is computed by GPT-2 written in Modular's MAX, on your text: one compiled graph records
every intermediate tensor. Work through the tabs left to right, from text to the next token."""


def run_note(run, tokenizer) -> str:
    """The line under the prompt: where the trace came from, and the model's next-token guess."""
    if run.source == PENDING:
        return (
            f"⏳ **Your Run waits for the model** `{run.model_name}`, which is still loading (see the status line): "
            f"its {run.n_tokens} tokens are in the Tokenize tab now, and it is traced by itself when the model is ready."
        ) + (f"\n\n⚠️ {run.notice}" if run.notice else "")
    if run.source == PRECOMPUTED:
        origin = "**Precomputed** trace of this example (shown while the model loads)."
    else:
        # seconds: from asking to having the trace, a wait for a running batch included.
        origin = f"**Live** trace: {run.n_tokens} tokens, traced in {run.seconds * 1000:.0f} ms"
        origin += f" (one execution for {run.batched} Runs that arrived together)." if run.batched > 1 else "."
    probs = softmax(run.trace["logits"][-1])
    best = int(np.argmax(probs))
    guess = (
        f" Most likely next token: **{md_text(tokenizer.token(best).display)}** "
        f"(id {best}, p = {fmt_p(float(probs[best]))})."
    )
    return origin + guess + (f"\n\n⚠️ {run.notice}" if run.notice else "")


def model_label(name: str) -> str:
    """How the model picker names a model: the bundled one says what it is."""
    return f"{name} (bundled demo: Jane Austen)" if name == DEMO_MODEL else name


# The page's layout on a phone (390 px wide): the status line above the model picker, not in a
# column beside it; no tokens written in heatmap cells too narrow for them (the logit lens's 24
# cells are ~12 px each there and their tokens ran into each other: the hover has them); dropdown
# values clear of the arrow Gradio draws over the right end of their box (cut with an ellipsis).
PAGE_CSS = """
@media (max-width: 640px) {
  #status-row { flex-direction: column; }
  #status-row > * { width: 100%; min-width: 0 !important; }
  .cell-text-wide-only .heatmap-label { display: none; }
}
.wrap-inner .secondary-wrap input { padding-right: 28px; text-overflow: ellipsis; }
"""

# Gradio's copies of exported files are deleted every 10 minutes once older than 30.
DELETE_CACHE = (600, 1800)


def build_app(service: ExplorerService) -> gr.Blocks:
    return build_ui(service)[0]


def build_ui(service: ExplorerService) -> tuple[gr.Blocks, AppContext]:
    """The page and the context holding its tab views (tests render the views through it)."""
    settings = service.settings
    with ExplorerBlocks(title="GPT-2 Explorer on MAX", delete_cache=DELETE_CACHE, settings=settings) as demo:
        gr.Markdown(HEADER)
        with gr.Row(elem_id="status-row"):
            status = gr.Markdown(service.status_markdown(), elem_id="model-status")
            # Only the models the host allows (settings); never a free-text id or path.
            model_choice = gr.Dropdown(
                choices=[(model_label(name), name) for name in service.allowed_models],
                value=service.model_name,
                label="Model (the host's list)",
                interactive=len(service.allowed_models) > 1,
                elem_id="model-choice",
                scale=0,
                min_width=260,
            )
        prompt = gr.Textbox(
            label="Prompt",
            value=EXAMPLES[0],
            lines=3,
            max_lines=12,
            elem_id="prompt",
        )
        compare_box = compare.build_box()
        with gr.Row():
            run_button = gr.Button("Run", variant="primary", elem_id="run-button")
            # Shown when a button (the induction test, a preset) replaced the typed prompt.
            prompt_undo = undo_button("↩ Restore my prompt", "prompt-undo")
        gr.Examples(EXAMPLES, inputs=prompt, label="Examples for teaching")
        note = gr.Markdown(elem_id="run-note")
        state = gr.State(None)
        ctx = AppContext(parts=ServerParts.of(service), state=state)
        share_row = ctx.build(share.build_share_row, prompt, model_choice, note, compare_box)
        lesson_list = lessons.load_lessons()
        lesson_panel = lessons.build_panel(lesson_list)
        with gr.Tabs():
            for tab in TABS:
                ctx.build(tab.build)

        def compare_note(other, why: str) -> str:
            """The note's line on B, the compare prompt: its Run, or why it was left out."""
            if why:
                return f"\n\n⚠️ **Compare with (B) was not run:** {md_text(why)}"
            if other is None:
                return ""
            if other.source == PENDING:
                return f"\n\n⏳ **Compare with (B):** its {other.n_tokens} tokens are traced when the model is ready."
            return "\n\n**Compare with (B):** " + run_note(other, service.tokenizer)

        @guarded(state, ctx.compare, note)
        def start_run(text, model_name, compare_text=None):
            run, other, why = compare.run_both(
                text, model_name, compare_text, run=service.run, settings=settings, runs_together=service.runs_together
            )
            note_text = run_note(run, service.tokenizer) + compare_note(other, why)
            return run.request, None if other is None else other.request, note_text

        # The service traces the Runs that wait together in one MAX execution, up to
        # max_batch_size at a time (ExplorerService.batcher, a gpt2_max.batching.Batcher); the
        # lane admits two batches' worth, so the next batch gathers while one runs. Not Gradio's
        # batch=True: a batched event does not give each session its own gr.State back.
        # The compare box last, its argument defaulting to None: a call of the API with (prompt, model) runs no B.
        event = gr.on(
            [run_button.click, prompt.submit, compare_box.submit],
            start_run,
            [prompt, model_choice, compare_box],
            [state, ctx.compare, note],
            api_name="run",
            **service.lanes.event(RUN_LANE),
        )
        events = [event]
        for trigger, make, what in ctx.id_runs:

            @guarded(state, note, prompt, prompt_undo.saved, prompt_undo.button)
            def start_ids_run(model_name, typed, compare_request=None, make=make, what=what):
                ids = make()
                text = service.tokenizer.decode(ids)
                run = service.run_ids(text, ids, model_name)
                # B stays what it was: the preset's sentence against the student's compare prompt.
                other = compare.compare_of(service.from_request, run, compare_request)
                note_text = run_note(run, service.tokenizer) + compare_note(
                    other if isinstance(other, Run) else None, ""
                )
                if typed == text:  # nothing of the student's was replaced
                    return run.request, note_text, text, gr.skip(), gr.skip()
                replaced = f"↩ {what.capitalize()} replaced your prompt; **Restore my prompt** (beside Run) brings it back.\n\n"
                return run.request, replaced + note_text, text, [typed], gr.update(visible=True)

            events.append(
                trigger(
                    start_ids_run,
                    [model_choice, prompt, ctx.compare],
                    [state, note, prompt, prompt_undo.saved, prompt_undo.button],
                    **service.lanes.event(MODEL_LANE),
                )
            )
        # Restoring the prompt traces it again, so every tab shows it as before.
        events.append(
            prompt_undo.restore_into([prompt]).then(
                start_run,
                [prompt, model_choice, compare_box],
                [state, ctx.compare, note],
                **service.lanes.event(RUN_LANE),
            )
        )

        # The status line follows the chosen model's background load (every graph), then stops polling.
        # Its first tick comes soon: the page's first status is the one written when the page was built
        # (a model still loading then), which a page opened later would show until that tick.
        timer = gr.Timer(STATUS_FIRST_POLL_S)
        # What the chosen model can compute now (ExplorerService.readiness): when it changes, a Run
        # pressed during loading is traced, and the tab on screen redraws what was waiting.
        readiness = gr.State(None)

        @guarded(status, timer, readiness)
        def poll(model_name):
            ready_now = service.loader.readiness(model_name)
            return (
                service.status_markdown(model_name),
                gr.Timer(STATUS_POLL_S, active=not service.loader.wait_until_ready(0, model_name)),
                ready_now,
            )

        @guarded(state, note)
        def trace_pending(request):
            """The Run pressed while the model loaded, traced now that it can be (else nothing changes)."""
            if not is_pending(request) or service.model_for(request.model) is None:
                return gr.skip(), gr.skip()
            run = service.from_request(request)
            return run.request, run_note(run, service.tokenizer)

        events.append(
            readiness.change(
                trace_pending,
                [state],
                [state, note],
                **service.lanes.event(RUN_LANE),
            )
        )
        ctx.wire_run(*events)  # then the figures of the tab on screen, and only those

        @guarded(status, timer)
        def choose_model(model_name):
            service.loader.start_loading(model_name)
            return service.status_markdown(model_name), gr.Timer(active=True)

        # Queued (its own lane, unlimited width): Gradio reports a State's change, which traces a
        # pending Run, only in a queued event's completion, never in an unqueued one's.
        timer.tick(
            poll,
            [model_choice],
            [status, timer, readiness],
            **service.lanes.event(STATUS_LANE),
            api_visibility="private",
        )

        def status_text(model_name: str | None) -> str:
            """The status line's text for a model (default: the host's): what the page shows, and
            what HAProxy's health check and deploy/replica_ready.py read, unqueued."""
            try:
                return service.status_markdown(model_name)
            except InputError as error:
                return f"⚠️ {error}"

        gr.api(status_text, api_name="status", queue=False)
        model_choice.change(choose_model, [model_choice], [status, timer], queue=False, api_name="choose_model")
        share.wire(share_row, demo, start_run)  # last: it finds every tab's controls and events
        ctx.build(lessons.wire, lesson_panel, lesson_list, share_row)
    demo.queue(default_concurrency_limit=settings.concurrency_limit, max_size=settings.max_queue)
    return demo, ctx


def main() -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help=f"Hub repo id, local directory or {DEMO_MODEL} (bundled). Default: $GPT2_EXPLORER_MODEL, else "
        f"{settings.model} when it is cached or the Hub answers, else {DEMO_MODEL}",
    )
    parser.add_argument("--port", type=int, default=None, help="default: Gradio's (7860)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--share", action="store_true", help="also open a public Gradio link")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.model or os.environ.get("GPT2_EXPLORER_MODEL"):  # the host's explicit choice, loaded or explained
        model, start_note = args.model or settings.model, ""
    else:  # the default: GPT-2 small if it can be had, else the bundled demo model at once
        model, start_note = start_model(settings.model)
    service = ExplorerService(settings, model, tuple(EXAMPLES), start_note=start_note)
    service.loader.start_loading()
    demo = build_app(service)
    # The page script lets a click on a head-detector cell open that head (components.interpret), and
    # keeps the page usable, with its prompt and settings, when its server stops (components.reconnect).
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        show_error=False,
        js=page_script(HEAD_PICK_JS),
        css=HIDDEN_CSS + PAGE_CSS + share.PRESENTER_CSS,
    )


if __name__ == "__main__":
    main()
