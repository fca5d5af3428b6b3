"""Host settings, read from the environment in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gpt2_max.weights import DEFAULT_MODEL, DEMO_MODEL

GPT2_FAMILY = (
    "openai-community/gpt2",
    "openai-community/gpt2-medium",
    "openai-community/gpt2-large",
    "openai-community/gpt2-xl",
    "distilbert/distilgpt2",
)


# A heatmap axis longer than this is drawn in blocks of neighbours (components.plots), and the
# views that compute per position (the logit lens) compute no more than a screenful of them.
MAX_CELLS_PER_AXIS = 128

# This app takes no uploads: the guard (components.guard) closes Gradio's upload routes, and
# Gradio's own max_file_size is set to this behind it.
MAX_UPLOAD_BYTES = 0


def with_demo_model(models: tuple[str, ...]) -> tuple[str, ...]:
    """The host's models plus the bundled demo model, which every host can load offline."""
    return models if DEMO_MODEL in models else (*models, DEMO_MODEL)


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    value = int(raw) if raw.lstrip("-").isdigit() else default
    return max(low, min(high, value))


@dataclass(frozen=True)
class Settings:
    """What the host allows. Every field has an environment variable (GPT2_EXPLORER_*)."""

    model: str = DEFAULT_MODEL  # loaded at start (--model overrides); DEMO_MODEL when it cannot be had
    allowed_models: tuple[str, ...] = with_demo_model(GPT2_FAMILY)  # the only models a browser may ask for
    max_prompt_tokens: int = 256  # longer prompts are cut to this, and the page says so
    max_prompt_chars: int = 20_000  # longer pastes are refused before tokenizing
    max_new_tokens: int = 64  # the Sample tab's ceiling
    max_sample_draws: int = 500  # "sample N times" ceiling
    concurrency_limit: int = 2  # model runs at once (2 cores)
    max_batch_size: int = 8  # Runs that arrive together go through the trace graph as one execution
    max_queue: int = 64  # waiting requests beyond this get "busy, try again"
    # Bytes of one request's body; a larger one is refused (413) before Gradio reads it. A prompt of
    # max_prompt_chars characters fits as JSON even with every character \u-escaped (12 bytes for an emoji).
    max_request_bytes: int = 512 * 1024
    # The Tokenize tab's merge replay draws a chunk of up to this many bytes whole (every step, every
    # part); of a longer chunk its first and last max_replay_bytes / 2 steps, each row the
    # max_replay_bytes parts around the pair it merges, and it says so.
    max_replay_bytes: int = 32
    # Long jobs (patching sweeps: hundreds of traces each) run in their own lane, this many at a time
    # for the whole class, so tab opens and controls never queue behind them ...
    long_jobs_at_once: int = 1
    # ... and each session may have this many queued or running (more are refused with a message).
    long_jobs_per_session: int = 1
    # A patching sweep runs the model once per cell (L x T runs for the residual sweep): its prompts
    # are kept to this many tokens, so one long job costs at most ~L x this many traces.
    max_patch_tokens: int = 64
    trace_cache_mb: int = 2048  # server-side memory for cached traces (LRU; evicted ones are recomputed)
    examples_dir: str = "examples"  # precomputed example traces committed with the app
    cache_dir: str = field(default_factory=lambda: os.path.expanduser("~/.cache/gpt2-explorer"))

    @classmethod
    def from_env(cls) -> Settings:
        allowed = os.environ.get("GPT2_EXPLORER_ALLOWED_MODELS", "")
        return cls(
            model=os.environ.get("GPT2_EXPLORER_MODEL", DEFAULT_MODEL),
            allowed_models=with_demo_model(tuple(m.strip() for m in allowed.split(",") if m.strip()) or GPT2_FAMILY),
            max_prompt_tokens=_int("GPT2_EXPLORER_MAX_PROMPT_TOKENS", 256, 1, 1024),
            max_prompt_chars=_int("GPT2_EXPLORER_MAX_PROMPT_CHARS", 20_000, 1, 1_000_000),
            max_new_tokens=_int("GPT2_EXPLORER_MAX_NEW_TOKENS", 64, 1, 1024),
            max_sample_draws=_int("GPT2_EXPLORER_MAX_SAMPLE_DRAWS", 500, 1, 10_000),
            concurrency_limit=_int("GPT2_EXPLORER_CONCURRENCY", 2, 1, 64),
            max_batch_size=_int("GPT2_EXPLORER_MAX_BATCH", 8, 1, 64),
            max_queue=_int("GPT2_EXPLORER_MAX_QUEUE", 64, 1, 10_000),
            max_request_bytes=_int("GPT2_EXPLORER_MAX_REQUEST_BYTES", 512 * 1024, 64 * 1024, 64 * 2**20),
            max_replay_bytes=_int("GPT2_EXPLORER_MAX_REPLAY_BYTES", 32, 8, 128),
            long_jobs_at_once=_int("GPT2_EXPLORER_LONG_JOBS", 1, 1, 16),
            long_jobs_per_session=_int("GPT2_EXPLORER_LONG_JOBS_PER_SESSION", 1, 1, 16),
            max_patch_tokens=_int("GPT2_EXPLORER_MAX_PATCH_TOKENS", 64, 2, 256),
            trace_cache_mb=_int("GPT2_EXPLORER_TRACE_CACHE_MB", 2048, 16, 65_536),
            examples_dir=os.environ.get("GPT2_EXPLORER_EXAMPLES_DIR", "examples"),
            cache_dir=os.environ.get("GPT2_EXPLORER_CACHE_DIR", os.path.expanduser("~/.cache/gpt2-explorer")),
        )
