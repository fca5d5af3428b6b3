"""Lessons: a guided path beside the tabs, from "what is a token" to "why did it say Mary".

The lessons' text is data (``lessons/lessons.json``, which a teacher edits); what is code is the
checks. A question names a check in ``CHECKS`` and its arguments; the right answer is computed
from the loaded model on the lesson's prompt every time it is checked, so a lesson holds for
GPT-2 small, the other family models and the bundled demo model alike. "Set up" and "Show me"
put the page in the lesson's view through the same path as a shared link (components.share).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from components.common import AppContext, guarded, md_text
from components.share import OPEN_TAB_JS, ShareWiring
from gpt2_max import analysis, attribution
from gpt2_max.scheduling import MODEL_LANE, RUN_LANE
from gpt2_max.tokenizer import Tokenizer

LESSONS_FILE = Path(__file__).resolve().parent.parent / "lessons" / "lessons.json"
MAX_QUESTIONS = 3  # question slots on the page; a lesson with more is refused when the file is read
MAX_ANSWER_CHARS = 200


@dataclass(frozen=True)
class Question:
    ask: str  # Markdown, written by the teacher
    check: str  # a key of CHECKS
    args: dict
    hint: str
    show: dict  # the view that answers it (a link's view, the lesson's prompt by default)


@dataclass(frozen=True)
class Lesson:
    title: str
    goal: str
    view: dict  # what "Set up" applies: a link's view (prompt, tab, controls)
    steps: tuple[str, ...]
    questions: tuple[Question, ...]

    @property
    def prompt(self) -> str:
        return self.view["prompt"]


def load_lessons(path: Path = LESSONS_FILE) -> list[Lesson]:
    """The lessons of ``path``, checked: every question names a known check, every lesson a prompt."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    lessons = []
    for raw in data["lessons"]:
        questions = tuple(
            Question(q["ask"], q["check"], dict(q.get("args", {})), q.get("hint", ""), dict(q.get("show", {})))
            for q in raw["questions"]
        )
        unknown = [q.check for q in questions if q.check not in CHECKS]
        if unknown or not 1 <= len(questions) <= MAX_QUESTIONS or not isinstance(raw["view"].get("prompt"), str):
            raise ValueError(
                f"lesson {raw['title']!r}: checks {unknown} unknown, or not 1..{MAX_QUESTIONS} questions, or no prompt"
            )
        lessons.append(Lesson(raw["title"], raw["goal"], dict(raw["view"]), tuple(raw["steps"]), questions))
    return lessons


# ------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class Expected:
    """The model's own answer to a question: ``value`` compared by ``kind``; ``shown`` says it."""

    kind: str  # "int" | "token" | "head" | "name" | "component"
    value: object
    shown: str


@dataclass(frozen=True)
class Context:
    """What a check computes from: the model and the lesson's prompt as the app traces it."""

    model: object
    tokenizer: object
    token_ids: tuple[int, ...]
    trace: dict


def token_count(context: Context, text: str) -> Expected:
    count = len(context.tokenizer.encode(text))
    return Expected("int", count, f"{count} tokens")


def prompt_token_count(context: Context) -> Expected:
    return Expected("int", len(context.token_ids), f"{len(context.token_ids)} tokens")


def nearest_token(context: Context, position: int) -> Expected:
    token_id = context.token_ids[position]
    vector = context.trace["hook_embed"][position]  # [E] = wte[token_id]
    nearest = analysis.nearest_tokens(context.model, vector[None, :], exclude=[token_id])
    best = int(nearest.ids[0, 0])
    return token_answer(context, best)


def mask_changes(context: Context) -> Expected:
    """Positions whose top next token differs between the causal run and the run without the mask."""
    with_mask = next_top(context.model, context.trace, context.token_ids)
    without = next_top(context.model, context.model.trace(list(context.token_ids), causal=False), context.token_ids)
    changed = int(np.count_nonzero(with_mask != without))
    return Expected("int", changed, f"{changed} of {len(context.token_ids)} positions")


def next_top(model, trace, token_ids) -> np.ndarray:
    """[T] the most likely next token at every position (the analysis graph's top-k)."""
    return analysis.next_tokens(model, trace, token_ids).top_ids[:, 0]


def top_head(context: Context, detector: str) -> Expected:
    scores = attribution.head_scores(context.model, context.trace, token_ids=context.token_ids)[detector]
    layer, head = (int(i) for i in np.unravel_index(int(np.argmax(scores)), scores.shape))
    return Expected("head", (layer, head), f"L{layer}H{head} (score {scores[layer, head]:.2f})")


def lens_layer(context: Context) -> Expected:
    lens = analysis.logit_lens(context.model, context.trace, start=len(context.token_ids) - 1)
    first = int(np.flatnonzero(lens.top_ids[:, -1] == lens.final_id)[0])
    return Expected("int", first, f"block {first}")


def greedy_next(context: Context) -> Expected:
    return token_answer(context, int(next_top(context.model, context.trace, context.token_ids)[-1]))


