"""Render on view: a Run renders the tab on screen only; opening a tab renders it once per Run and
setting; a control re-renders only its figures; exports are written only when asked, and bounded."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

import app
from components import common
from explorer.analyses import LENS_DEFAULT_POSITIONS


def defaults(view):
    return [getattr(c, "value", None) for c in view.controls]


@pytest.fixture()
def ui(explorer_service):
    demo, ctx = app.build_ui(explorer_service)
    return ctx


def visible_args(ctx, rendered=None):
    args = []
    for view in ctx.views.values():
        args += [(rendered or {}).get(view.tab_id), *defaults(view)]
    return args


def is_skip(value) -> bool:
    return value == gr.skip()


def test_a_run_renders_the_visible_tab_only(ui, tiny_run):
    request = tiny_run.request
    values = ui.render_visible(request, "attention", *visible_args(ui))
    assert {v.tab_id: v.renders for v in ui.views.values()} == {t: int(t == "attention") for t in ui.views}
    at = 0
    for view in ui.views.values():
        chunk = values[at : at + len(view.outputs) + 1]
        at += len(view.outputs) + 1
        if view.tab_id == "attention":
            drawn = type(view.outputs)._make(chunk[:-1])
            assert chunk[-1] == view.key(request, defaults(view))
            assert not any(is_skip(v) for v in (drawn.pattern, drawn.grid, drawn.qkv, drawn.ablation))
        else:
            assert all(is_skip(v) for v in chunk), view.tab_id  # nothing computed, nothing sent
    assert at == len(values)


def test_opening_a_tab_renders_it_once_per_run_and_setting(ui, tiny_run, explorer_service):
    view = ui.views["mlp"]
    request = tiny_run.request
    first = view.open(request, None, 0, True)  # layer 0, position 0 left out of the scales
    assert first[0] == "mlp" and view.renders == 1
    key = first[-1]
    again = view.open(request, key, 0, True)  # reopened: the same figures, nothing recomputed or sent
    assert view.renders == 1 and all(is_skip(v) for v in again[1:-1]) and again[-1] == key
    view.open(request, key, 1, True)  # another setting of the tab's control
    assert view.renders == 2
    other = explorer_service.run("A different prompt for a new Run").request
    view.open(other, key, 0, True)  # a new Run
    assert view.renders == 3
    view.open(other, key, 0, False)  # the position-0 switch is a setting too
    assert view.renders == 4


def test_a_control_rerenders_its_figures_and_reopening_computes_nothing(ui, tiny_run):
    view = ui.views["blocks"]
    request = tiny_run.request
    width = LENS_DEFAULT_POSITIONS
    key = view.open(request, None, True, width, None)[-1]  # (tab id, *outputs, key); no compare prompt
    (handler, inputs), (widen, _) = view.handlers  # the position and the position-0 switch: one handler; the lens width
    position_figures = handler(request, 3, True, width, None)
    assert position_figures._fields == ("norms", "additions", "summary", "rendered_key")
    assert position_figures.rendered_key == key
    assert view.renders == 1
    view.open(request, position_figures.rendered_key, True, width, None)
    assert view.renders == 1
    switched = handler(request, 3, False, width, None)  # the switch redraws the same figures, under a new key
    assert switched.rendered_key == view.key(request, [False, width, None]) != key
    view.open(request, switched.rendered_key, False, width, None)
    assert view.renders == 1
    # Inputs: state, width, B's request, then the view's other control; the lens heatmaps (A's, B's) and the
    # final-prediction line, under a new key.
    widened = widen(request, 64, None, False)
    assert widened._fields == ("lens", "final", "compare_lens", "rendered_key")
    assert widened.rendered_key == view.key(request, [False, 64, None]) not in (key, switched.rendered_key)
    view.open(request, widened.rendered_key, False, 64, None)
    assert view.renders == 1


def test_the_compare_prompt_is_a_setting_of_the_tabs_that_draw_it_and_of_no_other(ui, tiny_run, explorer_service):
    """B's request is a control of Attention, Blocks and Logits: their view keys follow it (they
    redraw when B changes), and the other tabs' keys do not (they draw nothing of B)."""
    other = explorer_service.run("The dog sat on the mat. The dog sat on the").request
    for view in ui.views.values():
        with_b = [other if c is ui.compare else value for c, value in zip(view.controls, defaults(view))]
        follows = view.key(tiny_run.request, defaults(view)) != view.key(tiny_run.request, with_b)
        assert follows == (view.tab_id in ("attention", "blocks", "logits")), view.tab_id


