"""Does this engine reproduce published numbers of the real GPT-2? ``python -m gpt2_max selfcheck``.

Each check re-measures one value that others published for ``openai-community/gpt2`` (GPT-2
small), with this engine, and says whether it holds. Every check names its source (repository,
file, commit, cell) and keeps that source's BOS convention, because the convention changes
every number: Hugging Face transformers feeds raw ids (no BOS), TransformerLens prepends
``<|endoftext|>`` (50256) unless told not to.

TransformerLens' default weight processing keeps probabilities, logit differences and attention
patterns exact but centres the residual stream (subtracts each position's mean over d_model), so
residual values are compared after the same centring.

On random weights (the tests' tiny checkpoints) every check fails: that is how the tests prove
the values are measured, not copied.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gpt2_max import attribution
from gpt2_max.errors import ExplorerError
from gpt2_max.tokenizer import END_OF_TEXT_ID

BOS = END_OF_TEXT_ID

NO_BOS_HF = "no BOS: raw ids, as transformers' tests feed them"
WITH_BOS_TL = "BOS (50256) prepended, TransformerLens' default"
NO_BOS_TL = "no BOS: TransformerLens on raw random ids"

HFT = "huggingface/transformers: tests/models/gpt2/test_modeling_gpt2.py, test_lm_generate_gpt2"
TL_LOSS = "TransformerLensOrg/TransformerLens: tests/acceptance/test_hooked_transformer.py, test_model"
MAIN_INDUCTION = (
    "TransformerLens demos/Main_Demo.ipynb@a9d3618d, induction scores (batch 10, 50 tokens in "
    "1000..9999 repeated); the same five heads lead in Exploratory_Analysis_Demo.ipynb"
)
EAD_IOI = "TransformerLens demos/Exploratory_Analysis_Demo.ipynb@68bdb6d3, 'Per prompt logit difference'"
MAIN_IOI = "TransformerLens demos/Main_Demo.ipynb@eae13c32, activation patching setup (clean/corrupted)"
MAIN_BOS = "TransformerLens demos/Main_Demo.ipynb@eae13c32, 'Logit difference with/without BOS'"
BOS_NOTEBOOK = "ClassicLarry/curiousCaseBosToken: visualize_gpt2_small.ipynb@774bd3b2"


@dataclass(frozen=True)
class Outcome:
    """What one check found: the published value, this engine's value, and whether they agree."""

    expected: object
    measured: object
    holds: bool


@dataclass(frozen=True)
class Check:
    key: str  # short id (pytest's test id)
    title: str  # the table's row label
    rule: str  # how measured is compared with expected
    source: str  # where the expected value was published
    convention: str  # the source's BOS convention, kept here
    measure: Callable[..., Outcome]  # model -> Outcome


@dataclass(frozen=True)
class CheckResult:
    check: Check
    expected: object
    measured: object
    holds: bool


CHECKS: list[Check] = []


def _check(key: str, title: str, rule: str, source: str, convention: str):
    def register(measure: Callable[..., Outcome]) -> Callable[..., Outcome]:
        CHECKS.append(Check(key, title, rule, source, convention, measure))
        return measure

    return register


def _single_token(model, text: str) -> int:
    ids = model.tokenizer.encode(text)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens, the check needs one")
    return ids[0]


def _logit_difference(model, text: str, answer: str, wrong: str, bos: bool = True) -> float:
    """logit(answer) - logit(wrong) after ``text``, as the IOI sources measure it."""
    ids = ([BOS] if bos else []) + model.tokenizer.encode(text)
    return attribution.logit_difference(model.trace(ids), -1, _single_token(model, answer), _single_token(model, wrong))


def _within(expected: Sequence[float], measured: Sequence[float], tolerance: float) -> bool:
    return all(abs(m - e) <= tolerance for e, m in zip(expected, measured, strict=True))