def preferred_name(context: Context, names: list[str]) -> Expected:
    ids = [context.tokenizer.encode(name)[0] for name in names]
    logits = analysis.next_tokens(context.model, context.trace, context.token_ids).logits[-1]
    best = max(ids, key=lambda i: float(logits[i]))
    return Expected("name", context.tokenizer.decode([best]).strip(), context.tokenizer.decode([best]).strip())


def top_contributor(context: Context, target: str, minus: str) -> Expected:
    target_id, minus_id = context.tokenizer.encode(target)[0], context.tokenizer.encode(minus)[0]
    parts = attribution.logit_attribution(context.model, context.trace, len(context.token_ids) - 1, target_id, minus_id)
    name = max(parts, key=lambda n: parts[n])
    return Expected("component", name, f"{name} ({parts[name]:+.3g})")


def token_answer(context: Context, token_id: int) -> Expected:
    return Expected("token", context.tokenizer.decode([token_id]), context.tokenizer.token(token_id).display)


CHECKS: dict[str, Callable[..., Expected]] = {
    "token_count": token_count,
    "prompt_token_count": prompt_token_count,
    "nearest_token": nearest_token,
    "mask_changes": mask_changes,
    "top_head": top_head,
    "lens_layer": lens_layer,
    "greedy_next": greedy_next,
    "preferred_name": preferred_name,
    "top_contributor": top_contributor,
}

HEAD_ANSWER = re.compile(
    r"^\s*(?:l(?:ayer)?\s*)?(\d+)\s*(?:[.,:/\s-]|h(?:ead)?)\s*(?:h(?:ead)?\s*)?(\d+)\s*$", re.IGNORECASE
)
COMPONENT_HEAD = re.compile(r"^blocks\.(\d+)\.attn\.head\.(\d+)$")
COMPONENT_MLP = re.compile(r"^blocks\.(\d+)\.mlp$")
MLP_ANSWER = re.compile(r"^\s*(?:mlp\s*(\d+)|(\d+)\s*mlp|l(\d+)\s*mlp)\s*$", re.IGNORECASE)


def accepts(expected: Expected, typed: str) -> bool:
    """Whether the student's typed answer is the model's own (spaces around it do not matter;
    ␣ stands for a space, as the tabs show it)."""
    typed = str(typed or "")[:MAX_ANSWER_CHARS].replace("␣", " ")
    if expected.kind == "int":
        return typed.strip().isdigit() and int(typed.strip()) == expected.value
    if expected.kind == "token":
        return typed.strip() == str(expected.value).strip() and typed.strip() != ""
    if expected.kind == "name":
        return typed.strip().lower() == str(expected.value).lower()
    if expected.kind == "head":
        match = HEAD_ANSWER.match(typed)
        return bool(match) and (int(match[1]), int(match[2])) == expected.value
    if expected.kind == "component":
        answer = typed.strip().lower()
        if answer == expected.value:
            return True
        head, mlp = COMPONENT_HEAD.match(expected.value), COMPONENT_MLP.match(expected.value)
        if head:
            match = HEAD_ANSWER.match(answer)
            return bool(match) and (match[1], match[2]) == head.groups()
        if mlp:
            match = MLP_ANSWER.match(answer)
            return bool(match) and next(g for g in match.groups() if g) == mlp[1]
        return False
    raise ValueError(f"unknown answer kind {expected.kind!r}")


def context_for(
    lesson: Lesson, model_name: str | None, *, model_for: Callable, run: Callable, tokenizer: Tokenizer
) -> Context | None:
    """The lesson's prompt traced by the chosen model (a Run through the app's own path), or None
    while that model loads."""
    model = model_for(model_name)
    if model is None:
        return None
    ids = list(run(lesson.prompt, model_name=model_name).token_ids)
    return Context(model, tokenizer, tuple(ids), model.trace(ids))


def expected_answer(context: Callable, lesson: Lesson, question: Question, model_name: str | None) -> Expected | None:
    """``context``: (lesson, model name) -> its Context or None (``context_for`` with the server's parts)."""
    traced = context(lesson, model_name)
    return None if traced is None else CHECKS[question.check](traced, **question.args)


def feedback(context: Callable, lesson: Lesson, question: Question, model_name: str | None, typed: str) -> str:
    """Right or not, checked against the model's own answer; a wrong answer gets the hint."""
    if not str(typed or "").strip():
        return "Type your answer first."
    expected = expected_answer(context, lesson, question, model_name)
    if expected is None:
        return "⏳ The check runs the model, which is still loading (see the status line); try again in a moment."
    if accepts(expected, typed):
        return f"✅ **Right**: the model computes {md_text(expected.shown)} on this lesson's prompt."
    return f"❌ Not what the model computes on this lesson's prompt. **Hint:** {question.hint} (or press **Show me**)"


# ------------------------------------------------------------------------------ the panel


