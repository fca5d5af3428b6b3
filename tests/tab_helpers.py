"""Helpers shared by the tab tests."""

from __future__ import annotations

import numpy as np


def build_tab(tab_module, service):
    """Builds one tab inside ``gr.Blocks``; returns its Run listener (refresh, inputs, outputs)."""
    import gradio as gr

    from components.common import AppContext

    with gr.Blocks():
        ctx = AppContext(service=service, state=gr.State(None))
        tab_module.build(ctx)
    (refresh, inputs, outputs, _api_name), = ctx.run_listeners
    return refresh, inputs, outputs


def refresh_with_defaults(tab_module, service, run):
    """Runs a built tab's refresh with its controls' initial values; checks it shows no error."""
    refresh, inputs, outputs = build_tab(tab_module, service)
    values = refresh(run.request, *[getattr(c, "value", None) for c in inputs[1:]])
    assert len(values) == len(outputs)
    assert not any(isinstance(v, str) and v.startswith("⚠️") for v in values), values
    return values


def token_text(service):
    return lambda token_id: service.tokenizer.token(token_id).display


def softmax(logits):
    """An independent float64 softmax over the last axis, for checking the tabs' numbers."""
    values = np.asarray(logits, dtype=np.float64)
    exp = np.exp(values - values.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)
