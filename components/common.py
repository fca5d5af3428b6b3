"""What every tab shares: the app context, the intro block, the MAX source viewer, exports, error handling."""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import string
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from gradio.components.plot import PlotData
from starlette.middleware import Middleware

from components.guard import RequestGuard
from components.plots import figure_json, message_figure
from explorer.analyses import Reason
from explorer.parts import ServerParts, parts_for
from explorer.runs import PENDING, Run, RunRequest
from explorer.settings import MAX_UPLOAD_BYTES, Settings
from gpt2_max.errors import ExplorerError
from gpt2_max.scheduling import MODEL_LANE, VISIBLE_LANE

log = logging.getLogger("explorer")

# What a view shows before its Run: true also to a student who has just pressed Run (the tab
# draws when the Run finishes), where "press Run" told them to do what they had done.
NO_RUN = "Nothing yet: drawn here when a Run finishes."
# What a tab that needs the trace shows while a Run waits for its model (said once, in its text).
WAITS_FOR_MODEL = Reason(
    "⏳ This tab needs the model, which is still loading (see the status line). Your Run is traced as soon as "
    "it is ready and this tab then draws itself; the Tokenize tab shows your tokens already.",
    "⏳ Drawn when the model is ready (your Run is traced by itself)",
)


def is_pending(request: RunRequest | None) -> bool:
    """A Run pressed while its model loads: tokens only, traced once the model is ready."""
    return request is not None and request.source == PENDING


def waiting_outputs(outputs: list, reason: Reason = WAITS_FOR_MODEL) -> tuple:
    """The values of ``outputs`` while they wait: each plot says ``reason`` briefly, the first
    text says it in full (once), the other texts and the tab's state are cleared, and the
    controls stay as they are."""
    values, said = [], False
    for block in outputs:
        if isinstance(block, gr.Plot):
            values.append(message_figure(reason))
        elif isinstance(block, (gr.Markdown, gr.HTML)):
            values.append("" if said else str(reason))
            said = True
        elif isinstance(block, gr.State):
            values.append(None)
        else:
            values.append(gr.skip())
    return tuple(values)


EXPORT_DIR = Path(tempfile.gettempdir()) / "gpt2-explorer-exports"
# Exports kept on disk at once: each download is written when asked for and fetched at
# once, so a few dozen cover a class exporting together.
MAX_EXPORT_FILES = 64


# gr.skip()'s value: an update that changes no property.
UNCHANGED = {"__type__": "update"}


class ExplorerBlocks(gr.Blocks):
    """gr.Blocks, sending the outputs an event leaves unchanged (``gr.skip()``) without rebuilding them,
    and figures as ``plots.figure_json`` writes them (gr.Plot would call their slower to_json).

    Gradio 6 treats ``gr.skip()`` as a property update: for each such output it constructs a new
    component from the old one's arguments and recomputes its config, which adds up on
    ``render_visible`` (every tab's outputs, the event every Run ends with, 30 times when a class
    presses Run). An update with no properties changes nothing, so those outputs go to the browser
    as the same empty update, and Gradio postprocesses the rest.
    """

    def __init__(self, *args, settings: Settings | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = settings or Settings()

    def queue(self, *args, **kwargs):
        """Gradio's queue with its REST routes closed to queued events off a Space as on one:
        every queued event goes through its lane and the queue's size limit."""
        kwargs.setdefault("api_open", False)
        return super().queue(*args, **kwargs)

    def launch(self, *args, **kwargs):
        """Gradio's launch behind the request guard (components.guard), with no uploads taken."""
        kwargs.setdefault("max_file_size", MAX_UPLOAD_BYTES)
        # Gradio's launch checks that its own page answers, and raises when one HEAD request takes
        # over 3 s: a host compiling MAX graphs in the background at start can take that long, and
        # the app then died before serving. The page's readiness is what deploy's health checks
        # (and the tests) poll instead. `_frontend` gates only that check (gradio/blocks.py).
        kwargs.setdefault("_frontend", False)
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(RequestGuard, settings=self.limits)]
        return super().launch(*args, app_kwargs=app_kwargs, **kwargs)

    async def postprocess_data(self, block_fn, predictions, state):
        predictions = _plots_as_json(block_fn.outputs, predictions)
        outputs = block_fn.outputs
        if len(outputs) < 2 or not isinstance(predictions, (list, tuple)) or len(predictions) != len(outputs):
            return await super().postprocess_data(block_fn, predictions, state)
        # gr.HTML's updates carry extra "props" in Gradio's form: left to Gradio (there are few).
        keep = [
            i
            for i, (value, block) in enumerate(zip(predictions, block_fn.outputs))
            if not (isinstance(value, dict) and value == UNCHANGED) or isinstance(block, gr.HTML)
        ]
        if len(keep) == len(predictions):
            return await super().postprocess_data(block_fn, predictions, state)
        changed = copy.copy(block_fn)
        changed.outputs = [block_fn.outputs[i] for i in keep]
        kept = [predictions[i] for i in keep]
        # Gradio takes a one-output event's value bare (it wraps it in a list itself).
        processed = (
            (await super().postprocess_data(changed, kept[0] if len(kept) == 1 else kept, state)) if keep else []
        )
        # What Gradio itself returns for them: None for a State (it stays on the server), else the update.
        output: list = [None if block.stateful else {"__type__": "update"} for block in block_fn.outputs]
        for i, value in zip(keep, processed, strict=True):
            output[i] = value
        return output


