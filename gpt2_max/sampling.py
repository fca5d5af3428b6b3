"""Turning next-token logits into a choice: temperature, top-k, top-p, in that order.

The order is Hugging Face's (``TemperatureLogitsWarper``, then ``TopKLogitsWarper``,
then ``TopPLogitsWarper``):

1. temperature: divide the logits by T (T = 0 means greedy: take the argmax; a tiny T
   comes to the same, see ``softmax``);
2. top-k: keep the k most likely tokens (k = 0 keeps all);
3. top-p: of those, keep the smallest set, most likely first, whose probability
   reaches p (p = 1 keeps all); the most likely token is always kept;
4. renormalise what is kept and draw one token with the seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpt2_max.errors import InputError

# How many of the most likely tokens a step reports for display.
REPORTED_CANDIDATES = 20


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1 = no top-p filter
    seed: int | None = None  # None draws a fresh seed

    def __post_init__(self) -> None:
        checks = (
            (
                np.isfinite(self.temperature) and 0.0 <= self.temperature <= 100.0,
                "temperature must be between 0 and 100",
            ),
            (isinstance(self.top_k, (int, np.integer)) and self.top_k >= 0, "top_k must be a whole number >= 0"),
            (np.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (
                self.seed is None or (isinstance(self.seed, (int, np.integer)) and 0 <= self.seed < 2**63),
                "seed must be a whole number >= 0",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise InputError(message)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float64 softmax of ``logits / temperature`` over the last axis: a row [V] or rows [T, V].

    The maximum is subtracted before the division, so every scaled value is <= 0 for any
    temperature > 0 and the largest is exactly 0: a tiny temperature (1e-40) gives the argmax,
    ties shared, where dividing first gives inf - inf = NaN."""
    shifted = np.asarray(logits, dtype=np.float64)
    with np.errstate(over="ignore"):  # (x - max) / T below -1.8e308 is -inf: exp gives 0
        shifted = (shifted - shifted.max(axis=-1, keepdims=True)) / temperature
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _most_likely_first(probs: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest probabilities, largest first.

    argpartition + a sort of ``count`` items instead of sorting all V = 50,257:
    this runs once per generated token.
    """
    if count >= len(probs):
        return np.argsort(-probs, kind="stable")
    top = np.argpartition(-probs, count - 1)[:count]
    return top[np.argsort(-probs[top], kind="stable")]


def filtered_distribution(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """The probabilities a token is drawn with, [V] float64 summing to 1 (0 where filtered out)."""
    if settings.temperature == 0.0:
        probs = np.zeros(len(logits))
        probs[int(np.argmax(logits))] = 1.0
        return probs
    probs = softmax(logits, settings.temperature)
    top_k = settings.top_k if 0 < settings.top_k < len(probs) else 0
    if top_k == 0 and settings.top_p >= 1.0:
        return probs
    order = _most_likely_first(probs, top_k or len(probs))  # the top-k survivors, most likely first
    kept = probs[order] / probs[order].sum()
    if settings.top_p < 1.0:
        # Keep a token while the mass before it is still short of p: the smallest
        # prefix whose mass reaches p, and always the first token.
        before = np.cumsum(kept) - kept
        order = order[before < settings.top_p]
    filtered = np.zeros(len(probs))
    filtered[order] = probs[order]
    return filtered / filtered.sum()


@dataclass(frozen=True)
class SampleStep:
    """One generated token and the distributions it was drawn from."""

    token_id: int
    position: int  # where the token lands in the sequence
    candidate_ids: np.ndarray  # [N] the most likely tokens before filtering, most likely first
    candidate_probs: np.ndarray  # [N] their probabilities at temperature 1, no filters
    candidate_filtered: np.ndarray  # [N] their probabilities after temperature, top-k, top-p
    kept: int  # how many tokens survive the filters
    chosen_prob: float  # probability of the drawn token after the filters
    logits: np.ndarray | None = None  # [V] raw next-token logits, when asked for


def choose(logits: np.ndarray, settings: SamplingSettings, rng: np.random.Generator, position: int) -> SampleStep:
    """Applies the filters to ``logits`` [V] and draws a token."""
    raw = softmax(logits)
    filtered = filtered_distribution(logits, settings)
    if settings.temperature == 0.0:
        token = int(np.argmax(filtered))
    else:
        # Inverse-CDF draw: one uniform number per step, so a seed repeats exactly.
        cumulative = np.cumsum(filtered)
        token = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        token = min(token, len(filtered) - 1)
        while filtered[token] == 0.0:  # rounding at the top edge of the CDF
            token -= 1
    top = _most_likely_first(raw, REPORTED_CANDIDATES)
    return SampleStep(
        token_id=token,
        position=position,
        candidate_ids=top,
        candidate_probs=raw[top],
        candidate_filtered=filtered[top],
        kept=int(np.count_nonzero(filtered)),
        chosen_prob=float(filtered[token]),
    )
