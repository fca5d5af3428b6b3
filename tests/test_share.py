"""Links to a view (components.share): what a link carries, that opening it draws the same figures,
and that a bad, stale or hostile link opens the page with what was valid and a note."""

from __future__ import annotations

import base64
import random
import zlib

import gradio as gr
import numpy as np
import pytest

import app
from components import share
from gpt2_max.hooks import block_key


@pytest.fixture(scope="module")
def page(explorer_service):
    demo, ctx = app.build_ui(explorer_service)
    return demo, ctx


def wired(demo, api_name=None, load=False):
    """The page's own event function: the restore on load, or the one with ``api_name``."""
    for fn in demo.fns.values():
        if load and any(event == "load" for _, event in fn.targets) and fn.fn is not None:
            return fn
        if api_name and fn.api_name == api_name:
            return fn
    raise AssertionError(f"no event {api_name or 'load'}")


def restore(demo, token) -> dict:
    """Opens the page with ``token`` in its link: -> {block: value} of what the restore set."""
    fn = wired(demo, load=True)
    values = fn.fn(token)
    assert len(values) == len(fn.outputs)
    return {id(block): value for block, value in zip(fn.outputs, values) if value != gr.skip()}


def block(demo, elem_id):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def note_of(demo, values) -> str:
    return values[id(block(demo, "share-note"))]


def controls_of(demo, ctx):
    return {c.key: c for c in share.shared_controls(demo, ctx)}


def test_a_link_carries_every_tabs_settings_sampling_and_patching(page):
    demo, ctx = page
    keys = set(controls_of(demo, ctx))
    expected = {
        "attention.layer",
        "attention.head",
        "attention.q-k-v-of-the-token-at",
        "attention.ablate-this-head-zero-its-output",
        "mask.layer",
        "mask.head",
        "mask.turn-the-causal-mask-off",
        "mlp.layer",
        "mlp.position",
        "embed.leave-out-position-0",
        "logits.position",
        "logits.typed",
        "logits.attribution-target",
        "logits.attribution-minus",
        "sample.temperature",
        "sample.top-k",
        "sample.top-p",
        "sample.seed",
        "sample.max-new",
        "sample.n",
        "attention.patch-heads-clean",
        "attention.patch-heads-corrupted",
        "attention.patch-heads-answer",
        "attention.patch-heads-wrong",
        "blocks.patch-residual-clean",
        "blocks.patch-residual-corrupted",
    }
    assert expected <= keys, sorted(expected - keys)
    assert not any("pick" in key for key in keys)  # the detector grid's click relay is wiring, not a setting


def copy_link(demo, ctx, tab, **settings) -> str:
    """What "Copy link" makes of a page whose controls are at their start except ``settings`` ({key: value})."""
    fn = wired(demo, api_name="share_link")
    controls = share.shared_controls(demo, ctx)
    values = {id(c.component): settings.get(c.key, c.component.value) for c in controls}
    model, prompt, visible, present, compare = fn.inputs[:5]
    args = [
        ctx.parts.allowed_models[0],
        settings.get("prompt", app.EXAMPLES[0]),
        tab,
        settings.get("present", False),
        settings.get("compare", ""),
    ]
    return fn.fn(*args, *[values[id(b)] for b in fn.inputs[5:]])


def test_a_copied_link_reopens_the_attention_view_with_the_same_numbers(page, explorer_service):
    demo, ctx = page
    prompt = "When Mary and John went to the store, John gave a drink to"
    token = copy_link(
        demo,
        ctx,
        "attention",
        prompt=prompt,
        **{"attention.layer": 1, "attention.head": 2, "attention.q-k-v-of-the-token-at": 3},
    )
    assert len(token) < share.QUERY_MAX_CHARS
    values = restore(demo, token)
    assert "Ignored" not in note_of(demo, values), note_of(demo, values)
    view = ctx.views["attention"]
    assert values[id(ctx.visible)] == "attention"
    assert values[id(block(demo, "share-open-tab"))] == "Attention"
    request = values[id(ctx.state)]
    assert request.text == prompt
    pattern = values[id(view.outputs[0])]  # the pattern heatmap, drawn for layer 1 head 2
    expected = explorer_service.run(prompt).trace[block_key(1, "attn.hook_pattern")][2]
    drawn = np.asarray(pattern.data[0].z, dtype=np.float64)
    np.testing.assert_allclose(drawn, expected, atol=1e-6)
    controls = controls_of(demo, ctx)
    position = values[id(controls["attention.q-k-v-of-the-token-at"].component)]
    assert position["value"] == 3  # the run-dependent dropdown set after the tab drew its choices
    qkv = values[id(view.outputs[2])]  # redrawn by the dropdown's own handler for position 3
    assert "3" in str(qkv.layout.title.text)