def test_runs_write_no_exports_and_exports_stay_bounded(ui, explorer_service, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "EXPORT_DIR", tmp_path / "exports")
    monkeypatch.setattr(common, "MAX_EXPORT_FILES", 5)
    for i in range(8):
        request = explorer_service.run(f"Run number {i} of a class").request
        for view in ui.views.values():
            view.open(request, None, *defaults(view))
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())
    view = ui.views["tokenize"]
    for _ in range(12):
        note, update = view.export(request)
        with np.load(update["value"]) as data:
            assert data["token_ids"].size > 0
    assert len(list((tmp_path / "exports").glob("*.npz"))) == 5
    note, update = view.export(None)
    assert note == common.NO_RUN


def test_a_tab_drawn_before_a_graph_was_ready_draws_again_once_it_is(ui, tiny_run, monkeypatch):
    view = ui.views["blocks"]
    compiled = ["trace"]
    monkeypatch.setattr(view, "readiness", lambda request: ",".join(compiled))
    key = view.open(tiny_run.request, None, True)[-1]
    assert view.open(tiny_run.request, key, True)[-1] == key and view.renders == 1
    compiled.append("analysis")  # the background compile finished: the lens can be drawn now
    view.open(tiny_run.request, key, True)
    assert view.renders == 2


def test_the_mask_tabs_layer_and_head_redraw_the_three_score_heatmaps_only(ui, tiny_run):
    view = ui.views["mask"]
    full = view.render(tiny_run.request, 1, 2, False, True)  # mask, raw, masked, pattern, predictions, text, ...
    (head_handler, _), _ = view.handlers
    *figures, key = head_handler(tiny_run.request, 1, 2, False, True)
    assert len(figures) == 3 and key == view.key(tiny_run.request, [1, 2, False, True])
    for drawn, whole in zip(figures, full[1:4]):
        assert drawn.to_json() == whole.to_json()


def test_gradio_summarises_its_event_log_rarely(explorer_service):
    """The app sets Gradio's queue to rebuild its pandas summary of past events once per 1,000
    events, over at most 1,000 (Gradio's default: after every event, over up to 10,000)."""
    demo, _ = app.build_ui(explorer_service)
    demo.queue()
    assert demo._queue.ANAYLTICS_CACHE_FREQUENCY >= 1000 and demo._queue.ANALYTICS_MAX_EVENTS <= 1000


