"""Finding, checking and reading checkpoints: Hub cache layout, save_pretrained layout, refusals."""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest
from tiny_checkpoint import TINY_CONFIG, TINY_REPO_ID, tiny_weights, write_hub_cache, write_save_pretrained

from gpt2_max.config import GPT2Config
from gpt2_max.errors import ModelLoadError
from gpt2_max.weights import expected_shapes, load_weights, locate

# config.json of the released GPT-2 family, as the Hub serves them (abridged to
# the fields that matter plus a few of the extras real files carry).
FAMILY = {
    "openai-community/gpt2": dict(n_embd=768, n_layer=12, n_head=12),
    "openai-community/gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16),
    "openai-community/gpt2-large": dict(n_embd=1280, n_layer=36, n_head=20),
    "openai-community/gpt2-xl": dict(n_embd=1600, n_layer=48, n_head=25),
    "distilbert/distilgpt2": dict(n_embd=768, n_layer=6, n_head=12),
}


@pytest.mark.parametrize("repo_id", list(FAMILY))
def test_family_configs_parse(repo_id):
    raw = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": 50257,
        "n_positions": 1024,
        "n_ctx": 1024,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "n_inner": None,
        "resid_pdrop": 0.1,
        "task_specific_params": {"text-generation": {"do_sample": True}},
        **FAMILY[repo_id],
    }
    config = GPT2Config.from_dict(raw)
    assert config.head_dim == 64
    assert config.mlp_dim == 4 * config.n_embd
    shapes = expected_shapes(config)
    assert shapes["h.0.attn.c_attn.weight"] == (config.n_embd, 3 * config.n_embd)
    assert len(shapes) == 2 + 12 * config.n_layer + 2


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        TINY_CONFIG.n_layer = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "llama"}, "not 'gpt2'"),
        ({"model_type": None}, "not 'gpt2'"),
        ({"activation_function": "relu"}, "activation_function"),
        ({"n_head": 5}, "divisible"),
    ],
)
def test_non_gpt2_configs_are_refused(change, message):
    raw = {**TINY_CONFIG.to_dict(), **change}
    with pytest.raises(ModelLoadError, match=message):
        GPT2Config.from_dict(raw)


def test_hub_cache_layout_loads_offline_by_repo_id():
    checkpoint = locate(TINY_REPO_ID)
    assert checkpoint.config == TINY_CONFIG
    assert "models--explorer-tests--tiny-gpt2" in str(checkpoint.directory)
    loaded = load_weights(checkpoint)
    expected = tiny_weights()
    assert set(loaded) == set(expected)  # attn.bias buffers skipped
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
        assert loaded[name].flags.c_contiguous and loaded[name].dtype == np.float32


def test_save_pretrained_layout_loads_the_same_weights(tmp_path):
    directory = write_save_pretrained(tmp_path / "ckpt")
    loaded = load_weights(locate(str(directory)))
    expected = tiny_weights()
    assert set(loaded) == set(expected)  # prefix stripped, lm_head (tied) dropped
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_save_pretrained_layout_traces_like_the_hub_layout(tmp_path, tiny_model):
    import gpt2_max

    directory = write_save_pretrained(tmp_path / "ckpt")
    other = gpt2_max.load(str(directory))
    ids = [464, 3290, 318]
    np.testing.assert_array_equal(other.trace(ids)["logits"], tiny_model.trace(ids)["logits"])


def test_pickle_only_checkpoints_are_refused(tmp_path):
    directory = tmp_path / "pickle"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(TINY_CONFIG.to_dict()))
    (directory / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        locate(str(directory))
    from huggingface_hub import constants

    write_hub_cache(constants.HF_HUB_CACHE, "explorer-tests/pickle-only", with_safetensors=False)
    with pytest.raises(ModelLoadError, match="arbitrary code"):
        locate("explorer-tests/pickle-only")


def test_missing_and_misshapen_tensors_are_refused(tmp_path):
    from safetensors.numpy import save_file

    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(TINY_CONFIG.to_dict()))
    tensors = tiny_weights()
    del tensors["h.1.mlp.c_fc.bias"]
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="lacks 1 GPT-2 parameters"):
        load_weights(locate(str(directory)))
    tensors = tiny_weights()
    tensors["wpe.weight"] = tensors["wpe.weight"][:10]
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="wpe.weight has shape"):
        load_weights(locate(str(directory)))
    (directory / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_weights(locate(str(directory)))


@pytest.mark.parametrize("name", ["", "./no/such/dir", "/no/such/dir", "a/b/c", "bad repo id!!"])
def test_unusable_names_are_refused(name):
    with pytest.raises(ModelLoadError):
        locate(name)


def test_unreachable_hub_fails_fast_with_advice(monkeypatch):
    from huggingface_hub import constants

    # Port 9 on loopback refuses connections at once: an unreachable Hub
    # without sending anything off this machine.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as error:
        locate("openai-community/gpt2")
    assert time.perf_counter() - started < 5.0
    message = str(error.value)
    assert "cannot be reached" in message
    assert "python -m gpt2_max download --model openai-community/gpt2" in message
    assert "HF_HUB_OFFLINE" in message


def test_offline_and_not_cached_says_how_to_fix():
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set"):
        locate("openai-community/gpt2-medium")


def test_peak_memory_while_loading_stays_under_two_and_a_half_times_the_file(tmp_path):
    # A mid-sized checkpoint (~55 MB) so fixed overheads do not dominate.
    config = GPT2Config(vocab_size=50257, n_positions=256, n_embd=256, n_layer=2, n_head=4)
    directory = write_save_pretrained(tmp_path / "mid", config)
    file_size = (directory / "model.safetensors").stat().st_size
    checkpoint = locate(str(directory))
    tracemalloc.start()
    try:
        loaded = load_weights(checkpoint)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(a.nbytes for a in loaded.values()) <= file_size
    assert peak < 2.5 * file_size, f"peak {peak / 1e6:.1f} MB for a {file_size / 1e6:.1f} MB file"
