"""Links that reopen a view: the model, the prompt and the compare prompt, the open tab, every control of every tab
(sampling settings and seed, patching prompts and tokens included) and presenter mode, in one
URL parameter, for any visitor, with nothing stored on the server.

A link is ``?view=<token>`` (or ``#view=<token>`` when the token is too long for servers'
request lines): the token is the view as compact JSON, zlib-compressed, in URL-safe base64.
The page's script hands the token to the server, which checks every value against what the
page allows (the host's models, the prompt limit, each slider's range, each dropdown's
choices once the Run has drawn them) and applies only what is valid; everything ignored is
listed in a note above the tabs, never an error page.

The shared controls are found, not declared: every input of an event inside a tab (sliders,
checkboxes, dropdowns, text boxes, numbers), keyed ``<tab>.<name>``. So a control a tab adds
is shared without touching this module, and a link from an older page whose control is gone
opens with a note saying so. Lessons (components.lessons) set the page up through the same
``ShareWiring.apply``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr

from components.common import AppContext, guarded, md_text, user_message
from explorer.runs import RunRequest
from explorer.settings import Settings
from gpt2_max.scheduling import RUN_LANE

LINK_PARAM = "view"
LINK_VERSION = 1
# Links whose token is longer than this go in the fragment (#view=...), which browsers keep to
# themselves: servers and proxies refuse request lines of ~8-16 KB (uvicorn's h11 parser: 16 KB
# for the request line and headers together), while a fragment is bounded only by the browser
# (Chromium: 2 MB). The page's script reads both.
QUERY_MAX_CHARS = 8000
# The JSON keys of a view.
VIEW_KEYS = ("v", "model", "prompt", "compare", "tab", "controls", "present")
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]*$")
# Inputs that are wiring, not settings: the detector grid's click relay (components.interpret).
NOT_SHARED_ELEM_IDS = frozenset({"head-pick"})
SHARED_TYPES = (gr.Slider, gr.Checkbox, gr.Dropdown, gr.Textbox, gr.Number, gr.Radio)


def encode_view(view: dict) -> str:
    """A view (plain JSON data) -> its link token: compact JSON, zlib level 9, URL-safe base64 unpadded."""
    raw = json.dumps(view, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode("utf-8")
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii").rstrip("=")


def decode_view(token: object, max_token_chars: int, max_json_bytes: int) -> tuple[dict, list[str]]:
    """A link token -> (the view's JSON object, or {} when unreadable; why it was not read).

    Refuses before decompressing what could be large: a token over ``max_token_chars``, and
    a decompressed text over ``max_json_bytes`` (a zip bomb stops there)."""
    if not isinstance(token, str) or not token:
        return {}, ["the link's view is empty"]
    if len(token) > max_token_chars:
        return {}, [f"the link's view is {len(token):,} characters, over this page's {max_token_chars:,}"]
    if not TOKEN_CHARS.match(token):
        return {}, ["the link's view has characters a link of this page never has (was it cut or edited?)"]
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, max_json_bytes)
        if inflater.unconsumed_tail:
            return {}, [f"the link's view unpacks to more than {max_json_bytes:,} bytes"]
        if not inflater.eof:
            return {}, ["the link's view is cut short (was the link copied whole?)"]
        view = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, zlib.error, UnicodeDecodeError, RecursionError):
        return {}, ["the link's view could not be read (was it cut or edited?)"]
    if not isinstance(view, dict):
        return {}, ["the link's view is not a view of this page"]
    return view, []


@dataclass(frozen=True)
class SharedControl:
    """One control a link carries: ``key`` is ``<tab id>.<name>``. ``after_render``: a control the
    tab's render also sets (a position dropdown whose choices come with the Run; a slider whose
    range follows the model), so its link value is applied again once the tab has drawn."""

    key: str
    tab_id: str
    component: gr.components.Component
    after_render: bool


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40] or "control"


def shared_controls(demo: gr.Blocks, ctx: AppContext) -> list[SharedControl]:
    """Every setting inside a tab of ``ctx``: an event input of a shareable kind, not marked
    non-interactive, not wiring (NOT_SHARED_ELEM_IDS). In page order, each with a unique key."""
    event_inputs = {id(block) for fn in demo.fns.values() for block in fn.inputs}
    controls: list[SharedControl] = []
    for tab in (block for block in demo.blocks.values() if isinstance(block, gr.Tab)):
        tab_id = str(tab.label).lower()
        view = ctx.views.get(tab_id)
        if view is None:
            continue
        rendered = {id(block) for block in view.outputs}
        taken: set[str] = set()
        for block in _descendants(tab):
            if (
                not isinstance(block, SHARED_TYPES)
                or id(block) not in event_inputs
                or block.interactive is False
                or block.elem_id in NOT_SHARED_ELEM_IDS
            ):
                continue
            name = _slug(block.elem_id.removeprefix(f"{tab_id}-")) if block.elem_id else _slug(block.label)
            while name in taken:
                name += "-2"
            taken.add(name)
            controls.append(SharedControl(f"{tab_id}.{name}", tab_id, block, id(block) in rendered))
    return controls


def _descendants(block) -> list:
    found = []
    for child in getattr(block, "children", []):
        found.append(child)
        found.extend(_descendants(child))
    return found


def _number(value) -> float | None:
    """A finite JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _choice_values(choices) -> list:
    """A dropdown's choices as the values it holds: (label, value) pairs or plain values."""
    return [c[1] if isinstance(c, (tuple, list)) and len(c) == 2 else c for c in choices or []]


