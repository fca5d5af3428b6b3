"""Tiny seeded GPT-2 checkpoints written in the layouts real ones come in.

- ``write_hub_cache``: the Hugging Face cache layout (``models--ORG--NAME/``
  with ``refs/main``, ``blobs/`` and ``snapshots/<commit>/`` symlinks), so the
  unchanged ``hf_hub_download`` call finds it offline, as it finds a real
  download. Names without a prefix plus ``h.{i}.attn.bias`` mask buffers, as
  in ``openai-community/gpt2``'s ``model.safetensors``.
- ``write_save_pretrained``: what ``transformers``' ``save_pretrained``
  writes: every name prefixed with ``transformer.`` and a tied ``lm_head.weight``.

Weights are N(0, 0.02) like GPT-2's initialisation (larger weights saturate
softmax and make comparisons meaningless); layer-norm scales are 1 plus noise
and biases are small noise, so every parameter affects the output.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from gpt2_max.config import GPT2Config
from gpt2_max.weights import expected_shapes

# The tiny shape every test uses, so the suite compiles one trace graph and one
# decode graph. Full vocabulary so the real tokenizer's ids are all valid.
TINY_CONFIG = GPT2Config(vocab_size=50257, n_positions=128, n_embd=64, n_layer=2, n_head=4)
TINY_SEED = 1234
TINY_REPO_ID = "explorer-tests/tiny-gpt2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_weights(config: GPT2Config = TINY_CONFIG, seed: int = TINY_SEED) -> dict[str, np.ndarray]:
    """Seeded float32 weights for every GPT-2 parameter of ``config``."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith((".ln_1.weight", ".ln_2.weight")) or name == "ln_f.weight":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            value = 0.02 * rng.standard_normal(shape)
        else:
            value = 0.02 * rng.standard_normal(shape)
        weights[name] = value.astype(np.float32)
    return weights


def _causal_buffer(config: GPT2Config) -> np.ndarray:
    # What old checkpoints store as h.{i}.attn.bias: a [1, 1, P, P] lower triangle.
    P = config.n_positions
    return np.tril(np.ones((P, P), dtype=np.float32)).reshape(1, 1, P, P)


def write_hub_cache(
    cache_dir: Path,
    repo_id: str = TINY_REPO_ID,
    config: GPT2Config = TINY_CONFIG,
    seed: int = TINY_SEED,
    with_safetensors: bool = True,
    weights: dict[str, np.ndarray] | None = None,
) -> Path:
    """Writes a checkpoint as a Hub cache entry; returns its snapshot directory.

    ``weights``: the parameters to write (default ``tiny_weights(config, seed)``), e.g. the
    constructed ones of ``pathological_checkpoint``."""
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / COMMIT
    blobs = repo_dir / "blobs"
    for directory in (snapshot, blobs, repo_dir / "refs"):
        directory.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)

    files: dict[str, bytes] = {"config.json": json.dumps(config.to_dict(), indent=2).encode()}
    if with_safetensors:
        tensors = dict(tiny_weights(config, seed) if weights is None else weights)
        for i in range(config.n_layer):
            tensors[f"h.{i}.attn.bias"] = _causal_buffer(config)
        staging = blobs / "staging.safetensors"
        save_file(tensors, str(staging), metadata={"format": "pt"})
        files["model.safetensors"] = staging.read_bytes()
        staging.unlink()
    else:
        files["pytorch_model.bin"] = b"pickle checkpoints are refused before being read"
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        link = snapshot / name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(Path("..", "..", "blobs", digest), link)
    return snapshot


def write_save_pretrained(
    directory: Path,
    config: GPT2Config = TINY_CONFIG,
    seed: int = TINY_SEED,
    weights: dict[str, np.ndarray] | None = None,
) -> Path:
    """Writes a checkpoint the way ``save_pretrained`` does (``transformer.`` prefix)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = tiny_weights(config, seed) if weights is None else weights
    tensors = {f"transformer.{name}": value for name, value in weights.items()}
    tensors["lm_head.weight"] = weights["wte.weight"].copy()  # tied to wte
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    return directory
