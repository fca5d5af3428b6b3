"""Each tab receives only the server's parts it uses (explorer.parts): what its ``build`` names.

The app builds every tab through ``AppContext.build``, which passes a tab the parts its
keyword-only parameters name; the context's own wiring keeps the few it needs. Here every tab is
built and drawn on a context whose other parts refuse any use, so a tab that reached past its
signature (to ``ctx.parts``) fails; and every part a tab names is one it uses.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from pathlib import Path

import gradio as gr
import pytest

import app
from components import interpret, lessons, share
from components.common import AppContext
from explorer.parts import PART_NAMES, ServerParts, wanted_parts

# What AppContext's wiring reads of the parts itself (lanes, the view keys, the Run a State names).
WIRING_PARTS = {"lanes", "readiness", "from_request", "yield_to_runs"}
BUILDERS = [tab.build for tab in app.TABS] + [interpret.patching_section, share.build_share_row, lessons.wire]


class Refused:
    """A part a tab did not ask for: any use of it fails the test."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attribute):
        raise AssertionError(f"a tab used the part {self.name!r} (.{attribute}) without naming it in its build")

    def __call__(self, *args, **kwargs):
        raise AssertionError(f"a tab called the part {self.name!r} without naming it in its build")


def parts_refusing_all_but(service, names: set[str]) -> ServerParts:
    real = ServerParts.of(service)
    kept = names | WIRING_PARTS
    return ServerParts(
        **{
            field.name: getattr(real, field.name) if field.name in kept else Refused(field.name)
            for field in dataclasses.fields(ServerParts)
        }
    )


@pytest.mark.parametrize("tab", app.TABS, ids=lambda tab: tab.__name__.split(".")[-1])
def test_a_tab_builds_and_draws_with_only_the_parts_it_names(tab, explorer_service, tiny_run):
    names = set(wanted_parts(tab.build))
    if tab in (app.tab_attention, app.tab_blocks):  # the patching section they build inside asks for its own
        names |= set(wanted_parts(interpret.patching_section))
    with gr.Blocks():
        ctx = AppContext(parts=parts_refusing_all_but(explorer_service, names), state=gr.State(None))
        with gr.Tabs():
            ctx.build(tab.build)
    (view,) = ctx.views.values()
    values = view.render(tiny_run.request, *[getattr(c, "value", None) for c in view.controls])
    assert len(values) == len(view.outputs)
    assert not any(isinstance(v, str) and v.startswith("⚠️") for v in values), values


@pytest.mark.parametrize("build", BUILDERS, ids=lambda fn: f"{fn.__module__}.{fn.__name__}")
def test_every_part_a_builder_names_is_one_it_uses(build):
    tree = ast.parse(textwrap.dedent(inspect.getsource(build)))
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    named = set(wanted_parts(build))
    assert named <= PART_NAMES
    assert named <= used, f"{build.__name__} names {sorted(named - used)} but does not use them"


def _is_context(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "ctx") or (isinstance(node, ast.Attribute) and node.attr == "ctx")


def test_no_tab_reaches_the_parts_past_its_signature():
    """Only the shared wiring (components/common.py) reads the context's parts."""
    import components

    offenders = []
    for path in sorted(Path(inspect.getfile(components)).parent.glob("*.py")):
        if path.name == "common.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            # ctx.parts, share.ctx.parts, or a service handed around
            reaches_parts = isinstance(node, ast.Attribute) and node.attr == "parts" and _is_context(node.value)
            if reaches_parts or (isinstance(node, ast.Name) and node.id == "service"):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders
