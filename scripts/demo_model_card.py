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
    "\"My dear Mr. Bennet,\" said his lady to him one day,",
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
    curve = ["| tokens seen | minutes | held-out nats/token | best previous-token head | best induction head |",
             "|---|---|---|---|---|"]
    for point in report["curve"]:
        curve.append(f"| {point['tokens'] / 1e6:.1f} M | {point['minutes']:.0f} | {point['held_out']:.3f} | "
                     f"{point['best_previous_token']:.2f} | {point['best_induction']:.2f} |")
    size_mb = (directory / SAFETENSORS_FILE).stat().st_size / 2**20
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
- Split: the last 5% of each novel's tokens is held out ({corpus['held_out_tokens']:,} tokens); training
  uses the rest ({corpus['train_tokens']:,} tokens, {corpus['distinct_ids']:,} distinct ids).
- **What training mixes in:** {settings['copy_share']:.0%} of the training windows are not Austen but runs
  of 8–64 random token ids (half from the corpus's ids, half from the whole vocabulary) written over
  and over. Only copying predicts their repeats; this is what made previous-token and induction heads
  form within a CPU budget (on Austen alone they had not formed after a few million tokens).
- Ids that never occur in the training text share one trained row plus a fixed random offset each
  (so they stay distinct inputs); their output probabilities were trained as one group.
- The weights are released under the same terms as this repository's code.

## Training
```bash
.venv/bin/pip install torch==2.13.0
.venv/bin/python scripts/train_demo_model.py --steps {settings['steps']} --eval-every {settings['eval_every']} --copy-share {settings['copy_share']}
.venv/bin/python scripts/demo_model_card.py     # this card, from training.json and the explorer's own detectors
```
Seed {settings['seed']}, AdamW (lr {settings['lr']:g}, β = 0.9/0.95, weight decay {settings['weight_decay']}), {settings['warmup']} warm-up
steps then cosine decay to 10%, batch {settings['batch']} × {settings['context']} tokens, dropout {settings['dropout']} (not on attention
patterns), bf16 autocast, {settings['threads']} threads. The checkpoint kept is the one with the lowest held-out loss.
It took **{report['training_minutes']:.0f} minutes** on the project's 2-core build machine (PyTorch 2.13, CPU).

## Results
Held-out loss, full vocabulary (nats/token): **{report['held_out_full_vocabulary']:.2f}**, against
{base['unigram']:.2f} for a unigram model and {base['bigram_interpolated']:.2f} for an interpolated bigram model fitted on the same
training text.

What its heads do, measured by the explorer's own detectors (`gpt2_max.attribution.head_scores`, the
Attention tab's grids) on its induction test ({INDUCTION_TEST_LENGTH} random ids repeated once, seeds 0–{len(SEEDS) - 1}):

{table}

Greedy continuations by the explorer's MAX model:
{chr(10).join(samples)}

Training curve (held-out loss in evaluation mode; head scores on the same induction test):

{chr(10).join(curve)}
"""
    (directory / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