def _plots_as_json(outputs: list, predictions):
    """``predictions`` with each figure bound for a gr.Plot already in gr.Plot's wire form."""
    single = len(outputs) == 1 and not isinstance(predictions, (list, tuple))
    values = [predictions] if single else predictions
    if not isinstance(values, (list, tuple)) or len(values) != len(outputs):
        return predictions  # a form this does not know (a dict of updates): Gradio's own path
    converted = [
        PlotData(type="plotly", plot=figure_json(value))
        if isinstance(value, go.Figure) and isinstance(block, gr.Plot)
        else value
        for value, block in zip(values, outputs, strict=True)
    ]
    return converted[0] if single else list(converted) if isinstance(predictions, list) else tuple(converted)


def output_kinds(outputs) -> tuple[str, ...]:
    """What each output component shows when its handler fails (see ``error_outputs``): a gr.Plot
    the message, a gr.Markdown or gr.HTML the message (the first) or nothing, any other (a control,
    a State) stays as it was."""
    return tuple(
        "plot" if isinstance(block, gr.Plot) else "text" if isinstance(block, (gr.Markdown, gr.HTML)) else "keep"
        for block in outputs
    )


def named_outputs(*names: str) -> type:
    """A tab's outputs by name: a named-tuple class whose fields are ``names``, each ``gr.skip()``
    (unchanged) unless given. The tab holds its output components in one instance and its handlers
    return another (``MLPViews(bars=figure, summary=text)``); the wiring reads the values by name, so
    adding a view to a tab is one field, one component and the function that draws it."""
    base = collections.namedtuple("Views", names)

    class Views(base):
        __slots__ = ()

        def __new__(cls, *values, **named):
            unknown = set(named) - set(names)
            if unknown:
                raise TypeError(f"no output named {', '.join(sorted(unknown))}; the outputs are {', '.join(names)}")
            rest = [named[name] if name in named else gr.skip() for name in names[len(values) :]]
            return super().__new__(cls, *values, *rest)

    return Views


@dataclass
class TabView:
    """One tab's figures and how to make them: rendered only when the tab is looked at.

    ``outputs`` is the tab's named tuple of output components (``views``); ``render(request,
    *controls)`` returns one of the same class with their values. ``rendered`` holds the key (Run
    and control values) of what the tab shows now, so opening it again for the same Run and
    settings sends nothing and computes nothing.
    """

    tab_id: str
    render: Callable
    controls: list
    outputs: tuple
    rendered: gr.State
    # What the host can compute for a request's model now (ModelLoader.readiness): part of the
    # key, so a tab drawn while a graph compiled draws again, complete, once it is ready.
    readiness: Callable[[str | None], str] = lambda model_name: ""
    renders: int = 0  # how many times render ran (what the render-on-view tests count)
    export: Callable | None = None  # (request, *values) -> (note, file update), set by AppContext.export
    open: Callable | None = None  # what opening the tab calls: (request, rendered key, *controls)
    handlers: list = field(default_factory=list)  # the control handlers, as wired (tests call them)
    needs_trace: bool = True  # False: the tab draws from the tokens alone (a PENDING Run)

    def key(self, request: RunRequest | None, control_values) -> str:
        return view_key(request, control_values, self.readiness(request.model if request else None))

    def waits_for_model(self, request: RunRequest | None) -> bool:
        """True while this tab cannot draw ``request``: a PENDING Run whose model still loads."""
        return self.needs_trace and is_pending(request) and self.readiness(request.model) == "loading"

    def render_if_stale(self, request, rendered_key, *control_values):
        """-> (*outputs, key): the tab's figures, or skips when it already shows this key."""
        key = self.key(request, control_values)
        if rendered_key == key:
            return (*(gr.skip() for _ in self.outputs), key)
        self.renders += 1
        if self.waits_for_model(request):
            return (*waiting_outputs(self.outputs), key)
        values = self.render(request, *control_values)
        values = values if isinstance(values, tuple) else (values,)
        return (*values, key)