def clean_control(component, value, text_limit: int) -> tuple[bool, object, str]:
    """-> (valid, the value to set, why not): a link's value for one control, checked against the
    control's own bounds (a dropdown here: its built choices; run-dependent ones are checked by
    ``clean_choice`` once drawn)."""
    if isinstance(component, gr.Checkbox):
        return (True, value, "") if isinstance(value, bool) else (False, None, "not true or false")
    if isinstance(component, gr.Slider):
        number = _number(value)
        if number is None:
            return False, None, "not a number"
        low, high = float(component.minimum), float(component.maximum)
        if not low <= number <= high:
            return False, None, f"{number:g} is outside {low:g}..{high:g}"
        step = float(component.step or 0)
        return True, int(number) if step.is_integer() and number.is_integer() else number, ""
    if isinstance(component, gr.Number):
        if value is None:
            return True, None, ""
        number = _number(value)
        if number is None:
            return False, None, "not a number"
        low = -math.inf if component.minimum is None else float(component.minimum)
        high = math.inf if component.maximum is None else float(component.maximum)
        if not low <= number <= high or abs(number) > 2**53:
            return False, None, f"{number:g} is out of range"
        return True, int(number) if component.precision == 0 else number, ""
    if isinstance(component, gr.Textbox):
        if not isinstance(value, str):
            return False, None, "not text"
        if len(value) > text_limit:
            return False, None, f"{len(value):,} characters, over the limit of {text_limit:,}"
        return True, value, ""
    if isinstance(component, (gr.Dropdown, gr.Radio)):
        if (
            not isinstance(value, (str, int))
            or isinstance(value, bool)
            or (isinstance(value, str) and len(value) > 200)
        ):
            return False, None, "not one of its choices"
        return True, value, ""
    return False, None, "not a setting a link carries"


def clean_choice(component, value, choices) -> tuple[bool, object]:
    """A dropdown's link value against the choices its tab drew for this Run -> (valid, the value
    the dropdown shows). The link holds what the handlers receive: the index for ``type="index"``."""
    values = _choice_values(choices)
    if getattr(component, "type", "value") == "index":
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(values):
            return True, values[value]
        return False, None
    return (True, value) if value in values else (False, None)


