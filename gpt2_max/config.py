"""GPT-2 hyper-parameters, read from a checkpoint's ``config.json``.

Field names are Hugging Face's, so a ``config.json`` maps onto this class
field for field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_max.errors import ModelLoadError

# The activations GPT-2 checkpoints name; all are the tanh approximation of GELU
# that OpenAI's original code used (Hugging Face's "gelu_new").
TANH_GELU_NAMES = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


@dataclass(frozen=True)
class GPT2Config:
    """The shape of a GPT-2 model. Frozen: one loaded model, one config."""

    vocab_size: int = 50257  # V: rows of the token embedding (and logits)
    n_positions: int = 1024  # P: longest sequence; rows of the position embedding
    n_embd: int = 768  # E: width of the residual stream
    n_layer: int = 12  # L: number of transformer blocks
    n_head: int = 12  # H: attention heads per block
    n_inner: int | None = None  # MLP hidden width; None means 4 * n_embd
    layer_norm_epsilon: float = 1e-5  # added to the variance in every layer norm
    activation_function: str = "gelu_new"  # GPT-2 uses tanh-approximate GELU

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ModelLoadError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.activation_function not in TANH_GELU_NAMES:
            raise ModelLoadError(
                f"activation_function={self.activation_function!r} is not "
                f"supported; GPT-2 uses one of {TANH_GELU_NAMES}"
            )
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if getattr(self, name) < 1:
                raise ModelLoadError(f"config field {name} must be positive")

    @property
    def head_dim(self) -> int:
        """D: the width of one attention head."""
        return self.n_embd // self.n_head

    @property
    def mlp_dim(self) -> int:
        """The MLP's hidden width (4E in every released GPT-2)."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GPT2Config:
        """Builds a config from a parsed ``config.json``; refuses non-GPT-2 models."""
        model_type = raw.get("model_type")
        if model_type != "gpt2":
            raise ModelLoadError(
                f"this checkpoint's model_type is {model_type!r}, not 'gpt2'; "
                "the explorer runs GPT-2-family checkpoints only "
                "(gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2)"
            )
        fields = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        return cls(**fields)

    @classmethod
    def from_json_file(cls, path: str | Path) -> GPT2Config:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelLoadError(f"cannot read {path}: {error}") from error
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{path} does not hold a JSON object")
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` a checkpoint of this shape carries."""
        return {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            **{name: getattr(self, name) for name in self.__dataclass_fields__},
            "n_ctx": self.n_positions,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
        }