def test_sampling_settings_seed_and_presenter_mode_come_back(page):
    demo, ctx = page
    token = copy_link(
        demo,
        ctx,
        "sample",
        present=True,
        **{"sample.temperature": 0.0, "sample.seed": 7, "sample.top-k": 5, "sample.n": 50},
    )
    values = restore(demo, token)
    controls = controls_of(demo, ctx)
    assert values[id(controls["sample.temperature"].component)] == 0
    assert values[id(controls["sample.seed"].component)] == 7
    assert values[id(controls["sample.top-k"].component)] == 5
    assert values[id(block(demo, "presenter-mode"))] is True
    hist = values[id(ctx.views["sample"].outputs[5])]  # "sample N times" drawn with N = 50 at temperature 0
    assert sum(hist.data[0].x) == 50 and len(hist.data[0].x) == 1  # horizontal bars: counts on x


def test_the_longest_allowed_prompt_fits_a_link(page, explorer_service):
    demo, ctx = page
    wiring_limit = share.ShareWiring.limits(type("S", (), {"settings": explorer_service.settings})())[0]
    rng = random.Random(0)
    # Random characters from the whole of Unicode compress worst: the longest link there can be.
    prompt = "".join(
        chr(rng.choice([rng.randrange(0x20, 0xD800), rng.randrange(0x10000, 0x10FFFF)]))
        for _ in range(explorer_service.settings.max_prompt_chars)
    )
    token = share.encode_view({"v": 1, "prompt": prompt, "tab": "logits"})
    assert len(token) <= wiring_limit
    view, notes = share.decode_view(token, wiring_limit, 2 * explorer_service.settings.max_request_bytes)
    assert view["prompt"] == prompt and not notes


