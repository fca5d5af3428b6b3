"""The real-weights checks' plumbing, proven without the real checkpoint.

- where the real GPT-2 is looked for, and the skip reason when it is not there;
- ``pytest -m real_weights`` skipping on a cache without it and running every check on a cache
  that holds a (tiny, random) checkpoint under the real repo id;
- ``python -m gpt2_max selfcheck``'s table and exit status;
- every measured value recomputed here from the tiny model's traces by other code, so the
  table shows measurements, not copies of the goldens; random weights fail every check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from real_weights import REAL_REPO_ID, find_real_checkpoint, user_hub_cache
from tiny_checkpoint import write_hub_cache

from gpt2_max import selfcheck
from gpt2_max.selfcheck import BOS, CHECKS, format_table, run_check, run_checks
from gpt2_max.weights import DEFAULT_MODEL

REPO = Path(__file__).resolve().parent.parent
CHECKS_BY_KEY = {check.key: check for check in CHECKS}
HF_CACHE_VARIABLES = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")


@pytest.fixture(scope="module")
def tiny_results(tiny_model):
    return {result.check.key: result for result in run_checks(tiny_model)}


@pytest.fixture
def cache_with_tiny_real_gpt2(tmp_path):
    """A Hub cache holding the tiny random checkpoint under the real repo id."""
    cache = tmp_path / "hub"
    snapshot = write_hub_cache(cache, repo_id=REAL_REPO_ID)
    return cache, snapshot


def _environment_without_hf_cache(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in HF_CACHE_VARIABLES}
    env.update(overrides)
    return env


# ---------------------------------------------------------------- where the real GPT-2 is looked for


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"XDG_CACHE_HOME": "{tmp}/xdg"},
        {"HF_HOME": "~/hf-home"},
        {"HF_HOME": "{tmp}/hf-home", "HUGGINGFACE_HUB_CACHE": "{tmp}/legacy"},
        {"HUGGINGFACE_HUB_CACHE": "{tmp}/legacy", "HF_HUB_CACHE": "~/hub-cache"},
    ],
)
def test_the_user_cache_is_where_huggingface_hub_looks(tmp_path, monkeypatch, variables):
    variables = {key: value.format(tmp=tmp_path) for key, value in variables.items()}
    env = _environment_without_hf_cache(HOME=str(tmp_path / "home"), **variables)
    printed = subprocess.run(
        [sys.executable, "-c", "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    monkeypatch.setenv("HOME", env["HOME"])  # "~" expands from the process's HOME
    assert user_hub_cache(env) == Path(printed)


def test_a_cache_without_the_real_gpt2_gives_the_skip_reason(tmp_path):
    from huggingface_hub import constants

    assert REAL_REPO_ID == DEFAULT_MODEL
    # An empty cache, and the session's cache, which holds only the tiny test model.
    for cache in (tmp_path / "empty", Path(constants.HF_HUB_CACHE)):
        found = find_real_checkpoint(cache)
        assert found.directory is None
        assert found.reason.startswith(f"openai-community/gpt2 is not in the Hugging Face cache (HF_HUB_CACHE={cache})")
        assert "python -m gpt2_max download --model openai-community/gpt2" in found.reason
        assert "pytest -m real_weights" in found.reason


def test_a_pickle_only_copy_is_not_the_real_checkpoint(tmp_path):
    write_hub_cache(tmp_path, repo_id=REAL_REPO_ID, with_safetensors=False)
    found = find_real_checkpoint(tmp_path)
    assert found.directory is None
    assert "pickle" in found.reason


def test_a_hub_layout_copy_under_the_real_id_is_found(cache_with_tiny_real_gpt2):
    cache, snapshot = cache_with_tiny_real_gpt2
    found = find_real_checkpoint(cache)
    assert found.directory == snapshot
    assert (found.directory / "model.safetensors").is_file()
    assert found.reason == ""


def _pytest_real_weights(cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "real_weights",
            "tests/test_real_weights.py",
            "-q",
            "-rfs",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        env=_environment_without_hf_cache(HF_HUB_CACHE=str(cache)),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_pytest_m_real_weights_skips_with_the_reason_without_the_checkpoint(tmp_path):
    run = _pytest_real_weights(tmp_path / "empty-hub-cache")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{len(CHECKS)} skipped" in run.stdout
    assert (
        f"openai-community/gpt2 is not in the Hugging Face cache (HF_HUB_CACHE={tmp_path / 'empty-hub-cache'})"
        in run.stdout
    )


def test_pytest_m_real_weights_runs_every_check_when_the_checkpoint_is_cached(cache_with_tiny_real_gpt2):
    cache, _ = cache_with_tiny_real_gpt2
    run = _pytest_real_weights(cache)
    # Random weights under the real name: every check runs, and every one fails.
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{len(CHECKS)} failed" in run.stdout and "skipped" not in run.stdout
    for check in CHECKS:
        assert f"FAILED tests/test_real_weights.py::test_published_value_holds[{check.key}]" in run.stdout


# --------------------------------------------------------------------------- the selfcheck command


def test_selfcheck_prints_every_check_and_fails_on_random_weights(
    cache_with_tiny_real_gpt2, monkeypatch, capsys, tiny_results
):
    from huggingface_hub import constants

    from gpt2_max.__main__ import main

    cache, _ = cache_with_tiny_real_gpt2
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # hf_hub_download reads it per call
    assert main(["selfcheck", "--model", REAL_REPO_ID]) == 1
    printed = capsys.readouterr().out
    # The same weights as the session's tiny model, so the same measurements, row for row.
    assert format_table(list(tiny_results.values())) in printed
    rows = [line for line in printed.splitlines() if " | " in line]
    assert rows[0].split() == ["check", "|", "expected", "|", "measured", "|", "holds"]
    for check in CHECKS:
        (row,) = [line for line in rows if line.startswith(check.title + " ")]
        assert row.endswith("✗")
    assert "✓" not in printed
    assert f"0 of {len(CHECKS)} checks hold." in printed


def test_selfcheck_without_the_model_says_how_to_get_it(capsys):
    from gpt2_max.__main__ import main

    # The session's cache lacks it and HF_HUB_OFFLINE=1 (conftest).
    assert main(["selfcheck", "--model", REAL_REPO_ID]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: 'openai-community/gpt2' is not in the Hugging Face cache")
    assert "python -m gpt2_max download --model openai-community/gpt2" in captured.err
    assert "Traceback" not in captured.err + captured.out


# ------------------------------------------------------------------ the measured values are measured


def test_greedy_row_is_the_argmax_path_of_full_traces(tiny_model, tiny_results):
    ids = [464, 3290]
    while len(ids) < 20:
        ids.append(int(tiny_model.trace(ids)["logits"][-1].argmax()))
    result = tiny_results["greedy_the_dog"]
    assert result.measured == ids
    assert result.expected == selfcheck.GREEDY_GOLDEN and not result.holds


def test_loss_row_is_the_cross_entropy_of_the_trace(tiny_model, tiny_results):
    ids = [50256, 15496, 995, 0]
    assert ids[1:] == tiny_model.tokenizer.encode("Hello world!")
    logits = tiny_model.trace(ids)["logits"].astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    loss = -np.mean([np.log(probabilities[position, ids[position + 1]]) for position in range(3)])
    result = tiny_results["loss_hello_world"]
    assert result.measured == pytest.approx(loss, rel=1e-9)
    assert result.expected == 5.331855773925781 and not result.holds


def _induction_score_by_definition(pattern: np.ndarray, ids: list[int]) -> float:
    """Mean over queries i with an earlier copy of token i at j - 1 of the attention on those keys j."""
    per_query = []
    for i in range(len(ids)):
        keys = [j for j in range(1, i + 1) if ids[j - 1] == ids[i]]
        if keys:
            per_query.append(sum(pattern[i, j] for j in keys))
    return float(np.mean(per_query))


def test_induction_row_ranks_heads_by_their_induction_score(tiny_model, tiny_results):
    config = tiny_model.config
    scores = np.zeros((config.n_layer, config.n_head))
    for seed in range(10):
        half = np.random.default_rng(seed).integers(1000, 10000, size=50).tolist()
        ids = half + half
        trace = tiny_model.trace(ids)
        for layer in range(config.n_layer):
            for head in range(config.n_head):
                pattern = trace[f"blocks.{layer}.attn.hook_pattern"][head].astype(np.float64)
                scores[layer, head] += _induction_score_by_definition(pattern, ids) / 10
    ranked = sorted(
        ((f"{layer}.{head}", scores[layer, head]) for layer in range(config.n_layer) for head in range(config.n_head)),
        key=lambda item: -item[1],
    )[:5]
    result = tiny_results["induction_heads"]
    assert list(result.measured) == [name for name, _ in ranked]
    np.testing.assert_allclose(list(result.measured.values()), [score for _, score in ranked], rtol=1e-9)
    assert not result.holds


def _logit_difference(model, ids: list[int], answer: str, wrong: str) -> float:
    logits = model.trace(ids)["logits"][-1]
    (answer_id,), (wrong_id,) = model.tokenizer.encode(answer), model.tokenizer.encode(wrong)
    return float(logits[answer_id] - logits[wrong_id])


def test_ioi_rows_are_logit_differences_of_the_published_prompts(tiny_model, tiny_results):
    tokenizer = tiny_model.tokenizer
    eight = tiny_results["ioi_eight_prompts"]
    expected_per_prompt = []
    for text, answer, wrong, _ in selfcheck.EAD_PROMPTS:
        ids = [BOS] + tokenizer.encode(text)
        assert len(ids) == 15  # EAD's batch is [8, 15, d_model]: BOS + 14 tokens
        expected_per_prompt.append(_logit_difference(tiny_model, ids, answer, wrong))
    np.testing.assert_allclose(eight.measured["per prompt"], expected_per_prompt, rtol=1e-6, atol=1e-6)
    assert eight.measured["mean"] == pytest.approx(np.mean(expected_per_prompt))
    assert eight.expected["mean"] == pytest.approx(np.mean(eight.expected["per prompt"]), abs=1e-4)

    pair = tiny_results["ioi_john_minus_mary"]
    for name, subject in (("Mary gave", "Mary"), ("John gave", "John")):
        text = f"After John and Mary went to the store, {subject} gave a bottle of milk to"
        value = _logit_difference(tiny_model, [BOS] + tokenizer.encode(text), " John", " Mary")
        assert pair.measured[name] == pytest.approx(value, rel=1e-6, abs=1e-6)

    both = tiny_results["ioi_bos_matters"]
    ids = tokenizer.encode(selfcheck.CLAIRE_PROMPT)
    with_bos = _logit_difference(tiny_model, [BOS] + ids, " Claire", " Mary")
    without_bos = _logit_difference(tiny_model, ids, " Claire", " Mary")
    assert both.measured == pytest.approx({"with BOS": with_bos, "without BOS": without_bos}, rel=1e-6, abs=1e-6)
    assert with_bos != without_bos
    assert not (eight.holds or pair.holds or both.holds)


def test_top1_row_decodes_the_argmax_after_each_token(tiny_model, tiny_results):
    tokenizer = tiny_model.tokenizer
    ids = [BOS] + tokenizer.encode(selfcheck.SALE_PROMPT)
    # [BOS] cell 34 printed this tokenization.
    assert [tokenizer.decode([token]) for token in ids[1:]] == [
        "The",
        " sale",
        " ends",
        " today",
        ".",
        " You",
        " won",
        "'t",
        " want",
        " to",
        " miss",
        " it",
        "!",
    ]
    logits = tiny_model.trace(ids)["logits"]
    result = tiny_results["top1_sale_prompt"]
    assert result.measured == [tokenizer.decode([int(np.argmax(row))]) for row in logits]
    assert len(result.expected) == len(ids) and not result.holds


def test_outlier_rows_need_the_blocks_they_read(tiny_results):
    for key, block in (("outlier_first_above_1000", 5), ("outlier_dominates", 10)):
        result = tiny_results[key]
        assert result.measured == f"the model has 2 blocks; the check reads block {block}"
        assert not result.holds


class _ResidualModel:
    """A stand-in with GPT-2 small's 12 blocks whose BOS residual stream is given per block."""

    def __init__(self, rows: dict[int, np.ndarray]):
        self.config = SimpleNamespace(n_layer=12)
        self.rows = rows

    def trace(self, ids):
        assert list(ids) == [BOS]
        return {f"blocks.{block}.hook_resid_post": row[None, :] for block, row in self.rows.items()}