def _blocks_missing(model, needed: int) -> str | None:
    """A reason the check cannot hold when the model has too few blocks (GPT-2 small has 12)."""
    n_layer = model.config.n_layer
    if n_layer <= needed:
        return f"the model has {n_layer} blocks; the check reads block {needed}"
    return None


# --------------------------------------------------------------------------- greedy generation

GREEDY_PROMPT = [464, 3290]  # "The dog"
# "The dog was found in a field near the intersection of West and West Streets.\n\nThe dog"
GREEDY_GOLDEN = [
    464,
    3290,
    373,
    1043,
    287,
    257,
    2214,
    1474,
    262,
    16246,
    286,
    2688,
    290,
    2688,
    27262,
    13,
    198,
    198,
    464,
    3290,
]


@_check("greedy_the_dog", "greedy 'The dog' to 20 ids", "the same ids", HFT + " (max_length=20)", NO_BOS_HF)
def greedy_the_dog(model) -> Outcome:
    # max_length counts the prompt, as in transformers' generate.
    generation = model.generate(GREEDY_PROMPT, max_new_tokens=len(GREEDY_GOLDEN) - len(GREEDY_PROMPT), temperature=0.0)
    measured = GREEDY_PROMPT + list(generation.ids)
    return Outcome(GREEDY_GOLDEN, measured, measured == GREEDY_GOLDEN)


# --------------------------------------------------------------------------------------- loss

HELLO_WORLD_IDS = [BOS, 15496, 995, 0]  # BOS + "Hello world!"
HELLO_WORLD_LOSS = 5.331855773925781
# TransformerLens asserts (loss - expected) < 4e-5 for its own float32 torch run (one-sided).
# A different float32 implementation (MAX kernels, another summation order) is not bound to
# its rounding; logits of the two agree to ~1e-4 (TransformerLens checks softmax against
# transformers at 1e-5; tests/test_trace.py holds ours to transformers' at 1e-4), so a mean of three
# cross-entropies moves by at most a few 1e-4. 1e-3 keeps that margin and still fails on any
# modelling error: without BOS, another mask or another GELU the loss moves by far more.
LOSS_TOLERANCE = 1e-3


def mean_next_token_loss(logits: np.ndarray, token_ids: Sequence[int]) -> float:
    """Mean cross-entropy of each position's prediction of the next id (TransformerLens'
    ``return_type="loss"``), in float64."""
    predictions = np.asarray(logits[:-1], dtype=np.float64)  # [T-1, V]
    targets = np.asarray(token_ids[1:])
    peak = predictions.max(axis=-1)
    log_normaliser = peak + np.log(np.exp(predictions - peak[:, None]).sum(axis=-1))
    return float(np.mean(log_normaliser - predictions[np.arange(len(targets)), targets]))


@_check("loss_hello_world", "loss on BOS + 'Hello world!'", f"within {LOSS_TOLERANCE:g}", TL_LOSS, WITH_BOS_TL)
def loss_hello_world(model) -> Outcome:
    measured = mean_next_token_loss(model.trace(HELLO_WORLD_IDS)["logits"], HELLO_WORLD_IDS)
    return Outcome(HELLO_WORLD_LOSS, measured, abs(measured - HELLO_WORLD_LOSS) <= LOSS_TOLERANCE)


# ---------------------------------------------------------------------------- induction heads

INDUCTION_LENGTH = 50  # [MAIN]'s seq_len: 50 random ids in 1000..9999, then the same 50 again
INDUCTION_SEEDS = range(10)  # [MAIN] averaged a batch of 10 such sequences
INDUCTION_HEADS = ("5.5", "6.9", "5.1", "7.10")
# [MAIN]'s top five are these four and 7.2 (0.93..0.85); the sixth scores 0.50, so a top five
# that misses one of the four is not noise.
INDUCTION_TOP = 5


def top_heads(scores: np.ndarray, count: int) -> dict[str, float]:
    """The ``count`` highest [L, H] scores as {"layer.head": score}, highest first."""
    order = np.argsort(scores, axis=None, kind="stable")[::-1][:count]
    layers, heads = np.unravel_index(order, scores.shape)
    return {f"{layer}.{head}": float(scores[layer, head]) for layer, head in zip(layers, heads)}


