"""Analyses of a trace that read the whole vocabulary, run by the model's MAX analysis graph.

Each returns only what a view shows (top-k rows, one probability per row), and a
[rows, V] array only where a view reads whole rows (the next-token logits at every
position, which a Run's trace leaves out): the graph
(:class:`gpt2_max.modules.GPT2Analysis`) does the [rows, E] @ [E, V] products and the
softmaxes, and hands back K numbers per row.
L blocks, T tokens, E width, K = ``CANDIDATE_TOP_K``, J = ``NEAREST_TOP_K - 1``.

    model = gpt2_max.load("openai-community/gpt2")
    trace = model.trace(ids)
    lens = logit_lens(model, trace)        # top tokens after every block, at every position
    nxt = next_tokens(model, trace, ids)   # top-k, entropy, actual next token's rank per position
    near = nearest_tokens(model, trace["hook_embed"], exclude=ids)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gpt2_max.engine import NEAREST_TOP_K
from gpt2_max.hooks import block_key

LN2 = float(np.log(2.0))


@dataclass(frozen=True)
class Lens:
    """The logit lens: ln_f and the tied unembedding applied to the stream after every block."""

    start: int  # the first position covered (0 unless only the last positions were asked for)
    top_ids: np.ndarray  # [L, T'] the most likely next token after each block
    top_probs: np.ndarray  # [L, T'] its probability
    top_k_ids: np.ndarray  # [L, T', KL] the KL most likely there, best first (top_ids first)
    top_k_probs: np.ndarray  # [L, T', KL] their probabilities
    final_ids: np.ndarray  # [T'] the model's final prediction at each position (argmax of the logits)
    final_probs: np.ndarray  # [L, T'] that token's probability after each block
    final_ranks: np.ndarray  # [L, T'] its rank there (1 = most likely)

    @property
    def final_id(self) -> int:
        """The final prediction at the last position."""
        return int(self.final_ids[-1])


@dataclass(frozen=True)
class NextTokens:
    """The next-token distribution at every position, summarised."""

    top_ids: np.ndarray  # [T, K] most likely next tokens, best first
    top_probs: np.ndarray  # [T, K]
    entropy_bits: np.ndarray  # [T] -sum p log2 p
    actual_probs: np.ndarray  # [T] probability of the token that follows in the text (NaN at the last)
    actual_ranks: np.ndarray  # [T] its rank (0 at the last position, which has no next token)
    logits: np.ndarray  # [T, V] float32, the next-token logits at every position

    @property
    def surprise_bits(self) -> np.ndarray:
        """[T] -log2 p(actual next token); NaN at the last position."""
        with np.errstate(divide="ignore"):
            return -np.log2(self.actual_probs)


@dataclass(frozen=True)
class Nearest:
    """For each vector, the vocabulary rows of ``wte`` closest in direction (cosine)."""

    ids: np.ndarray  # [N, J] best first, the excluded id (the token itself) left out
    cosines: np.ndarray  # [N, J]


def logit_lens(model, trace: Mapping[str, np.ndarray], start: int = 0) -> Lens:
    """The lens over every block at positions start..T-1 (the LENS_TOP_K most likely tokens of
    each row), in one analysis-graph pass over its L x T' rows, position by position: each
    position's rows follow the top token of its last block's row, the model's own final
    prediction there."""
    L = model.config.n_layer
    resid = np.stack([trace[block_key(i, "hook_resid_post")][start:] for i in range(L)], axis=1)  # [T', L, E]
    T = resid.shape[0]
    last_rows = np.repeat(np.arange(T) * L + L - 1, L)  # [T' * L]: the row of each position's last block
    out = model.engine.run_analysis(lens_rows=resid.reshape(T * L, -1), lens_target_rows=last_rows, lens_group=L)

    def by_layer(values: np.ndarray) -> np.ndarray:
        return values.reshape(T, L, *values.shape[1:]).swapaxes(0, 1)  # [T' * L, ...] -> [L, T', ...]

    top_k_ids = by_layer(out["lens_top_ids"])
    top_k_probs = by_layer(out["lens_top_probs"]).astype(np.float64)
    top_ids = top_k_ids[..., 0]
    return Lens(
        start=start,
        top_ids=top_ids,
        top_probs=top_k_probs[..., 0],
        top_k_ids=top_k_ids,
        top_k_probs=top_k_probs,
        final_ids=top_ids[-1].copy(),
        final_probs=by_layer(out["lens_target_prob"]).astype(np.float64),
        final_ranks=by_layer(out["lens_target_rank"]),
    )


def next_tokens(model, trace: Mapping[str, np.ndarray], token_ids: Sequence[int]) -> NextTokens:
    """Top-k, entropy, the actual next token's probability and rank, and the logits, at every position.

    Reads out the last block's stream through ln_f and the unembedding in the analysis
    graph (the same computation as the trace's logits, to float32 rounding), once: the
    candidate rows give the top-k, the entropy, the logits and the actual next token's numbers."""
    L = model.config.n_layer
    rows = trace[block_key(L - 1, "hook_resid_post")]  # [T, E]
    ids = np.asarray(token_ids, dtype=np.int64)
    following = np.append(ids[1:], 0)  # the last position's target is a placeholder, masked below
    out = model.engine.run_analysis(candidate_rows=rows, candidate_targets=following)
    actual_probs = out["candidate_target_prob"].astype(np.float64)
    actual_ranks = out["candidate_target_rank"].copy()
    actual_probs[-1], actual_ranks[-1] = np.nan, 0
    return NextTokens(
        top_ids=out["candidate_ids"],
        top_probs=out["candidate_probs"].astype(np.float64),
        entropy_bits=out["candidate_entropy"].astype(np.float64) / LN2,
        actual_probs=actual_probs,
        actual_ranks=actual_ranks,
        logits=out["candidate_logits"],
    )


def nearest_tokens(model, vectors: np.ndarray, exclude: Sequence[int] | None = None) -> Nearest:
    """The NEAREST_TOP_K - 1 wte rows closest in direction to each vector [N, E].

    ``exclude[i]`` (the token whose own row vector i is) is left out of row i; when it is
    not among the top NEAREST_TOP_K, the last one is dropped instead, so every row has J."""
    vectors = np.asarray(vectors, dtype=np.float32)
    out = model.engine.run_analysis(query_rows=vectors)
    ids, cosines = out["nearest_ids"], out["nearest_cosines"].astype(np.float64)
    keep = np.ones(ids.shape, dtype=bool)
    for row in range(ids.shape[0]):
        own = np.flatnonzero(ids[row] == exclude[row]) if exclude is not None else ()
        keep[row, own[0] if len(own) else -1] = False
    J = NEAREST_TOP_K - 1
    return Nearest(ids=ids[keep].reshape(-1, J), cosines=cosines[keep].reshape(-1, J))
