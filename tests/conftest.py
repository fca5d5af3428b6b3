"""Shared fixtures: tiny checkpoints in a private Hugging Face cache, each loaded once per session:
the seeded random one (``tiny_checkpoint``) and one with the real GPT-2's outliers and sinks
(``pathological_checkpoint``, same shape, so it reuses the compiled graphs).

The cache directory and HF_HUB_OFFLINE are set before anything imports
huggingface_hub, so every test loads through the same ``hf_hub_download`` call
a real download uses, and none can reach the network.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from real_weights import user_hub_cache  # noqa: E402

# The cache this run was started with, where `pytest -m real_weights` looks for the real
# GPT-2; read before the private cache below replaces it.
USER_HUB_CACHE = user_hub_cache(os.environ)

HUB_CACHE = Path(tempfile.mkdtemp(prefix="explorer-hub-cache-"))
os.environ["HF_HUB_CACHE"] = str(HUB_CACHE)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MODULAR_TELEMETRY_ENABLED"] = "0"

import pytest  # noqa: E402
from pathological_checkpoint import PATHOLOGICAL_REPO_ID, write_pathological_hub_cache  # noqa: E402
from tiny_checkpoint import TINY_REPO_ID, write_hub_cache  # noqa: E402

write_hub_cache(HUB_CACHE)
write_pathological_hub_cache(HUB_CACHE)


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny model loaded by repo id from the Hub cache: one compile for the whole suite."""
    import gpt2_max

    return gpt2_max.load(TINY_REPO_ID)


@pytest.fixture(scope="session")
def user_hub_cache_dir() -> Path:
    """The Hugging Face cache of the environment pytest was started in (not the private one)."""
    return USER_HUB_CACHE


@pytest.fixture(scope="session")
def tiny_weights_by_name():
    from tiny_checkpoint import tiny_weights

    return tiny_weights()


EXAMPLE_TEXT = "The cat sat on the mat. The cat sat on the"


def service_around(model, repo_id: str, tmp_path_factory):
    """The app's service around an already-loaded model (no second compile)."""
    from explorer.service import ExplorerService
    from explorer.settings import Settings

    settings = Settings(
        model=repo_id,
        examples_dir=str(tmp_path_factory.mktemp("examples")),
        cache_dir=str(tmp_path_factory.mktemp("explorer-cache")),
    )
    service = ExplorerService(settings, repo_id)
    service.loader.adopt(model)
    return service


@pytest.fixture(scope="session")
def explorer_service(tiny_model, tmp_path_factory):
    """The app's service around the already-compiled tiny model."""
    return service_around(tiny_model, TINY_REPO_ID, tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_run(explorer_service):
    """A live Run of the tiny model on a teaching example (12 tokens, repeated phrase)."""
    return explorer_service.run(EXAMPLE_TEXT)


@pytest.fixture(scope="session")
def full_logits(tiny_model, tiny_run):
    """[T, V]: the trace graph's logits at every position of tiny_run (a Run keeps its last row
    only; the views read the others from the analysis graph, checked against these)."""
    return tiny_model.trace(tiny_run.token_ids)["logits"]


@pytest.fixture(scope="session")
def pathological_model():
    """The checkpoint with the real GPT-2's outliers and sinks, by repo id from the Hub cache
    (TINY_CONFIG's shape: MAX's compiled graphs are reused)."""
    import gpt2_max

    return gpt2_max.load(PATHOLOGICAL_REPO_ID)


@pytest.fixture(scope="session")
def pathological_service(pathological_model, tmp_path_factory):
    return service_around(pathological_model, PATHOLOGICAL_REPO_ID, tmp_path_factory)


@pytest.fixture(scope="session")
def pathological_run(pathological_service):
    """A live Run of the pathological model on the same example as ``tiny_run``."""
    return pathological_service.run(EXAMPLE_TEXT)
