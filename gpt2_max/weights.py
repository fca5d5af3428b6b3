"""Finding a GPT-2 checkpoint (Hub repo id or local directory) and reading its weights.

Weights come back as float32 numpy arrays under Hugging Face's names without
the ``transformer.`` prefix (``wte.weight``, ``h.0.attn.c_attn.weight``, ...),
in the checkpoint's own layout (GPT-2's ``Conv1D`` stores ``[in, out]``), so
they map key for key onto :mod:`gpt2_max.modules`. The decode-step graph wants
those four weights per block transposed; :mod:`gpt2_max.engine` makes that copy.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from gpt2_max.config import GPT2Config
from gpt2_max.errors import ModelLoadError

DEFAULT_MODEL = "openai-community/gpt2"
# Shipped inside the package (config.json + model.safetensors), loadable with no network: a small
# model with GPT-2's architecture and tokenizer trained on Jane Austen's novels
# (scripts/train_demo_model.py; its model card is README.md beside the weights).
DEMO_MODEL = "austen-gpt2"
BUNDLED_MODELS = {DEMO_MODEL: Path(__file__).resolve().parent / "assets" / DEMO_MODEL}
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILES = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")

# Seconds to wait for a TCP connection to the Hub before declaring it unreachable.
# hf_hub_download itself retries for ~24 s when offline; checking first keeps the
# whole failure under 5 s.
HUB_CONNECT_TIMEOUT_S = 3.0

# Buffers some checkpoints carry beside the parameters: the causal-mask
# triangle and its fill value. GPT-2 builds its mask from positions instead.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_PREFIX = "transformer."
# GPT-2's Conv1D weights, stored [in, out].
CONV1D_SUFFIXES = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


@dataclass(frozen=True)
class Checkpoint:
    """A located checkpoint: where its files are and what it was asked for as."""

    name: str  # the repo id or directory the user gave
    directory: Path  # holds config.json and model.safetensors
    config: GPT2Config

    @property
    def safetensors_path(self) -> Path:
        return self.directory / SAFETENSORS_FILE


def _offline_advice(repo_id: str) -> str:
    return (
        f"To use {repo_id!r} without a network, download it once on a connected "
        f"machine with `python -m gpt2_max download --model {repo_id}` (it lands in "
        "the Hugging Face cache, ~/.cache/huggingface/hub or $HF_HUB_CACHE), then "
        "run with HF_HUB_OFFLINE=1; or pass --model a local directory holding "
        "config.json and model.safetensors."
    )


def _refuse_pickle(name: str) -> ModelLoadError:
    return ModelLoadError(
        f"{name} has no model.safetensors, only a pickle checkpoint "
        "(pytorch_model.bin or similar). Pickle files can run arbitrary code when "
        "loaded, so the explorer reads safetensors only. Convert it with "
        "transformers (`save_pretrained(dir, safe_serialization=True)`) or pick a "
        "repository that ships model.safetensors."
    )


def hub_is_reachable(timeout_s: float = HUB_CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within ``timeout_s``."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    # DNS lookups ignore socket timeouts, so the whole attempt runs in a
    # daemon thread that is abandoned after the deadline.
    def attempt() -> None:
        try:
            with socket.create_connection((url.hostname, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    return bool(result and result[0])


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "") in (
        "1",
        "true",
        "TRUE",
        "yes",
    )


def cached_directory(repo_id: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The cached snapshot holding config.json and model.safetensors, if complete.

    Looks only in the cache (never the network): ``cache_dir``, or huggingface_hub's
    current cache ($HF_HUB_CACHE) when None.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        config = hf_hub_download(repo_id, CONFIG_FILE, cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError):
        return None
    directory = Path(config).parent
    try:
        hf_hub_download(repo_id, SAFETENSORS_FILE, cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError):
        if any((directory / name).exists() for name in PICKLE_FILES):
            raise _refuse_pickle(repo_id) from None
        return None
    return directory


def download(repo_id: str) -> Path:
    """Downloads (or finds in the cache) config.json and model.safetensors of a Hub repo."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        cached = cached_directory(repo_id)
    except HFValidationError as error:
        raise ModelLoadError(
            f"{repo_id!r} is neither a local directory nor a valid Hub repo id (like openai-community/gpt2)"
        ) from error
    if cached is not None:
        return cached
    if _hub_offline():
        raise ModelLoadError(
            f"{repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. " + _offline_advice(repo_id)
        )
    if not hub_is_reachable():
        raise ModelLoadError(
            f"the Hugging Face Hub cannot be reached and {repo_id!r} is not cached. " + _offline_advice(repo_id)
        )
    try:
        config = hf_hub_download(repo_id, CONFIG_FILE)
        GPT2Config.from_json_file(config)  # refuse non-GPT-2 before the big download
        try:
            hf_hub_download(repo_id, SAFETENSORS_FILE)
        except EntryNotFoundError:
            raise _refuse_pickle(repo_id) from None
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise ModelLoadError(
            f"no public model {repo_id!r} on the Hugging Face Hub (check the spelling, e.g. openai-community/gpt2)"
        ) from error
    except EntryNotFoundError as error:
        raise ModelLoadError(f"{repo_id!r} has no config.json; it is not a transformers model") from error
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise ModelLoadError(
            f"downloading {repo_id!r} failed ({type(error).__name__}). " + _offline_advice(repo_id)
        ) from error
    return Path(config).parent