@_check(
    "induction_heads",
    "induction heads",
    f"all four among the top {INDUCTION_TOP} scores",
    MAIN_INDUCTION,
    NO_BOS_TL + f" ({INDUCTION_LENGTH} ids repeated, seeds 0-9)",
)
def induction_heads(model) -> Outcome:
    scores = []
    for seed in INDUCTION_SEEDS:
        ids = attribution.induction_test_ids(INDUCTION_LENGTH, seed=seed)
        scores.append(attribution.head_scores(model, model.trace(ids), ids)["induction"])
    top = top_heads(np.mean(scores, axis=0), INDUCTION_TOP)
    return Outcome(list(INDUCTION_HEADS), top, set(INDUCTION_HEADS) <= set(top))


# ------------------------------------------------------------------------ indirect objects (IOI)

# Published logit differences are rounded to 4 (EAD) or 3 (Main Demo) decimals; two float32
# implementations differ by ~1e-4 in a logit. 0.01 leaves ample room for both and is far below
# what the BOS convention alone changes (6.754 vs 2.782 on the same prompt, below).
IOI_TOLERANCE = 0.01

# (prompt, indirect object, subject, published logit(IO) - logit(S)), in EAD's order: each of its
# four templates twice, the subject (the name repeated) being the second, then the first name.
EAD_PROMPTS = [
    ("When John and Mary went to the shops, John gave the bag to", " Mary", " John", 3.3368),
    ("When John and Mary went to the shops, Mary gave the bag to", " John", " Mary", 3.2018),
    ("When Tom and James went to the park, James gave the ball to", " Tom", " James", 2.7098),
    ("When Tom and James went to the park, Tom gave the ball to", " James", " Tom", 3.7976),
    ("When Dan and Sid went to the shops, Sid gave an apple to", " Dan", " Sid", 1.7206),
    ("When Dan and Sid went to the shops, Dan gave an apple to", " Sid", " Dan", 5.2815),
    ("After Martin and Amy went to the park, Amy gave a drink to", " Martin", " Amy", 2.6010),
    ("After Martin and Amy went to the park, Martin gave a drink to", " Amy", " Martin", 5.7676),
]
EAD_MEAN = 3.552075147628784  # printed as "Average logit difference"


@_check(
    "ioi_eight_prompts",
    "IOI logit diff, 8 prompts",
    f"each within {IOI_TOLERANCE:g}, so the mean too",
    EAD_IOI,
    WITH_BOS_TL,
)
def ioi_eight_prompts(model) -> Outcome:
    published = [value for *_, value in EAD_PROMPTS]
    measured = [_logit_difference(model, text, io, subject) for text, io, subject, _ in EAD_PROMPTS]
    return Outcome(
        {"per prompt": published, "mean": EAD_MEAN},
        {"per prompt": measured, "mean": float(np.mean(measured))},
        _within(published, measured, IOI_TOLERANCE),
    )


# Main Demo measures logit(" John") - logit(" Mary") on both prompts of its patching experiment.
MAIN_PROMPTS = {
    "Mary gave": ("After John and Mary went to the store, Mary gave a bottle of milk to", 4.276),
    "John gave": ("After John and Mary went to the store, John gave a bottle of milk to", -2.738),
}


@_check(
    "ioi_john_minus_mary",
    "IOI logit(John)-logit(Mary)",
    f"each within {IOI_TOLERANCE:g}",
    MAIN_IOI,
    WITH_BOS_TL,
)
def ioi_john_minus_mary(model) -> Outcome:
    expected = {name: value for name, (_, value) in MAIN_PROMPTS.items()}
    measured = {name: _logit_difference(model, text, " John", " Mary") for name, (text, _) in MAIN_PROMPTS.items()}
    return Outcome(expected, measured, _within(list(expected.values()), list(measured.values()), IOI_TOLERANCE))