def _residual(spikes: dict[int, float], offset: float = 0.0) -> np.ndarray:
    row = np.full(768, offset, dtype=np.float32)
    for dim, value in spikes.items():
        row[dim] = value
    return row


def test_outlier_rows_read_the_centred_residual_as_transformer_lens_reports_it():
    first_above = CHECKS_BY_KEY["outlier_first_above_1000"]
    dominates = CHECKS_BY_KEY["outlier_dominates"]
    # Dim 100 at 1,003 is above 1,000 only before centring: every dim carries +10, so the mean
    # (about 16) that centring takes off leaves it at about 987, and dim 447 at about 2,984.
    spiky = {block: _residual({100: 1003.0, 447: 3000.0, 138: 800.0}, offset=10.0) for block in range(12)}
    result = run_check(_ResidualModel(spiky), first_above)
    assert result.holds and result.measured["dim"] == 447
    assert result.measured["value"] == pytest.approx(3000.0 - spiky[5].astype(np.float64).mean())
    assert run_check(_ResidualModel(spiky), dominates).holds

    # Dim 138 above dim 447 after block 7: "dominates from block 2 on" fails, and says where.
    spiky[7] = _residual({447: 900.0, 138: -2000.0})
    result = run_check(_ResidualModel(spiky), dominates)
    assert not result.holds and result.measured[7] == 138 and result.measured[6] == 447
    # No dim above 1,000 after block 5: the printed check fails with nothing found.
    spiky[5] = _residual({447: 900.0})
    result = run_check(_ResidualModel(spiky), first_above)
    assert not result.holds and result.measured == {"dim": None, "value": None}
