"""Text generation with a key/value cache: prefill once, then one small decode step per token.

Prefill runs the trace graph over the prompt (it returns every layer's keys
and values, ``blocks.{i}.attn.hook_k`` / ``hook_v``) and copies them into a
cache preallocated for the prompt and the tokens asked for. Each later token runs the
decode-step graph on that token and the cache's first P positions, so a step costs
one pass over the weights however long the text is, instead of replaying the
whole sequence as the MAX tutorial does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gpt2_max.errors import InputError
from gpt2_max.sampling import SampleStep, SamplingSettings, choose

STOP_END_OF_TEXT = "end_of_text"  # the model chose <|endoftext|>
STOP_MAX_TOKENS = "max_new_tokens"  # the requested number of tokens was reached
STOP_CONTEXT_FULL = "context_full"  # the sequence filled the model's n_positions


@dataclass
class Generation:
    """What one call to ``generate`` made."""

    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)  # the new tokens only
    text: str = ""  # the new tokens decoded
    steps: list[SampleStep] = field(default_factory=list)
    stop_reason: str = ""


def stream(
    model,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    settings: SamplingSettings,
    keep_logits: bool = False,
    prefill: Mapping[str, np.ndarray] | None = None,
) -> Iterator[SampleStep]:
    """Yields one :class:`SampleStep` per new token. The generator's return value is the stop reason.

    ``prefill``: a causal, unpatched trace of exactly ``prompt_ids`` already made (the app's Run),
    whose keys, values and logits are used instead of tracing the prompt again."""
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise InputError("max_new_tokens must be a whole number >= 1")
    prompt = model.check_token_ids(prompt_ids)
    config = model.config
    if len(prompt) >= config.n_positions:
        raise InputError(
            f"the prompt fills the whole context ({config.n_positions} tokens); there is no room for a new token"
        )
    rng = np.random.default_rng(settings.seed)
    if prefill is None:
        prefill = model.trace(prompt, logit_positions=[-1])  # causal, no ablation: the prompt's keys and values
    elif len(prefill["hook_embed"]) != len(prompt):
        raise ValueError(f"the prefill trace has {len(prefill['hook_embed'])} tokens, the prompt {len(prompt)}")
    length = len(prompt)
    # Room for the prompt and every token asked for, head-major as the decode graph reads it:
    # keys [L, H, D, capacity], values [L, H, capacity, D] (GPT2DecodeStep). Zeros: a lone step
    # reads the whole arrays, the positions not yet filled masked (see engine.run_decode).
    capacity = min(config.n_positions, length + int(max_new_tokens))
    cache_k = np.zeros((config.n_layer, config.n_head, config.head_dim, capacity), dtype=np.float32)
    cache_v = np.zeros((config.n_layer, config.n_head, capacity, config.head_dim), dtype=np.float32)
    for layer in range(config.n_layer):
        cache_k[layer, :, :, :length] = prefill[f"blocks.{layer}.attn.hook_k"].transpose(
            1, 2, 0
        )  # [T, H, D] -> [H, D, T]
        cache_v[layer, :, :length] = prefill[f"blocks.{layer}.attn.hook_v"].transpose(1, 0, 2)  # [T, H, D] -> [H, T, D]
    logits = prefill["logits"][-1]  # [V] next-token logits after the prompt
    produced = 0
    while True:
        step = choose(logits, settings, rng, position=length)
        if keep_logits:
            step = replace(step, logits=np.array(logits))
        yield step
        produced += 1
        if step.token_id == model.tokenizer.eot_id:
            return STOP_END_OF_TEXT
        if produced >= max_new_tokens:
            return STOP_MAX_TOKENS
        if length + 1 >= config.n_positions:  # prompt + new tokens fill the context
            return STOP_CONTEXT_FULL
        logits, new_kv = model.engine.run_decode(step.token_id, cache_k, cache_v, length)
        cache_k[..., length] = new_kv[:, 0]  # [L, H, D]
        cache_v[:, :, length] = new_kv[:, 1]
        length += 1


def collect(model, prompt_ids: Sequence[int], max_new_tokens: int, settings: SamplingSettings) -> Generation:
    """Runs :func:`stream` to the end and gathers its steps."""
    result = Generation(prompt_ids=list(prompt_ids))
    steps = stream(model, prompt_ids, max_new_tokens, settings)
    while True:
        try:
            result.steps.append(next(steps))
        except StopIteration as stop:
            result.stop_reason = stop.value
            break
    result.ids = [step.token_id for step in result.steps]
    result.text = model.tokenizer.decode(result.ids)
    return result
