"""Compiling the MAX graphs of one loaded model and running them on numpy data.

Three graphs per model, each compiled once with symbolic lengths and reused for
every request:
- the trace graph (:class:`gpt2_max.modules.GPT2Trace`): whole sequences (one,
  or several packed into one execution), every intermediate; also the prefill of
  generation, since it returns each layer's keys and values; compiled when the
  model loads;
- the analysis graph (:class:`gpt2_max.modules.GPT2Analysis`): the logit lens,
  next-token top-k and nearest tokens, everything that reads all of ``wte``,
  returning only the top-k rows the tabs show, through a transposed copy of
  ``wte`` (its fastest layout for the [N, E] x [E, V] product; +28% of GPT-2
  small's weights, one array shared with the decode graph);
- the decode-step graph (:class:`gpt2_max.modules.GPT2DecodeStep`): the next
  token of one or several sequences against their KV caches (concurrent
  generations batched into one execution, their caches padded to the longest),
  with its own transposed copy of the dense layers' weights (+70% of the
  weights' memory) and the analysis graph's transposed ``wte``.
The last two compile on first use, or ahead of it through ``warm`` (the app
compiles them in the background right after loading).

Inputs and outputs cross between numpy and MAX without copies
(``Buffer.from_numpy`` and ``np.from_dlpack`` share memory on the CPU).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

os.environ.setdefault("MODULAR_TELEMETRY_ENABLED", "0")

import numpy as np  # noqa: E402
from max.driver import CPU, Accelerator, Buffer, Device, accelerator_count  # noqa: E402
from max.dtype import DType  # noqa: E402
from max.experimental import functional as F  # noqa: E402
from max.graph import DeviceRef, TensorType  # noqa: E402

from gpt2_max.config import GPT2Config  # noqa: E402
from gpt2_max.hooks import trace_keys  # noqa: E402
from gpt2_max.memory import Arena, copy_into  # noqa: E402
from gpt2_max.modules import ANALYSIS_OUTPUTS, GPT2Analysis, GPT2DecodeStep, GPT2Trace  # noqa: E402
from gpt2_max.scheduling import (  # noqa: E402
    ANALYSIS_PRIORITY,
    DECODE_GATHER_S,
    DECODE_MAX_BATCH,
    DECODE_MAX_WAIT_S,
    DECODE_PRIORITY,
    TRACE_PRIORITY,
    Batcher,
    PriorityLock,
)
from gpt2_max.weights import CONV1D_SUFFIXES  # noqa: E402

# The analysis graph's fixed top-k widths: the Logits tab lists 15 candidates, the
# nearest-token view 10 (plus the token itself, which it leaves out).
CANDIDATE_TOP_K = 16
NEAREST_TOP_K = 11
# ... and the logit lens's, per block and position: the Blocks tab's hover lists them.
LENS_TOP_K = 5
# Rows per analysis call: its [rows, V] float32 logits are ~64 MB for GPT-2 at 320 rows, and the
# Blocks tab's default lens (12 layers x 24 positions = 288 rows) is one call.
ANALYSIS_CHUNK_ROWS = 320


# Token rows per packed trace execution. The attention keys come back as [H, N, N] per block,
# so a pack costs 2 L H N^2 floats of output: 75 MB for GPT-2 small at 256 rows (and the
# wasted off-diagonal scores ~10% of the FLOPs). A longer single request runs alone.
PACK_ROWS = 256
# Decode executions of at most this many rows unembed through wte as stored, larger ones through
# its transposed copy (see GPT2DecodeStep): MAX's faster layout for each (benchmarks/layouts.py).
DECODE_NARROW_ROWS = 4
# The most memory kept for packing one of a decode step's caches (keys or values): 32 caches of
# GPT-2 small up to 218 positions each (decode_groups splits a larger batch; a single cache
# larger than this, GPT-2 XL's longest, is packed in fresh memory).
DECODE_PACK_MAX_BYTES = 256 * 2**20
# A decode execution pads its caches to the longest one (see GPT2DecodeStep), at most this many
# positions in all, else the longest go first in an execution of their own: a padded position
# costs about what a cached one does, and this many of them cost about what one execution more
# adds by reading all the weights again.
DECODE_MAX_PADDING = 2048
# Trace keys shaped [H, T, T] (the others have tokens first).
SQUARE_KEYS = ("attn.hook_attn_scores", "attn.hook_pattern")


@dataclass(frozen=True)
class TraceRequest:
    """One sequence for the trace graph, with its patch inputs (see GPT2Trace; T tokens).

    The patch inputs default to "touch nothing": head_keep [L, T, H] ones, z_source
    [L, T, H, D] zeros, resid_keep [L, T] ones, resid_source [L, T, E] zeros.
    logit_positions: where the trace's ``logits`` are computed, in that order (default: every
    position; a Run asks for its last only, see GPT2Trace's logit_rows)."""

    token_ids: np.ndarray  # [T] int64
    mask_off: bool = False
    head_keep: np.ndarray | None = None
    z_source: np.ndarray | None = None
    resid_keep: np.ndarray | None = None
    resid_source: np.ndarray | None = None
    logit_positions: tuple[int, ...] | None = None

    def logit_rows(self) -> np.ndarray:
        """[S] int64: the positions whose logits the trace returns, each within 0..T-1."""
        T = len(self.token_ids)
        if self.logit_positions is None:
            return np.arange(T, dtype=np.int64)
        rows = np.asarray(self.logit_positions, dtype=np.int64).reshape(-1)
        if rows.size == 0 or rows.min() < -T or rows.max() >= T:
            raise ValueError(f"logit positions {self.logit_positions} are not positions of {T} tokens")
        return rows % T

    # The axis along which each graph input's rows are tokens (what packing concatenates).
    TOKEN_AXES = (0, 0, 0, 0, 1, 1, 1, 1)

    # The patch inputs' shapes and what a request that leaves one out means by it.
    PATCH_DEFAULTS = (1.0, 0.0, 1.0, 0.0)

    def patch_shapes(self, L: int, H: int, D: int, E: int) -> tuple[tuple[int, ...], ...]:
        T = len(self.token_ids)
        return (L, T, H), (L, T, H, D), (L, T), (L, T, E)

    def inputs(self, L: int, H: int, D: int, E: int) -> list[np.ndarray | None]:
        """The graph inputs of this request alone; a patch input left out is None (its default,
        PATCH_DEFAULTS, filled in by the engine from memory it keeps: see constant_rows)."""
        T = len(self.token_ids)
        head_shape, z_shape, keep_shape, source_shape = self.patch_shapes(L, H, D, E)

        def given(value, shape):
            if value is None:
                return None
            value = np.asarray(value, dtype=np.float32)
            if value.shape != shape:
                raise ValueError(f"patch input of shape {value.shape}, expected {shape}")
            return value

        return [
            np.asarray(self.token_ids, dtype=np.int64),
            np.arange(T, dtype=np.int64),  # positions
            np.zeros(T, dtype=np.int64),  # segments (set when packed)
            np.full(T, 1.0 if self.mask_off else 0.0, dtype=np.float32),
            given(self.head_keep, head_shape),
            given(self.z_source, z_shape),
            given(self.resid_keep, keep_shape),
            given(self.resid_source, source_shape),
        ]


