"""Golden reference values from Hugging Face ``transformers`` for the tiny test checkpoint.

Writes ``tests/goldens/hf_tiny_gpt2.npz``: what PyTorch (CPU, float32) and
``transformers.GPT2LMHeadModel`` compute for the seeded tiny GPT-2 of
``tests/tiny_checkpoint.py`` (``TINY_CONFIG``, ``TINY_SEED``) on two fixed
prompts. The app never imports torch; these values are an independent
reference that the MAX implementation is compared against.

Regenerate (from the repository root), in a reference venv that is never part
of the app (``.venv-ref/`` is git-ignored):

    python3 -m venv /work/main/.venv-ref
    /work/main/.venv-ref/bin/pip install torch==2.13.0 transformers safetensors numpy
    /work/main/.venv-ref/bin/python tests/goldens/make_hf_goldens.py

``torch==2.13.0`` exactly: that version installs the CPU-only build from a
local wheel; a plain ``torch`` would fetch a huge CUDA build.

Contents, for each prompt ``p`` in ``("a", "b")`` (float32 unless noted):

- ``{p}.input_ids``   int64 [T]      the prompt's GPT-2 token ids
- ``{p}.logits``      [T, V]         logits of one forward pass over the prompt
- ``{p}.pattern.{i}`` [H, T, T]      attention probabilities (softmax output) of
                                     layer ``i`` in ``0..n_layer-1``
- ``{p}.hidden.{j}``  [T, E]         HF's ``hidden_states`` tuple, ``j`` in
                                     ``0..n_layer``:
                                       j = 0: token + position embeddings;
                                       j = 1..n_layer-1: output of block j-1
                                              (the residual stream after it);
                                       j = n_layer: output of the last block
                                              AFTER the final layer norm ``ln_f``
                                              (HF replaces the last entry with
                                              ``last_hidden_state``), so it is
                                              NOT the raw residual stream.
- ``{p}.greedy_ids``  int64 [20]     the 20 new token ids (prompt excluded) of
                                     ``model.generate(max_new_tokens=20,
                                     do_sample=False, use_cache=True,
                                     pad_token_id=50256, eos_token_id=None)``.
                                     ``eos_token_id=None`` turns stopping at
                                     <|endoftext|> (50256) off, so all 20 tokens
                                     are always generated, even if 50256 is
                                     chosen along the way (it then stays in the
                                     list and generation continues).

plus ``torch_version`` and ``transformers_version`` (0-d string arrays) and
``config`` (the checkpoint's config.json as a 0-d string array).

The model is loaded with ``attn_implementation="eager"`` (so attention
probabilities are returned), ``dtype=float32``, in eval mode (dropout off).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import GPT2LMHeadModel

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
OUTPUT = HERE / "hf_tiny_gpt2.npz"

# tiny_checkpoint imports gpt2_max.config and gpt2_max.weights, which are plain
# Python + numpy. gpt2_max/__init__.py, though, imports the MAX engine, which the
# reference venv does not have (and must not need). Register gpt2_max as a bare
# package whose __init__ is not run, so only those two submodules are imported.
sys.path.insert(0, str(REPO_ROOT))
if "gpt2_max" not in sys.modules:
    _package = types.ModuleType("gpt2_max")
    _package.__path__ = [str(REPO_ROOT / "gpt2_max")]
    sys.modules["gpt2_max"] = _package


def _load_tiny_checkpoint_module():
    # Loaded by path so that no unrelated installed ``tests`` package can shadow it.
    path = REPO_ROOT / "tests" / "tiny_checkpoint.py"
    spec = importlib.util.spec_from_file_location("tiny_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny_checkpoint = _load_tiny_checkpoint_module()

# "Hello world, this is GPT-2!"
PROMPT_A = [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 0]
# "The cat sat on the mat. The cat sat on the mat. ..." (24 tokens; a repeated
# sub-sequence, so induction-like attention has something to find).
PROMPT_B = [
    464,
    3797,
    3332,
    319,
    262,
    2603,
    13,
    383,
    3797,
    3332,
    319,
    262,
    2603,
    13,
    383,
    3797,
    3332,
    319,
    262,
    2603,
    13,
    383,
    3797,
    3332,
]
PROMPTS = {"a": PROMPT_A, "b": PROMPT_B}

MAX_NEW_TOKENS = 20
PAD_TOKEN_ID = 50256
EOS_TOKEN_ID = None  # no early stop: always MAX_NEW_TOKENS new tokens


def load_model(directory: Path) -> GPT2LMHeadModel:
    model = GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def forward_goldens(model: GPT2LMHeadModel, name: str, ids: list[int]) -> dict[str, np.ndarray]:
    config = model.config
    input_ids = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids, output_attentions=True, output_hidden_states=True)
    T, V, E, H, L = len(ids), config.vocab_size, config.n_embd, config.n_head, config.n_layer

    goldens: dict[str, np.ndarray] = {f"{name}.input_ids": np.asarray(ids, dtype=np.int64)}
    logits = out.logits[0].numpy().astype(np.float32)
    assert logits.shape == (T, V), logits.shape
    goldens[f"{name}.logits"] = logits

    assert len(out.attentions) == L, len(out.attentions)
    for i, attention in enumerate(out.attentions):
        pattern = attention[0].numpy().astype(np.float32)
        assert pattern.shape == (H, T, T), pattern.shape
        # Rows are probability distributions over earlier positions only.
        np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.triu(pattern, k=1) == 0.0)
        goldens[f"{name}.pattern.{i}"] = pattern

    assert len(out.hidden_states) == L + 1, len(out.hidden_states)
    for j, hidden in enumerate(out.hidden_states):
        hidden = hidden[0].numpy().astype(np.float32)
        assert hidden.shape == (T, E), hidden.shape
        goldens[f"{name}.hidden.{j}"] = hidden

    # Check the conventions the README documents, so an API change in
    # transformers cannot silently change what the file means.
    wte = model.transformer.wte.weight.detach().numpy()
    wpe = model.transformer.wpe.weight.detach().numpy()
    np.testing.assert_allclose(goldens[f"{name}.hidden.0"], wte[ids] + wpe[:T], atol=1e-6)
    # The last entry is post-ln_f: the (tied) unembedding of it gives the logits.
    np.testing.assert_allclose(goldens[f"{name}.hidden.{L}"] @ wte.T, logits, atol=1e-4)
    return goldens


def greedy_goldens(model: GPT2LMHeadModel, name: str, ids: list[int]) -> dict[str, np.ndarray]:
    input_ids = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        generated = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            use_cache=True,
            pad_token_id=PAD_TOKEN_ID,
            eos_token_id=EOS_TOKEN_ID,
        )
    new_ids = generated[0, len(ids) :].numpy().astype(np.int64)
    assert new_ids.shape == (MAX_NEW_TOKENS,), new_ids.shape

    # Cross-check against a plain argmax loop without a KV cache.
    sequence = list(ids)
    with torch.no_grad():
        for _ in range(MAX_NEW_TOKENS):
            logits = model(torch.tensor([sequence]), use_cache=False).logits[0, -1]
            sequence.append(int(torch.argmax(logits)))
    assert sequence[len(ids) :] == new_ids.tolist(), (sequence[len(ids) :], new_ids.tolist())
    return {f"{name}.greedy_ids": new_ids}


def main() -> None:
    torch.manual_seed(0)  # nothing here is random; set anyway
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}")
    print(f"transformers {transformers.__version__}")

    goldens: dict[str, np.ndarray] = {
        "torch_version": np.array(torch.__version__),
        "transformers_version": np.array(transformers.__version__),
    }
    with tempfile.TemporaryDirectory(prefix="tiny-gpt2-") as tmp:
        directory = tiny_checkpoint.write_save_pretrained(Path(tmp))
        goldens["config"] = np.array(json.dumps(json.loads((directory / "config.json").read_text()), sort_keys=True))
        model = load_model(directory)
        for name, ids in PROMPTS.items():
            assert max(ids) < model.config.vocab_size and len(ids) + MAX_NEW_TOKENS <= model.config.n_positions
            goldens.update(forward_goldens(model, name, ids))
            goldens.update(greedy_goldens(model, name, ids))

    np.savez_compressed(OUTPUT, **goldens)
    print(f"wrote {OUTPUT.relative_to(REPO_ROOT)} ({OUTPUT.stat().st_size / 1e6:.2f} MB)")
    for name in PROMPTS:
        print(f"{name}.greedy_ids = {goldens[f'{name}.greedy_ids'].tolist()}")


if __name__ == "__main__":
    main()
