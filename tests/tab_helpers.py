"""Helpers shared by the tab tests."""

from __future__ import annotations

import re

import numpy as np


def app_context(service):
    """The context the app hands its tabs, on ``service`` (call inside ``gr.Blocks``)."""
    import gradio as gr

    from components.common import AppContext
    from explorer.parts import ServerParts

    return AppContext(parts=ServerParts.of(service), state=gr.State(None))


def build_tab(tab_module, service):
    """Builds one tab as the app does (inside ``gr.Blocks`` and ``gr.Tabs``); -> (demo, its context)."""
    import gradio as gr

    with gr.Blocks() as demo:
        ctx = app_context(service)
        with gr.Tabs():
            ctx.build(tab_module.build)
    return demo, ctx


def build_view(tab_module, service):
    """Builds one tab inside ``gr.Blocks`` and returns its view (render, controls, outputs, export)."""
    _, ctx = build_tab(tab_module, service)
    (view,) = ctx.views.values()
    return view


def refresh_with_defaults(tab_module, service, run):
    """Renders a built tab with its controls' initial values; checks it shows no error."""
    view = build_view(tab_module, service)
    values = view.render(run.request, *[getattr(c, "value", None) for c in view.controls])
    assert len(values) == len(view.outputs)
    assert not any(isinstance(v, str) and v.startswith("⚠️") for v in values), values
    return values


def export_with_defaults(tab_module, service, run, *values):
    """Presses a built tab's export button; returns the path of the .npz it wrote."""
    view = build_view(tab_module, service)
    note, update = view.export(run.request, *values)
    assert note == "" and update["visible"], note
    return update["value"]


def token_text(service):
    return lambda token_id: service.tokenizer.token(token_id).display


def softmax(logits):
    """An independent float64 softmax over the last axis, for checking the tabs' numbers."""
    values = np.asarray(logits, dtype=np.float64)
    exp = np.exp(values - values.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def title_of(fig) -> str:
    """A figure's title and notes as one line of text: the builders wrap them into lines that fit a phone."""
    return re.sub(r"<br>(<sup>)?", " ", str(fig.layout.title.text)).replace("</sup>", "")