def test_unchanged_outputs_are_sent_as_gradio_sends_them(explorer_service, tiny_run):
    """ExplorerBlocks skips rebuilding the outputs an event leaves unchanged (gr.skip()) and
    writes figures with plots.figure_json; what it returns equals what gr.Blocks returns for
    the same predictions: the visible tab's figures postprocessed (the same figure JSON, parsed),
    every skipped output the same empty update, States None."""
    import asyncio
    import copy
    import json

    from gradio.state_holder import SessionState

    demo, ui = app.build_ui(explorer_service)
    assert isinstance(demo, common.ExplorerBlocks)
    fn = next(f for f in demo.fns.values() if f.api_name == "render_visible")
    args = visible_args(ui)
    predictions = list(ui.render_visible(tiny_run.request, "tokenize", *args))
    assert any(p == common.UNCHANGED for p in predictions) and any(p != common.UNCHANGED for p in predictions)

    def postprocess(method):  # on a deep copy: Gradio edits update dicts in place
        return asyncio.run(method(demo, fn, copy.deepcopy(predictions), SessionState(demo)))

    def comparable(value):  # a figure's JSON string (plots.figure_json here, to_json in Gradio) parsed
        if isinstance(value, dict) and value.get("type") == "plotly":
            return {**value, "plot": json.loads(value["plot"])}
        return value

    def same_as_gradio():
        ours = postprocess(common.ExplorerBlocks.postprocess_data)
        gradio_s = postprocess(gr.Blocks.postprocess_data)
        assert len(ours) == len(gradio_s) == len(fn.outputs)
        plots = 0
        for mine, theirs in zip(ours, gradio_s, strict=True):
            plots += comparable(mine) is not mine
            assert json.dumps(comparable(mine), sort_keys=True, default=str) == json.dumps(
                comparable(theirs), sort_keys=True, default=str
            )
        return plots

    assert same_as_gradio() >= 2  # the Tokenize tab's figures among them
    # One output left to postprocess (Gradio wraps a lone value itself): a Markdown's text.
    markdown = next(i for i, block in enumerate(fn.outputs) if isinstance(block, gr.Markdown))
    predictions = [common.UNCHANGED] * len(fn.outputs)
    predictions[markdown] = "**one** changed output"
    same_as_gradio()


def sliders_and_their_events(demo) -> dict[int, set[str]]:
    """{slider id: the events of it that start a handler} for every slider of the page."""
    events: dict[int, set[str]] = {block._id: set() for block in demo.blocks.values() if isinstance(block, gr.Slider)}
    for fn in demo.fns.values():
        for block_id, event in fn.targets:
            if block_id in events:
                events[block_id].add(event)
    return events


def test_every_slider_redraws_when_moved_with_the_keyboard(explorer_service):
    """Gradio's slider sends "release" on a pointer-up only: the arrow keys send "input" alone, so a
    slider wired to "release" left its figures on the old value (issue 19, item 7)."""
    demo, _ = app.build_ui(explorer_service)
    wired = {block_id: events for block_id, events in sliders_and_their_events(demo).items() if events}
    assert (
        len(wired) >= 8
    )  # Attention's and Mask's layer and head, MLP's block, Embed's positions, Sample's knobs and step
    assert all("input" in events for events in wired.values()), wired


@pytest.fixture()
def loading_service(tmp_path, monkeypatch):
    """The app's service for the tiny model before its load has finished (no load thread: the test
    adopts the model when it wants it ready)."""
    from tiny_checkpoint import TINY_REPO_ID

    from explorer.service import ExplorerService
    from explorer.settings import Settings

    settings = Settings(model=TINY_REPO_ID, examples_dir=str(tmp_path / "examples"), cache_dir=str(tmp_path / "cache"))
    service = ExplorerService(settings, TINY_REPO_ID)
    monkeypatch.setattr(service.loader, "start_loading", lambda name=None: None)
    return service


def event_fn(demo, name: str):
    return next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_a_run_pressed_while_the_model_loads_shows_its_tokens_and_is_traced_when_ready(loading_service, tiny_model):
    """Issue 19, items 5 and 18: a Run pressed during loading was dropped with a "still loading"
    warning that stayed. Now Tokenize shows its tokens at once (tokenizer only), the other tabs say
    once that they wait, and when the model is ready the Run is traced and the note replaced."""
    service = loading_service
    demo, ui = app.build_ui(service)
    text = "A prompt typed while the model loads"
    request, _, note = event_fn(demo, "start_run")(text, service.model_name)  # (A, B: none, note)
    assert common.is_pending(request) and "waits for the model" in note and not note.startswith("⚠️")
    tokenize = ui.views["tokenize"].open(request, None)
    grid = tokenize[1]
    assert grid.data[0].text is not None and f"{len(service.tokenizer.encode(text))} tokens" in grid.layout.title.text
    attention = ui.views["attention"]
    values = attention.open(request, None, *defaults(attention))[1:-1]
    figures = [v for v in values if hasattr(v, "layout")]
    texts = [v for v, block in zip(values, attention.outputs) if isinstance(block, gr.Markdown) and v]
    assert len(texts) == 1 and texts[0] == str(common.WAITS_FOR_MODEL)  # said once, in full
    assert figures and all(
        common.WAITS_FOR_MODEL.brief in f.layout.annotations[0].text.replace("<br>", " ") for f in figures
    )
    trace_pending = event_fn(demo, "trace_pending")
    assert all(is_skip(v) for v in trace_pending(request))  # still loading: nothing changes
    service.loader.adopt(tiny_model)
    live, note = trace_pending(request)
    assert live.source == "live" and live.token_ids == request.token_ids and note.startswith("**Live** trace")
    opened = type(attention.outputs)._make(
        attention.open(live, None, *defaults(attention))[1:-1]
    )  # (tab id, *outputs, key)
    assert "layer 0 head 0" in opened.pattern.layout.title.text


