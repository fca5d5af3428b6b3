"""Writes the bundled demo model's card (README.md beside its weights) from what was measured:
the training report (``training.json``, written by scripts/train_demo_model.py) and the explorer's
own MAX model and detectors run on the committed weights.

    .venv/bin/python scripts/demo_model_card.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpt2_max  # noqa: E402
from components.interpret import INDUCTION_TEST_LENGTH  # noqa: E402
from gpt2_max.attribution import head_scores, induction_test_ids, strongest  # noqa: E402
from gpt2_max.weights import BUNDLED_MODELS, DEMO_MODEL, SAFETENSORS_FILE  # noqa: E402

SEEDS = range(5)
CONTINUATIONS = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a",
    "Elizabeth was",
    '"My dear Mr. Bennet," said his lady to him one day,',
)


def detector_table(model) -> tuple[str, dict[str, np.ndarray]]:
    """The app's detector scores on its induction test, averaged over SEEDS: the top heads."""
    runs = []
    for seed in SEEDS:
        ids = induction_test_ids(INDUCTION_TEST_LENGTH, seed=seed)
        runs.append(head_scores(model, model.trace(ids), ids))
    scores = {name: np.mean([r[name] for r in runs], axis=0) for name in runs[0]}
    rows = ["| detector | strongest heads (layer.head: score) | chance |", "|---|---|---|"]
    chance = 1 / (2 * INDUCTION_TEST_LENGTH)
    for name, grid in scores.items():
        best = ", ".join(f"L{layer}H{head}: {value:.2f}" for layer, head, value in strongest(grid, 3))
        rows.append(f"| {name.replace('_', '-')} | {best} | ~{chance:.2f} |")
    return "\n".join(rows), scores