@dataclass
class ShareWiring:
    """The page's link control and restore: built by ``build_share_row``, wired by ``wire``."""

    ctx: AppContext
    prompt: gr.Textbox
    model_choice: gr.Dropdown
    run_note: gr.Markdown
    presenter: gr.Checkbox
    link_box: gr.Textbox  # the full link, shown for copying by hand
    token_box: gr.Textbox  # hidden: the token between the server and the page's script
    note: gr.Markdown  # what a link or lesson set, and what it ignored
    open_tab: gr.Textbox  # hidden: the tab to open once a view is applied (the page's script clicks it)
    settings: Settings  # the host's limits (the request size bounds a link's token)
    allowed_models: tuple[str, ...]  # what a link's model may be
    # (text, model name, compare text) -> (the Run's request, B's request, the note under the prompt); set by ``wire``
    start_run: Callable | None = None
    controls: list[SharedControl] = field(default_factory=list)  # found by ``wire`` once every tab is built
    demo_fns: list = field(default_factory=list)  # the page's events: a redrawn dropdown's handlers are found here
    demo_blocks: list = field(default_factory=list)
    compare: gr.Textbox | None = None  # the compare prompt (components.compare), carried beside the prompt

    def limits(self) -> tuple[int, int]:
        """(longest token, longest JSON): the token travels in a request body (max_request_bytes),
        with room for the rest of the request."""
        token_chars = max(1024, self.settings.max_request_bytes - 16 * 1024)
        return token_chars, 2 * self.settings.max_request_bytes

    # ---------------------------------------------------------------- making a link

    def view_of(self, model_name, prompt_text, tab_id, present, compare_text, *values) -> dict:
        """The page's state as a view: only the controls that differ from their initial values (and
        the compare prompt only when there is one)."""
        changed = {
            control.key: value
            for control, value in zip(self.controls, values, strict=True)
            if value is not None and value != control.component.value and _plain(value)
        }
        view = {
            "v": LINK_VERSION,
            "model": model_name,
            "prompt": prompt_text or "",
            "tab": tab_id or "tokenize",
            "controls": changed,
        }
        if isinstance(compare_text, str) and compare_text.strip():
            view["compare"] = compare_text
        if present:
            view["present"] = True
        return view

    # ---------------------------------------------------------------- applying a view

    def outputs(self) -> list:
        """Every block ``apply`` may set, each once, in a fixed order."""
        blocks = [
            self.model_choice,
            self.prompt,
            *([self.compare] if self.compare is not None else []),
            self.presenter,
            self.note,
            self.open_tab,
            self.ctx.state,
            self.ctx.compare,
            self.ctx.visible,
            self.run_note,
            *(c.component for c in self.controls),
        ]
        for view in self.ctx.views.values():
            blocks += [*view.outputs, view.rendered]
        unique, seen = [], set()
        for block in blocks:
            if id(block) not in seen:
                seen.add(id(block))
                unique.append(block)
        return unique

    def check(self, view: dict, notes: list[str]) -> dict:
        """The valid part of ``view``: {"model", "prompt", "compare", "tab", "present", "controls": {key:
        value}}; what is left out is said in ``notes``."""
        valid: dict = {}
        if view.get("v", LINK_VERSION) != LINK_VERSION:
            notes.append(
                f"the link was made by another version of this page (format {_shown(view.get('v'))}); what still fits is used"
            )
        unknown = [str(k) for k in view if k not in VIEW_KEYS]
        if unknown:
            notes.append("unknown parts left out: " + ", ".join(_shown(k) for k in unknown[:8]))
        model = view.get("model")
        if model is not None:
            if isinstance(model, str) and model in self.allowed_models:
                valid["model"] = model
            else:
                notes.append(f"model {_shown(model)} is not offered here; the page's model is used")
        # Bounded as the prompt box is: the Run checks the rest (its tokens) and says what it cut.
        for key, name, otherwise in (
            ("prompt", "the prompt", "the page's prompt is used"),
            ("compare", "the compare prompt", "it is left empty"),
        ):
            text = view.get(key)
            if text is None:
                continue
            if not isinstance(text, str):
                notes.append(f"{name} is not text; {otherwise}")
            elif len(text) > self.settings.max_prompt_chars:
                notes.append(
                    f"{name} has {len(text):,} characters, over this page's {self.settings.max_prompt_chars:,}; {otherwise}"
                )
            else:
                valid[key] = text
        tab = view.get("tab")
        if tab is not None:
            if isinstance(tab, str) and tab in self.ctx.views:
                valid["tab"] = tab
            else:
                notes.append(f"there is no tab {_shown(tab)}; the first tab is shown")
        if "present" in view:
            if isinstance(view["present"], bool):
                valid["present"] = view["present"]
            else:
                notes.append("presenter mode is not true or false; left as it was")
        controls = view.get("controls", {})
        if not isinstance(controls, dict):
            notes.append("the controls are not a list of settings; all left at their start")
            controls = {}
        by_key = {c.key: c for c in self.controls}
        valid["controls"] = {}
        for key, value in list(controls.items())[: 4 * len(self.controls) + 8]:
            control = by_key.get(key)
            if control is None:
                notes.append(f"no control {_shown(key)} on this page")
                continue
            ok, cleaned, why = clean_control(control.component, value, self.settings.max_prompt_chars)
            if ok:
                valid["controls"][key] = cleaned
            else:
                notes.append(f"{_shown(key)}: {why}; left at its start")
        if len(controls) > 4 * len(self.controls) + 8:
            notes.append(f"{len(controls):,} controls is more than this page has; the rest were not read")
        return valid

    def apply(self, view: dict, notes: list[str], what: str = "This link") -> tuple:
        """Sets the page to ``view`` (checked first): model, prompt and compare prompt, controls,
        presenter mode; runs the prompts; draws the chosen tab with the link's controls, then sets the controls
        its drawing reset (positions) and redraws what they control. -> values of ``outputs()``."""
        valid = self.check(view, notes)
        ctx = self.ctx
        values: dict[int, object] = {}
        settings_by_control = {id(c.component): c for c in self.controls}

        def put(block, value) -> None:
            values[id(block)] = value

        model_name = valid.get("model", self.model_choice.value)
        if "model" in valid:
            put(self.model_choice, model_name)
        prompt_text = valid.get("prompt", self.prompt.value)
        put(self.prompt, prompt_text)
        # A view without a compare prompt opens without one (as a link without a prompt opens the page's).
        compare_text = valid.get("compare", "")
        if self.compare is not None:
            put(self.compare, compare_text)
        if "present" in valid:
            put(self.presenter, valid["present"])
        current = {id(c.component): c.component.value for c in self.controls}
        for key, value in valid["controls"].items():
            control = next(c for c in self.controls if c.key == key)
            current[id(control.component)] = value
            if not control.after_render:
                put(control.component, value)
        request, compare_request, note_text = self.start_run(prompt_text, model_name, compare_text)
        put(self.run_note, note_text)
        tab_id = valid.get("tab", "tokenize" if "tokenize" in ctx.views else next(iter(ctx.views)))
        if isinstance(request, RunRequest):  # else the Run was refused, and the note says why
            compare_request = compare_request if isinstance(compare_request, RunRequest) else None
            put(ctx.state, request)
            put(ctx.compare, compare_request)
            put(ctx.visible, tab_id)
            current[id(ctx.state)] = request
            current[id(ctx.compare)] = compare_request
            self._draw(tab_id, request, current, valid["controls"], settings_by_control, put, notes)
        put(self.open_tab, str(next(t.label for t in self._tabs() if str(t.label).lower() == tab_id)))
        prompts = "prompt and compare prompt" if valid.get("compare", "").strip() else "prompt"
        note = f"🔗 {what} set the page up: model, {prompts}, tab and {len(valid['controls'])} setting(s)."
        if notes:
            note += " **Ignored:** " + "; ".join(md_text(n) for n in notes) + "."
        put(self.note, note)
        return tuple(values.get(id(block), gr.skip()) for block in self.outputs())

    def _draw(self, tab_id, request, current, linked, settings_by_control, put, notes) -> None:
        view = self.ctx.views[tab_id]
        drawn = view.render_if_stale(request, None, *[current.get(id(c), c.value) for c in view.controls])
        for block, value in zip([*view.outputs, view.rendered], drawn, strict=True):
            put(block, value)
        redraw = []
        for block, value in zip(view.outputs, drawn):
            control = settings_by_control.get(id(block))
            if control is None or control.key not in linked:
                continue
            wanted = linked[control.key]
            choices = value.get("choices") if isinstance(value, dict) else None
            if choices is None:  # a slider whose range follows the model: the render's clamped value stands
                drawn_value = value.get("value", wanted) if isinstance(value, dict) else wanted
                if drawn_value != wanted:
                    notes.append(
                        f"{_shown(control.key)}: {_shown(wanted)} is beyond this model; {_shown(drawn_value)} is shown"
                    )
                put(block, value if isinstance(value, dict) and "value" in value else wanted)
                continue
            ok, shown = clean_choice(block, wanted, choices)
            if not ok:
                notes.append(
                    f"{_shown(control.key)}: {_shown(wanted)} is not one of this Run's choices; left at its start"
                )
                current[id(block)] = value.get("value")
                continue
            put(block, {**value, "value": shown})
            current[id(block)] = wanted
            redraw.append(block)
        for block in redraw:  # the handlers a student's pick would call, with the link's values
            for fn in self.demo_fns:
                if (block._id, "input") in fn.targets:
                    results = fn.fn(*[current.get(id(i), getattr(i, "value", None)) for i in fn.inputs])
                    results = results if isinstance(results, tuple) else (results,)
                    for out, result in zip(fn.outputs, results, strict=True):
                        put(out, result)

    def _tabs(self) -> list:
        return [b for b in self.demo_blocks if isinstance(b, gr.Tab)]


