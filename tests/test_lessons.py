"""Lessons (components.lessons): every lesson sets the page up with nothing ignored, and every check
accepts the model's own answer, computed here independently, and rejects a wrong one."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_checkpoint import TINY_REPO_ID

import app
from components import lessons
from gpt2_max import attribution
from gpt2_max.hooks import block_key

LESSONS = lessons.load_lessons()


@pytest.fixture(scope="module")
def page(explorer_service):
    return app.build_ui(explorer_service)


def handler(demo, api_name):
    return next(fn for fn in demo.fns.values() if fn.api_name == api_name).fn


def test_there_are_at_least_eight_lessons_each_with_a_goal_steps_and_questions():
    assert len(LESSONS) >= 8
    for lesson in LESSONS:
        assert lesson.goal and lesson.steps and 1 <= len(lesson.questions) <= lessons.MAX_QUESTIONS
        assert all(q.hint and q.show.get("tab") for q in lesson.questions)


@pytest.mark.parametrize("index", range(len(LESSONS)))
def test_set_up_and_show_me_apply_every_setting_of_the_lesson(page, index):
    """The lesson file's views use the page's real control names and values: nothing is ignored."""
    demo, ctx = page
    setup = next(
        fn
        for fn in demo.fns.values()
        if any(b is not None and getattr(demo.blocks.get(b), "elem_id", "") == "lesson-setup" for b, _ in fn.targets)
    )
    values = dict(zip([id(b) for b in setup.outputs], setup.fn(index)))
    note = next(values[id(b)] for b in setup.outputs if getattr(b, "elem_id", "") == "share-note")
    assert "Ignored" not in note, note
    lesson = LESSONS[index]
    assert values[id(ctx.state)].text == lesson.prompt
    assert values[id(ctx.visible)] == lesson.view["tab"]
    for question in lesson.questions:
        notes: list[str] = []
        valid = _wiring(demo).check(lessons.show_view(lesson, question), notes)
        assert not notes and valid["tab"] == question.show["tab"]


def _wiring(demo):
    """The page's ShareWiring, held by the copy-link handler's closure."""
    fn = next(fn.fn for fn in demo.fns.values() if fn.api_name == "share_link")
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return next(cell.cell_contents for cell in fn.__closure__ if type(cell.cell_contents).__name__ == "ShareWiring")


def independent_answer(model, service, lesson, question):
    """The model's answer to a question computed here, not by components.lessons: (right, wrong)."""
    tokenizer = service.tokenizer
    ids = tokenizer.encode(lesson.prompt)
    trace = model.trace(ids)
    logits = trace["logits"]  # [T, V]: a direct trace keeps every position
    if question.check == "token_count":
        n = len(tokenizer.encode(question.args["text"]))
        return str(n), str(n + 1)
    if question.check == "prompt_token_count":
        return str(len(ids)), str(len(ids) + 2)
    if question.check == "nearest_token":
        wte = trace["hook_embed"][question.args["position"]].astype(np.float64)
        table = model_wte(model).astype(np.float64)
        cosine = table @ wte / (np.linalg.norm(table, axis=1) * np.linalg.norm(wte) + 1e-12)
        cosine[ids[question.args["position"]]] = -np.inf
        order = np.argsort(-cosine)
        return tokenizer.decode([int(order[0])]), tokenizer.decode([int(order[5])])
    if question.check == "mask_changes":
        off = model.trace(ids, causal=False)["logits"]
        n = int(np.count_nonzero(logits.argmax(-1) != off.argmax(-1)))
        return str(n), str(n + 1)
    if question.check == "top_head":
        scores = attribution.head_scores(model, trace, token_ids=ids)[question.args["detector"]]
        layer, head = np.unravel_index(int(np.argmax(scores)), scores.shape)
        wrong_layer, wrong_head = np.unravel_index(int(np.argmin(scores)), scores.shape)
        return f"{layer}.{head}", f"L{wrong_layer}H{wrong_head}"
    if question.check == "lens_layer":
        final = int(logits[-1].argmax())
        L = model.config.n_layer
        lens_top = [int(lens_logits(model, trace[block_key(i, "hook_resid_post")][-1]).argmax()) for i in range(L)]
        first = lens_top.index(final)
        return str(first), str(first + 1 if first + 1 < L + 1 else first - 1)
    if question.check == "greedy_next":
        order = np.argsort(-logits[-1])
        return tokenizer.decode([int(order[0])]), tokenizer.decode([int(order[1])])
    if question.check == "preferred_name":
        a, b = (tokenizer.encode(n)[0] for n in question.args["names"])
        better, worse = (a, b) if logits[-1][a] > logits[-1][b] else (b, a)
        return tokenizer.decode([better]).strip(), tokenizer.decode([worse]).strip()
    if question.check == "top_contributor":
        a, b = (tokenizer.encode(question.args[k])[0] for k in ("target", "minus"))
        parts = attribution.logit_attribution(model, trace, len(ids) - 1, a, b)
        ranked = sorted(parts, key=lambda n: -parts[n])
        return ranked[0], ranked[-1]
    raise AssertionError(f"no independent answer for {question.check}")


def model_wte(model):
    from tiny_checkpoint import tiny_weights

    return tiny_weights()["wte.weight"]


def lens_logits(model, row):
    """ln_f then the tied unembedding, in float64 numpy (the lens read of one stream row)."""
    from tiny_checkpoint import tiny_weights

    weights = tiny_weights()
    x = row.astype(np.float64)
    x = (x - x.mean()) / np.sqrt(x.var() + model.config.layer_norm_epsilon)
    x = x * weights["ln_f.weight"] + weights["ln_f.bias"]
    return weights["wte.weight"].astype(np.float64) @ x


CASES = [(i, j) for i, lesson in enumerate(LESSONS) for j in range(len(lesson.questions))]


@pytest.mark.parametrize(("index", "slot"), CASES)
def test_each_check_accepts_the_models_answer_and_rejects_a_wrong_one(page, tiny_model, explorer_service, index, slot):
    demo, _ = page
    lesson, question = LESSONS[index], LESSONS[index].questions[slot]
    right, wrong = independent_answer(tiny_model, explorer_service, lesson, question)
    assert right != wrong
    check = handler(demo, f"lesson_check_{slot}")
    accepted = check(index, right, TINY_REPO_ID)
    assert accepted.startswith("✅"), (lesson.title, question.check, right, accepted)
    rejected = check(index, wrong, TINY_REPO_ID)
    assert rejected.startswith("❌") and question.hint[:20] in rejected, (lesson.title, question.check, wrong, rejected)
