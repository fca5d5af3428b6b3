"""The names and shapes of everything ``model.trace`` returns: the one place they are documented.

Names are TransformerLens' hook names, so a trace reads like its ``ActivationCache``.
One sequence, no batch dimension. T tokens, E n_embd, H heads, D head_dim,
F MLP width (4E), V vocabulary.

| key                                | shape      | what it is                                              |
|------------------------------------|------------|---------------------------------------------------------|
| hook_embed                         | [T, E]     | token embedding rows, ``wte[token_ids]``                |
| hook_pos_embed                     | [T, E]     | position embedding rows, ``wpe[0..T-1]``                |
| blocks.{i}.hook_resid_pre          | [T, E]     | residual stream entering block i                        |
| blocks.{i}.ln1.hook_normalized     | [T, E]     | ``ln_1`` output (normalised, scaled, shifted)           |
| blocks.{i}.attn.hook_q             | [T, H, D]  | queries per head                                        |
| blocks.{i}.attn.hook_k             | [T, H, D]  | keys per head                                           |
| blocks.{i}.attn.hook_v             | [T, H, D]  | values per head                                         |
| blocks.{i}.attn.hook_attn_scores   | [H, T, T]  | q.k / sqrt(D), ``-inf`` where the mask blocks (query, key) |
| blocks.{i}.attn.hook_pattern       | [H, T, T]  | softmax of the scores over keys; rows sum to 1          |
| blocks.{i}.attn.hook_z             | [T, H, D]  | pattern @ v per head, after ablation (ablated heads 0)  |
| blocks.{i}.hook_attn_out           | [T, E]     | ``c_proj`` of the merged heads: what attention adds      |
| blocks.{i}.hook_resid_mid          | [T, E]     | resid_pre + attn_out                                    |
| blocks.{i}.ln2.hook_normalized     | [T, E]     | ``ln_2`` output                                          |
| blocks.{i}.mlp.hook_pre            | [T, F]     | ``c_fc`` output, before GELU                            |
| blocks.{i}.mlp.hook_post           | [T, F]     | tanh-GELU of hook_pre                                   |
| blocks.{i}.hook_mlp_out            | [T, E]     | ``mlp.c_proj`` output: what the MLP adds                 |
| blocks.{i}.hook_resid_post         | [T, E]     | resid_mid + mlp_out, entering block i+1                 |
| ln_final.hook_normalized           | [T, E]     | ``ln_f`` output                                          |
| logits                             | [S, V]     | next-token scores (tied to ``wte``) at the S positions asked for: every one by default, a Run's last only |
"""

from __future__ import annotations

from gpt2_max.config import GPT2Config

EMBED_KEYS = ("hook_embed", "hook_pos_embed")

# Per block, in the order the forward pass computes them.
BLOCK_KEYS = (
    "hook_resid_pre",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)

FINAL_KEYS = ("ln_final.hook_normalized", "logits")


def block_key(layer: int, name: str) -> str:
    """``block_key(3, "attn.hook_pattern") == "blocks.3.attn.hook_pattern"``."""
    return f"blocks.{layer}.{name}"


def trace_keys(n_layer: int) -> tuple[str, ...]:
    """Every key of a trace, in the order the compiled graph returns them."""
    per_block = tuple(block_key(i, name) for i in range(n_layer) for name in BLOCK_KEYS)
    return EMBED_KEYS + per_block + FINAL_KEYS


def trace_shapes(config: GPT2Config, n_tokens: int, logit_positions: int | None = None) -> dict[str, tuple[int, ...]]:
    """The shape of every trace key for a sequence of ``n_tokens`` with logits at
    ``logit_positions`` of them (default: every one)."""
    T, E, H, D = n_tokens, config.n_embd, config.n_head, config.head_dim
    block_shapes = {
        "attn.hook_q": (T, H, D),
        "attn.hook_k": (T, H, D),
        "attn.hook_v": (T, H, D),
        "attn.hook_attn_scores": (H, T, T),
        "attn.hook_pattern": (H, T, T),
        "attn.hook_z": (T, H, D),
        "mlp.hook_pre": (T, config.mlp_dim),
        "mlp.hook_post": (T, config.mlp_dim),
    }
    shapes = {key: (T, E) for key in EMBED_KEYS + ("ln_final.hook_normalized",)}
    for i in range(config.n_layer):
        for name in BLOCK_KEYS:
            shapes[block_key(i, name)] = block_shapes.get(name, (T, E))
    shapes["logits"] = (T if logit_positions is None else logit_positions, config.vocab_size)
    return shapes


def trace_nbytes(config: GPT2Config, n_tokens: int, logit_positions: int | None = None) -> int:
    """Bytes of one float32 trace of ``n_tokens`` (what a cached trace costs in memory)."""
    total = 0
    for shape in trace_shapes(config, n_tokens, logit_positions).values():
        count = 1
        for dim in shape:
            count *= dim
        total += 4 * count
    return total
