"""An independent GPT-2 forward pass in float64 numpy (picoGPT's shape), with the trace's keys.

Written from the GPT-2 paper's equations, sharing no code with ``gpt2_max``
beyond the hook names, so a mistake in the MAX modules cannot hide here too.
T tokens, E width, H heads, D head width, V vocabulary.
"""

from __future__ import annotations

import numpy as np


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased variance, as torch
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def reference_trace(weights, config, token_ids, causal=True, head_keep=None, z_replace=None, resid_replace=None):
    """Every trace key for ``token_ids``; weights are Hugging Face names, Conv1D [in, out].

    z_replace {(layer, head): [T, D]} sets those heads' outputs; resid_replace
    {(layer, position): [E]} sets the stream entering a block at a position (patching)."""
    z_replace = z_replace or {}
    resid_replace = resid_replace or {}
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    ids = np.asarray(token_ids)
    T, H, D, eps = len(ids), config.n_head, config.head_dim, config.layer_norm_epsilon
    if head_keep is None:
        head_keep = np.ones((config.n_layer, H))
    out = {"hook_embed": w["wte.weight"][ids], "hook_pos_embed": w["wpe.weight"][:T]}
    x = out["hook_embed"] + out["hook_pos_embed"]
    blocked = np.triu(np.ones((T, T), dtype=bool), k=1) if causal else np.zeros((T, T), dtype=bool)
    for i in range(config.n_layer):
        p = f"h.{i}."
        b = f"blocks.{i}."
        for (layer, position), value in resid_replace.items():
            if layer == i:
                x = x.copy()
                x[position] = value
        out[b + "hook_resid_pre"] = x
        h1 = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        out[b + "ln1.hook_normalized"] = h1
        qkv = h1 @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (m.reshape(T, H, D) for m in np.split(qkv, 3, axis=1))
        out[b + "attn.hook_q"], out[b + "attn.hook_k"], out[b + "attn.hook_v"] = q, k, v
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(D)
        scores = np.where(blocked[None], -np.inf, scores)
        out[b + "attn.hook_attn_scores"] = scores
        pattern = softmax(scores)
        out[b + "attn.hook_pattern"] = pattern
        z = np.einsum("hqk,khd->qhd", pattern, v) * np.asarray(head_keep[i])[None, :, None]
        for (layer, head), value in z_replace.items():
            if layer == i:
                z[:, head] = value
        out[b + "attn.hook_z"] = z
        attn_out = z.reshape(T, H * D) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        out[b + "hook_attn_out"] = attn_out
        x = x + attn_out
        out[b + "hook_resid_mid"] = x
        h2 = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        out[b + "ln2.hook_normalized"] = h2
        pre = h2 @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]
        out[b + "mlp.hook_pre"] = pre
        post = gelu_tanh(pre)
        out[b + "mlp.hook_post"] = post
        mlp_out = post @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        out[b + "hook_mlp_out"] = mlp_out
        x = x + mlp_out
        out[b + "hook_resid_post"] = x
    final = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    out["ln_final.hook_normalized"] = final
    out["logits"] = final @ w["wte.weight"].T  # tied output matrix
    return out
