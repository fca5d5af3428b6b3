"""Why did it predict that? Direct logit attribution, head detectors and activation patching.

All three read what the MAX trace graph recorded (:mod:`gpt2_max.hooks`); patching runs that
graph again with some activations replaced, through its patch inputs (``model.trace(...,
patch=..., resid_patch=...)``). What is left here is arithmetic on a few rows of the trace.
L blocks, H heads, D head width, E n_embd, T tokens, V vocabulary.

- :func:`logit_attribution` splits one position's logit (or the difference of two logits)
  into the parts the embeddings, every head, every attention bias and every MLP wrote into
  the residual stream, as TransformerLens' direct logit attribution does: the final layer
  norm is linear once its scale is frozen at this position's value, so the parts add up to
  the logit exactly.
- :func:`head_scores` scores every head as a previous-token, duplicate-token and induction
  head from its attention pattern.
- :func:`patch_heads` and :func:`patch_residual` measure how much of a clean run's metric a
  single patched activation restores in a corrupted run.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gpt2_max.errors import InputError

Trace = Mapping[str, np.ndarray]


# ----------------------------------------------------------------- direct logit attribution


@dataclass(frozen=True)
class Attribution:
    """One position's logit (or logit difference), split by the component that wrote it.

    Every part is (component's output at that position) . w, with w = ln_f.weight *
    (wte[token] - wte[minus]) / scale, centred (LayerNorm subtracts each vector's mean), and
    scale = sqrt(var(resid_final) + eps) frozen at this position. ``ln_final_bias`` is
    ln_f.bias . (wte[token] - wte[minus]). The parts sum to ``logit``.
    """

    position: int
    token_id: int
    minus_token_id: int | None
    logit: float  # the trace's logit (difference) at this position, for the check
    embed: float  # hook_embed
    pos_embed: float  # hook_pos_embed
    heads: np.ndarray  # [L, H] each head's z @ its rows of c_proj.weight
    attn_bias: np.ndarray  # [L] c_proj.bias of each attention layer
    mlp: np.ndarray  # [L] hook_mlp_out
    ln_final_bias: float
    scale: float  # the frozen LayerNorm scale sqrt(var + eps)

    def parts(self) -> OrderedDict[str, float]:
        """Component name -> its share, in the order the forward pass writes them."""
        shares: OrderedDict[str, float] = OrderedDict(embed=self.embed, pos_embed=self.pos_embed)
        for layer in range(len(self.mlp)):
            for head, value in enumerate(self.heads[layer]):
                shares[f"blocks.{layer}.attn.head.{head}"] = float(value)
            shares[f"blocks.{layer}.attn.bias"] = float(self.attn_bias[layer])
            shares[f"blocks.{layer}.mlp"] = float(self.mlp[layer])
        shares["ln_final.bias"] = self.ln_final_bias
        return shares

    @property
    def total(self) -> float:
        return float(sum(self.parts().values()))


def attribute(
    model,
    trace: Trace,
    position: int,
    token_id: int,
    minus_token_id: int | None = None,
    logits: np.ndarray | None = None,
) -> Attribution:
    """Direct logit attribution of ``token_id``'s logit (minus ``minus_token_id``'s, if given)
    at ``position``; see :class:`Attribution`. float64 throughout. ``logits``: the [V] logits at
    that position, when the trace does not hold them (a Run's holds its last position's only);
    by default the trace's row of every position's logits."""
    config = model.config
    L, H, D = config.n_layer, config.n_head, config.head_dim
    T = trace["hook_embed"].shape[0]
    if not -T <= position < T:
        raise InputError(f"position {position} is outside this run's {T} tokens")
    position %= T
    V = config.vocab_size
    for token in (token_id, minus_token_id):
        if token is not None and not 0 <= int(token) < V:
            raise InputError(f"token id {token} is outside the vocabulary 0..{V - 1}")
    w = model.weights
    wte = w["wte.weight"]
    direction = wte[int(token_id)].astype(np.float64)  # [E]
    if minus_token_id is not None:
        direction = direction - wte[int(minus_token_id)]
    resid_final = trace[f"blocks.{L - 1}.hook_resid_post"][position].astype(np.float64)  # [E]
    scale = float(np.sqrt(resid_final.var() + config.layer_norm_epsilon))
    readout = w["ln_f.weight"].astype(np.float64) * direction / scale  # [E]
    # (c - mean(c)) . r == c . (r - mean(r)): centre the readout once, not every component.
    readout -= readout.mean()

    def share(vector: np.ndarray) -> float:
        return float(np.asarray(vector, dtype=np.float64) @ readout)

    heads = np.zeros((L, H))
    attn_bias = np.zeros(L)
    mlp = np.zeros(L)
    for layer in range(L):
        c_proj = w[f"h.{layer}.attn.c_proj.weight"].astype(np.float64)  # [H*D, E], rows head-major
        per_head_readout = (c_proj @ readout).reshape(H, D)  # [H, D]
        z = trace[f"blocks.{layer}.attn.hook_z"][position].astype(np.float64)  # [H, D]
        heads[layer] = (z * per_head_readout).sum(axis=1)
        attn_bias[layer] = share(w[f"h.{layer}.attn.c_proj.bias"])
        mlp[layer] = share(trace[f"blocks.{layer}.hook_mlp_out"][position])
    if logits is None:
        if trace["logits"].shape[0] != T:
            raise ValueError("this trace holds the logits of some positions only: pass the position's logits")
        logits = trace["logits"][position]
    logit = float(logits[int(token_id)]) - (0.0 if minus_token_id is None else float(logits[int(minus_token_id)]))
    return Attribution(
        position=position,
        token_id=int(token_id),
        minus_token_id=None if minus_token_id is None else int(minus_token_id),
        logit=logit,
        embed=share(trace["hook_embed"][position]),
        pos_embed=share(trace["hook_pos_embed"][position]),
        heads=heads,
        attn_bias=attn_bias,
        mlp=mlp,
        ln_final_bias=float(w["ln_f.bias"].astype(np.float64) @ direction),
        scale=scale,
    )


def logit_attribution(
    model, trace: Trace, position: int, token_id: int, minus_token_id: int | None = None
) -> OrderedDict[str, float]:
    """Component name (``embed``, ``pos_embed``, ``blocks.{i}.attn.head.{h}``,
    ``blocks.{i}.attn.bias``, ``blocks.{i}.mlp``, ``ln_final.bias``) -> its share of the logit
    of ``token_id`` at ``position`` (minus ``minus_token_id``'s); the shares sum to it."""
    return attribute(model, trace, position, token_id, minus_token_id).parts()


# ------------------------------------------------------------------------------ head detectors

HEAD_SCORE_NAMES = ("previous_token", "duplicate_token", "induction")


def same_token(trace: Trace, token_ids: Sequence[int] | None = None) -> np.ndarray:
    """[T, T] bool, True where positions i and j hold the same token. Without ``token_ids`` it is
    read from the trace: hook_embed rows are copies of wte rows, so equal rows mean equal tokens."""
    if token_ids is not None:
        ids = np.asarray(token_ids)
        return ids[:, None] == ids[None, :]
    # One id per distinct row (not a [T, T, E] comparison: 800 MB of booleans at 1024 tokens).
    _, row_ids = np.unique(trace["hook_embed"], axis=0, return_inverse=True)  # [T, E] -> [T]
    row_ids = row_ids.reshape(-1)
    return row_ids[:, None] == row_ids[None, :]


def detection_patterns(trace: Trace, token_ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """TransformerLens' detection patterns, [T, T] bool each (query i, key j):
    previous_token: j = i - 1;
    duplicate_token: j < i and token[j] == token[i] (an earlier copy of the current token);
    induction: j <= i and token[j - 1] == token[i] with j - 1 < i (the token that followed an
    earlier copy of the current one: what an induction head predicts comes next)."""
    same = same_token(trace, token_ids)
    T = same.shape[0]
    previous = np.eye(T, k=-1, dtype=bool)
    duplicate = np.tril(same, k=-1)
    induction = np.zeros_like(duplicate)
    induction[:, 1:] = duplicate[:, :-1]  # key j + 1 for each earlier copy j of query i's token
    return {"previous_token": previous, "duplicate_token": duplicate, "induction": induction}


def head_scores(model, trace: Trace, token_ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """{"previous_token", "duplicate_token", "induction"} -> [L, H] scores in 0..1.

    A head's score is the attention it pays to the detection pattern's keys (see
    :func:`detection_patterns`), averaged over the queries that have such a key. (TransformerLens'
    ``detect_head`` divides by every query instead, which scales a score by the share of queries
    that have one; on a sequence repeated twice ours equals ARENA's induction-stripe score.)
    NaN when no query has a key to look for (e.g. no token repeats, for the last two)."""
    L = model.config.n_layer
    patterns = np.stack([trace[f"blocks.{layer}.attn.hook_pattern"] for layer in range(L)])  # [L, H, T, T]
    scores = {}
    for name, detect in detection_patterns(trace, token_ids).items():
        queries = detect.any(axis=1)  # [T] queries with at least one key to look for
        if not queries.any():
            scores[name] = np.full(patterns.shape[:2], np.nan)
            continue
        mass = (patterns.astype(np.float64) * detect).sum(axis=-1)  # [L, H, T] attention on those keys
        scores[name] = mass[..., queries].mean(axis=-1)
    return scores


def strongest(grid: np.ndarray, count: int) -> list[tuple[int, int, float]]:
    """The ``count`` largest finite cells of a [R, C] grid (scores, restored shares), largest
    first, as (row, column, value); NaN cells are never listed."""
    flat = np.where(np.isfinite(grid), grid, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:count]
    columns = grid.shape[1]
    return [(int(i) // columns, int(i) % columns, float(flat[i])) for i in order if np.isfinite(flat[i])]


def induction_test_ids(length: int, seed: int = 0, vocab_low: int = 1000, vocab_high: int = 10000) -> list[int]:
    """The standard induction test: ``length`` seeded random token ids, repeated once (2 x length)."""
    half = np.random.default_rng(seed).integers(vocab_low, vocab_high, size=length)
    return np.concatenate([half, half]).tolist()


# --------------------------------------------------------------------------- activation patching


def logit_difference(trace: Trace, position: int, answer_id: int, wrong_id: int) -> float:
    """logit(answer) - logit(wrong) at ``position``: the usual patching metric."""
    logits = trace["logits"][position]
    return float(logits[answer_id]) - float(logits[wrong_id])


# Patched runs handed to the engine at once (it packs them into executions of PACK_ROWS rows).
SWEEP_CHUNK = 48
# Below this clean − corrupted difference (in the metric's units, logits) the shares are float32
# rounding: packed runs differ from single ones by ~2e-5 in a logit difference, 2% of 1e-3.
MIN_METRIC_GAP = 1e-3
# A share is a patch's move of the metric as a fraction of the clean − corrupted difference; when
# single patches move it by more than this many times that difference, the difference is not what
# the patches restore (the prompts barely differ in the metric) and the shares are that noise amplified.
MAX_SHARE = 2.0


@dataclass(frozen=True)
class PatchSweep:
    """How much of the clean metric each patch restores: (patched - corrupted) / (clean - corrupted),
    1 = the clean run's metric, 0 = the corrupted run's. ``restored`` is [L, H] for heads,
    [L, T] for the residual stream; ``metric`` holds the patched runs' raw metric values.
    ``too_close()`` says when the two prompts' metrics are too close for shares to mean anything."""

    restored: np.ndarray
    metric: np.ndarray
    clean_metric: float
    corrupted_metric: float
    seconds: float  # wall time of the sweep's traces
    runs: int

    def too_close(self) -> str:
        """'' when the restored shares can be compared, else why not: the clean and corrupted
        metrics differ by less than MIN_METRIC_GAP, or single patches move the metric by more
        than MAX_SHARE times their difference (shares beyond ±2 on a −1..1 scale)."""
        gap = abs(self.clean_metric - self.corrupted_metric)
        moved = np.abs(self.metric - self.corrupted_metric)
        largest = float(moved[np.isfinite(moved)].max()) if np.isfinite(moved).any() else 0.0
        if gap < MIN_METRIC_GAP:
            return f"the clean and corrupted metrics differ by {gap:.2g}, within float32 rounding"
        if largest > MAX_SHARE * gap:
            return (
                f"the clean and corrupted metrics differ by only {gap:.3g}, while single patches move the "
                f"corrupted metric by up to {largest:.3g} ({largest / gap:.1f}× that difference)"
            )
        return ""


def _check_pair(model, clean_ids: Sequence[int], corrupted_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    clean = model.check_token_ids(clean_ids)
    corrupted = model.check_token_ids(corrupted_ids)
    if len(clean) != len(corrupted):
        raise InputError(
            f"the clean prompt has {len(clean)} tokens and the corrupted one {len(corrupted)}: "
            "patching copies activations position by position, so they must have the same length"
        )
    return clean, corrupted


# progress(runs done, runs in all): told after the clean and corrupted runs and after each chunk.
Progress = Callable[[int, int], None]


def _sweep(
    model,
    clean_ids,
    corrupted_ids,
    metric: Callable[[Trace], float],
    places,
    patch_of,
    progress: Progress | None = None,
) -> PatchSweep:
    """Runs the corrupted prompt once per place with ``patch_of(clean, place)`` (trace() keyword
    arguments), all packed into as few graph executions as fit; places is a grid (list of rows)."""
    report = progress or (lambda done, total: None)
    clean_ids, corrupted_ids = _check_pair(model, clean_ids, corrupted_ids)
    started = time.perf_counter()
    clean, corrupted = model.traces([dict(token_ids=clean_ids), dict(token_ids=corrupted_ids)])
    clean_metric, corrupted_metric = metric(clean), metric(corrupted)
    flat = [place for row in places for place in row]
    values = np.empty(len(flat))
    report(2, len(flat) + 2)
    # Chunks bound the memory of the traces alive at once (each holds its [T, V] logits).
    for start in range(0, len(flat), SWEEP_CHUNK):
        chunk = flat[start : start + SWEEP_CHUNK]
        patched = model.traces([dict(token_ids=corrupted_ids, **patch_of(clean, place)) for place in chunk])
        values[start : start + len(chunk)] = [metric(trace) for trace in patched]
        report(2 + start + len(chunk), len(flat) + 2)
    values = values.reshape(len(places), -1)
    seconds = time.perf_counter() - started
    gap = clean_metric - corrupted_metric
    with np.errstate(invalid="ignore", divide="ignore"):
        restored = (values - corrupted_metric) / gap if gap != 0 else np.full(values.shape, np.nan)
    return PatchSweep(restored, values, clean_metric, corrupted_metric, seconds, values.size + 2)


def patch_heads(
    model, clean_ids, corrupted_ids, metric: Callable[[Trace], float], progress: Progress | None = None
) -> PatchSweep:
    """Every (layer, head) in turn: its hook_z at every position copied from the clean run into
    the corrupted run (one trace each, L x H traces). restored is [L, H]."""
    L, H = model.config.n_layer, model.config.n_head
    places = [[(layer, head) for head in range(H)] for layer in range(L)]
    return _sweep(
        model,
        clean_ids,
        corrupted_ids,
        metric,
        places,
        lambda clean, place: dict(patch=(clean, [place])),
        progress,
    )


def patch_residual(
    model, clean_ids, corrupted_ids, metric: Callable[[Trace], float], progress: Progress | None = None
) -> PatchSweep:
    """Every (layer, position) in turn: blocks.{layer}.hook_resid_pre at that position copied from
    the clean run into the corrupted run (L x T traces). restored is [L, T]."""
    L, T = model.config.n_layer, len(clean_ids)
    places = [[(layer, position) for position in range(T)] for layer in range(L)]
    return _sweep(
        model,
        clean_ids,
        corrupted_ids,
        metric,
        places,
        lambda clean, place: dict(resid_patch=(clean, [place])),
        progress,
    )
