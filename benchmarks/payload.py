"""Figure payload per tab: what Gradio sends for the tabs' gr.Plot outputs, in MB.

    .venv/bin/python -m benchmarks.payload

Builds a Run of GPT-2 small's shape (E=768, 12 layers, 12 heads, V=50,257) at T=64 and
T=256 without MAX: random N(0, 0.02) weights and the float64 numpy reference forward pass
(tests/reference.py), cast to float32 as the engine's trace is. Then renders every tab that
plots a Run and sums, per tab, ``len(gr.Plot().postprocess(fig).plot)`` in bytes (the JSON
string Gradio sends). The budget: at most 1 MB per tab at T=256 and 0.3 MB at T=64.
tests/test_payload.py asserts it with the same functions.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from gpt2_max.config import GPT2Config
from gpt2_max.tokenizer import Tokenizer

MB = 1_000_000
BUDGET_BYTES = {64: 300_000, 256: 1_000_000}
LENGTHS = (64, 256)

# Measured with this script on commit 42ce941, before the payload work (same synthetic Run), MB:
# full [T, 768] embedding heatmaps, per-cell hover strings on the mask, float64 z, a 32 x 32 grid.
# (Embed "before" lacks the nearest-token bars, which then needed the weights: ~0.008 MB.)
BEFORE_MB = {
    "tokenize": {64: 0.026, 256: 0.060},
    "embed": {64: 1.960, 256: 8.346},
    "mask": {64: 0.406, 256: 5.817},
    "attention": {64: 1.206, 256: 1.947},
    "mlp": {64: 0.195, 256: 0.299},
    "logits": {64: 0.015, 256: 0.036},
    "sample": {64: 0.020, 256: 0.020},
}

PROSE = (
    "The cat sat on the mat. It looked at the door, then at the window, and waited for the rain to stop. "
    "When the sun came out again, the children ran into the garden, shouting and laughing, and the old dog "
    "followed them slowly, its tail wagging. Nobody remembered who had left the gate open, but by evening "
    "every flower bed had been dug up and the neighbours were talking about nothing else. "
)


@functools.lru_cache(maxsize=1)
def tokenizer() -> Tokenizer:
    return Tokenizer()


@functools.lru_cache(maxsize=1)
def small_weights() -> dict[str, np.ndarray]:
    from tests.tiny_checkpoint import tiny_weights

    return tiny_weights(GPT2Config(), seed=0)


def token_ids(n: int) -> list[int]:
    ids = tokenizer().encode(PROSE)
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


@functools.lru_cache(maxsize=4)
def synthetic_run(n_tokens: int):
    """A Run of GPT-2 small's shape on ``n_tokens`` tokens of prose, traced by the numpy reference."""
    from explorer.runs import Run, RunRequest
    from tests.reference import reference_trace

    config = GPT2Config()
    ids = token_ids(n_tokens)
    trace = {k: np.asarray(v, dtype=np.float32) for k, v in reference_trace(small_weights(), config, ids).items()}
    return Run(
        request=RunRequest(tokenizer().decode(ids), tuple(ids), "payload-test"),
        tokens=tuple(tokenizer().tokens(ids)),
        trace=trace,
        config=config,
    )


def figure_bytes(fig) -> int:
    """Bytes of the JSON the app sends for ``fig`` in a gr.Plot (components.common.ExplorerBlocks)."""
    from components.plots import figure_json

    return len(figure_json(fig).encode())


def _figures(values) -> list:
    import plotly.graph_objects as go

    return [v for v in values if isinstance(v, go.Figure)]


def _call(function, run, *rest, **named):
    """Calls a render function whose parameters may be (run, weights, ...) or (run, ...)."""
    parameters = list(inspect.signature(function).parameters)
    if len(parameters) > 1 and parameters[1] in ("weights", "wpe"):
        return function(run, None, *rest, **named)
    return function(run, *rest, **named)


def next_tokens(run, k: int = 15):
    """The Logits tab's NextTokens summary computed in numpy (the app gets it from a MAX graph)."""
    from gpt2_max.analysis import NextTokens

    z = run.trace["logits"].astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    following = np.asarray(run.token_ids[1:] + (0,))
    actual = p[np.arange(run.n_tokens), following]
    actual[-1] = np.nan
    ranks = 1 + (p > actual[:, None]).sum(axis=1)
    ranks[-1] = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    fields = dict(
        top_ids=top,
        top_probs=np.take_along_axis(p, top, axis=1),
        entropy_bits=entropy,
        actual_probs=actual,
        actual_ranks=ranks,
    )
    if "logits" in NextTokens.__dataclass_fields__:
        fields["logits"] = run.trace["logits"]
    return NextTokens(**fields)


