"""Where the real GPT-2 would be on this machine, for ``pytest -m real_weights``.

conftest.py points HF_HUB_CACHE at a private temporary cache before anything imports
huggingface_hub, so the real checkpoint must be looked for in the cache the run was started
with. conftest computes that path (``user_hub_cache``) before it swaps the variable, which is
why this module imports nothing that reads the Hugging Face settings at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# gpt2_max.weights.DEFAULT_MODEL (test_selfcheck checks they agree); spelled out so that
# conftest can import this module before it sets up the private cache.
REAL_REPO_ID = "openai-community/gpt2"


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def user_hub_cache(environ: Mapping[str, str]) -> Path:
    """The cache huggingface_hub uses under ``environ``, by the rules of
    ``huggingface_hub.constants``: $HF_HUB_CACHE, else the legacy $HUGGINGFACE_HUB_CACHE, else
    $HF_HOME/hub, with HF_HOME defaulting to $XDG_CACHE_HOME/huggingface (~/.cache/huggingface)."""
    default_home = os.path.join(os.path.expanduser("~"), ".cache")
    home = _expand(environ.get("HF_HOME", os.path.join(environ.get("XDG_CACHE_HOME", default_home), "huggingface")))
    legacy = environ.get("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub"))
    return Path(_expand(environ.get("HF_HUB_CACHE", legacy)))


@dataclass(frozen=True)
class RealCheckpoint:
    """Whether ``openai-community/gpt2`` is complete (config.json + model.safetensors) in a cache."""

    cache_dir: Path
    directory: Path | None  # its snapshot directory, None when it is not there
    problem: str = ""  # what is wrong with a cached copy that cannot be used

    @property
    def reason(self) -> str:
        """Why the real-weights tests are skipped (empty when they can run)."""
        if self.directory is not None:
            return ""
        found = f" ({self.problem})" if self.problem else ""
        return (
            f"{REAL_REPO_ID} is not in the Hugging Face cache (HF_HUB_CACHE={self.cache_dir}){found}; "
            f"run `python -m gpt2_max download --model {REAL_REPO_ID}` on a connected machine "
            "(or set HF_HUB_CACHE to a cache that holds it), then `pytest -m real_weights`"
        )


def find_real_checkpoint(cache_dir: str | os.PathLike[str]) -> RealCheckpoint:
    """Looks for the real checkpoint in ``cache_dir`` only, as the loader does offline."""
    from gpt2_max.errors import ModelLoadError
    from gpt2_max.weights import cached_directory

    try:
        directory = cached_directory(REAL_REPO_ID, cache_dir=cache_dir)
    except ModelLoadError as error:  # e.g. a pickle-only copy, which the loader refuses
        return RealCheckpoint(Path(cache_dir), None, str(error))
    return RealCheckpoint(Path(cache_dir), directory)
