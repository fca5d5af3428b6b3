"""Published values of the real GPT-2 small, measured with this engine: ``pytest -m real_weights``.

One test per check of :mod:`gpt2_max.selfcheck` (the same checks ``python -m gpt2_max selfcheck``
prints). They run where ``openai-community/gpt2`` is in the Hugging Face cache this pytest was
started with and are skipped, saying where they looked, everywhere else (this machine, CI).
test_selfcheck.py proves the plumbing on a tiny checkpoint stored under the real repo id.
"""

from __future__ import annotations

import pytest
from real_weights import find_real_checkpoint

from gpt2_max.selfcheck import CHECKS, run_check, shown

pytestmark = pytest.mark.real_weights


@pytest.fixture(scope="module")
def real_model(user_hub_cache_dir):
    found = find_real_checkpoint(user_hub_cache_dir)
    if found.directory is None:
        pytest.skip(found.reason)
    import gpt2_max

    # By directory: the session's HF_HUB_CACHE is the private test cache, not this one.
    return gpt2_max.load(str(found.directory))


@pytest.mark.parametrize("check", CHECKS, ids=[check.key for check in CHECKS])
def test_published_value_holds(real_model, check):
    result = run_check(real_model, check)
    assert result.holds, (
        f"{check.title} ({check.rule}): expected {shown(result.expected)}, "
        f"measured {shown(result.measured)}. Source: {check.source}; {check.convention}"
    )