def view_key(request: RunRequest | None, control_values, readiness: str = "") -> str:
    """What a tab's figures depend on: the Run's request, the tab's control values, and
    which of the model's graphs could run when they were drawn."""
    fields = None if request is None else dataclasses.astuple(request)
    raw = json.dumps([fields, list(control_values), readiness], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def views_only(fn: Callable) -> Callable:
    """``fn`` (which returns (views, what else it computed), e.g. the export's arrays) returning
    only its views: a tab's ``render`` where its ``render_with_*`` computes more."""

    @functools.wraps(fn)
    def views(*args, **kwargs):
        return fn(*args, **kwargs)[0]

    views.__doc__ = f"``{fn.__name__}``'s views alone (the same arguments)."
    return views


def returning(named: type, fn: Callable) -> Callable:
    """``fn``, checked to return an instance of ``named`` (a tab's ``named_outputs`` class)."""

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        values = fn(*args, **kwargs)
        if not isinstance(values, named):
            raise TypeError(f"{fn.__name__} returned {type(values).__name__}, not the tab's {named._fields}")
        return values

    return checked


@dataclass
class AppContext:
    """Handed to every tab's ``build``: the shared state, the tab views and their wiring.

    A tab declares its view once (``view``); the context wires it so that a Run
    renders only the tab on screen, opening a tab renders it when what it shows is
    stale, and a control re-renders only the figures its handler returns
    (``control``). One mechanism for all eight tabs. The server's parts a tab uses reach it as
    the keyword arguments its ``build`` names (``build``; explorer.parts); ``parts`` is for this
    wiring alone.
    """

    parts: ServerParts
    state: gr.State  # the current Run's request (plain data)
    visible: gr.State = None  # the id of the tab on screen
    # The compare prompt's Run request (components.compare), None without one: a control of the
    # tabs that draw it, so only their views follow it.
    compare: gr.State = None
    views: dict[str, TabView] = field(default_factory=dict)
    # Buttons that start a Run of token ids rather than typed text: (trigger, make() -> ids),
    # wired by the app like its Run button (run_ids_on).
    id_runs: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.visible is None:
            self.visible = gr.State(None)
        if self.compare is None:
            self.compare = gr.State(None)

    def build(self, build: Callable, *args) -> object:
        """Calls a tab's (or a section's) ``build(self, *args, **parts)`` with the server's parts its
        keyword-only parameters name, and only those."""
        return build(self, *args, **parts_for(build, self.parts))

    def lane(self, name: str) -> dict:
        """The arguments that put an event in the queue lane ``name`` (gpt2_max.scheduling)."""
        return self.parts.lanes.event(name)

    def view(self, tab: gr.Tab, render: Callable, controls: list, outputs: tuple, needs_trace: bool = True) -> TabView:
        """Registers a tab's render; opening the tab (API name ``render_<tab>``) renders it if stale.
        ``outputs``: the tab's output components, a ``named_outputs`` instance; ``render(request,
        *controls)`` returns one of its class. An error shows in the plots and the first text (their
        kinds read off the components), the controls stay. ``needs_trace=False``: the tab draws a
        PENDING Run too (it needs only the tokens)."""
        # The tab's label, lower-cased: Gradio's Tab.select is unreliable with an explicit tab id.
        tab_id = str(tab.label).lower()
        with tab:  # inside the tab: a State among gr.Tabs' children would be taken for a tab
            rendered = gr.State(None)
        named = type(outputs)
        safe = guarded(*output_kinds(outputs))(returning(named, render))

        def draw(request, *control_values):
            values = safe(request, *control_values)
            return (
                values if isinstance(values, named) else named._make(values if isinstance(values, tuple) else (values,))
            )

        draw.__name__ = render.__name__
        view = TabView(tab_id, draw, list(controls), outputs, rendered, self.parts.readiness, needs_trace=needs_trace)
        self.views[tab_id] = view
        if self.visible.value is None:
            self.visible.value = tab_id  # the first tab is the one on screen when the page opens

        @guarded(*(["keep"] * (len(view.outputs) + 2)))
        def open_tab(request, rendered_key, *control_values):
            self.parts.yield_to_runs()  # Runs being traced go first
            return (tab_id, *view.render_if_stale(request, rendered_key, *control_values))

        view.open = open_tab
        tab.select(
            open_tab,
            [self.state, view.rendered, *view.controls],
            [self.visible, *view.outputs, view.rendered],
            api_name=f"render_{tab_id}",
            **self.lane(MODEL_LANE),
        )
        return view

    def control(self, view: TabView, triggers, fn: Callable, inputs: list, names: tuple[str, ...], **event) -> None:
        """Wires a control handler of a view: ``fn(*inputs)`` returns the view's outputs class with
        the outputs ``names`` (the figures that depend on the control) set; only those are sent, and
        the view's key follows, so reopening the tab recomputes nothing. The wired handler returns
        them by name, with the key last (``rendered_key``)."""
        n = len(inputs)
        outputs = [getattr(view.outputs, name) for name in names]
        picked = collections.namedtuple(f"{fn.__name__}_outputs", [*names, "rendered_key"])
        checked_fn = returning(type(view.outputs), fn)

        def pick(*args):
            values = checked_fn(*args)
            return tuple(getattr(values, name) for name in names)

        safe = guarded(*output_kinds(outputs))(pick)
        # The key needs the request and the view's controls: added to the inputs where missing.
        event_inputs = list(inputs) + [c for c in [self.state, *view.controls] if not any(c is i for i in inputs)]
        at = [next(k for k, c in enumerate(event_inputs) if c is wanted) for wanted in [self.state, *view.controls]]

        def handler(*args):
            self.parts.yield_to_runs()  # Runs being traced go first
            if view.waits_for_model(args[at[0]]):
                values = waiting_outputs(outputs)
            else:
                values = safe(*args[:n])
            values = values if isinstance(values, tuple) else (values,)
            return picked(*values, view.key(args[at[0]], [args[k] for k in at[1:]]))

        handler.__name__ = fn.__name__
        view.handlers.append((handler, event_inputs))
        for trigger in triggers:
            trigger(handler, event_inputs, [*outputs, view.rendered], **event)

    def run_ids_on(self, trigger, make: Callable[[], list[int]], what: str) -> None:
        """``trigger`` starts a Run of the ids ``make()`` returns (``what``: "the induction test"),
        through the same path as the Run button; the app wires it (it owns the prompt and the note,
        and offers the student's replaced prompt back)."""
        self.id_runs.append((trigger, make, what))

    def wire_run(self, *run_events) -> None:
        """After a Run: render the tab on screen, and only it (API name ``render_visible``)."""
        views = list(self.views.values())
        inputs: list = [self.state, self.visible]
        outputs: list = []
        for view in views:
            inputs += [view.rendered, *view.controls]
            outputs += [*view.outputs, view.rendered]

        @guarded(*(["keep"] * len(outputs)))
        def render_visible(request, visible, *args):
            values: list = []
            for view in views:
                rendered_key, controls = args[0], args[1 : 1 + len(view.controls)]
                args = args[1 + len(view.controls) :]
                if view.tab_id == visible:
                    values += view.render_if_stale(request, rendered_key, *controls)
                else:
                    values += [gr.skip() for _ in view.outputs] + [gr.skip()]
            return tuple(values)

        self.render_visible = render_visible
        for index, run_event in enumerate(run_events):
            run_event.then(
                render_visible,
                inputs,
                outputs,
                api_name="render_visible" if index == 0 else False,
                # Its own lane: a student's first view after a Run does not queue behind the tabs
                # other students open (the CPU is shared; the queue position is not).
                **self.lane(VISIBLE_LANE),
            )

    def export(self, view: TabView, export: ExportControls, arrays: Callable, inputs: list | None = None) -> None:
        """An export written only when asked for: ``arrays(run, *values of inputs)`` -> the tensors
        behind the tab's plots (``inputs``: the controls they depend on, default the view's)."""
        inputs = view.controls if inputs is None else inputs

        @guarded("text", "keep")
        def write(request, *values):
            run = self.current(request)
            if run is None:
                return NO_RUN, gr.update()
            if view.waits_for_model(request):
                return str(WAITS_FOR_MODEL), gr.update()
            return "", gr.update(value=export_npz(view.tab_id, arrays(run, *values)), visible=True)

        view.export = write
        export.button.click(write, [self.state, *inputs], [export.note, export.file], api_name=f"export_{view.tab_id}")

    def current(self, request: RunRequest | None) -> Run | None:
        return self.parts.from_request(request)


def user_message(error: BaseException) -> str:
    """What a user sees for an error: our messages as they are, anything else without a traceback."""
    if isinstance(error, ExplorerError):
        return str(error)
    log.error("unexpected error: %s", "".join(traceback.format_exception(error)))
    return "Something went wrong computing this view; the error was logged. Try another input."


def error_outputs(outputs: tuple[str, ...], error: BaseException):
    """What a handler with outputs of these kinds shows instead of a traceback."""
    message = user_message(error)
    first_text = outputs.index("text") if "text" in outputs else -1
    values = []
    for index, kind in enumerate(outputs):
        if kind == "plot":
            values.append(message_figure(message))
        elif index == first_text:
            values.append(f"⚠️ {message}")
        elif kind == "text":
            values.append("")
        else:
            values.append(gr.update())
    return values[0] if len(values) == 1 else tuple(values)


def guarded(*outputs) -> Callable:
    """Wraps a handler of the given output components (or their kinds: "plot", "text", "keep",
    as ``output_kinds`` reads them off the components).

    On any error the handler's plots show the message, its first text output
    says what happened, and "keep" outputs are left as they were, so the page
    stays usable and no traceback reaches it. Generator handlers (streaming)
    stay generators, so Gradio still streams them.
    """
    outputs = tuple(kind if isinstance(kind, str) else output_kinds([kind])[0] for kind in outputs)

    def decorate(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def stream_wrapper(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as error:  # noqa: BLE001 - shown as a message, never a traceback
                    yield error_outputs(outputs, error)

            return stream_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - nothing reaches the screen as a traceback
                return error_outputs(outputs, error)

        return wrapper

    return decorate


POSITION_0_SWITCH = "Leave position 0 out of colour scales and norm plots"
POSITION_0_INFO = (
    "In the real GPT-2 the first position's vector is 10-100× longer than the others' and a few of "
    "its numbers are in the thousands: left in, it sets every scale and the rest looks flat. Its "
    "values stay in the hovers and the export."
)


def position_0_switch(elem_id: str) -> gr.Checkbox:
    """The one "leave position 0 out" control every tab with position-dependent scales uses (on
    by default): a control of the tab's view, passed to the figure builders as
    ``leave_out_position_0``, so opening the tab, a redraw and the view key all follow it."""
    return gr.Checkbox(label=POSITION_0_SWITCH, value=True, info=POSITION_0_INFO, interactive=True, elem_id=elem_id)


def slider_moved(slider: gr.Slider):
    """The event of a slider's new value however it was moved. Gradio's slider sends ``input`` for
    a drag, a click, the arrow keys and its number box; ``release`` only on a pointer-up (or on
    leaving the number box), so a slider moved with the keyboard never sent it. Handlers wired to
    this take ``trigger_mode="always_last"``: a drag then costs the first and the last value only."""
    return slider.input


@dataclass(frozen=True)
class Undo:
    """A way back after a preset overwrote what the student typed: a button, hidden until a preset
    replaced something, that puts the saved values back into their boxes."""

    button: gr.Button
    saved: gr.State  # the boxes' values before the preset (a list), None when there is nothing to undo

    def restore_into(self, boxes: list):
        """Wires the button: the saved values back into ``boxes``, then the button hides. -> the event."""

        def restore(saved):
            if not saved:
                return (*(gr.skip() for _ in boxes), gr.update(visible=False), None)
            return (*saved, gr.update(visible=False), None)

        return self.button.click(restore, [self.saved], [*boxes, self.button, self.saved], queue=False)


def undo_button(label: str, elem_id: str) -> Undo:
    """An Undo placed where it is called."""
    return Undo(gr.Button(label, size="sm", variant="secondary", visible=False, elem_id=elem_id), gr.State(None))


def preset_with_undo(button: gr.Button, boxes: list, values: tuple, undo: Undo) -> None:
    """``button`` fills ``boxes`` with ``values``; when that replaces text the student typed, the
    previous texts are kept in ``undo`` and its button appears (its label says what it restores)."""

    def apply(*current):
        replaced = any(str(now or "") != str(preset) for now, preset in zip(current, values, strict=True))
        if not replaced:  # nothing of the student's was overwritten: an earlier undo stays as it was
            return (*values, gr.skip(), gr.skip())
        return (*values, list(current), gr.update(visible=True))

    button.click(apply, boxes, [*boxes, undo.saved, undo.button], queue=False)
    undo.restore_into(boxes)


def table_cell(markdown: str) -> str:
    """Markdown for a table cell: a "|" in it (``<|endoftext|>``) would end the cell."""
    return markdown.replace("|", "\\|")


def intro(title: str, what: str, shapes: list[tuple[str, str]]) -> str:
    """The opening of every tab: 2-4 sentences, then the tensors and their shapes."""
    rows = "\n".join(f"| `{table_cell(name)}` | {table_cell(shape)} |" for name, shape in shapes)
    return f"### {title}\n\n{what}\n\n| tensor | shape |\n|---|---|\n{rows}\n"


def source_block(*objects: object, label: str = "MAX source of this stage") -> None:
    """A collapsed code view of the real MAX module(s) that computed this tab's tensors."""
    code = "\n\n".join(inspect.getsource(obj) for obj in objects)
    with gr.Accordion(label, open=False):
        gr.Code(value=code, language="python", interactive=False)


def export_npz(name: str, arrays: dict[str, np.ndarray]) -> str:
    """Writes arrays to a fresh .npz in the export directory; returns its path for gr.File.

    Only the newest MAX_EXPORT_FILES exports are kept (older ones are deleted here), so
    a class exporting all day leaves a bounded directory; Gradio's copies of them are
    bounded by the app's ``delete_cache``."""
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=EXPORT_DIR, prefix=f"{name}-", suffix=".npz", delete=False)
    with handle:
        np.savez_compressed(handle, **{k: np.asarray(v) for k, v in arrays.items()})
    prune_exports(MAX_EXPORT_FILES)
    return handle.name


def prune_exports(keep: int) -> None:
    """Deletes all but the ``keep`` newest files of the export directory."""
    files = sorted(EXPORT_DIR.glob("*.npz"), key=lambda p: p.stat().st_mtime if p.exists() else 0.0)
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)


@dataclass(frozen=True)
class ExportControls:
    button: gr.Button  # writes the .npz when pressed
    file: gr.File  # the written file, hidden until there is one
    note: gr.Markdown  # why nothing was written (no Run yet)


def export_controls(label: str) -> ExportControls:
    """A tab's export: a button, the file it fills, and a line for "nothing to export yet"."""
    with gr.Column(min_width=200):
        button = gr.Button(label, variant="secondary", size="sm")
        file = gr.File(label="Export", visible=False, interactive=False)
        note = gr.Markdown()
    return ExportControls(button, file, note)


def clamp(value, low: int, high: int, default: int = 0) -> int:
    """An index from a UI control or a raw API call, kept in range (None/NaN -> default)."""
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):
        number = default
    return max(low, min(high, number))