def main() -> None:
    directory = BUNDLED_MODELS[DEMO_MODEL]
    report = json.loads((directory / "training.json").read_text())
    settings, base, corpus = report["settings"], report["baselines_nats_per_token"], report["corpus"]
    model = gpt2_max.load(DEMO_MODEL)
    table, _ = detector_table(model)
    samples = []
    for text in CONTINUATIONS:
        generation = model.generate(text, max_new_tokens=24, temperature=0)
        samples.append(f"- {json.dumps(text)} → {json.dumps(generation.text)}")
    size_mb = (directory / SAFETENSORS_FILE).stat().st_size / 2**20
    phases = [report] + ([report["init"]["report"]] if report.get("init") and report["init"].get("report") else [])
    triples = (
        f"In the second phase {settings['triples_share']:.0%} of the windows are triples (a, b, a) of random ids, "
        "whose last id only attention to the previous token predicts."
        if settings.get("triples_share")
        else ""
    )
    minutes = sum(phase["training_minutes"] for phase in phases)
    curve = [
        "| phase | tokens seen | minutes | held-out nats/token | best previous-token head | best induction head |",
        "|---|---|---|---|---|---|",
    ]
    commands, phase_lines, first_stop = [], [], "?"
    for number, phase in enumerate(reversed(phases), start=1):
        p = phase["settings"]
        flags = (
            f"--batch {p['batch']} --lr {p['lr']:g} --warmup {p['warmup']} --steps {p['steps']} --dropout {p['dropout']} "
            f"--copy-share {p['copy_share']} --triples-share {p.get('triples_share', 0.0)} --eval-every {p['eval_every']}"
        )
        if p.get("stop_step"):
            flags += f" --stop-step {p['stop_step']}"
            first_stop = p["stop_step"]
        out = "/tmp/austen-phase-1" if number < len(phases) else "gpt2_max/assets/austen-gpt2"
        init = " --init /tmp/austen-phase-1" if number > 1 else ""
        commands.append(f".venv/bin/python scripts/train_demo_model.py {flags}{init} --out {out}")
        phase_lines.append(
            f"Phase {number}: batch {p['batch']} × {p['context']} tokens, peak lr {p['lr']:g}, dropout "
            f"{p['dropout']}, {phase['training_minutes']:.0f} minutes."
        )
        for point in phase["curve"]:
            curve.append(
                f"| {number} | {point['tokens'] / 1e6:.1f} M | {point['minutes']:.0f} | {point['held_out']:.3f} | "
                f"{point['best_previous_token']:.2f} | {point['best_induction']:.2f} |"
            )

    c = model.config
    card = f"""# {DEMO_MODEL}: the explorer's bundled demo model

A small language model with **GPT-2's architecture and GPT-2's full tokenizer** (50,257 ids, tied
`wte`), trained by this project on Jane Austen's six novels, so that the explorer shows a model that
has learned something with no network at all. **It is not GPT-2**: a teaching stand-in, about
{c.n_layer} × {c.n_embd} where GPT-2 small is 12 × 768, that knows Austen's English and little else (no
code, no French, no facts about the world). Load GPT-2 small for those
(`python -m gpt2_max download --model openai-community/gpt2` on a connected machine).

## Architecture
{c.n_layer} layers, width {c.n_embd}, {c.n_head} heads of {c.head_dim}, MLP {c.mlp_dim}, {c.n_positions} positions,
GELU (tanh), pre-LayerNorm, tied embedding: GPT-2 exactly, in Hugging Face's layout (`config.json` +
`model.safetensors`, fp16, {size_mb:.1f} MB; the loader upcasts to float32).

## Data and licence
- The six novels (*Sense and Sensibility*, *Pride and Prejudice*, *Mansfield Park*, *Emma*,
  *Northanger Abbey*, *Persuasion*; 1811–1818, public domain) from Debian's `r-cran-janeaustenr`
  (packaging MIT, text from Project Gutenberg), read from the package's R data without R
  (`scripts/austen_corpus.py`). Paragraphs joined with blank lines, italics marks removed, novels
  separated by `<|endoftext|>`.
- Split: the last 5% of each novel's tokens is held out ({corpus["held_out_tokens"]:,} tokens); training
  uses the rest ({corpus["train_tokens"]:,} tokens, {corpus["distinct_ids"]:,} distinct ids).
- **What training mixes in:** {settings["copy_share"]:.0%} of the training windows are not Austen but runs
  of 8–64 random token ids (half from the corpus's ids, half from the whole vocabulary) written over
  and over: only copying predicts their repeats, the pressure that makes previous-token and
  induction heads form. {triples}
- Ids that never occur in the training text share one trained row plus a fixed random offset each
  (so they stay distinct inputs); their output probabilities were trained as one group.
- The weights are released under the same terms as this repository's code.

## Training
Two phases, the second starting from the first's checkpoint (the first was stopped after its
step-{first_stop} evaluation, the best so far; `--stop-step` reproduces that):
```bash
.venv/bin/pip install torch==2.13.0
{chr(10).join(commands)}
.venv/bin/python scripts/demo_model_card.py     # this card, from training.json and the explorer's own detectors
```
Seed 0, AdamW (β = 0.9/0.95, weight decay 0.1), warm-up then cosine decay to 10% of the peak rate,
bf16 autocast, 2 threads; no dropout on attention patterns. {chr(10).join(phase_lines)}
The checkpoint kept is the one with the lowest held-out loss (one whose heads met the issue's
targets would have been preferred; none did). In all it took **{minutes:.0f} minutes** on the project's 2-core
build machine (PyTorch 2.13, CPU), sharing it with other work.

## Results
Held-out loss, full vocabulary (nats/token): **{report["held_out_full_vocabulary"]:.2f}**, against
{base["unigram"]:.2f} for a unigram model and {base["bigram_interpolated"]:.2f} for an interpolated bigram model fitted on the same
training text.

What its heads do, measured by the explorer's own detectors (`gpt2_max.attribution.head_scores`, the
Attention tab's grids) on its induction test ({INDUCTION_TEST_LENGTH} random ids repeated once, seeds 0–{len(SEEDS) - 1}):

{table}

So its heads score near chance: in this budget no previous-token or induction head formed (the
explorer's issue asked for 0.5 and 0.4), neither from random position rows nor, in a third run
abandoned after 2.5 M tokens, from sinusoidal ones. Published estimates put their emergence at
tens of millions of tokens for batches like these; GPT-2 small shows them on the same test.

Greedy continuations by the explorer's MAX model:
{chr(10).join(samples)}

Training curve (held-out loss in evaluation mode; head scores on the same induction test):

{chr(10).join(curve)}
"""
    (directory / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
