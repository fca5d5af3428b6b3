"""The analyses of a Run the MAX analysis graph makes on demand (the logit lens, every position's
next-token candidates, nearest tokens), each made once per Run and options and kept with it."""

from __future__ import annotations

import logging
import time

from explorer.runs import LIVE, Run
from explorer.settings import MAX_CELLS_PER_AXIS
from gpt2_max import analysis

log = logging.getLogger("explorer")


class Reason(str):
    """Why a view cannot be drawn yet: the whole sentence, which the tab's text says once, and
    ``brief``, what each figure standing in for the view says (a tab may have four of them)."""

    brief: str

    def __new__(cls, text: str, brief: str) -> Reason:
        reason = super().__new__(cls, text)
        reason.brief = brief
        return reason


NEEDS_LIVE_MODEL = Reason(
    "This view is computed by the live model's MAX analysis graph; the model is still loading "
    "(this trace is precomputed). Run again once the status line says the model is ready.",
    "Needs the live model: press Run again once it is ready",
)
# The logit lens covers at most this many positions (the last ones): a screenful of columns,
# and its cost (L x T rows through the [E, V] unembedding, linear in T) stays within what a
# tab may take to open.
LENS_MAX_POSITIONS = MAX_CELLS_PER_AXIS
# What the Blocks tab asks for first: the last 24 positions, as many as the heatmap can write
# each cell's top token in (tab_blocks.LENS_TEXT_MAX_POSITIONS). It costs what it shows, and a
# class of 30 opens it 30 times.
LENS_DEFAULT_POSITIONS = 24


def lens_start(n_tokens: int, positions: int = LENS_DEFAULT_POSITIONS) -> int:
    """The first position a lens over the last ``positions`` (at most LENS_MAX_POSITIONS) covers."""
    return max(0, n_tokens - max(1, min(int(positions), LENS_MAX_POSITIONS)))


ANALYSES = {
    "lens": lambda model, run, positions=LENS_DEFAULT_POSITIONS: analysis.logit_lens(
        model, run.trace, lens_start(run.n_tokens, positions)
    ),
    "next": lambda model, run: analysis.next_tokens(model, run.trace, run.token_ids),
    "nearest": lambda model, run: analysis.nearest_tokens(model, run.trace["hook_embed"], exclude=run.token_ids),
}


class Analyses:
    """Makes a Run's analyses with its live model, a few at a time (``scheduler.analyses``)."""

    def __init__(self, loader, scheduler) -> None:
        self.loader = loader  # explorer.loading.ModelLoader
        self.scheduler = scheduler  # gpt2_max.scheduling.RunScheduler

    def get(self, run: Run, kind: str, **options):
        """-> (result, "") for an analysis of the Run made by the MAX analysis graph, once per Run
        and options; (None, why) while that graph compiles or without the live model.

        kind: "lens" (gpt2_max.analysis.Lens over the last ``positions`` positions, default
        LENS_DEFAULT_POSITIONS, at most LENS_MAX_POSITIONS), "next" (NextTokens) or "nearest"
        (Nearest of every token's wte row, itself left out).
        """
        key = (kind, *sorted(options.items()))
        if key in run.derived:
            return run.derived[key], ""
        model = self.loader.model_for(run.model_name) if run.source == LIVE else None
        if model is None:
            return None, NEEDS_LIVE_MODEL
        waiting = self.loader.compiling("analysis", run.model_name)
        if waiting:
            return None, Reason(
                f"⏳ This view waits for the MAX analysis graph, {waiting}. It draws itself when the graph is ready.",
                "⏳ Waiting for the analysis graph to compile; drawn by itself when it is ready",
            )
        with self.scheduler.analyses:
            if key not in run.derived:
                started = time.perf_counter()
                run.derived[key] = ANALYSES[kind](model, run, **options)
                log.info("analysis %s of %d tokens: %.3f s", key, run.n_tokens, time.perf_counter() - started)
        return run.derived[key], ""