def nearest_figure(run, k: int = 10):
    """The Embed tab's nearest-token bars, from a numpy cosine search (the app's comes from a MAX graph)."""
    from components import tab_embed

    if "nearest" not in inspect.signature(tab_embed.render_nearest).parameters:
        return None
    from gpt2_max.analysis import Nearest

    wte = small_weights()["wte.weight"]
    vectors = run.trace["hook_embed"][-1:]
    cosine = (vectors @ wte.T) / (np.linalg.norm(vectors, axis=1, keepdims=True) * np.linalg.norm(wte, axis=1))
    cosine[0, run.token_ids[-1]] = -np.inf
    top = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
    ids = np.full((run.n_tokens, k), top[0])
    cosines = np.full((run.n_tokens, k), np.take_along_axis(cosine, top, axis=1)[0])
    return tab_embed.render_nearest(run, Nearest(ids=ids, cosines=cosines), tokenizer(), run.n_tokens - 1)[0]


def entropy_figure(run):
    from components import tab_logits

    if "nxt" in inspect.signature(tab_logits.entropy_figure).parameters:
        return tab_logits.entropy_figure(run, next_tokens(run), run.n_tokens - 1)
    return tab_logits.entropy_figure(run, run.n_tokens - 1)


def _call_mask(run, display):
    """The Mask tab's figures, its predictions from the synthetic Run's full logits (where its
    render takes them: the app's come from the MAX analysis graph)."""
    from components import tab_mask

    if "logits" in inspect.signature(tab_mask.render).parameters:
        return tab_mask.render(run, display, 0, 0, logits=run.trace["logits"])
    return tab_mask.render(run, display, 0, 0)


def tab_figures(run) -> dict[str, list]:
    """Every figure each tab draws right after a Run (default controls), by tab."""
    from components import tab_attention, tab_embed, tab_mlp, tab_sample, tab_tokenize
    from explorer.settings import Settings

    tok = tokenizer()
    display = lambda token_id: tok.token(token_id).display  # noqa: E731
    embed = list(tab_embed.render_embeddings(run))
    embed += list(_call(tab_embed.render_similarity, run, None))
    embed.append(nearest_figure(run))  # None (left out) where render_nearest takes other inputs
    sample = list(tab_sample.render_preview(run, tok, 1.0, 0, 1.0, 0))
    sample += list(tab_sample.render_samples(run, tok, Settings(), 1.0, 0, 1.0, 0, 200))
    return {
        "tokenize": _figures(tab_tokenize.render(run, tok, 0)),
        "embed": _figures(embed),
        "mask": _figures(_call_mask(run, display)),
        "attention": _figures(tab_attention.render(run, display, 0, 0)),
        "mlp": _figures(tab_mlp.render(run, 0)),
        "logits": [entropy_figure(run)],
        "sample": _figures(sample),
    }


def tab_bytes(run) -> dict[str, int]:
    return {tab: sum(figure_bytes(f) for f in figures) for tab, figures in tab_figures(run).items()}


def main() -> None:
    now = {n: tab_bytes(synthetic_run(n)) for n in LENGTHS}
    print("GPT-2 small shape (E=768, 12 layers, 12 heads, V=50,257), random weights; figure JSON per tab, MB")
    print(f"budget: {BUDGET_BYTES[64] / MB:g} MB at T=64, {BUDGET_BYTES[256] / MB:g} MB at T=256\n")
    print("| tab       | before T=64 | now T=64 | before T=256 | now T=256 |")
    print("|-----------|------------:|---------:|-------------:|----------:|")
    for tab in now[LENGTHS[0]]:
        before = BEFORE_MB.get(tab, {})
        cells = []
        for n in LENGTHS:
            b = before.get(n)
            cells += [
                "-" if b is None else f"{b:.3f}",
                f"{now[n][tab] / MB:.3f}" + (" !" if now[n][tab] > BUDGET_BYTES[n] else ""),
            ]
        print(f"| {tab:<9} | {cells[0]:>11} | {cells[1]:>8} | {cells[2]:>12} | {cells[3]:>9} |")
    print("\n! = over budget")


if __name__ == "__main__":
    main()
