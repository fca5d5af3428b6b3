"""Two prompts side by side: the prompt (A) and a second one, "compare with" (B), drawn together
where a tab can show both runs and their difference (Logits, Blocks, Attention).

B is one more Run through A's own path (``ExplorerService.run``: validation, the trace store, the
scheduler's batches), started beside A so that both traces go through one execution of the trace
graph. The page keeps B's request in ``AppContext.compare``, which the three tabs take as one of
their controls: their view keys follow it, so they redraw when B changes and the other tabs do not.
Each tab draws B with the function that draws A.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from components.common import user_message
from explorer.analyses import Reason
from explorer.runs import PENDING, Run, RunRequest
from explorer.settings import Settings
from gpt2_max.errors import ExplorerError


@dataclass(frozen=True)
class Side:
    """How the figures mark one of the two runs: the same in every tab."""

    letter: str
    name: str  # in legends and titles
    colour: str  # Okabe-Ito: A blue, B orange, distinguishable with every common colour-vision deficiency
    symbol: str  # a second cue besides the colour


A = Side("A", "A (the prompt)", "#0072B2", "circle")
B = Side("B", "B (compare with)", "#E69F00", "diamond")

BOX_LABEL = "Compare with (optional): prompt B, drawn beside yours (A) in Attention, Blocks and Logits"
BOX_PLACEHOLDER = "e.g. your prompt with one word changed; press Run"
PANEL_TITLE = (
    "#### A and B side by side\n\nB is the prompt in **Compare with**, traced with yours (A) in the same "
    "execution; clear that box and press Run to draw A alone."
)

WAITS_FOR_MODEL = Reason(
    "⏳ B, the compare prompt, is traced once the model is ready (see the status line); it is drawn here then.",
    "⏳ B is drawn when the model is ready",
)
OTHER_MODEL = Reason(
    "B was traced on another model than A; press Run to trace both on this one.",
    "B is of another model: press Run again",
)


def build_box() -> gr.Textbox:
    """The "compare with" prompt box, placed where it is called (under the prompt)."""
    return gr.Textbox(label=BOX_LABEL, placeholder=BOX_PLACEHOLDER, lines=1, max_lines=6, elem_id="compare-prompt")


def run_both(
    text: str, model_name: str | None, compare_text, *, run: Callable, settings: Settings, runs_together: Callable
) -> tuple[Run, Run | None, str]:
    """-> (A's Run, B's Run or None, why B was left out): the Run of ``text`` and, when
    ``compare_text`` has text, the Run of that, traced beside it so that the scheduler packs both
    into one execution. A bad compare prompt leaves B out with the reason; it never stops A.
    ``run``, ``settings`` and ``runs_together``: the server's parts (explorer.parts)."""
    if compare_text is None or (isinstance(compare_text, str) and not compare_text.strip()):
        return run(text, model_name=model_name), None, ""
    if not isinstance(compare_text, str):
        return run(text, model_name=model_name), None, "the compare prompt must be text"
    limit = settings.max_prompt_chars
    if len(compare_text) > limit:
        why = (
            f"the compare prompt has {len(compare_text):,} characters; this explorer takes up to {limit:,}. "
            "Paste a shorter passage."
        )
        return run(text, model_name=model_name), None, why
    if compare_text == text:  # the same Run twice: traced once
        same = run(text, model_name=model_name)
        return same, same, ""
    got: dict = {}

    def trace_b() -> None:
        try:
            got["run"] = run(compare_text, model_name=model_name)
        except Exception as error:  # noqa: BLE001 - said in the note under the prompt, never a traceback
            got["error"] = error

    # B in a thread of its own while A is traced here, announced together: the scheduler's batcher
    # gathers both into one execution.
    with runs_together(2):
        worker = threading.Thread(target=trace_b, name="compare-run", daemon=True)
        worker.start()
        try:
            a = run(text, model_name=model_name)
        finally:
            worker.join()
    if "error" in got:
        return a, None, user_message(got["error"])
    return a, got["run"], ""


def compare_of(from_request: Callable, run: Run | None, request) -> Run | Reason | None:
    """B's Run to draw beside A's ``run`` (``from_request``: RunRequest -> Run, a tab's
    ``ctx.current``): None when there is no B (or no A), a Reason when B cannot be drawn yet (its
    model is loading) or beside this A (another model)."""
    if run is None or not isinstance(request, RunRequest):
        return None
    if request.model != run.model_name:
        return OTHER_MODEL
    try:
        other = from_request(request)
    except ExplorerError as error:
        return Reason(f"B, the compare prompt, could not be traced: {error}", "B could not be traced (see the text)")
    if other.source == PENDING or not other.trace:
        return WAITS_FOR_MODEL
    return other


def panel(compare) -> dict:
    """The update of a tab's compare panel: shown while there is a B (drawn, or said why not)."""
    return gr.update(visible=compare is not None)


def position_labels(a: Run, b: Run) -> list[str]:
    """Axis labels for positions both runs have: "3 ␣cat" where they hold the same token, "3 ␣cat|␣dog" where not."""
    return [
        la if ta.display == tb.display else f"{la}|{tb.display}" for la, ta, tb in zip(a.labels, a.tokens, b.tokens)
    ]