def _plain(value) -> bool:
    return isinstance(value, (str, int, float, bool)) and not (isinstance(value, float) and not math.isfinite(value))


def _shown(value) -> str:
    """A value from a link, as a note quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


# The page's script: the link's token from ?view= or #view= (or nothing).
READ_LINK_JS = f"""
() => {{
  const search = new URLSearchParams(window.location.search);
  const hash = new URLSearchParams(window.location.hash.replace(/^#/, ''));
  if (search.get('present') === '1') document.body.classList.add('presenter');
  return [search.get('{LINK_PARAM}') || hash.get('{LINK_PARAM}') || ''];
}}
"""

# The token -> the full link, copied to the clipboard (where the browser allows it) and shown.
COPY_LINK_JS = f"""
(token) => {{
  if (!token) return '';
  const base = window.location.origin + window.location.pathname;
  const link = base + (token.length <= {QUERY_MAX_CHARS} ? '?' : '#') + '{LINK_PARAM}=' + token;
  if (navigator.clipboard) navigator.clipboard.writeText(link).catch(() => {{}});
  return link;
}}
"""

# Clicks the named tab (as a student would: its own select event then finds it drawn).
OPEN_TAB_JS = """
(label) => {
  if (!label) return;
  const tab = [...document.querySelectorAll('[role="tab"]')].find((b) => b.textContent.trim() === label);
  if (tab) { tab.click(); return; }
  const more = [...document.querySelectorAll('button')].find((b) => b.getAttribute('aria-label') === 'More tabs');
  if (more) { more.click(); setTimeout(() => {
    const hidden = [...document.querySelectorAll('button, [role="menuitem"]')].find((b) => b.textContent.trim() === label);
    if (hidden) hidden.click();
  }, 50); }
}
"""

PRESENTER_JS = "(on) => { document.body.classList.toggle('presenter', Boolean(on)); }"

# Presenter mode: the whole page larger for a projector (figures included: zoom scales Plotly's
# drawing and its hover positions together in Chromium and Firefox).
PRESENTER_CSS = """
body.presenter .gradio-container { zoom: 1.35; }
body.presenter .prose { font-size: 1.15em; }
"""


def build_share_row(
    ctx: AppContext, prompt, model_choice, run_note, compare=None, *, settings: Settings, allowed_models: tuple
) -> ShareWiring:
    """The link controls, placed where this is called (above the tabs; built through ``ctx.build``);
    ``compare``: the compare prompt's box, which a link carries beside the prompt."""
    with gr.Row(elem_id="share-row"):
        gr.Button("🔗 Copy link to this view", size="sm", elem_id="copy-link", scale=0, min_width=220)
        presenter = gr.Checkbox(
            label="Presenter mode (larger text and figures)",
            value=False,
            elem_id="presenter-mode",
            scale=0,
            min_width=260,
        )
        link_box = gr.Textbox(
            label="Link to this view",
            placeholder="The link appears here (and in your clipboard)",
            max_lines=1,
            interactive=False,
            elem_id="share-link",
            buttons=["copy"],
            scale=3,
        )
    token_box = gr.Textbox(visible=False, elem_id="share-token")
    open_tab = gr.Textbox(visible=False, elem_id="share-open-tab")
    note = gr.Markdown(elem_id="share-note")
    return ShareWiring(
        ctx,
        prompt,
        model_choice,
        run_note,
        presenter,
        link_box,
        token_box,
        note,
        open_tab,
        settings,
        tuple(allowed_models),
        compare=compare,
    )


def wire(share: ShareWiring, demo: gr.Blocks, start_run: Callable, copy_button_id: str = "copy-link") -> None:
    """Finds the shared controls (call once every tab is built) and wires copying and restoring.
    ``start_run(text, model name, compare text)`` -> (request, B's request, note): the app's Run,
    which a restored view runs."""
    ctx = share.ctx
    share.start_run = start_run
    share.controls = shared_controls(demo, ctx)
    share.demo_fns = list(demo.fns.values())
    share.demo_blocks = list(demo.blocks.values())
    copy_button = next(b for b in demo.blocks.values() if isinstance(b, gr.Button) and b.elem_id == copy_button_id)
    # The compare prompt's value is "" on a page without its box (a gr.State stands in for it).
    compare_box = share.compare if share.compare is not None else gr.State("")
    inputs = [
        share.model_choice,
        share.prompt,
        ctx.visible,
        share.presenter,
        compare_box,
        *(c.component for c in share.controls),
    ]

    @guarded("text")
    def make_token(*values):
        return encode_view(share.view_of(*values))

    copy_button.click(make_token, inputs, [share.token_box], queue=False, api_name="share_link").then(
        None,
        [share.token_box],
        [share.link_box],
        js=COPY_LINK_JS,
    )
    share.presenter.change(None, [share.presenter], None, js=PRESENTER_JS)

    outputs = share.outputs()

    def restore(token):
        if not token:
            return tuple(gr.skip() for _ in outputs)
        view, notes = decode_view(token, *share.limits())
        return share.apply(view, notes)

    demo.load(
        _restore_guard(restore, outputs, share.note),
        [share.token_box],
        outputs,
        js=READ_LINK_JS,
        **ctx.lane(RUN_LANE),
    ).then(None, [share.open_tab], None, js=OPEN_TAB_JS)


def _restore_guard(restore: Callable, outputs: list, note) -> Callable:
    """``restore`` whose failure leaves the page as it opened, with the note saying so."""
    where = next(i for i, block in enumerate(outputs) if block is note)

    def safe(token):
        try:
            return restore(token)
        except Exception as error:  # noqa: BLE001 - a link never opens an error page
            values = [gr.skip() for _ in outputs]
            values[where] = f"🔗 This link could not be applied: {md_text(user_message(error))}"
            return tuple(values)

    return safe