def packed(raw: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


HOSTILE = {
    "not base64": "abc$%^",
    "base64 of no zlib": base64.urlsafe_b64encode(b"hello world").decode(),
    "cut short": share.encode_view({"prompt": "The cat sat"})[:-6],
    "zlib of no json": packed(b"{not json"),
    "a json list": packed(b"[1, 2, 3]"),
    "a json string": packed(b'"attention"'),
    "deep nesting": packed(b"[" * 100_000 + b"]" * 100_000),
    "a zip bomb": packed(b'{"prompt": "' + b" " * 5_000_000 + b'"}'),
    "far too long": "A" * 2_000_000,
    "unknown model": share.encode_view({"model": "evil/../../etc/passwd", "prompt": "hi"}),
    "model of a wrong type": share.encode_view({"model": ["a"], "prompt": "hi"}),
    "prompt over the limit": share.encode_view({"prompt": "x" * 20_001}),
    "prompt of a wrong type": share.encode_view({"prompt": {"a": 1}}),
    "unknown tab": share.encode_view({"tab": "admin"}),
    "controls as a list": share.encode_view({"controls": [1, 2]}),
    "unknown control": share.encode_view({"controls": {"attention.__class__": 1}}),
    "layer out of range": share.encode_view({"tab": "attention", "controls": {"attention.layer": 99}}),
    "slider of a wrong type": share.encode_view({"tab": "mask", "controls": {"mask.layer": "1; DROP TABLE"}}),
    "slider NaN": packed(b'{"controls": {"sample.temperature": NaN}}'),
    "checkbox not a bool": share.encode_view({"controls": {"mask.turn-the-causal-mask-off": "yes"}}),
    "huge seed": share.encode_view({"controls": {"sample.seed": 1e300}}),
    "position off the end": share.encode_view({"tab": "logits", "controls": {"logits.position": 999}}),
    "future version": share.encode_view({"v": 99, "prompt": "hi"}),
    "unknown top-level key": share.encode_view({"prompt": "hi", "__proto__": {"x": 1}}),
    "presenter not a bool": share.encode_view({"present": "1"}),
    "compare prompt over the limit": share.encode_view({"prompt": "hi", "compare": "x" * 20_001}),
    "compare prompt of a wrong type": share.encode_view({"prompt": "hi", "compare": ["<script>"]}),
    "too many controls": share.encode_view({"controls": {f"k{i}": i for i in range(5000)}}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_bad_or_hostile_link_opens_the_page_with_a_note(page, name):
    demo, ctx = page
    values = restore(demo, HOSTILE[name])
    note = note_of(demo, values)
    assert "Ignored" in note or "could not be applied" in note, (name, note)
    assert "Traceback" not in note and "<" not in note.replace("\\<", "")
    prompt = values.get(id(block(demo, "prompt")))
    assert prompt is None or len(prompt) <= ctx.parts.settings.max_prompt_chars


def test_script_in_a_prompt_is_only_text(page):
    demo, ctx = page
    script = "<script>alert('x')</script> | **bold** $$x$$"
    values = restore(demo, share.encode_view({"prompt": script, "tab": "logits"}))
    assert values[id(block(demo, "prompt"))] == script  # a textbox's value: shown as text
    assert values[id(ctx.state)].text == script
    assert "<script>" not in note_of(demo, values)


def test_a_link_carries_the_compare_prompt_and_reopens_both_runs(page, explorer_service):
    demo, ctx = page
    prompt = "When Mary and John went to the store, John gave a drink to"
    compare_text = "When Mary and John went to the store, Mary gave a drink to"
    token = copy_link(
        demo, ctx, "attention", prompt=prompt, compare=compare_text, **{"attention.layer": 1, "attention.head": 2}
    )
    view, _ = share.decode_view(
        token, *share.ShareWiring.limits(type("S", (), {"settings": explorer_service.settings})())
    )
    assert view["prompt"] == prompt and view["compare"] == compare_text
    values = restore(demo, token)
    note = note_of(demo, values)
    assert "Ignored" not in note and "compare prompt" in note, note
    assert values[id(block(demo, "compare-prompt"))] == compare_text
    request, other = values[id(ctx.state)], values[id(ctx.compare)]
    assert request.text == prompt and other.text == compare_text and other.model == request.model
    attention = ctx.views["attention"].outputs
    assert values[id(attention.compare_panel)]["visible"] is True
    expected = explorer_service.run(compare_text).trace[block_key(1, "attn.hook_pattern")][2]
    np.testing.assert_array_equal(values[id(attention.compare_pattern)].data[0].z, expected)
    assert "Compare with (B)" in values[id(block(demo, "run-note"))]
    # A link without a compare prompt carries none and opens with none (a lesson's view too).
    plain = copy_link(demo, ctx, "attention", prompt=prompt)
    assert "compare" not in share.decode_view(plain, 10**6, 10**6)[0]
    values = restore(demo, plain)
    assert values[id(block(demo, "compare-prompt"))] == "" and values[id(ctx.compare)] is None
    assert values[id(ctx.views["attention"].outputs.compare_panel)]["visible"] is False


def test_the_longest_allowed_prompt_and_compare_prompt_fit_a_link_together(page, explorer_service):
    limits = share.ShareWiring.limits(type("S", (), {"settings": explorer_service.settings})())
    rng = random.Random(1)
    longest = [
        "".join(
            chr(rng.choice([rng.randrange(0x20, 0xD800), rng.randrange(0x10000, 0x10FFFF)]))
            for _ in range(explorer_service.settings.max_prompt_chars)
        )
        for _ in range(2)
    ]
    token = share.encode_view({"v": 1, "prompt": longest[0], "compare": longest[1], "tab": "logits"})
    assert len(token) <= limits[0]
    view, notes = share.decode_view(token, *limits)
    assert (view["prompt"], view["compare"]) == tuple(longest) and not notes


def test_a_page_opened_without_a_link_is_left_as_it_is(page):
    demo, _ = page
    assert restore(demo, "") == {}
