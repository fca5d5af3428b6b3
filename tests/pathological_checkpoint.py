"""A tiny GPT-2 with the real GPT-2's pathologies, from constructed weights.

Random N(0, 0.02) weights (``tiny_checkpoint``) make every distribution flat and every norm
alike; ``openai-community/gpt2`` is not like that (``shared/docs/real-gpt2.md``), and a plot
that reads well on random weights can show one bright cell on a flat field on the real model.
This checkpoint has TINY_CONFIG's shape (so the suite's compiled MAX graphs are reused) and
``tiny_weights``' random bulk, with the real model's phenomena planted in it:

1. **Position 0's residual stream is dominated by a few huge dimensions.** ``wpe[0]`` is its
   random row times POSITION_0_BULK (its other numbers are larger too, as in the real model),
   plus SPIKES: +30 and −20 in two dimensions, ~1,000× the bulk's |x| of ~0.02. After a
   LayerNorm, position 0 is then nearly a one-hot vector (≈ 6.6 in SPIKE_DIM, as GPT-2's
   first token is ≈ √768 in dim 447).
2. **Block 0's MLP writes the spike bigger** (the real model's outlier dims grow through the
   first blocks): BOS_NEURONS read SPIKE_DIM with a negative bias, so they fire (≈ 12) at
   position 0 only (elsewhere their pre-activation is about −8 and GELU gives ≈ 0), and their
   output rows add ≈ 24 each to SPIKE_DIM. Heavy-tailed MLP units: the largest activations of
   block 0 sit in two neurons at one position.
3. **Attention sinks:** SINK_HEADS park almost all their attention on position 0. Their key
   reads SPIKE_DIM (``W_k[SPIKE_DIM] = SINK_KEY * u``, u a unit vector over the head's D
   dims) and their query is a constant bias ``SINK_QUERY * u``, so the scaled score of key j
   is ``SINK_KEY * SINK_QUERY * LN(x_j)[SPIKE_DIM] / √D``: ≈ 6 for position 0 (LN ≈ 6.6)
   and ≈ ±0.9 for the others (LN ≈ N(0, 1)): softmax gives position 0 about 0.95 of each
   query's attention, and the rest still shows where the head would read.
4. **LayerNorm scale outliers:** ``ln_1``, ``ln_2`` and ``ln_f`` scales are LN_OUTLIER_SCALE
   (vs ~1) in LN_OUTLIER_DIMS, as GPT-2's LayerNorm weights are in a few dimensions; the
   normalised streams are then ~12× larger there at every position.

``tests/test_pathological.py`` checks that these phenomena are really in the MAX trace and
that every tab stays readable on it. ``write_pathological_hub_cache`` writes it in the Hub's
cache layout (``tiny_checkpoint.write_hub_cache``), so ``gpt2_max.load(PATHOLOGICAL_REPO_ID)``
or ``app.py --model explorer-tests/pathological-gpt2`` (with HF_HUB_CACHE pointing there) load
it like a download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tiny_checkpoint import TINY_CONFIG, TINY_SEED, tiny_weights, write_hub_cache

from gpt2_max.config import GPT2Config

PATHOLOGICAL_REPO_ID = "explorer-tests/pathological-gpt2"

SPIKES = {7: 30.0, 23: -20.0}  # wpe[0][dim] += value: ~1,000x the bulk's |x| (~0.02)
SPIKE_DIM = 7  # the spike the sinks and BOS_NEURONS read
POSITION_0_BULK = 8.0  # wpe[0]'s random numbers are this much larger than other rows'
BOS_NEURONS = (17, 201)  # block 0 MLP neurons that fire at position 0 only
BOS_NEURON_GAIN = 3.0  # c_fc weight from SPIKE_DIM: pre ≈ 3 * 6.6 - 8 ≈ 12 at position 0
BOS_NEURON_BIAS = -8.0  # ... and ≈ 3 * N(0, 1) - 8 elsewhere: GELU ≈ 0
BOS_NEURON_WRITE = 2.0  # c_proj weight to SPIKE_DIM: + ≈ 24 per neuron at position 0
SINK_HEADS = ((0, 1), (1, 0), (1, 2))  # (layer, head)
SINK_KEY = 1.5
SINK_QUERY = 2.4
LN_OUTLIER_DIMS = (11, 37)  # not SPIKE_DIM: the sinks' keys read an ordinary scale
LN_OUTLIER_SCALE = 12.0


def pathological_weights(config: GPT2Config = TINY_CONFIG, seed: int = TINY_SEED) -> dict[str, np.ndarray]:
    """``tiny_weights`` with the four phenomena of the module docstring planted (float32)."""
    weights = {name: value.astype(np.float64) for name, value in tiny_weights(config, seed).items()}
    E, D = config.n_embd, config.head_dim

    # 1. Position 0: a larger row with two huge dimensions.  wpe: [P, E]
    wpe = weights["wpe.weight"]
    wpe[0] *= POSITION_0_BULK
    for dim, value in SPIKES.items():
        wpe[0, dim] += value

    # 2. Block 0's MLP: neurons that fire at position 0 only and write SPIKE_DIM bigger.
    c_fc_w, c_fc_b = weights["h.0.mlp.c_fc.weight"], weights["h.0.mlp.c_fc.bias"]  # [E, F] (Conv1D: in, out), [F]
    c_proj_w = weights["h.0.mlp.c_proj.weight"]  # [F, E]
    for neuron in BOS_NEURONS:
        c_fc_w[:, neuron] = 0.0
        c_fc_w[SPIKE_DIM, neuron] = BOS_NEURON_GAIN
        c_fc_b[neuron] = BOS_NEURON_BIAS
        c_proj_w[neuron, :] = 0.0
        c_proj_w[neuron, SPIKE_DIM] = BOS_NEURON_WRITE

    # 3. Sink heads. c_attn: weight [E, 3E] with columns [q | k | v], head h at h*D..(h+1)*D; bias [3E].
    u = np.ones(D) / np.sqrt(D)  # a unit direction in the head's D dims
    for layer, head in SINK_HEADS:
        w, b = weights[f"h.{layer}.attn.c_attn.weight"], weights[f"h.{layer}.attn.c_attn.bias"]
        q_cols = slice(head * D, (head + 1) * D)
        k_cols = slice(E + head * D, E + (head + 1) * D)
        w[:, q_cols] = 0.0  # the same query at every position ...
        b[q_cols] = SINK_QUERY * u  # ... pointing along u
        w[:, k_cols] = 0.0
        w[SPIKE_DIM, k_cols] = SINK_KEY * u  # the key is large along u where LN(x)[SPIKE_DIM] is
        b[k_cols] = 0.0

    # 4. LayerNorm scale outliers in every LayerNorm.  [E] each
    ln_names = [f"h.{i}.{ln}.weight" for i in range(config.n_layer) for ln in ("ln_1", "ln_2")] + ["ln_f.weight"]
    for name in ln_names:
        weights[name][list(LN_OUTLIER_DIMS)] = LN_OUTLIER_SCALE

    return {name: value.astype(np.float32) for name, value in weights.items()}


def write_pathological_hub_cache(cache_dir: Path, repo_id: str = PATHOLOGICAL_REPO_ID) -> Path:
    """Writes the pathological checkpoint as a Hub cache entry; returns its snapshot directory."""
    return write_hub_cache(cache_dir, repo_id, TINY_CONFIG, weights=pathological_weights())