def decode_groups(lengths: list[int], position_bytes: int) -> list[list[int]]:
    """Which decode steps share an execution: indices into ``lengths`` (each step's cache length),
    longest first. The decode graph pads every cache of an execution to the longest, so a group
    takes a step only while its padding stays within DECODE_MAX_PADDING positions and its padded
    keys (or values, ``position_bytes`` per position) within DECODE_PACK_MAX_BYTES; a step
    alone always forms a group."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    cached = 0
    for index in order:
        if groups:
            group = groups[-1]
            padded = (len(group) + 1) * lengths[group[0]]
            if (
                padded - cached - lengths[index] <= DECODE_MAX_PADDING
                and padded * position_bytes <= DECODE_PACK_MAX_BYTES
            ):
                group.append(index)
                cached += lengths[index]
                continue
        groups.append([index])
        cached = lengths[index]
    return groups


def decode_step(token_id: int, past_k: np.ndarray, past_v: np.ndarray, length: int | None = None) -> tuple:
    """A decode step as (token_id, past_k [L, H, D, C], past_v [L, H, C, D], length): the cache is
    the first ``length`` of the C positions (default: all)."""
    capacity = past_k.shape[-1]
    length = capacity if length is None else int(length)
    if not 1 <= length <= capacity or past_v.shape[-2] != capacity:
        raise ValueError(f"a cache of {length} positions in arrays of {capacity} and {past_v.shape[-2]}")
    return token_id, past_k, past_v, length


def default_device() -> Device:
    """An accelerator when MAX finds one, else the CPU."""
    return Accelerator() if accelerator_count() > 0 else CPU()


class CompiledGPT2:
    """The compiled graphs of one model, callable with numpy arrays."""

    def __init__(self, config: GPT2Config, weights: Mapping[str, np.ndarray], device: Device | None = None) -> None:
        self.config = config
        self.device = device if device is not None else default_device()
        # The dense layers' weights transposed, [out, in], as every graph takes them (see
        # modules.Conv1D), made once; ``weights`` gives the checkpoint's [in, out] back as views
        # of them. A dict given in is updated to those views as each copy is made, so the
        # checkpoint's own arrays are freed one by one rather than kept beside the copies.
        transposed: dict[str, np.ndarray] = {}
        for name in [name for name in weights if name.endswith(CONV1D_SUFFIXES)]:
            transposed[name] = np.ascontiguousarray(np.asarray(weights[name]).T)
            if isinstance(weights, dict):
                weights[name] = transposed[name].T
        self._graph_weights = {**weights, **transposed}
        self.weights: Mapping[str, np.ndarray] = {**weights, **{name: value.T for name, value in transposed.items()}}
        self._weights = self.weights
        self._keys = trace_keys(config.n_layer)
        # A compiled model is not documented as safe to run from several
        # threads at once; requests are serialised (the CPU has 2 cores anyway).
        self._run_lock = PriorityLock({DECODE_PRIORITY: DECODE_MAX_WAIT_S})
        # Decode steps that arrive together run as one execution (see run_decode).
        self.decode_batcher = Batcher(
            self._decode_holding_lock,
            DECODE_MAX_BATCH,
            DECODE_GATHER_S,
            gather_when_alone=False,
            hold=lambda: self._run_lock.hold(DECODE_PRIORITY),
        )
        self._compile_lock = threading.Lock()
        self._lazy: dict[str, object] = {}  # the graphs compiled on first use, by name
        self._wte_transposed: np.ndarray | None = None  # see _wte_t
        # Seconds each graph took to compile in this process (absent until compiled).
        self.compile_seconds: dict[str, float] = {}
        # Where traces' arrays are copied to (gpt2_max.memory): None keeps MAX's output buffers
        # (one request) or fresh copies (packed); the app sets one sized to its trace store.
        self.trace_arena: Arena | None = None
        self._kept: dict[tuple, np.ndarray] = {}  # see _kept_rows
        self._pack_worker = ThreadPoolExecutor(1, thread_name_prefix="decode-pack")
        started = time.perf_counter()
        ref = DeviceRef.from_device(self.device)
        L, H, D = config.n_layer, config.n_head, config.head_dim
        with F.lazy():
            trace_module = GPT2Trace(config)
        self._trace = trace_module.compile(
            TensorType(DType.int64, ["rows"], device=ref),  # token_ids [N]
            TensorType(DType.int64, ["rows"], device=ref),  # positions [N]
            TensorType(DType.int64, ["rows"], device=ref),  # segments [N]
            TensorType(DType.float32, ["rows"], device=ref),  # mask_off [N]
            TensorType(DType.float32, [L, "rows", H], device=ref),  # head_keep [L, N, H]
            TensorType(DType.float32, [L, "rows", H, D], device=ref),  # z_source [L, N, H, D]
            TensorType(DType.float32, [L, "rows"], device=ref),  # resid_keep [L, N]
            TensorType(DType.float32, [L, "rows", config.n_embd], device=ref),  # resid_source [L, N, E]
            TensorType(DType.int64, ["logit_rows"], device=ref),  # logit_rows [S]
            weights=self._graph_weights,
        )
        self.compile_seconds["trace"] = time.perf_counter() - started

    def _compiled(self, graph: str):
        """The compiled ``graph`` ("analysis" or "decode"), compiled on the first call (timed)."""
        with self._compile_lock:
            if graph not in self._lazy:
                started = time.perf_counter()
                self._lazy[graph] = {"analysis": self._compile_analysis, "decode": self._compile_decode}[graph]()
                self.compile_seconds[graph] = time.perf_counter() - started
            return self._lazy[graph]

    def _compile_analysis(self):
        cfg = self.config
        ref = DeviceRef.from_device(self.device)
        with F.lazy():
            module = GPT2Analysis(cfg, CANDIDATE_TOP_K, NEAREST_TOP_K, LENS_TOP_K)
        names = ("ln_f.weight", "ln_f.bias")
        weights = {name: self._weights[name] for name in names}
        weights["wte_t"] = self._wte_t()
        wte = self._weights["wte.weight"].astype(np.float64)
        weights["wte_norms"] = np.sqrt(np.einsum("ve,ve->v", wte, wte)).astype(np.float32)  # [V]
        return module.compile(
            TensorType(DType.float32, ["rows", cfg.n_embd], device=ref),  # lens_rows [N, E]
            TensorType(DType.int64, ["rows"], device=ref),  # lens_targets [N]
            TensorType(DType.int64, ["rows"], device=ref),  # lens_target_rows [N]
            TensorType(DType.float32, ["candidates", cfg.n_embd], device=ref),  # candidate_rows [P, E]
            TensorType(DType.int64, ["candidates"], device=ref),  # candidate_targets [P]
            TensorType(DType.float32, ["queries", cfg.n_embd], device=ref),  # query_rows [M, E]
            weights=weights,
        )

    def _compile_decode(self):
        cfg = self.config
        ref = DeviceRef.from_device(self.device)
        with F.lazy():
            decode_module = GPT2DecodeStep(cfg)
        decode_weights = {**self._graph_weights, "wte_t": self._wte_t()}
        L, H, D = cfg.n_layer, cfg.n_head, cfg.head_dim
        return decode_module.compile(
            TensorType(DType.int64, ["batch"], device=ref),  # token_ids [B]
            TensorType(DType.int64, ["batch"], device=ref),  # positions [B]
            TensorType(DType.float32, [L, "batch", H, D, "past"], device=ref),  # past_k [L, B, H, D, P]
            TensorType(DType.float32, [L, "batch", H, "past", D], device=ref),  # past_v [L, B, H, P, D]
            TensorType(DType.int64, ["past"], device=ref),  # past_index [P]
            TensorType(DType.int64, ["narrow"], device=ref),  # narrow_rows [R]
            TensorType(DType.int64, ["wide"], device=ref),  # wide_rows [S]
            weights=decode_weights,
        )

    def _wte_t(self) -> np.ndarray:
        """wte transposed, [E, V] (+V*E floats, 154 MB for GPT-2), made once for the analysis and
        decode graphs (see GPT2Analysis and GPT2DecodeStep); called while compiling, under
        _compile_lock."""
        if self._wte_transposed is None:
            self._wte_transposed = np.ascontiguousarray(self._weights["wte.weight"].T)
        return self._wte_transposed

    def is_compiled(self, graph: str) -> bool:
        return graph in self.compile_seconds

    def warm(self, graph: str) -> None:
        """Compiles one graph ("analysis" or "decode") now rather than on first use."""
        self._compiled(graph)

    def constant_rows(self, fill: float, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array of ``shape`` full of ``fill``, a view of one buffer kept per value (the
        trace graph only reads it): a Run's default patch inputs (z_source alone is [L, T, H, D],
        2.4 MB at 64 tokens of GPT-2 small) would otherwise be fresh pages, faulted in per Run."""
        return self._kept_rows(("constant", fill), shape, fill)

    def _kept_rows(self, key: tuple, shape: tuple[int, ...], fill: float | None = None) -> np.ndarray:
        """A float32 array of ``shape`` over the flat buffer kept under ``key``, grown when too
        small (filled with ``fill`` when given, else left as it is: scratch to overwrite)."""
        count = int(np.prod(shape))
        buffer = self._kept.get(key)
        if buffer is None or buffer.size < count:
            buffer = np.empty(count, dtype=np.float32) if fill is None else np.full(count, fill, dtype=np.float32)
            self._kept[key] = buffer
        return buffer[:count].reshape(shape)

    def _to_device(self, array: np.ndarray) -> Buffer:
        buffer = Buffer.from_numpy(np.ascontiguousarray(array))
        return buffer if isinstance(self.device, CPU) else buffer.to(self.device)

    def _to_numpy(self, buffer: Buffer) -> np.ndarray:
        if not isinstance(self.device, CPU):
            buffer = buffer.to(CPU())
        return np.from_dlpack(buffer)

    def run_traces(self, requests: list[TraceRequest]) -> list[dict[str, np.ndarray]]:
        """One trace per request, packed into as few graph executions as PACK_ROWS allows
        (see GPT2Trace: sequences end to end, each reading only its own keys)."""
        results: list[dict[str, np.ndarray]] = []
        pack: list[TraceRequest] = []
        for request in requests:
            if pack and sum(len(r.token_ids) for r in pack) + len(request.token_ids) > PACK_ROWS:
                results += self._run_pack(pack)
                pack = []
            pack.append(request)
        if pack:
            results += self._run_pack(pack)
        return results

    def _run_pack(self, requests: list[TraceRequest]) -> list[dict[str, np.ndarray]]:
        cfg = self.config
        L, H, D, E = cfg.n_layer, cfg.n_head, cfg.head_dim, cfg.n_embd
        parts = [request.inputs(L, H, D, E) for request in requests]
        lengths = [len(request.token_ids) for request in requests]
        starts = np.cumsum([0, *lengths[:-1]])
        logit_rows = [request.logit_rows() for request in requests]
        # Each input's rows are per token: the pack is their concatenation along the token axis.
        # A patch input no request gives is its default over the whole pack, from constant_rows.
        packed = []
        for k, axis in enumerate(TraceRequest.TOKEN_AXES):
            values = [p[k] for p in parts]
            if k >= 4:
                shapes = [r.patch_shapes(L, H, D, E)[k - 4] for r in requests]
                fill = TraceRequest.PATCH_DEFAULTS[k - 4]
                if all(v is None for v in values):
                    whole = list(shapes[0])
                    whole[axis] = sum(shape[axis] for shape in shapes)
                    packed.append(self.constant_rows(fill, tuple(whole)))
                    continue
                values = [
                    self.constant_rows(fill, shape) if v is None else v for v, shape in zip(values, shapes, strict=True)
                ]
            packed.append(np.concatenate(values, axis=axis) if len(values) > 1 else values[0])
        packed[2] = np.repeat(np.arange(len(parts), dtype=np.int64), lengths)  # segments [N]
        packed.append(np.concatenate([rows + start for rows, start in zip(logit_rows, starts, strict=True)]))  # [S]
        with self._run_lock.hold(TRACE_PRIORITY):
            outputs = self._trace.execute_raw(*(self._to_device(a) for a in packed))
        arrays = [self._to_numpy(out) for out in outputs]
        if len(requests) == 1 and self.trace_arena is None:
            return [dict(zip(self._keys, arrays, strict=True))]  # MAX's own buffers, no copy
        traces = []
        logit_start = 0
        for start, length, rows in zip(starts, lengths, logit_rows, strict=True):
            stop = start + length
            blocks = []
            for key, array in zip(self._keys, arrays, strict=True):
                if key == "logits":  # [S, V]: this sequence's rows of logit_rows
                    blocks.append(array[logit_start : logit_start + len(rows)])
                elif key.endswith(SQUARE_KEYS):  # [H, N, N]: this sequence's diagonal block
                    blocks.append(array[:, start:stop, start:stop])
                else:  # [N, ...]
                    blocks.append(array[start:stop])
            if self.trace_arena is None:
                # Views of MAX's buffers (numpy owns them now): copying a pack's traces out into
                # fresh pages cost more than the execution (the benchmark's traces row).
                traces.append(dict(zip(self._keys, blocks, strict=True)))
            else:
                # Copies into the arena, which the trace store's budget counts: a view would keep
                # the whole pack's buffers alive behind a Run that accounts for its own part only.
                traces.append(dict(zip(self._keys, copy_into(self.trace_arena, blocks), strict=True)))
            logit_start += len(rows)
        return traces

    def run_analysis(
        self,
        lens_rows: np.ndarray | None = None,
        lens_targets: np.ndarray | None = None,
        candidate_rows: np.ndarray | None = None,
        query_rows: np.ndarray | None = None,
        lens_target_rows: np.ndarray | None = None,
        lens_group: int = 1,
        candidate_targets: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """lens_rows [N, E] with lens_targets [N] (default 0) and lens_target_rows [N] (default -1:
        see GPT2Analysis), candidate_rows [P, E] with candidate_targets [P] (default 0), query_rows
        [M, E] (each optional) -> the outputs of GPT2Analysis, each with the rows of its own input.

        Rows go through in chunks of about ANALYSIS_CHUNK_ROWS, so memory stays bounded for the
        lens's L x T rows; an input with no rows in a chunk goes in with none, and its part of
        the graph reads nothing (padding it with a row cost a 24-row lens a third of its time). A lens
        row may follow only a row of its own group of ``lens_group`` consecutive rows (chunks
        hold whole groups), given by its index in lens_rows."""
        analysis = self._compiled("analysis")
        E = self.config.n_embd

        def rows_of(values, dtype, shape, missing):
            return missing if values is None else np.asarray(values, dtype=dtype).reshape(-1, *shape)

        no_rows = np.zeros((0, E), np.float32)
        lens = rows_of(lens_rows, np.float32, (E,), no_rows)
        inputs = {
            "rows": lens,
            "targets": rows_of(lens_targets, np.int64, (), np.zeros(len(lens), np.int64)),
            "target_rows": rows_of(lens_target_rows, np.int64, (), np.full(len(lens), -1, np.int64)),
            "candidates": rows_of(candidate_rows, np.float32, (E,), no_rows),
        }
        inputs["candidate_targets"] = rows_of(
            candidate_targets, np.int64, (), np.zeros(len(inputs["candidates"]), np.int64)
        )
        inputs["queries"] = rows_of(query_rows, np.float32, (E,), no_rows)
        if not len(inputs["targets"]) == len(inputs["target_rows"]) == len(lens):
            raise ValueError("lens_targets and lens_target_rows need one entry per lens row")
        if len(inputs["candidate_targets"]) != len(inputs["candidates"]):
            raise ValueError("candidate_targets needs one entry per candidate row")
        group = max(1, int(lens_group))
        followed = inputs["target_rows"]
        if np.any((followed >= 0) & (followed // group != np.arange(len(lens)) // group)):
            raise ValueError(f"a lens row may follow only a row of its own group of {group}")
        step = max(group, ANALYSIS_CHUNK_ROWS // group * group)
        longest = max(len(v) for v in inputs.values())
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, max(longest, 1), step):
            chunk = {name: v[start : start + step] for name, v in inputs.items()}
            chunk["target_rows"] = np.where(
                chunk["target_rows"] >= 0, chunk["target_rows"] - start, -1
            )  # within the chunk
            with self._run_lock.hold(ANALYSIS_PRIORITY):
                outputs = analysis.execute_raw(*(self._to_device(a) for a in chunk.values()))
            parts.append({key: self._to_numpy(out).copy() for key, out in zip(ANALYSIS_OUTPUTS, outputs, strict=True)})
        return {key: np.concatenate([p[key] for p in parts]) for key in ANALYSIS_OUTPUTS}

    def run_decode(
        self, token_id: int, past_k: np.ndarray, past_v: np.ndarray, length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One step: the token at position P after past_k [L, H, D, C] and past_v [L, H, C, D], of
        which the first ``length`` positions (default: all C) are the cache (see GPT2DecodeStep)
        -> (logits [V], new_kv [L, 2, H, D]). Positions past ``length`` must be finite (zeros):
        a lone step reads the arrays in place, masking them, instead of copying the cache.

        Steps that other threads ask for at the same time (other sessions generating) run with
        it as one batched execution (``decode_batcher``); the numbers are each step's own."""
        result, _ = self.decode_batcher.submit((int(token_id), past_k, past_v, length))
        return result

    def run_decodes(self, steps: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several sequences' steps, (token_id, past_k [L, H, D, C_b], past_v [L, H, C_b, D][, length])
        each, in one execution of the decode graph -> [(logits [V], new_kv [L, 2, H, D])] in order."""
        with self._run_lock.hold(DECODE_PRIORITY):
            return self._decode_holding_lock(steps)

    def _decode_holding_lock(self, steps: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
        """run_decodes, for a caller that holds the engine lock (decode_batcher's runner holds it
        from before it takes its batch, so steps that come while it waits there join)."""
        cfg = self.config
        steps = [decode_step(*step) for step in steps]
        lengths = [length for _, _, _, length in steps]
        results: list[tuple[np.ndarray, np.ndarray]] = [None] * len(steps)  # type: ignore[list-item]
        for group in decode_groups(lengths, 4 * cfg.n_layer * cfg.n_head * cfg.head_dim):
            for index, result in zip(group, self._decode_group([steps[i] for i in group]), strict=True):
                results[index] = result
        return results

    def _decode_group(self, steps: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One execution of the decode graph for steps whose padded caches fit (decode_groups)."""
        decode = self._compiled("decode")
        lengths = [length for _, _, _, length in steps]
        B, P = len(steps), max(lengths)
        _, lone_k, lone_v, _ = steps[0]
        if B == 1 and lone_k.flags.c_contiguous and lone_v.flags.c_contiguous:
            # A lone step reads its cache where it is: all C positions, those past its length masked.
            packed_k, packed_v = lone_k[:, None], lone_v[:, None]  # [L, 1, H, D, C], [L, 1, H, C, D]
            P = lone_k.shape[-1]
        else:
            packed_k, packed_v = self._pack_caches(steps, lengths, P)
        rows = np.arange(B, dtype=np.int64)
        no_rows = rows[:0]
        narrow = B <= DECODE_NARROW_ROWS
        inputs = (
            np.array([token for token, _, _, _ in steps], dtype=np.int64),
            np.array(lengths, dtype=np.int64),  # positions
            packed_k,
            packed_v,
            np.arange(P, dtype=np.int64),  # past_index
            rows if narrow else no_rows,  # narrow_rows: the unembedding's layout for a few rows
            no_rows if narrow else rows,  # wide_rows
        )
        logits, new_kv = decode.execute_raw(*(self._to_device(a) for a in inputs))
        logits, new_kv = self._to_numpy(logits), self._to_numpy(new_kv)
        return [(logits[b].copy(), new_kv[b].copy()) for b in range(B)]

    def _pack_caches(self, steps: list[tuple], lengths: list[int], P: int) -> tuple[np.ndarray, np.ndarray]:
        """The steps' caches as one batch padded to P positions, [L, B, H, D, P] and [L, B, H, P, D],
        in buffers kept from step to step (the engine lock, held, guards them): 30 caches of 84
        positions are 140 MB, fresh pages at every step otherwise."""
        B = len(steps)
        L, H, D = self.config.n_layer, self.config.n_head, self.config.head_dim
        packed_k = self._decode_pack("k", (L, B, H, D, P))
        packed_v = self._decode_pack("v", (L, B, H, P, D))

        def pack(layers: slice) -> None:
            for b, (_, past_k, past_v, _) in enumerate(steps):
                length = lengths[b]
                packed_k[layers, b, :, :, :length] = past_k[layers, :, :, :length]
                packed_v[layers, b, :, :length] = past_v[layers, :, :length]
                # The padding is masked out (weight 0), but 0 x NaN is NaN: kept buffers hold
                # whatever was there, so it is zeroed.
                packed_k[layers, b, :, :, length:] = 0.0
                packed_v[layers, b, :, length:] = 0.0

        # Two threads, half the layers each (NumPy copies without the GIL): the copy runs while the
        # engine lock is held, MAX idle, so its time is every waiting view's.
        if B > 1:
            first_half = self._pack_worker.submit(pack, slice(0, L // 2))
            pack(slice(L // 2, L))
            first_half.result()
        else:
            pack(slice(0, L))
        return packed_k, packed_v

    def _decode_pack(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array of ``shape`` over the buffer ``name`` kept for packing decode caches
        (grown as needed, up to DECODE_PACK_MAX_BYTES; a larger pack gets fresh memory)."""
        if 4 * int(np.prod(shape)) > DECODE_PACK_MAX_BYTES:
            return np.empty(shape, dtype=np.float32)
        return self._kept_rows(("decode", name), shape)
