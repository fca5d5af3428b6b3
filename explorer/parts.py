"""What the page's code may ask of the server, one part at a time.

A tab's ``build`` names the parts it uses as keyword-only parameters (``def build(ctx, *,
tokenizer, analysis)``) and receives those and no others (``parts_for``): its signature is the
list of what it depends on, a test can build it with stand-ins for just those, and a part it
stops using shows as an unused parameter. The wiring every tab shares (``components.common.
AppContext``) takes the parts it needs itself (``lanes``, ``readiness``, ``from_request``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from explorer.service import ExplorerService
from explorer.settings import Settings
from gpt2_max.scheduling import Lanes
from gpt2_max.tokenizer import Tokenizer


@dataclass(frozen=True)
class ServerParts:
    """The server's parts by the names the page's code asks for them."""

    tokenizer: Tokenizer
    settings: Settings  # the host's limits (prompt length, new tokens, draws, patching...)
    allowed_models: tuple[str, ...]  # the host's model first
    # (model name or None for the host's) -> its gpt2_max.GPT2, None while it loads
    model_for: Callable
    # (text, model_name=None) -> the Run of a user's text (validated, traced or pending)
    run: Callable
    # (run, causal=None, ablate=None) -> the same tokens with the mask switched or heads ablated
    variant: Callable
    # (run, kind, **options) -> (analysis result or None, Reason it is missing)
    analysis: Callable
    # (count) -> a context in which that many Runs, started from several threads, share one execution
    runs_together: Callable
    # RunRequest or None -> its Run (from the store, or recomputed)
    from_request: Callable
    # (graph, model name) -> "" when that graph can run now, else what the background load is doing
    compiling: Callable
    # (model name) -> what its Runs' views can show now (explorer.loading.ModelLoader.readiness)
    readiness: Callable
    # () -> lets Runs being traced go first (a long loop calls it between its steps)
    yield_to_runs: Callable
    lanes: Lanes  # the queue lanes events run in (gpt2_max.scheduling)

    @classmethod
    def of(cls, service: ExplorerService) -> ServerParts:
        return cls(
            tokenizer=service.tokenizer,
            settings=service.settings,
            allowed_models=service.allowed_models,
            model_for=service.model_for,
            run=service.run,
            variant=service.variant,
            runs_together=service.runs_together,
            analysis=service.analysis,
            from_request=service.from_request,
            compiling=service.loader.compiling,
            readiness=service.loader.readiness,
            yield_to_runs=service.yield_to_runs,
            lanes=service.lanes,
        )


PART_NAMES = frozenset(field.name for field in dataclasses.fields(ServerParts))


def wanted_parts(fn: Callable) -> tuple[str, ...]:
    """The parts ``fn`` asks for: its keyword-only parameters (each must name a part)."""
    names = tuple(
        name for name, parameter in inspect.signature(fn).parameters.items() if parameter.kind is parameter.KEYWORD_ONLY
    )
    unknown = sorted(set(names) - PART_NAMES)
    if unknown:
        raise TypeError(
            f"{fn.__module__}.{fn.__qualname__} asks for {', '.join(unknown)}, which the server does not offer "
            f"(its parts: {', '.join(sorted(PART_NAMES))})"
        )
    return names


def parts_for(fn: Callable, parts: ServerParts) -> dict[str, object]:
    """The keyword arguments that give ``fn`` exactly the parts it asks for."""
    return {name: getattr(parts, name) for name in wanted_parts(fn)}
