"""GPT-2 as MAX modules, one per stage, named as in Hugging Face.

Shape legend (one sequence, no batch dimension):
    T  tokens in the sequence          E  n_embd, the residual-stream width
    P  tokens already in the KV cache  H  attention heads, D = E / H per head
    V  vocabulary size                 F  MLP hidden width (4E)
    L  number of blocks

Parameter names match Hugging Face's GPT-2 key for key (``wte.weight``,
``h.0.attn.c_attn.weight``, ...), so a checkpoint loads with no renaming. The
``Conv1D`` layers take GPT-2's dense weights transposed, ``[out, in]`` (see
:class:`Conv1D`); the engine makes that copy once for every graph.

Every module records what it computes through a ``Recorder`` under
TransformerLens' hook names (see :mod:`gpt2_max.hooks`). The trace graph
returns those recordings; the decode graph passes a recorder that keeps only
the key/value rows it needs for the cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from max.dtype import DType
from max.experimental import functional as F
from max.experimental.nn import Module, ModuleList
from max.experimental.tensor import Tensor

from gpt2_max.config import GPT2Config
from gpt2_max.hooks import trace_keys

# record(hook_name, tensor) stores one intermediate of the forward pass.
Recorder = Callable[[str, Tensor], None]


def ignore(_name: str, _value: Tensor) -> None:
    """A recorder that keeps nothing."""


def _swap_first_axes(x: Tensor) -> Tensor:
    """[A, B, C] -> [B, A, C]. When A or B is 1 (a one-token trace) the element order
    does not change, so a reshape does it without a copy kernel."""
    a, b, c = x.shape
    if a == 1 or b == 1:
        return x.reshape([b, a, c])
    return x.permute([1, 0, 2])


def _parameter(shape: list[int]) -> Tensor:
    # A placeholder: Module.compile binds the checkpoint's array of this name and
    # shape, so the value here is never read (built under F.lazy(), never realised).
    return Tensor.zeros(shape)


class Embedding(Module):
    """A lookup table: row i is the vector for id i (``wte`` tokens, ``wpe`` positions)."""

    def __init__(self, rows: int, dim: int) -> None:
        self.weight = _parameter([rows, dim])  # [rows, E]

    def forward(self, ids: Tensor) -> Tensor:
        return F.gather(self.weight, ids, axis=0)  # [T] -> [T, E]


class Conv1D(Module):
    """GPT-2's dense layer ``x @ W + b``, computed as ``(W^T @ x^T)^T`` with the weight stored
    transposed, ``[out, in]``.

    Hugging Face's ``Conv1D`` stores W as ``[in, out]``. MAX's CPU matmul streams a ``[out, in]``
    weight once for all rows, which is as fast or faster at every row count the graphs see
    (one decode row to a trace's hundreds; benchmarks/layouts.py measures both layouts), so
    every graph takes the engine's one transposed copy. Same math either way.
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        self.weight = _parameter([n_out, n_in])  # [out, in]: the checkpoint's [in, out] transposed
        self.bias = _parameter([n_out])  # [out]

    def forward(self, x: Tensor) -> Tensor:
        return (self.weight @ x.transpose(0, 1)).transpose(0, 1) + self.bias  # [T, in] -> [T, out]


class LayerNorm(Module):
    """Normalise each position's vector to mean 0, variance 1, then scale and shift."""

    def __init__(self, dim: int, eps: float) -> None:
        self.weight = _parameter([dim])  # [E] scale (gamma)
        self.bias = _parameter([dim])  # [E] shift (beta)
        self.eps = eps  # added to the variance so a constant vector does not divide by 0

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, self.eps)  # [T, E] -> [T, E]