def available(repo_id: str) -> bool:
    """Whether ``repo_id`` can be had now: bundled, a local directory, in the Hugging Face cache,
    or on a Hub that answers (at most HUB_CONNECT_TIMEOUT_S to find out)."""
    if repo_id in BUNDLED_MODELS or Path(repo_id).expanduser().is_dir():
        return True
    try:
        if cached_directory(repo_id) is not None:
            return True
    except Exception:  # noqa: BLE001 - an invalid id or a broken cache entry: not loadable now
        return False
    return not _hub_offline() and hub_is_reachable()


def locate(repo_id_or_dir: str | os.PathLike[str] = DEFAULT_MODEL) -> Checkpoint:
    """Finds a checkpoint: a bundled model by its short name (DEMO_MODEL), a local directory if
    one exists at that path, else a Hub repo."""
    name = str(repo_id_or_dir).strip()
    if not name:
        raise ModelLoadError("no model given; try openai-community/gpt2")
    path = BUNDLED_MODELS.get(name, Path(name).expanduser())
    if path.is_dir():
        directory = path
        if not (directory / CONFIG_FILE).is_file():
            raise ModelLoadError(f"{directory} has no config.json")
        if not (directory / SAFETENSORS_FILE).is_file():
            if any((directory / f).exists() for f in PICKLE_FILES):
                raise _refuse_pickle(str(directory))
            raise ModelLoadError(f"{directory} has no model.safetensors")
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:
        # Hub ids are "name" or "org/name"; anything else was meant as a path.
        raise ModelLoadError(f"no directory {name!r}")
    else:
        directory = download(name)
    return Checkpoint(name=name, directory=directory, config=GPT2Config.from_json_file(directory / CONFIG_FILE))


def expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every parameter GPT-2 has, by Hugging Face name, with its checkpoint shape."""
    E, F_, V, P = config.n_embd, config.mlp_dim, config.vocab_size, config.n_positions
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, E), "wpe.weight": (P, E)}
    for i in range(config.n_layer):
        block = {
            "ln_1.weight": (E,),
            "ln_1.bias": (E,),
            "attn.c_attn.weight": (E, 3 * E),  # Conv1D: [in, out], columns q|k|v
            "attn.c_attn.bias": (3 * E,),
            "attn.c_proj.weight": (E, E),
            "attn.c_proj.bias": (E,),
            "ln_2.weight": (E,),
            "ln_2.bias": (E,),
            "mlp.c_fc.weight": (E, F_),
            "mlp.c_fc.bias": (F_,),
            "mlp.c_proj.weight": (F_, E),
            "mlp.c_proj.bias": (E,),
        }
        shapes.update({f"h.{i}.{key}": shape for key, shape in block.items()})
    shapes.update({"ln_f.weight": (E,), "ln_f.bias": (E,)})
    return shapes


def canonical_name(name: str) -> str | None:
    """Hugging Face name -> our name; None for entries that are not parameters."""
    if name.startswith(_PREFIX):
        name = name[len(_PREFIX) :]
    if name.endswith(_BUFFER_SUFFIXES) or name == "lm_head.weight":
        # lm_head.weight, when present, is the same matrix as wte.weight (tied).
        return None
    return name


def load_weights(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """Reads every parameter as a contiguous float32 array, checked against the config.

    Tensors are read one at a time from the memory-mapped file, so peak memory
    is the float32 weights plus one tensor, not two copies of the file.
    """
    from safetensors import SafetensorError, safe_open

    expected = expected_shapes(checkpoint.config)
    weights: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(checkpoint.safetensors_path), framework="numpy") as handle:
            for stored_name in handle.keys():
                name = canonical_name(stored_name)
                if name is None:
                    continue
                if name not in expected:
                    raise ModelLoadError(
                        f"unexpected tensor {stored_name!r} in {checkpoint.name}: not a GPT-2 parameter"
                    )
                array = handle.get_tensor(stored_name)
                weights[name] = np.ascontiguousarray(array, dtype=np.float32)
    except SafetensorError as error:
        raise ModelLoadError(f"{checkpoint.safetensors_path} is not a readable safetensors file: {error}") from error
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ModelLoadError(f"{checkpoint.name} lacks {len(missing)} GPT-2 parameters, e.g. {missing[:3]}")
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise ModelLoadError(
                f"{name} has shape {weights[name].shape} in {checkpoint.name}, but its config.json implies {shape}"
            )
    return weights
