"""The public model object: ``gpt2_max.load(...)`` returns a :class:`GPT2`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np

from gpt2_max.config import GPT2Config
from gpt2_max.engine import CompiledGPT2, TraceRequest
from gpt2_max.errors import InputError
from gpt2_max.generate import Generation, collect, stream
from gpt2_max.sampling import SampleStep, SamplingSettings
from gpt2_max.tokenizer import Tokenizer
from gpt2_max.weights import DEFAULT_MODEL, Checkpoint, load_weights, locate

# Ablation can be given as (layer, head) pairs or {layer: [heads]}.
Ablation = Iterable[tuple[int, int]] | Mapping[int, Iterable[int]] | None
# A patch: (the trace to copy from, the (layer, head) or (layer, position) pairs to copy).
Patch = tuple[Mapping[str, np.ndarray], Iterable[tuple[int, int]]] | None


class GPT2:
    """A loaded GPT-2: its config, tokenizer and compiled MAX graphs."""

    def __init__(self, checkpoint: Checkpoint, weights: Mapping[str, np.ndarray]) -> None:
        self.name = checkpoint.name
        self.config: GPT2Config = checkpoint.config
        self.tokenizer = Tokenizer()
        self.engine = CompiledGPT2(self.config, weights)
        # The checkpoint's arrays by name, in its layout, read-only and shared with the graphs (no
        # copy): wte [V, E] for nearest-token search, ln_f for the logit lens, the heads' c_proj
        # for attribution.
        self.weights: Mapping[str, np.ndarray] = MappingProxyType(self.engine.weights)

    @property
    def compile_seconds(self) -> float:
        """How long the trace graph took to compile (the other graphs: ``engine.compile_seconds``)."""
        return self.engine.compile_seconds["trace"]

    def check_token_ids(self, token_ids: Sequence[int]) -> np.ndarray:
        """Validates ids for a forward pass: 1..n_positions of them, each in the vocabulary."""
        try:
            ids = np.asarray(list(token_ids), dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as error:
            raise InputError(f"token ids must be integers ({error})") from error
        if ids.ndim != 1 or ids.size == 0:
            raise InputError("give at least one token")
        if ids.size > self.config.n_positions:
            raise InputError(f"{ids.size} tokens is more than this model's context of {self.config.n_positions} tokens")
        bad = ids[(ids < 0) | (ids >= self.config.vocab_size)]
        if bad.size:
            raise InputError(f"token id {int(bad[0])} is outside the vocabulary 0..{self.config.vocab_size - 1}")
        return ids

    def _pairs(self, pairs, what: str, second_limit: int, second_name: str) -> list[tuple[int, int]]:
        """Validated (layer, i) pairs, i a head or a position below ``second_limit``."""
        if isinstance(pairs, Mapping):
            pairs = [(layer, i) for layer, items in pairs.items() for i in items]
        checked = []
        for pair in pairs:
            try:
                layer, index = (int(v) for v in pair)
            except (TypeError, ValueError) as error:
                raise InputError(f"{what} wants (layer, {second_name}) pairs, got {pair!r}") from error
            if not (0 <= layer < self.config.n_layer and 0 <= index < second_limit):
                raise InputError(
                    f"no {second_name} ({layer}, {index}): layers are 0..{self.config.n_layer - 1}, "
                    f"{second_name}s 0..{second_limit - 1}"
                )
            checked.append((layer, index))
        return checked

    def head_keep(self, ablate: Ablation) -> np.ndarray:
        """[L, H] of 1.0 with 0.0 at each ablated (layer, head)."""
        keep = np.ones((self.config.n_layer, self.config.n_head), dtype=np.float32)
        for layer, head in self._pairs(ablate or [], "ablate", self.config.n_head, "head"):
            keep[layer, head] = 0.0
        return keep

    def _source(self, source: Mapping[str, np.ndarray], name: str, T: int) -> np.ndarray:
        """[L, T, ...] stack of a source trace's ``blocks.{l}.{name}``, checked against T tokens."""
        try:
            stacked = np.stack([source[f"blocks.{layer}.{name}"] for layer in range(self.config.n_layer)])
        except (KeyError, TypeError) as error:
            raise InputError(f"the patch source must be a trace of this model (no {name})") from error
        if stacked.shape[1] != T:
            raise InputError(f"the patch source has {stacked.shape[1]} tokens, this run {T}: they must match")
        return stacked.astype(np.float32, copy=False)

    def trace(self, token_ids: Sequence[int], **options) -> dict[str, np.ndarray]:
        """Runs the model on ``token_ids`` and returns every intermediate (see gpt2_max.hooks).

        Options (the arguments of ``_request``, all defaulting to a plain causal run):
        causal=False switches the causal mask off; ablate zeroes the output of the given heads.
        patch=(source_trace, [(layer, head), ...]) replaces those heads' ``hook_z`` at every
        position by the source trace's (a run of the same number of tokens: activation
        patching); resid_patch=(source_trace, [(layer, position), ...]) replaces
        ``blocks.{layer}.hook_resid_pre`` at those positions. All are inputs of the one
        compiled graph: a head's output is keep * z + (1 - keep) * source, so ablation is
        patching from zeros. logit_positions: where ``logits`` is computed (default: every
        position; ``[-1]`` for the last only, which skips ~30% of the work on GPT-2 small).
        """
        return self.traces([dict(token_ids=token_ids, **options)])[0]

    def traces(self, requests: Sequence[Mapping]) -> list[dict[str, np.ndarray]]:
        """Several traces at once, each request a dict of :meth:`trace`'s arguments. They run packed
        into as few executions of the trace graph as fit (the numbers are the same as one by one)."""
        return self.engine.run_traces([self._request(**request) for request in requests])

    def _request(
        self,
        token_ids: Sequence[int],
        causal: bool = True,
        ablate: Ablation = None,
        patch: Patch = None,
        resid_patch: Patch = None,
        logit_positions: Sequence[int] | None = None,
    ) -> TraceRequest:
        ids = self.check_token_ids(token_ids)
        T, L, H = len(ids), self.config.n_layer, self.config.n_head
        kept = self.head_keep(ablate)  # [L, H], 0 at ablated heads
        head_keep = np.repeat(kept[:, None, :], T, axis=1)  # [L, T, H]
        z_source = resid_keep = resid_source = None
        if patch is not None:
            source, heads = patch
            # The source stack is zero at ablated heads, so keep 0 there still ablates.
            z_source = self._source(source, "attn.hook_z", T) * kept[:, None, :, None]  # [L, T, H, D]
            for layer, head in self._pairs(heads, "patch", H, "head"):
                if kept[layer, head] == 0.0:
                    raise InputError(f"head ({layer}, {head}) cannot be both ablated and patched")
                head_keep[layer, :, head] = 0.0
        if resid_patch is not None:
            source, places = resid_patch
            resid_source = self._source(source, "hook_resid_pre", T)  # [L, T, E]
            resid_keep = np.ones((L, T), dtype=np.float32)
            for layer, position in self._pairs(places, "resid_patch", T, "position"):
                resid_keep[layer, position] = 0.0
        if logit_positions is not None:
            try:
                logit_positions = tuple(int(p) for p in logit_positions)
            except (TypeError, ValueError) as error:
                raise InputError(f"logit positions must be integers ({error})") from error
            if not logit_positions or not all(-T <= p < T for p in logit_positions):
                raise InputError(f"logit positions {logit_positions} are not positions of this run's {T} tokens")
        return TraceRequest(ids, not causal, head_keep, z_source, resid_keep, resid_source, logit_positions)

    def generate(
        self,
        prompt_or_ids: str | Sequence[int],
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Generation:
        """Generates text with the KV cache; see :mod:`gpt2_max.sampling` for the filters' order."""
        prompt_ids = self.tokenizer.encode(prompt_or_ids) if isinstance(prompt_or_ids, str) else list(prompt_or_ids)
        settings = SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        return collect(self, prompt_ids, max_new_tokens, settings)

    def stream(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        settings: SamplingSettings,
        keep_logits: bool = False,
        prefill: Mapping[str, np.ndarray] | None = None,
    ) -> Iterator[SampleStep]:
        """Yields each generated step as it is made (its return value is the stop reason);
        ``prefill``: the prompt's causal, unpatched trace when one exists (see generate.stream)."""
        return stream(self, prompt_ids, max_new_tokens, settings, keep_logits, prefill)


def load(repo_id_or_dir: str = DEFAULT_MODEL) -> GPT2:
    """Loads a GPT-2-family checkpoint (Hub repo id or local directory) and compiles it."""
    checkpoint = locate(repo_id_or_dir)
    return GPT2(checkpoint, load_weights(checkpoint))
