"""What every tab shares: the app context, the intro block, the MAX source viewer, exports, error handling."""

from __future__ import annotations

import functools
import inspect
import logging
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from gpt2_max.errors import ExplorerError

from components.plots import message_figure
from components.run import ExplorerService, Run

log = logging.getLogger("explorer")

NO_RUN = "Type a prompt (or pick an example) and press Run."
EXPORT_DIR = Path(tempfile.gettempdir()) / "gpt2-explorer-exports"


@dataclass
class AppContext:
    """Handed to every tab's ``build``: the service, the shared state and the Run hooks."""

    service: ExplorerService
    state: gr.State  # the current Run's request (plain data)
    run_listeners: list[tuple[Callable, list, list, str]] = field(default_factory=list)

    def on_run(self, fn: Callable, inputs: list, outputs: list) -> None:
        """Registers a refresh to chain after every Run (app.py wires them).

        Its API name is ``render_<tab>`` (from the tab module's name), so a raw
        API client can call it too.
        """
        tab = fn.__module__.rsplit(".", 1)[-1].removeprefix("tab_")
        self.run_listeners.append((fn, inputs, outputs, f"render_{tab}"))

    def current(self, request: dict | None) -> Run | None:
        return self.service.from_request(request)


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


def guarded(*outputs: str) -> Callable:
    """Wraps a handler whose outputs are of the given kinds ("plot", "text" or "keep").

    On any error the handler's plots show the message, its first text output
    says what happened, and "keep" outputs are left as they were, so the page
    stays usable and no traceback reaches it. Generator handlers (streaming)
    stay generators, so Gradio still streams them.
    """

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


def intro(title: str, what: str, shapes: list[tuple[str, str]]) -> str:
    """The opening of every tab: 2-4 sentences, then the tensors and their shapes."""
    rows = "\n".join(f"| `{name}` | {shape} |" for name, shape in shapes)
    return f"### {title}\n\n{what}\n\n| tensor | shape |\n|---|---|\n{rows}\n"


def source_block(*objects: object, label: str = "MAX source of this stage") -> None:
    """A collapsed code view of the real MAX module(s) that computed this tab's tensors."""
    code = "\n\n".join(inspect.getsource(obj) for obj in objects)
    with gr.Accordion(label, open=False):
        gr.Code(value=code, language="python", interactive=False)


def export_npz(name: str, arrays: dict[str, np.ndarray]) -> str:
    """Writes arrays to a fresh .npz in the export directory; returns its path for gr.File."""
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=EXPORT_DIR, prefix=f"{name}-", suffix=".npz", delete=False)
    with handle:
        np.savez_compressed(handle, **{k: np.asarray(v) for k, v in arrays.items()})
    return handle.name


def clamp(value, low: int, high: int, default: int = 0) -> int:
    """An index from a UI control or a raw API call, kept in range (None/NaN -> default)."""
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):
        number = default
    return max(low, min(high, number))


def md_text(text: str) -> str:
    """Token text safe inside markdown (tables, bold)."""
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>~" else c for c in text)


def unique_labels(texts: list[str], ids) -> list[str]:
    """Token texts as category labels; two tokens that display alike get their ids added."""
    return [f"{t} (id {i})" if texts.count(t) > 1 else t for t, i in zip(texts, ids)]


def fmt_p(p: float) -> str:
    """A probability for text: 3 decimals, or 3 significant digits when it is tiny."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.2e}"


def shape_text(array: np.ndarray) -> str:
    return "[" + ", ".join(str(d) for d in array.shape) + "]"
