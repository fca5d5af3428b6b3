"""GPT-2 in Modular MAX that shows its work.

    model = gpt2_max.load("openai-community/gpt2")   # or a local directory, or "austen-gpt2" (bundled)
    ids = model.tokenizer.encode("Hello world")
    trace = model.trace(ids)                          # dict: hook name -> numpy array
    trace["blocks.0.attn.hook_pattern"].shape         # [H, T, T]

Every key and shape is documented in :mod:`gpt2_max.hooks`.
"""

import os

os.environ.setdefault("MODULAR_TELEMETRY_ENABLED", "0")

from gpt2_max.config import GPT2Config  # noqa: E402
from gpt2_max.errors import ExplorerError, InputError, ModelLoadError  # noqa: E402
from gpt2_max.model import GPT2, load  # noqa: E402
from gpt2_max.weights import DEFAULT_MODEL, DEMO_MODEL  # noqa: E402

__all__ = ["DEFAULT_MODEL", "DEMO_MODEL", "GPT2", "ExplorerError", "GPT2Config", "InputError", "ModelLoadError", "load"]