CLAIRE_PROMPT = "Claire and Mary went to the shops, then Mary gave a bottle of milk to"
CLAIRE_PUBLISHED = {"with BOS": 6.754, "without BOS": 2.782}  # logit(" Claire") - logit(" Mary")


@_check(
    "ioi_bos_matters",
    "IOI with and without BOS",
    f"each within {IOI_TOLERANCE:g}",
    MAIN_BOS,
    "both: BOS prepended, and not",
)
def ioi_bos_matters(model) -> Outcome:
    measured = {
        label: _logit_difference(model, CLAIRE_PROMPT, " Claire", " Mary", bos=bos)
        for label, bos in (("with BOS", True), ("without BOS", False))
    }
    holds = _within(list(CLAIRE_PUBLISHED.values()), list(measured.values()), IOI_TOLERANCE)
    return Outcome(dict(CLAIRE_PUBLISHED), measured, holds)


# ------------------------------------------------------------------ next-token predictions ([BOS])

SALE_PROMPT = "The sale ends today. You won't want to miss it!"
# [BOS] cell 35: the top prediction after each of the 14 tokens (BOS first).
SALE_TOP1 = ["\n", " first", " of", " on", ".", "\n", " can", "'t", " be", " to", " miss", " it", ".", "\n"]


@_check("top1_sale_prompt", "top-1 after each token", "the same 14 tokens", BOS_NOTEBOOK + ", cell 35", WITH_BOS_TL)
def top1_sale_prompt(model) -> Outcome:
    logits = model.trace([BOS] + model.tokenizer.encode(SALE_PROMPT))["logits"]
    measured = [model.tokenizer.decode([int(token)]) for token in logits.argmax(axis=-1)]
    return Outcome(SALE_TOP1, measured, measured == SALE_TOP1)


# ---------------------------------------------------------------- the first position's outlier

OUTLIER_DIM = 447
OUTLIER_THRESHOLD = 1000.0
OUTLIER_PRINTED_BLOCK = 5  # [BOS] cell 3 prints the first dim above 1,000 after block 5
OUTLIER_BLOCKS = range(2, 11)  # plotted: 2,460..3,045 after blocks 2-10; ~400 after block 11


def centred_first_position(trace, block: int) -> np.ndarray:
    """Position 0's residual stream after ``block``, minus its mean over d_model: the values
    TransformerLens reports, since its weight processing centres every write to the stream."""
    resid = np.asarray(trace[f"blocks.{block}.hook_resid_post"][0], dtype=np.float64)
    return resid - resid.mean()


def first_dim_above(vector: np.ndarray, threshold: float) -> int | None:
    """``np.where(vector > threshold)[0][0]``, as [BOS] cell 3 finds the outlier; None if none."""
    above = np.flatnonzero(vector > threshold)
    return int(above[0]) if above.size else None


@_check(
    "outlier_first_above_1000",
    "first dim > 1000, BOS, block 5",
    f"dim {OUTLIER_DIM}",
    BOS_NOTEBOOK + ", cell 3 (input: BOS alone)",
    WITH_BOS_TL,
)
def outlier_first_above_1000(model) -> Outcome:
    missing = _blocks_missing(model, OUTLIER_PRINTED_BLOCK)
    if missing:
        return Outcome(OUTLIER_DIM, missing, False)
    vector = centred_first_position(model.trace([BOS]), OUTLIER_PRINTED_BLOCK)
    dim = first_dim_above(vector, OUTLIER_THRESHOLD)
    measured = {"dim": dim, "value": None if dim is None else float(vector[dim])}
    return Outcome(OUTLIER_DIM, measured, dim == OUTLIER_DIM)


