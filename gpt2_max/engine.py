"""Compiling the MAX graphs of one loaded model and running them on numpy data.

Two graphs per model, each compiled once with symbolic lengths and reused for
every request:
- the trace graph (:class:`gpt2_max.modules.GPT2Trace`): the whole sequence,
  every intermediate; also the prefill of generation, since it returns each
  layer's keys and values;
- the decode-step graph (:class:`gpt2_max.modules.GPT2DecodeStep`): one new
  token against the KV cache, compiled on first use, with its own transposed
  copy of the dense layers' weights (+70% of the weights' memory, only once
  something is generated).

Inputs and outputs cross between numpy and MAX without copies
(``Buffer.from_numpy`` and ``np.from_dlpack`` share memory on the CPU).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

os.environ.setdefault("MODULAR_TELEMETRY_ENABLED", "0")

import numpy as np  # noqa: E402
from max.driver import CPU, Accelerator, Buffer, Device, accelerator_count  # noqa: E402
from max.dtype import DType  # noqa: E402
from max.experimental import functional as F  # noqa: E402
from max.graph import DeviceRef, TensorType  # noqa: E402

from gpt2_max.config import GPT2Config  # noqa: E402
from gpt2_max.hooks import trace_keys  # noqa: E402
from gpt2_max.modules import GPT2DecodeStep, GPT2Trace  # noqa: E402
from gpt2_max.weights import CONV1D_SUFFIXES  # noqa: E402


def default_device() -> Device:
    """An accelerator when MAX finds one, else the CPU."""
    return Accelerator() if accelerator_count() > 0 else CPU()


class CompiledGPT2:
    """The compiled graphs of one model, callable with numpy arrays."""

    def __init__(
        self, config: GPT2Config, weights: Mapping[str, np.ndarray], device: Device | None = None
    ) -> None:
        self.config = config
        self.device = device if device is not None else default_device()
        self._weights = weights
        self._keys = trace_keys(config.n_layer)
        # A compiled model is not documented as safe to run from several
        # threads at once; requests are serialised (the CPU has 2 cores anyway).
        self._run_lock = threading.Lock()
        self._compile_lock = threading.Lock()
        self._decode = None
        ref = DeviceRef.from_device(self.device)
        with F.lazy():
            trace_module = GPT2Trace(config)
        self._trace = trace_module.compile(
            TensorType(DType.int64, ["tokens"], device=ref),  # token_ids [T]
            TensorType(DType.int64, ["tokens"], device=ref),  # positions [T]
            TensorType(DType.float32, [1], device=ref),  # mask_off [1]
            TensorType(DType.float32, [config.n_layer, config.n_head], device=ref),  # head_keep [L, H]
            weights=weights,
        )

    def _compiled_decode(self):
        with self._compile_lock:
            if self._decode is None:
                cfg = self.config
                ref = DeviceRef.from_device(self.device)
                with F.lazy():
                    decode_module = GPT2DecodeStep(cfg)
                # The decode step's dense layers take W as [out, in] (see
                # modules.Conv1D): one transposed copy of the block weights.
                decode_weights = {
                    name: np.ascontiguousarray(value.T) if name.endswith(CONV1D_SUFFIXES) else value
                    for name, value in self._weights.items()
                }
                self._decode = decode_module.compile(
                    TensorType(DType.int64, [1], device=ref),  # token_id [1]
                    TensorType(DType.int64, [1], device=ref),  # position [1]
                    TensorType(  # past_kv [P, L, 2, H, D]
                        DType.float32, ["past", cfg.n_layer, 2, cfg.n_head, cfg.head_dim], device=ref
                    ),
                    weights=decode_weights,
                )
            return self._decode

    def warm_decode(self) -> None:
        """Compiles the decode-step graph now rather than on the first generated token."""
        self._compiled_decode()

    def _to_device(self, array: np.ndarray) -> Buffer:
        buffer = Buffer.from_numpy(np.ascontiguousarray(array))
        return buffer if isinstance(self.device, CPU) else buffer.to(self.device)

    def _to_numpy(self, buffer: Buffer) -> np.ndarray:
        if not isinstance(self.device, CPU):
            buffer = buffer.to(CPU())
        return np.from_dlpack(buffer)

    def run_trace(
        self, token_ids: np.ndarray, mask_off: bool, head_keep: np.ndarray
    ) -> dict[str, np.ndarray]:
        """token_ids [T] int64, head_keep [L, H] float32 -> every trace key (see hooks)."""
        inputs = (
            token_ids.astype(np.int64),
            np.arange(len(token_ids), dtype=np.int64),
            np.array([1.0 if mask_off else 0.0], dtype=np.float32),
            head_keep.astype(np.float32),
        )
        with self._run_lock:
            outputs = self._trace.execute_raw(*(self._to_device(a) for a in inputs))
        return {key: self._to_numpy(out) for key, out in zip(self._keys, outputs, strict=True)}

    def run_decode(self, token_id: int, past_kv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step: token at position P, past_kv [P, L, 2, H, D] -> (logits [V], new_kv [L, 2, H, D])."""
        decode = self._compiled_decode()
        position = past_kv.shape[0]
        inputs = (
            np.array([token_id], dtype=np.int64),
            np.array([position], dtype=np.int64),
            past_kv,
        )
        with self._run_lock:
            logits, new_kv = decode.execute_raw(*(self._to_device(a) for a in inputs))
        return self._to_numpy(logits)[0], self._to_numpy(new_kv)[0]
