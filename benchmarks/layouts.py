"""MAX's CPU matmul in the two weight layouts GPT-2's products can use, at the row counts the graphs see.

    .venv/bin/python -m benchmarks.layouts [--shapes 4]

For each product of GPT-2 small (the tied unembedding 768 -> 50,257 and the blocks' dense layers),
one small compiled graph per layout, timed at 1 to 256 rows (medians):
- ``rows_first``: the weight stored ``[out, in]``, computed as ``(W @ x^T)^T`` (modules.Conv1D, and
  the unembedding through ``wte`` as stored);
- ``cols_first``: the weight stored ``[in, out]``, computed as ``x @ W`` (the checkpoint's Conv1D
  layout, and the unembedding through the transposed ``wte_t``).
This is what chose the layouts of the trace and decode graphs (see gpt2_max/modules.py). Each graph
compiles once per machine (about a minute each with a cold MAX cache).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MODULAR_TELEMETRY_ENABLED", "0")

import numpy as np  # noqa: E402
from max.driver import Buffer  # noqa: E402
from max.dtype import DType  # noqa: E402
from max.experimental import functional as F  # noqa: E402
from max.experimental.nn import Module  # noqa: E402
from max.graph import DeviceRef, TensorType  # noqa: E402

from benchmarks.children import median_seconds  # noqa: E402
from gpt2_max.modules import _parameter  # noqa: E402

SHAPES = ((768, 50257), (768, 2304), (3072, 768), (768, 3072))  # (in, out): unembedding, c_attn, mlp c_proj, c_fc
ROWS = (1, 2, 4, 8, 16, 32, 64, 256)


class RowsFirst(Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        self.w = _parameter([n_out, n_in])  # [out, in]

    def forward(self, x):
        return (self.w @ x.transpose(0, 1)).transpose(0, 1)  # [R, in] -> [R, out]


class ColsFirst(Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        self.w = _parameter([n_in, n_out])  # [in, out]

    def forward(self, x):
        return x @ self.w  # [R, in] -> [R, out]


def time_layout(layout: type[Module], n_in: int, n_out: int, weight: np.ndarray) -> dict[int, float]:
    """Milliseconds per product at each row count."""
    with F.lazy():
        module = layout(n_in, n_out)
    compiled = module.compile(TensorType(DType.float32, ["rows", n_in], device=DeviceRef.CPU()), weights={"w": weight})
    rng = np.random.default_rng(0)
    times = {}
    for rows in ROWS:
        x = Buffer.from_numpy(rng.standard_normal((rows, n_in), dtype=np.float32))
        times[rows] = 1000 * median_seconds(lambda x=x: compiled.execute_raw(x), 15)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=len(SHAPES), help="how many of the products to time, in order")
    args = parser.parse_args()
    print(f"| {'product (in x out)':18} | {'rows':>4} | {'[out, in] ms':>12} | {'[in, out] ms':>12} | faster |")
    print(f"|{'-' * 20}|{'-' * 5}:|{'-' * 13}:|{'-' * 13}:|--------|")
    for n_in, n_out in SHAPES[: args.shapes]:
        weight = (0.02 * np.random.default_rng(1).standard_normal((n_out, n_in))).astype(np.float32)
        rows_first = time_layout(RowsFirst, n_in, n_out, weight)
        cols_first = time_layout(ColsFirst, n_in, n_out, np.ascontiguousarray(weight.T))
        for rows in ROWS:
            a, b = rows_first[rows], cols_first[rows]
            faster = "[out, in]" if a < b else "[in, out]"
            print(f"| {f'{n_in} x {n_out}':18} | {rows:>4} | {a:>12.2f} | {b:>12.2f} | {faster} |", flush=True)


if __name__ == "__main__":
    main()
