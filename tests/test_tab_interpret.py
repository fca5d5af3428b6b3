"""The attribution, detector and patching views in the Logits, Attention and Blocks tabs.

Their numbers come from gpt2_max.attribution (tested against the float64 reference in
test_attribution.py); here the figures must show exactly those numbers, the handlers must turn
bad input into messages, and the exports must hold the tensors.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
from tab_helpers import build_tab, build_view

from components import interpret, tab_attention, tab_blocks, tab_logits
from explorer.analyses import LENS_DEFAULT_POSITIONS
from gpt2_max import attribution


def build_with_functions(tab_module, service):
    """(view, {api_name: handler}) of one tab built in its own Blocks."""
    demo, ctx = build_tab(tab_module, service)
    (view,) = ctx.views.values()
    functions = {f.api_name: f.fn for f in demo.fns.values() if f.api_name}
    return view, functions, ctx


def test_logits_tab_explains_the_top_prediction_and_a_logit_difference(
    tiny_run, explorer_service, tiny_model, full_logits, monkeypatch
):
    # The tiny model has 15 parts in all; show fewer, so that choosing the largest is tested.
    monkeypatch.setattr(interpret, "TOP_CONTRIBUTORS", 6)
    view = build_view(tab_logits, explorer_service)
    values = view.render(tiny_run.request, "", "", "")
    bars_fig, grid_fig, summary = values.contributors, values.heads, values.attribution_summary
    top = int(np.argmax(full_logits[-1]))
    # The reference: the attribution on a trace with every position's logits (the Run's has its last only).
    expected = attribution.attribute(tiny_model, tiny_model.trace(tiny_run.token_ids), tiny_run.n_tokens - 1, top)
    np.testing.assert_allclose(np.asarray(grid_fig.data[0].z, dtype=np.float64), expected.heads, rtol=1e-6)
    shown = dict(zip(bars_fig.data[0].y, bars_fig.data[0].x))
    parts = expected.parts()
    assert len(shown) == interpret.TOP_CONTRIBUTORS
    assert all(abs(parts[name] - value) < 1e-12 for name, value in shown.items())
    # The bars are the largest parts by size.
    assert min(abs(v) for v in shown.values()) >= max(abs(v) for n, v in parts.items() if n not in shown)
    assert "sum to" in summary and not summary.startswith("⚠️")
    # The grid's colour scale is centred at 0.
    assert grid_fig.data[0].zmid == 0.0

    note, update = view.export(tiny_run.request, 3, " mat", " the")
    with np.load(update["value"]) as saved:
        mat, the = (explorer_service.tokenizer.encode(t)[0] for t in (" mat", " the"))
        logit = full_logits[3, mat] - full_logits[3, the]
        assert saved["attribution_token_id"] == mat and saved["attribution_minus_token_id"] == the
        np.testing.assert_allclose(saved["attribution_shares"].sum(), logit, atol=1e-5)


def test_logits_attribution_handles_bad_tokens_with_a_message(tiny_run, explorer_service):
    view = build_view(tab_logits, explorer_service)
    explain = next(h for h, _ in view.handlers if h.__name__ == "explain")
    # A target of only spaces is "none given" (the top prediction); an empty encode is a message.
    # Handlers take their inputs, then the view's other controls (here the typed token and B's request).
    figures = explain(None, 0, "", "", "", None)
    assert "Run" in figures.attribution_summary
    out = explain(tiny_run.request, 10_000, "   ", "", "", None)
    assert not out.attribution_summary.startswith("⚠️")


def test_attention_tab_shows_the_detector_scores_and_a_click_opens_the_head(tiny_model, explorer_service):
    ids = attribution.induction_test_ids(interpret.INDUCTION_TEST_LENGTH)
    run = explorer_service.run_ids(explorer_service.tokenizer.decode(ids), ids)
    view, functions, _ = build_with_functions(tab_attention, explorer_service)
    values = view.render(run.request, 0, 0, False)
    detector_fig, detector_md = values.detectors, values.detector_summary
    scores = attribution.head_scores(tiny_model, run.trace, token_ids=ids)
    for trace, name in zip(detector_fig.data, attribution.HEAD_SCORE_NAMES):
        np.testing.assert_allclose(np.asarray(trace.z, dtype=np.float64), scores[name], rtol=1e-6, equal_nan=True)
    assert detector_fig.layout.coloraxis.cmin == 0.0 and detector_fig.layout.coloraxis.cmax == 1.0
    assert "induction" in detector_md
    picked = next(h for h, _ in view.handlers if h.__name__ == "picked")
    # Inputs: the pick, the position, the ablate box, B's request, then the view's layer and head controls.
    out = picked(run.request, "1,3,1700000000", None, False, None, 0, 0)
    assert (out.layer, out.head) == (1, 3)
    assert "layer 1 head 3" in out.pattern.layout.title.text
    nothing = picked(run.request, "not a cell", None, False, None, 0, 0)  # a stray value changes nothing
    assert nothing.layer == gr.update() and isinstance(nothing.pattern, type(gr.skip()))


def test_head_patching_view_shows_the_sweep_and_exports_it(tiny_run, explorer_service, tiny_model):
    view, functions, _ = build_with_functions(tab_attention, explorer_service)
    sweep = functions["patch_heads"]
    fig, summary, result = sweep(tiny_run.request, interpret.IOI_CLEAN, interpret.IOI_CORRUPTED, " Mary", " John")
    tokenizer = explorer_service.tokenizer
    mary, john = tokenizer.encode(" Mary")[0], tokenizer.encode(" John")[0]
    expected = attribution.patch_heads(
        tiny_model,
        tokenizer.encode(interpret.IOI_CLEAN),
        tokenizer.encode(interpret.IOI_CORRUPTED),
        lambda trace: attribution.logit_difference(trace, -1, mary, john),
    )
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=np.float64), expected.restored, rtol=1e-6)
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1.0, 1.0)
    assert "runs of the MAX trace graph" in summary
    note, update = view.export(tiny_run.request, 0, 0, None, False, result)
    with np.load(update["value"]) as saved:
        np.testing.assert_array_equal(saved["patch_heads_restored"], result.sweep.restored)
    # Prompts of different lengths: a message, no traceback, no figure of nonsense.
    fig, summary, _ = sweep(tiny_run.request, "A short one", "A much longer prompt than that", " Mary", " John")
    assert summary.startswith("⚠️") and "same length" in summary
    fig, summary, _ = sweep(tiny_run.request, interpret.IOI_CLEAN, interpret.IOI_CORRUPTED, "", " John")
    assert summary.startswith("⚠️") and "answer" in summary


def test_residual_patching_view_in_blocks(tiny_run, explorer_service):
    view, functions, _ = build_with_functions(tab_blocks, explorer_service)
    fig, summary, result = functions["patch_residual"](
        tiny_run.request, interpret.IOI_CLEAN, interpret.IOI_CORRUPTED, " Mary", " John"
    )
    T = len(explorer_service.tokenizer.encode(interpret.IOI_CLEAN))
    assert np.asarray(fig.data[0].z).shape == (tiny_run.config.n_layer, T)
    # Before block 0, only the swapped name's position matters, and it restores all of it.
    z = np.asarray(fig.data[0].z, dtype=np.float64)
    # (Up to float32 rounding between packed executions, relative to a metric gap of ~0.02 here.)
    assert np.isclose(z[0].max(), 1.0, atol=1e-3) and np.count_nonzero(np.abs(z[0]) > 1e-3) == 1
    note, update = view.export(
        tiny_run.request, result, LENS_DEFAULT_POSITIONS
    )  # the export also writes the lens at its width
    with np.load(update["value"]) as saved:
        np.testing.assert_array_equal(saved["patch_residual_restored"], result.sweep.restored)


def test_a_patching_sweep_reports_its_progress(tiny_run, explorer_service, tiny_model):
    """Issue 19, item 15: sweeps of 8-16 s showed only a spinner; they report runs done of all."""
    _, functions, _ = build_with_functions(tab_attention, explorer_service)
    told = []

    def progress(value, desc=None, total=None, unit="steps"):
        told.append(value)

    fig, summary, result = functions["patch_heads"](
        tiny_run.request,
        interpret.IOI_CLEAN,
        interpret.IOI_CORRUPTED,
        " Mary",
        " John",
        progress=progress,
    )
    runs = result.sweep.runs
    assert runs == tiny_model.config.n_layer * tiny_model.config.n_head + 2
    assert told[0] == (2, runs) and told[-1] == (runs, runs)
    assert [done for done, _ in told] == sorted(done for done, _ in told) and all(total == runs for _, total in told)


def test_token_boxes_say_which_token_they_use(explorer_service):
    """Issue 19, item 10: "Marylebone" was silently read as 'Mary', and " Mary" looked like "Mary"."""
    tokenizer = explorer_service.tokenizer
    spaced = interpret.token_box_note(tokenizer, " Mary", "answer")
    assert "␣Mary" in spaced and "only the first" not in spaced
    cut = interpret.token_box_note(tokenizer, "Marylebone", "answer")
    assert "Mary" in cut and "␣" not in cut.split("(")[0] and "only the first is used" in cut
    assert "type a token" in interpret.token_box_note(tokenizer, "", "answer")
    # The boxes' lines under the patching and attribution inputs, from the first draw on.
    for module, elem_id in ((tab_attention, "patch-heads-tokens"), (tab_logits, "attribution-tokens")):
        demo, _ = build_tab(module, explorer_service)
        echo = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)
        assert ("␣Mary" in echo.value) == (module is tab_attention), echo.value
        listeners = [f for f in demo.fns.values() if echo in f.outputs]
        assert listeners and all(f.queue is False for f in listeners)
        assert "only the first" in listeners[0].fn("Marylebone", " John")


def preset_handlers(demo, undo_id: str):
    """(apply, restore) of the preset whose undo button has ``undo_id``."""
    undo = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == undo_id)
    apply = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "apply" and undo in f.outputs)
    restore = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "restore" and (undo._id, "click") in f.targets)
    return apply, restore


def test_presets_can_be_undone(explorer_service):
    """Issue 19, item 9: a preset overwrote the student's prompts without a word and no way back."""
    demo, _ = build_tab(tab_attention, explorer_service)
    apply, restore = preset_handlers(demo, "patch-heads-undo")
    mine = ("Paris is the capital of", "Rome is the capital of", " France", " Italy")
    *filled, saved, button = apply(*mine)
    assert tuple(filled) == (interpret.IOI_CLEAN, interpret.IOI_CORRUPTED, interpret.IOI_ANSWER, interpret.IOI_WRONG)
    assert saved == list(mine) and button["visible"] is True
    *back, button, cleared = restore(saved)
    assert tuple(back) == mine and button["visible"] is False and cleared is None
    # The preset over the preset's own texts replaces nothing: no undo is offered for it.
    *_, saved, button = apply(*filled)
    assert isinstance(saved, type(gr.skip())) and isinstance(button, type(gr.skip()))


def test_a_button_that_replaces_the_prompt_offers_it_back(explorer_service):
    import app

    demo, _ = app.build_ui(explorer_service)
    induction = next(
        f
        for f in demo.fns.values()
        if f.fn.__name__ == "start_ids_run" and "induction" in str(f.fn.__wrapped__.__defaults__)
    )
    request, note, prompt, saved, button = induction.fn(explorer_service.model_name, "my own prompt")
    assert "Restore my prompt" in note and "induction test" in note.lower()
    assert saved == ["my own prompt"] and button["visible"] is True and prompt != "my own prompt"
    undo = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "prompt-undo")
    restore = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "restore" and (undo._id, "click") in f.targets)
    assert restore(saved)[0] == "my own prompt"