# CommonMark shows any ASCII punctuation character after a backslash as itself.
MARKDOWN_PUNCTUATION = frozenset(string.punctuation)


def md_text(text: str) -> str:
    """User or token text as it reads inside Markdown (a table cell, bold, a sentence): the one
    escaping helper for it. Every ASCII punctuation character is backslash-escaped, so a | cannot
    split a table, a ` open code, a < open HTML, a * or _ start emphasis; line breaks show as ↵/␍
    so a table row stays one row; and a word joiner follows each $, since Gradio's Markdown would
    read "$$ ... $$" as LaTeX (KaTeX reads the rendered text, after the escapes are gone)."""
    escaped = "".join("\\" + c if c in MARKDOWN_PUNCTUATION else c for c in str(text))
    return escaped.replace("$", "$\u2060").replace("\r", "␍").replace("\n", "↵")


def unique_labels(texts: list[str], ids) -> list[str]:
    """Token texts as category labels; two tokens that display alike get their ids added."""
    return [f"{t} (id {i})" if texts.count(t) > 1 else t for t, i in zip(texts, ids)]


def fmt_p(p: float) -> str:
    """A probability for text: 3 decimals, or 3 significant digits when it is tiny."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.2e}"


def shape_text(array: np.ndarray) -> str:
    return "[" + ", ".join(str(d) for d in array.shape) + "]"
