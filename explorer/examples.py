"""Precomputed example traces: committed ones (``examples/``, written by
scripts/precompute_examples.py) and ones a host saves after its first start, so the example
prompts answer at once while the graphs compile."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from explorer.runs import PRECOMPUTED, Run, RunRequest
from gpt2_max.config import GPT2Config
from gpt2_max.tokenizer import Tokenizer

CONFIG_PREFIX = "config."


def example_path(examples_dir: str | Path, model_name: str, text: str) -> Path:
    slug = model_name.strip("/").replace("/", "--")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Path(examples_dir) / slug / f"{digest}.npz"


def _config_fields(arrays: dict[str, np.ndarray]) -> dict:
    fields = {}
    for key in [k for k in arrays if k.startswith(CONFIG_PREFIX)]:
        value = arrays.pop(key)
        fields[key[len(CONFIG_PREFIX) :]] = value.item() if value.ndim == 0 else value
    return {k: (str(v) if isinstance(v, np.str_) else v) for k, v in fields.items()}


def save_example(path: Path, run: Run) -> None:
    """Writes a Run as a precomputed example (what ``scripts/precompute_examples.py`` commits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        f"{CONFIG_PREFIX}{k}": v
        for k, v in run.config.to_dict().items()
        if k in GPT2Config.__dataclass_fields__ and v is not None
    }
    np.savez_compressed(path, token_ids=np.asarray(run.token_ids, dtype=np.int64), **config, **run.trace)


class Examples:
    """The example prompts' traces of each model, read from the first directory that has them."""

    def __init__(self, texts: tuple[str, ...], dirs: tuple[Path, ...], tokenizer: Tokenizer) -> None:
        self.texts = tuple(texts)
        self.dirs = dirs  # committed examples first; the last is where this host saves its own
        self.tokenizer = tokenizer

    def has_any(self, model_name: str) -> bool:
        return any(example_path(d, model_name, text).is_file() for d in self.dirs for text in self.texts)

    def load(self, text: str, model_name: str) -> Run | None:
        path = next((p for p in (example_path(d, model_name, text) for d in self.dirs) if p.is_file()), None)
        if path is None:
            return None
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        ids = [int(i) for i in arrays.pop("token_ids")]
        config = GPT2Config.from_dict({"model_type": "gpt2", **_config_fields(arrays)})
        return Run(
            request=RunRequest(text, tuple(ids), model_name, source=PRECOMPUTED),
            tokens=tuple(self.tokenizer.tokens(ids)),
            trace=arrays,
            config=config,
        )

    def save(self, run: Run) -> None:
        save_example(example_path(self.dirs[-1], run.model_name, run.text), run)