def lesson_markdown(lesson: Lesson) -> str:
    steps = "\n".join(f"{n}. {step}" for n, step in enumerate(lesson.steps, start=1))
    return f"### {lesson.title}\n\n**Goal:** {lesson.goal}\n\nPrompt: {md_text(lesson.prompt)}\n\n{steps}"


def show_view(lesson: Lesson, question: Question) -> dict:
    """The lesson's view with the question's on top (its tab, its controls)."""
    controls = {**lesson.view.get("controls", {}), **question.show.get("controls", {})}
    return {**lesson.view, **question.show, "controls": controls}


@dataclass(frozen=True)
class LessonPanel:
    choice: gr.Dropdown
    text: gr.Markdown
    setup: gr.Button
    slots: tuple  # (group, ask, answer, check, show, feedback) per question slot


def build_panel(lessons: list[Lesson]) -> LessonPanel:
    """The lesson path, placed where this is called (collapsed above the tabs)."""
    with gr.Accordion(
        "📘 Lessons: a path from 'what is a token' to 'why did it say Mary'", open=False, elem_id="lessons"
    ):
        with gr.Row():
            choice = gr.Dropdown(
                choices=[(lesson.title, n) for n, lesson in enumerate(lessons)],
                value=0,
                label="Lesson",
                interactive=True,
                elem_id="lesson-choice",
                scale=3,
            )
            setup = gr.Button("Set up this lesson", variant="primary", elem_id="lesson-setup", scale=1)
        text = gr.Markdown(lesson_markdown(lessons[0]), elem_id="lesson-text")
        slots = []
        for n in range(MAX_QUESTIONS):
            first = lessons[0].questions[n] if n < len(lessons[0].questions) else None
            with gr.Group(visible=first is not None) as group:
                ask = gr.Markdown(first.ask if first else "", elem_id=f"lesson-ask-{n}")
                with gr.Row():
                    answer = gr.Textbox(label="Your answer", max_lines=1, elem_id=f"lesson-answer-{n}", scale=3)
                    check = gr.Button("Check", elem_id=f"lesson-check-{n}", scale=0, min_width=90)
                    show = gr.Button("Show me", size="sm", elem_id=f"lesson-show-{n}", scale=0, min_width=90)
                result = gr.Markdown(elem_id=f"lesson-feedback-{n}")
            slots.append((group, ask, answer, check, show, result))
    return LessonPanel(choice, text, setup, tuple(slots))


def wire(
    ctx: AppContext,
    panel: LessonPanel,
    lessons: list[Lesson],
    share: ShareWiring,
    *,
    model_for: Callable,
    run: Callable,
    tokenizer: Tokenizer,
) -> None:
    """Wires the panel (after ``share.wire``: it applies views through the link's path; called as
    ``ctx.build(wire, panel, lessons, share)``)."""

    def context(lesson: Lesson, model_name: str | None) -> Context | None:
        return context_for(lesson, model_name, model_for=model_for, run=run, tokenizer=tokenizer)

    def lesson_at(index) -> Lesson:
        return lessons[index if isinstance(index, int) and 0 <= index < len(lessons) else 0]

    @guarded(*(["keep"] * (1 + 4 * MAX_QUESTIONS)))
    def choose(index):
        lesson = lesson_at(index)
        values = [lesson_markdown(lesson)]
        for n in range(MAX_QUESTIONS):
            question = lesson.questions[n] if n < len(lesson.questions) else None
            values += [gr.update(visible=question is not None), question.ask if question else "", "", ""]
        return tuple(values)

    choose_outputs = [panel.text]
    for group, ask, answer, _, _, result in panel.slots:
        choose_outputs += [group, ask, answer, result]
    panel.choice.change(choose, [panel.choice], choose_outputs, queue=False)

    outputs = share.outputs()
    event = ctx.lane(RUN_LANE)

    def apply(view: dict, what: str) -> tuple:
        return share.apply(view, [], what)

    panel.setup.click(lambda index: apply(lesson_at(index).view, "This lesson"), [panel.choice], outputs, **event).then(
        None,
        [share.open_tab],
        None,
        js=OPEN_TAB_JS,
    )
    for n, (_, _, answer, check, show, result) in enumerate(panel.slots):

        @guarded("text")
        def check_answer(index, typed, model_name, n=n):
            lesson = lesson_at(index)
            if n >= len(lesson.questions):
                return ""
            return feedback(context, lesson, lesson.questions[n], model_name, typed)

        check.click(
            check_answer,
            [panel.choice, answer, share.model_choice],
            [result],
            api_name=f"lesson_check_{n}",
            **ctx.lane(MODEL_LANE),
        )
        answer.submit(
            check_answer,
            [panel.choice, answer, share.model_choice],
            [result],
            **ctx.lane(MODEL_LANE),
        )

        def show_me(index, n=n):
            lesson = lesson_at(index)
            question = lesson.questions[min(n, len(lesson.questions) - 1)]
            return apply(show_view(lesson, question), "Show me")

        show.click(show_me, [panel.choice], outputs, **event).then(None, [share.open_tab], None, js=OPEN_TAB_JS)