@_check(
    "outlier_dominates",
    "largest |dim| at BOS, blocks 2-10",
    f"dim {OUTLIER_DIM} after each block",
    BOS_NOTEBOOK + ", cells 2 and 25 (plots; dim ~138 is next at ~800)",
    WITH_BOS_TL,
)
def outlier_dominates(model) -> Outcome:
    # Position 0 sees only itself under the causal mask, so BOS alone gives its residual exactly.
    expected = {block: OUTLIER_DIM for block in OUTLIER_BLOCKS}
    missing = _blocks_missing(model, OUTLIER_BLOCKS[-1])
    if missing:
        return Outcome(expected, missing, False)
    trace = model.trace([BOS])
    measured = {block: int(np.abs(centred_first_position(trace, block)).argmax()) for block in OUTLIER_BLOCKS}
    return Outcome(expected, measured, measured == expected)


# ---------------------------------------------------------------------------------- running


def run_check(model, check: Check) -> CheckResult:
    """One check on ``model``; a request the model cannot serve (too short a context, ...)
    counts as not holding, with the reason as the measured value."""
    try:
        outcome = check.measure(model)
    except ExplorerError as error:
        outcome = Outcome(None, f"could not run: {error}", False)
    return CheckResult(check, outcome.expected, outcome.measured, bool(outcome.holds))


def run_checks(model, checks: Sequence[Check] = CHECKS) -> list[CheckResult]:
    return [run_check(model, check) for check in checks]


def _pieces(value: object) -> list[str]:
    """``value`` as the pieces a table cell shows, each kept whole on one line."""
    if value is None:
        return ["-"]
    if isinstance(value, float):
        return [f"{value:.6g}"]
    if isinstance(value, dict):
        pieces = []
        for key, item in value.items():
            shown = _pieces(item)
            pieces += [f"{key}: {shown[0]}"] + shown[1:]
        return pieces
    if isinstance(value, (list, tuple)):
        # repr for strings so tokens like "\n" and " the" stay visible.
        return [repr(item) if isinstance(item, str) else _pieces(item)[0] for item in value]
    return [str(value)]


def _wrap(pieces: list[str], width: int) -> list[str]:
    """Pieces joined by ", " into lines of at most ``width`` (a longer piece is split)."""
    budget = width - 1  # room for the comma that ends every line but the last
    lines: list[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + 2 + len(piece) <= budget:
            lines[-1] += ", " + piece
        else:
            if lines:
                lines[-1] += ","
            lines += textwrap.wrap(piece, budget) or [piece]
    return lines


def shown(value: object) -> str:
    """``value`` on one line, as the table shows it."""
    return ", ".join(_pieces(value))


EXPECTED_WIDTH = 40
MEASURED_WIDTH = 40


def format_table(results: Sequence[CheckResult]) -> str:
    """A plain-text table: check (with its rule), expected, measured, ✓/✗; then the sources."""
    title_width = max([len("check")] + [len(r.check.title) for r in results])
    header = ("check", "expected", "measured", "holds")
    widths = (title_width, EXPECTED_WIDTH, MEASURED_WIDTH, len("holds"))

    def row(cells: Sequence[list[str]]) -> list[str]:
        height = max(len(cell) for cell in cells)
        return [
            " | ".join(
                (cell[line] if line < len(cell) else "").ljust(width) for cell, width in zip(cells, widths)
            ).rstrip()
            for line in range(height)
        ]

    lines = row([[name] for name in header])
    lines.append("-+-".join("-" * width for width in widths))
    for result in results:
        lines += row(
            [
                [result.check.title] + textwrap.wrap(f"({result.check.rule})", title_width),
                _wrap(_pieces(result.expected), EXPECTED_WIDTH),
                _wrap(_pieces(result.measured), MEASURED_WIDTH),
                ["✓" if result.holds else "✗"],
            ]
        )
    held = sum(result.holds for result in results)
    lines += ["", f"{held} of {len(results)} checks hold.", "", "Sources (and BOS convention):"]
    for result in results:
        lines.append(f"- {result.check.title}: {result.check.source}; {result.check.convention}")
    return "\n".join(lines)