class Attention(Module):
    """Multi-head self-attention: each head mixes the value vectors of the positions it may see."""

    def __init__(self, config: GPT2Config) -> None:
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)  # fused q|k|v projection
        self.c_proj = Conv1D(config.n_embd, config.n_embd)  # heads back into the residual stream
        self.n_head = config.n_head
        self.head_dim = config.head_dim

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values per head: [T, E] -> 3 x [T, H, D]."""
        qkv = self.c_attn(x)  # [T, E] -> [T, 3E]; columns are q, then k, then v
        E = self.n_head * self.head_dim
        q, k, v = F.split(qkv, [E, E, E], axis=1)  # 3 x [T, E]
        split_heads = [-1, self.n_head, self.head_dim]
        return q.reshape(split_heads), k.reshape(split_heads), v.reshape(split_heads)

    def forward(
        self,
        x: Tensor,
        allowed: Tensor | tuple[Tensor, Tensor],
        head_patch: tuple[Tensor, Tensor] | None,
        record: Recorder,
        past_k: Tensor | None = None,
        past_v: Tensor | None = None,
    ) -> Tensor:
        """[T, E] -> [T, E].

        allowed: [T, T] bool, which key rows each query row may attend to; with a cache (the
            decode step, where row b is sequence b's newest token), [B, 1, 1, P] over the cached
            keys (see _attend_with_cache).
        head_patch: (keep [T, H], z_source [T, H, D]): each head's output at each position
            becomes keep * z + (1 - keep) * z_source. keep 1 leaves the head alone; keep 0
            with a zero source ablates it; with another run's z it patches it in.
        past_k: [B, H, D, P], past_v: [B, H, P, D]: each sequence's cached keys and values of its
            earlier tokens, head-major as the products take them, so no transpose per step.
        """
        q, k, v = self.project_qkv(x)  # 3 x [T, H, D]
        record("attn.hook_q", q)
        record("attn.hook_k", k)
        record("attn.hook_v", v)
        if past_k is not None and past_v is not None:
            z = self._attend_with_cache(q, k, v, past_k, past_v, allowed)  # [B, H, D]
        else:
            q_h = _swap_first_axes(q)  # [T, H, D] -> [H, T, D]
            k_h = k.permute([1, 2, 0])  # [T, H, D] -> [H, D, T]
            v_h = v.permute([1, 0, 2])  # [T, H, D] -> [H, T, D]
            # Dividing by sqrt(D) keeps the dot products' variance near 1 whatever
            # the head width, so softmax does not saturate.
            scores = (q_h @ k_h) * (1.0 / math.sqrt(self.head_dim))  # [H, T, T]
            # -inf, not a large negative number: softmax gives exactly 0 there.
            scores = F.where(allowed, scores, float("-inf"))  # [T, T] broadcasts over H
            record("attn.hook_attn_scores", scores)
            pattern = F.softmax(scores, axis=-1)  # [H, T, T], each row sums to 1
            record("attn.hook_pattern", pattern)
            z = _swap_first_axes(pattern @ v_h)  # [H, T, D] -> [T, H, D]
        if head_patch is not None:
            keep, z_source = head_patch
            keep = keep.reshape([-1, self.n_head, 1])  # [T, H] -> [T, H, 1], broadcast over D
            # keep * z + (1 - keep) * source, not source + keep * (z - source): this form is
            # exactly z where keep is 1 and exactly the source where keep is 0.
            z = keep * z + (1.0 - keep) * z_source
        record("attn.hook_z", z)
        merged = z.reshape([-1, self.n_head * self.head_dim])  # [T, H, D] -> [T, E]
        return self.c_proj(merged)  # [T, E]

    def _attend_with_cache(
        self, q: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, past_allowed: Tensor
    ) -> Tensor:
        """Each row b is the newest token of its own sequence: it reads that sequence's cache
        (batch item b, padded to the longest) and its own key. The cache is read in place (joining
        it to the new key would copy all P positions of every layer per step), and the two score
        blocks share one maximum and one denominator, so this is the same softmax.

        q, k, v [B, H, D], past_k [B, H, D, P], past_v [B, H, P, D], past_allowed [B, 1, 1, P]
        (False on the padding after each cache's own length) -> z [B, H, D]."""
        H, D = self.n_head, self.head_dim
        scale = 1.0 / math.sqrt(D)
        q_rows = q.reshape([-1, H, 1, D])  # one query row per (sequence, head)
        past_scores = F.where(past_allowed, (q_rows @ past_k) * scale, float("-inf"))  # [B, H, 1, P]
        own_score = (F.sum(q * k, axis=-1) * scale).reshape([-1, H, 1, 1])  # [B, H, 1, 1]
        # The token's own score is finite, so the maximum is.
        top = F.elementwise_max(F.max(past_scores, axis=-1), own_score)  # [B, H, 1, 1]
        past_weights = F.exp(past_scores - top)  # [B, H, 1, P], 0 on the padding
        own_weight = F.exp(own_score - top)  # [B, H, 1, 1]
        total = F.sum(past_weights, axis=-1) + own_weight  # [B, H, 1, 1]
        z = (past_weights @ past_v + own_weight * v.reshape([-1, H, 1, D])) / total  # [B, H, 1, D]
        return z.reshape([-1, H, D])


class MLP(Module):
    """Two dense layers around a GELU, applied to each position on its own."""

    def __init__(self, config: GPT2Config) -> None:
        self.c_fc = Conv1D(config.n_embd, config.mlp_dim)  # [E] -> [F]
        self.c_proj = Conv1D(config.mlp_dim, config.n_embd)  # [F] -> [E]

    def forward(self, x: Tensor, record: Recorder) -> Tensor:
        pre = self.c_fc(x)  # [T, E] -> [T, F]
        record("mlp.hook_pre", pre)
        # GPT-2 was trained with the tanh approximation of GELU ("gelu_new"),
        # not the exact erf form; the two differ by up to ~1e-3.
        post = F.gelu(pre, approximate="tanh")  # [T, F]
        record("mlp.hook_post", post)
        return self.c_proj(post)  # [T, F] -> [T, E]


class Block(Module):
    """One transformer block: attention then MLP, each added to the residual stream."""

    def __init__(self, config: GPT2Config) -> None:
        self.ln_1 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.attn = Attention(config)
        self.ln_2 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        allowed: Tensor | tuple[Tensor, Tensor],
        head_patch: tuple[Tensor, Tensor] | None,
        record: Recorder,
        past_k: Tensor | None = None,
        past_v: Tensor | None = None,
        resid_patch: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """[T, E] -> [T, E]. head_patch: see Attention.forward. resid_patch: (keep [T, 1],
        source [T, E]): the stream entering the block becomes keep * x + (1 - keep) * source."""
        if resid_patch is not None:
            keep, source = resid_patch
            x = keep * x + (1.0 - keep) * source
        record("hook_resid_pre", x)  # [T, E]
        normalized_1 = self.ln_1(x)
        record("ln1.hook_normalized", normalized_1)
        attn_out = self.attn(normalized_1, allowed, head_patch, record, past_k, past_v)
        record("hook_attn_out", attn_out)
        x = x + attn_out  # pre-norm residual: the block adds to, never replaces, the stream
        record("hook_resid_mid", x)
        normalized_2 = self.ln_2(x)
        record("ln2.hook_normalized", normalized_2)
        mlp_out = self.mlp(normalized_2, record)
        record("hook_mlp_out", mlp_out)
        x = x + mlp_out
        record("hook_resid_post", x)
        return x  # [T, E]


def _in_block(record: Recorder, layer: int) -> Recorder:
    return lambda name, value: record(f"blocks.{layer}.{name}", value)


def tied_logits(wte: Tensor, normalized: Tensor) -> Tensor:
    """[N, E] -> [N, V]: the output matrix is tied to wte, so the logit of token v is the dot
    product with wte row v. wte [V, E] @ x^T [E, N] reads wte in its stored layout (a
    transposed copy would add V*E floats per call)."""
    return (wte @ normalized.transpose(0, 1)).transpose(0, 1)


class GPT2Body(Module):
    """The parameters of GPT-2 (``wte``, ``wpe``, ``h``, ``ln_f``) and the steps both graphs share."""

    def __init__(self, config: GPT2Config) -> None:
        self.wte = Embedding(config.vocab_size, config.n_embd)
        self.wpe = Embedding(config.n_positions, config.n_embd)
        self.h = ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.n_layer = config.n_layer

    def embed(self, token_ids: Tensor, positions: Tensor, record: Recorder) -> Tensor:
        token_vectors = self.wte(token_ids)  # [T] -> [T, E]
        record("hook_embed", token_vectors)
        position_vectors = self.wpe(positions)  # [T] -> [T, E]
        record("hook_pos_embed", position_vectors)
        return token_vectors + position_vectors  # the residual stream starts here

    def unembed(self, x: Tensor, record: Recorder) -> Tensor:
        normalized = self.ln_f(x)  # [T, E]
        record("ln_final.hook_normalized", normalized)
        return tied_logits(self.wte.weight, normalized)  # [T, V]


class GPT2Trace(GPT2Body):
    """The whole forward pass over one or more sequences, returning every intermediate.

    Several sequences run as one: they are packed end to end into N = T_1 + T_2 + ... token
    rows, each row tagged with its sequence (``segments``) and its position within it, and a
    query may only read keys of its own sequence. Every other step works on one row at a time,
    so packing changes no result beyond float32 rounding (a product over more rows may sum in
    another order); what it buys is one graph execution (large, efficient matrix
    products) for many Runs or patched runs, at the cost of [H, N, N] attention scores of which
    only the diagonal blocks are used.

    Inputs (all runtime values of one compiled graph; N token rows):
        token_ids     [N] int64
        positions     [N] int64, each row's position in its sequence (0..T_b-1)
        segments      [N] int64, which sequence a row belongs to
        mask_off      [N] float32, 1 switches the causal mask off for that query row (it
                      reads every token of its sequence)
        head_keep     [L, N, H] float32: block l's head h at row n outputs
        z_source      [L, N, H, D] float32   keep * z + (1 - keep) * z_source
                      (keep 1: untouched; keep 0 and source 0: ablated; source = another
                      run's hook_z: activation patching; source = a mean: mean-ablation)
        resid_keep    [L, N] float32: the stream entering block l at row n becomes
        resid_source  [L, N, E] float32   keep * resid_pre + (1 - keep) * resid_source
        logit_rows    [S] int64, the rows whose logits are wanted (a Run: each sequence's last;
                      a full trace: all N). The unembedding is [S, E] x [E, V]: at every row it
                      is ~30% of a trace's FLOPs on GPT-2 small and [N, V] floats of output.
    Returns one tensor per name in :func:`gpt2_max.hooks.trace_keys`, in that order, over the
    packed rows (the engine cuts them back into sequences); ``logits`` is [S, V], over logit_rows.
    """

    def forward(
        self,
        token_ids: Tensor,
        positions: Tensor,
        segments: Tensor,
        mask_off: Tensor,
        head_keep: Tensor,
        z_source: Tensor,
        resid_keep: Tensor,
        resid_source: Tensor,
        logit_rows: Tensor,
    ) -> tuple[Tensor, ...]:
        expected_keys = trace_keys(self.n_layer)
        recorded: list[Tensor] = []

        def record(name: str, value: Tensor) -> None:
            # The graph returns a tuple; its order must be trace_keys' order.
            assert name == expected_keys[len(recorded)], (name, expected_keys[len(recorded)])
            recorded.append(value)

        x = self.embed(token_ids, positions, record)
        # Query row i may read key row j of its own sequence when j's position <= i's (the
        # causal mask), or any of them when the mask is switched off for that query.
        same_sequence = F.equal(segments.reshape([-1, 1]), segments.reshape([1, -1]))  # [N, N]
        causal = F.greater_equal(positions.reshape([-1, 1]), positions.reshape([1, -1]))  # [N, N]
        unmasked = F.greater(mask_off.reshape([-1, 1]), 0.5)  # [N, 1]
        allowed = F.logical_and(same_sequence, F.logical_or(causal, unmasked))  # [N, N] bool
        for layer, block in enumerate(self.h):
            x = block(
                x,
                allowed,
                (head_keep[layer], z_source[layer]),
                _in_block(record, layer),
                resid_patch=(resid_keep[layer].reshape([-1, 1]), resid_source[layer]),
            )
        normalized = self.ln_f(x)  # [N, E]
        record("ln_final.hook_normalized", normalized)
        record("logits", tied_logits(self.wte.weight, F.gather(normalized, logit_rows, axis=0)))  # [S, V]
        return tuple(recorded)


class GPT2DecodeStep(GPT2Body):
    """One generation step for B sequences at once: each one's new token plus the cache of its
    earlier keys and values.

    The B caches come as one batch padded to the longest (P positions), and each new token
    reads only its own cache, up to its own length, and itself: every other step works on one
    row at a time, so a batched step gives each sequence the numbers a step alone would (to
    float32 rounding), while the weights are read once for all B. Attention costs B x P, not
    the B x (P_1 + ... + P_B) of caches packed end to end.

    The unembedding has two layouts, and the engine routes each execution's rows to one of them
    by B (engine.DECODE_NARROW_ROWS): a few rows stream ``wte`` as stored (``wte @ x^T``), many
    rows go through its transposed copy ``wte_t`` [E, V] (``x @ wte_t``), each MAX's faster
    product for that many rows. A layout given no rows reads nothing, so one compiled graph
    serves a lone generation and a class.

    Inputs:
        token_ids   [B] int64, each sequence's newest token
        positions   [B] int64, its position (= P_b, that sequence's cache length, 1 <= P_b <= P)
        past_k      [L, B, H, D, P] float32, keys of each sequence's earlier tokens
        past_v      [L, B, H, P, D] float32, their values (finite on the padding: it is weighted 0)
        past_index  [P] int64, 0..P-1 (the cache positions, for the padding's mask)
        narrow_rows [R] int64, the rows whose logits go through ``wte``
        wide_rows   [S] int64, the rows whose logits go through ``wte_t`` (R + S = B)
    Returns:
        logits    [R + S, V]: the narrow rows' next-token logits, then the wide rows'
        new_kv    [B, L, 2, H, D], the new tokens' keys and values, to append to the caches
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.wte_t = _parameter([config.n_embd, config.vocab_size])  # [E, V], wte transposed

    def forward(
        self,
        token_ids: Tensor,
        positions: Tensor,
        past_k: Tensor,
        past_v: Tensor,
        past_index: Tensor,
        narrow_rows: Tensor,
        wide_rows: Tensor,
    ) -> tuple[Tensor, Tensor]:
        new_rows: list[Tensor] = []

        def keep_kv(name: str, value: Tensor) -> None:
            if name.endswith(("attn.hook_k", "attn.hook_v")):
                new_rows.append(value)  # [B, H, D]

        x = self.embed(token_ids, positions, ignore)  # [B, E]
        # Sequence b's cache holds positions 0..P_b-1; the rest of its row is padding.
        allowed = F.greater(positions.reshape([-1, 1]), past_index.reshape([1, -1]))  # [B, P]
        allowed = F.unsqueeze(F.unsqueeze(allowed, 1), 1)  # [B, 1, 1, P], broadcast over heads
        for layer, block in enumerate(self.h):
            x = block(x, allowed, None, keep_kv, past_k[layer], past_v[layer])  # [B, H, D, P], [B, H, P, D]
        normalized = self.ln_f(x)  # [B, E]
        narrow = tied_logits(self.wte.weight, F.gather(normalized, narrow_rows, axis=0))  # [R, V]
        wide = F.gather(normalized, wide_rows, axis=0) @ self.wte_t  # [S, E] @ [E, V] -> [S, V]
        per_layer = [
            F.stack([new_rows[2 * layer], new_rows[2 * layer + 1]], axis=1)  # [B, 2, H, D]
            for layer in range(self.n_layer)
        ]
        return F.concat([narrow, wide], axis=0), F.stack(per_layer, axis=1)  # [B, V], [B, L, 2, H, D]


# The analysis graph's outputs, in the order GPT2Analysis returns them (the engine names them by it).
ANALYSIS_OUTPUTS = (
    "lens_top_ids",
    "lens_top_probs",
    "lens_target_prob",
    "lens_target_rank",
    "candidate_ids",
    "candidate_probs",
    "candidate_entropy",
    "candidate_logits",
    "candidate_target_prob",
    "candidate_target_rank",
    "nearest_ids",
    "nearest_cosines",
)


def vocabulary_block_width(vocab_size: int, k: int) -> int | None:
    """The block width GPT2Analysis.vocabulary_top_k splits the vocabulary into: its smallest
    divisor of at least 16 that leaves at least k blocks, or None (no such divisor up to 1,024:
    the plain top_k)."""
    for width in range(16, 1025):
        if vocab_size % width == 0 and vocab_size // width >= k:
            return width
    return None


class GPT2Analysis(Module):
    """The analyses that read the whole vocabulary, as one graph over rows of residual vectors.

    Parameters: ``ln_f`` (the array the other graphs use), ``wte_t``, a transposed copy of wte,
    [E, V], and ``wte_norms`` [V]: ``x @ wte_t`` is MAX's fastest [N, E] x [E, V] product on
    this CPU, and its [N, V] result needs no transpose (about half the time of wte @ x^T
    transposed back: benchmarks/layouts.py). N, P and M are
    symbolic, so one compiled graph serves the logit lens (N = L x T rows), the next-token view
    (N = P = T) and the nearest-token search (M = T). Every top-k goes through
    ``vocabulary_top_k`` (MAX's own top_k over 50,257 values costs ~8x the product). The lens
    rows get their few top tokens and the summaries below, each one pass over their [N, V]
    logits; the full softmax, a wider top-k and the entropy run on the P candidate rows, which
    also give their targets' probabilities and ranks (the next-token view's one pass).

    Inputs:
        lens_rows       [N, E] float32, residual-stream vectors to read out as if the model stopped there
        lens_targets    [N] int64, a token per row whose probability and rank are wanted
        lens_target_rows [N] int64, or -1: the row (of this execution) whose top token is row n's
                        target instead (the lens follows each position's final prediction, the top
                        token of its last block's row, so one pass finds and follows it)
        candidate_rows  [P, E] float32, residual vectors whose top-k next tokens are wanted
        candidate_targets [P] int64, a token per candidate row whose probability and rank are wanted
        query_rows      [M, E] float32, vectors to compare with every wte row by cosine
    Returns (K = top_k, J = nearest_top_k):
        lens_top_ids      [N, KL] int64, the KL most likely next tokens after ln_f and the tied
                          unembedding, best first (KL = lens_top_k)
        lens_top_probs    [N, KL] float32, their probabilities
        lens_target_prob  [N] float32, the target token's probability
        lens_target_rank  [N] int64, its rank (1 = most likely; 1 + how many are strictly more likely)
        candidate_ids     [P, K] int64, the most likely next tokens of each candidate row, best first
        candidate_probs   [P, K] float32, their probabilities
        candidate_entropy [P] float32, entropy of each candidate row's distribution in nats
        candidate_logits  [P, V] float32, their logits (the Logits and Mask tabs read whole rows:
                          the trace returns only a Run's last row, see GPT2Trace's logit_rows)
        candidate_target_prob [P] float32, the candidate target's probability
        candidate_target_rank [P] int64, its rank (as lens_target_rank)
        nearest_ids       [M, J] int64, the wte rows most similar in direction, best first
        nearest_cosines   [M, J] float32, their cosine similarities
    """

    def __init__(self, config: GPT2Config, top_k: int, nearest_top_k: int, lens_top_k: int) -> None:
        self.wte_t = _parameter([config.n_embd, config.vocab_size])  # [E, V], wte transposed
        # [V] the length of each wte row, computed once from the weights (in the graph it would
        # read all of wte again at every execution, lens or not).
        self.wte_norms = _parameter([config.vocab_size])
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.vocab_size = config.vocab_size
        self.top_k = top_k
        self.nearest_top_k = nearest_top_k
        self.lens_top_k = lens_top_k
        self.block_width = vocabulary_block_width(config.vocab_size, max(top_k, nearest_top_k, lens_top_k))

    def logits(self, rows: Tensor) -> Tensor:
        """[R, E] -> [R, V]: the model's own final layer norm and tied unembedding (as
        GPT2Body.unembed, through the transposed copy)."""
        return self.ln_f(rows) @ self.wte_t

    def vocabulary_top_k(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """x [R, V] -> (its k largest values [R, k], best first, and their ids [R, k] int64).

        MAX's CPU top_k costs ~40-60 ns per element here (197 ms for 64 rows of 50,257), so it
        runs on one small input instead: the vocabulary in blocks of ``block_width`` (29 for
        GPT-2's 50,257 = 29 x 1,733), the k blocks with the largest maxima, then the k largest of
        their k x block_width values (3.8 ms for the 64 rows at k = 16, the same values). Exact: an element
        of the top k whose block is not among the k best blocks would have k blocks' maxima
        above it."""
        width = self.block_width
        if width is None:
            values, ids = F.top_k(x, k=k, axis=-1)
            return values, F.cast(ids, DType.int64)
        n_blocks = self.vocab_size // width
        blocks = x.reshape([-1, n_blocks, width])  # [R, V / W, W]
        block_max = F.max(blocks, axis=-1).reshape([-1, n_blocks])  # [R, V / W]
        # The k best blocks by k argmax passes (each masking the one found): top_k over these
        # [R, V / W] maxima would cost ~40 ns a value, 20 ms for the Blocks lens's 288 rows.
        block_ids = F.arange(0, n_blocks, 1, dtype=DType.int64, device=x.device).reshape([1, -1])  # [1, V / W]
        picked = []
        for _ in range(k):
            best = F.cast(F.argmax(block_max, axis=-1), DType.int64)  # [R, 1]
            picked.append(best)
            block_max = F.where(F.equal(block_ids, best), float("-inf"), block_max)
        best_blocks = F.concat(picked, axis=1)  # [R, k], best first
        candidates = F.gather_nd(blocks, F.unsqueeze(best_blocks, -1), batch_dims=1)  # [R, k, W]
        values, within = F.top_k(candidates.reshape([-1, k * width]), k=k, axis=-1)  # [R, k]
        within = F.cast(within, DType.int64)  # index into the k x W candidates
        block_of = F.gather_nd(best_blocks, F.unsqueeze(F.floor_div(within, width), -1), batch_dims=1)  # [R, k]
        return values, block_of * width + F.mod(within, width)

    def target_logit_and_rank(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """logits [N, V], targets [N] -> (each target's logit [N, 1], its rank [N] int64: 1 + how
        many tokens are strictly more likely, so tied tokens share the better rank)."""
        # The target's logit, picked by a one-hot comparison (one pass over [N, V]).
        vocabulary = F.arange(0, self.vocab_size, 1, dtype=targets.dtype, device=targets.device)  # [V]
        is_target = F.equal(vocabulary.reshape([1, -1]), targets.reshape([-1, 1]))  # [N, V]
        target_logit = F.sum(F.where(is_target, logits, 0.0), axis=-1)  # [N, 1]
        above = F.sum(F.cast(F.greater(logits, target_logit), DType.float32), axis=-1)  # [N, 1]
        return target_logit, (F.cast(above, DType.int64) + 1).reshape([-1])

    def forward(
        self,
        lens_rows: Tensor,
        lens_targets: Tensor,
        lens_target_rows: Tensor,
        candidate_rows: Tensor,
        candidate_targets: Tensor,
        query_rows: Tensor,
    ) -> tuple[Tensor, ...]:
        logits = self.logits(lens_rows)  # [N, V]
        lens_top_logits, lens_top_ids = self.vocabulary_top_k(logits, self.lens_top_k)  # 2 x [N, KL], best first
        top_logit, _ = F.split(lens_top_logits, [1, self.lens_top_k - 1], axis=1)  # [N, 1]: the first column
        top_id = F.split(lens_top_ids, [1, self.lens_top_k - 1], axis=1)[0].reshape([-1])  # [N]
        followed = F.gather(top_id, F.elementwise_max(lens_target_rows, 0), axis=0)  # [N]
        lens_targets = F.where(F.greater_equal(lens_target_rows, 0), followed, lens_targets)  # [N]
        # softmax's denominator over exp(logit - max), so no term overflows: >= 1 (the top's own 1)
        total = F.sum(F.exp(logits - top_logit), axis=-1)  # [N, 1]
        target_logit, target_rank = self.target_logit_and_rank(logits, lens_targets)
        candidate_logits = self.logits(candidate_rows)  # [P, V]
        # log-softmax written out, for its log-normaliser: log sum exp, shifted by the max
        candidate_top = F.max(candidate_logits, axis=-1)  # [P, 1]
        log_total = candidate_top + F.log(F.sum(F.exp(candidate_logits - candidate_top), axis=-1))  # [P, 1]
        candidate_log_probs = candidate_logits - log_total  # [P, V]
        top_log_probs, candidate_ids = self.vocabulary_top_k(candidate_log_probs, self.top_k)  # 2 x [P, K]
        entropy = -F.sum(F.exp(candidate_log_probs) * candidate_log_probs, axis=-1)  # [P, 1] nats
        # The targets' logits and ranks as the lens's (from the logits: the log-softmax's rounding
        # could reorder near-ties), their probabilities through the same normaliser as the top-k's.
        candidate_target_logit, candidate_target_rank = self.target_logit_and_rank(candidate_logits, candidate_targets)
        candidate_target_log_prob = candidate_target_logit - log_total  # [P, 1]
        # Nearest tokens by cosine: the direction of each query against every wte row.
        dots = query_rows @ self.wte_t  # [M, V]
        query_norms = F.sqrt(F.sum(query_rows * query_rows, axis=-1))  # [M, 1]
        # The 1e-12 floor keeps an all-zero vector from dividing by 0 (its cosines become 0).
        cosines = dots / F.elementwise_max(query_norms * self.wte_norms.reshape([1, -1]), 1e-12)  # [M, V]
        nearest_cosines, nearest_ids = self.vocabulary_top_k(cosines, self.nearest_top_k)  # 2 x [M, J]
        outputs = dict(
            lens_top_ids=lens_top_ids,
            lens_top_probs=F.exp(lens_top_logits - top_logit) / total,  # [N, KL]
            lens_target_prob=(F.exp(target_logit - top_logit) / total).reshape([-1]),
            lens_target_rank=target_rank,
            candidate_ids=candidate_ids,
            candidate_probs=F.exp(top_log_probs),
            candidate_entropy=entropy.reshape([-1]),
            candidate_logits=candidate_logits,
            candidate_target_prob=F.exp(candidate_target_log_prob).reshape([-1]),
            candidate_target_rank=candidate_target_rank,
            nearest_ids=nearest_ids,
            nearest_cosines=nearest_cosines,
        )
        # A compiled graph returns a tuple: named here, in the order the engine reads them by.
        assert tuple(outputs) == ANALYSIS_OUTPUTS, tuple(outputs)
        return tuple(outputs.values())