def test_the_status_poll_reports_readiness_so_waiting_views_redraw(loading_service, tiny_model):
    """The page's status poll (its timer's tick; the unqueued `status` endpoint is the text alone)
    has as third output what the model can compute now; the page traces a pending Run and redraws
    the tab on screen when it changes (issue 19, item 6: views that waited asked the student to
    reopen the tab)."""
    service = loading_service
    demo, _ = app.build_ui(service)
    timers = [block for block in demo.blocks.values() if isinstance(block, gr.Timer)]
    (poll,) = [f for f in demo.fns.values() if any((t._id, "tick") in f.targets for t in timers)]
    readiness = poll.outputs[2]
    assert isinstance(readiness, gr.State)
    assert poll.fn(service.model_name)[2] == "loading"
    service.loader.adopt(tiny_model)
    assert poll.fn(service.model_name)[2] == ""
    followers = [f for f in demo.fns.values() if (readiness._id, "change") in f.targets]
    assert [f.fn.__name__ for f in followers] == ["trace_pending"]


def test_a_view_waiting_for_the_analysis_graph_says_so_once_and_readably(ui, explorer_service, monkeypatch):
    from components.plots import MESSAGE_LINE_CHARS

    run = explorer_service.run("Logits wait for the analysis graph here")
    monkeypatch.setattr(
        explorer_service.loader, "compiling", lambda graph, name=None: "compiling the analysis graph: 12 s so far"
    )
    view = ui.views["logits"]
    values = view.render(run.request, *defaults(view))
    figures = [v for v in values if hasattr(v, "layout")]
    texts = [v for v in values if isinstance(v, str)]
    full = [t for t in texts if "12 s so far" in t]
    assert len(full) == 1 and "draws itself" in full[0] and "Open the tab again" not in full[0]
    assert len(figures) == 4
    for fig in figures:
        lines = fig.layout.annotations[0].text.split("<br>")
        assert "12 s so far" not in fig.layout.annotations[0].text and all(
            len(line) <= MESSAGE_LINE_CHARS for line in lines
        )


def test_load_stage_estimates_come_from_this_hosts_measured_times(tmp_path):
    from explorer import loading as run_module
    from explorer.service import ExplorerService
    from explorer.settings import Settings

    slot = run_module.ModelSlot()
    slot.enter("trace")
    assert "estimate" in slot.stage_text() and str(run_module.STAGES["trace"][1]) in slot.stage_text()
    slot.enter("analysis")
    assert slot.took["trace"] >= 0.0
    record = tmp_path / "cache" / "load-seconds.json"
    run_module.write_stage_record(record, "some/model", {"trace": 212.4, "analysis": 131.0})
    service = ExplorerService(
        Settings(model="some/model", cache_dir=str(tmp_path / "cache"), allowed_models=()), "some/model"
    )
    measured = service.loader.slot("some/model")
    measured.enter("trace")
    assert "estimate: 212 s, as at this host's last start" in measured.stage_text()
