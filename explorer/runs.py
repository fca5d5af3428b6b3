"""A Run of the model on a user's text, and the one request that reproduces it.

A ``RunRequest`` goes unchanged from the page (``gr.State`` holds it: a few hundred bytes per
student) through the service and the trace store (``key``) to the engine (``trace_options``, the
arguments of ``GPT2.traces``). It is checked once, where it is made; a Run is the request plus
its trace (plain numpy data, never the model).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from gpt2_max.config import GPT2Config
from gpt2_max.errors import InputError
from gpt2_max.tokenizer import Token

LIVE = "live"
PRECOMPUTED = "precomputed"
# A Run pressed while its model loads: its tokens (the Tokenize tab needs only the tokenizer) and no
# trace; the app traces it live once the model is ready.
PENDING = "pending"
SOURCES = (LIVE, PRECOMPUTED, PENDING)


@dataclass(frozen=True)
class RunRequest:
    """What a Run is of: the text, its token ids, the model, and the experiment (the causal mask
    on or off, heads ablated), with where its trace comes from and a note on how the text was cut.
    Immutable and normalised on creation (ids as ints, ablated heads sorted and unique)."""

    text: str
    token_ids: tuple[int, ...]
    model: str
    causal: bool = True
    ablate: tuple[tuple[int, int], ...] = ()
    source: str = LIVE
    notice: str = ""  # e.g. "cut from 900 to 256 tokens"

    def __post_init__(self) -> None:
        try:
            ids = tuple(int(i) for i in self.token_ids)
            heads = tuple(sorted({(int(layer), int(head)) for layer, head in self.ablate}))
        except (TypeError, ValueError) as error:
            raise InputError(f"a Run's token ids and ablated (layer, head) pairs must be integers ({error})") from error
        if self.source not in SOURCES:
            raise InputError(f"a Run's source is one of {', '.join(SOURCES)}, not {self.source!r}")
        object.__setattr__(self, "token_ids", ids)
        object.__setattr__(self, "ablate", heads)
        object.__setattr__(self, "causal", bool(self.causal))

    @property
    def key(self) -> str:
        """The trace store's key: what changes the trace (the model, ids and experiment), not the
        text's notes."""
        raw = f"{self.model}|{list(self.token_ids)}|{self.causal}|{list(self.ablate)}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def trace_options(self) -> dict:
        """The engine's arguments for this Run (``GPT2.traces``). Logits at the last position only:
        the views that read other positions get them from the analysis graph, which a class
        opening one tab at a time can wait for."""
        return dict(token_ids=self.token_ids, causal=self.causal, ablate=self.ablate, logit_positions=(-1,))

    def but(self, **changes) -> RunRequest:
        """The same request with ``changes`` (e.g. ``causal=False``, ``source=LIVE``)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Run:
    """A request's trace, with what the tabs need to label it."""

    request: RunRequest
    tokens: tuple[Token, ...]
    trace: dict[str, np.ndarray]
    config: GPT2Config | None  # None while PENDING
    seconds: float = 0.0  # from asking for the trace to having it (waiting for a running batch included)
    batched: int = 1  # how many Runs the trace's MAX execution served (dynamic batching)
    # Analyses of this trace made on demand (explorer.analyses), kept with it.
    derived: dict = field(default_factory=dict, compare=False, repr=False)

    text = property(lambda self: self.request.text)
    token_ids = property(lambda self: self.request.token_ids)
    model_name = property(lambda self: self.request.model)
    causal = property(lambda self: self.request.causal)
    ablate = property(lambda self: self.request.ablate)
    source = property(lambda self: self.request.source)
    notice = property(lambda self: self.request.notice)

    @property
    def n_tokens(self) -> int:
        return len(self.request.token_ids)

    @cached_property
    def labels(self) -> list[str]:
        """One unique axis label per position: "3 ␣cat" (position first, so repeats stay apart).

        Computed once per Run: the tabs index it inside per-position loops."""
        return [f"{i} {t.display}" for i, t in enumerate(self.tokens)]
