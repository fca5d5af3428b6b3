"""The options of scripts/train_demo_model.py and the recipe that trained the bundled demo model.

Kept apart from the training script (which needs PyTorch) so that the card generator and the test
run, which do not install PyTorch, read the same recipe the script runs.

    python scripts/train_demo_model.py            # the recipe: RECIPE's phases, one after another
    python scripts/train_demo_model.py --one-phase --steps 600 ...   # one phase, for experiments
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_OUT = ROOT / "gpt2_max" / "assets" / "austen-gpt2"
DESCRIPTION = "Train the bundled demo model: GPT-2's architecture and tokenizer, trained on Jane Austen."

# The phases that trained the committed weights: each phase's options over parse_arguments'
# defaults; each later phase starts from the previous one's export (--init). Phases 1 and 2 end at
# --stop-step, the evaluation whose checkpoint went on (the schedule of --steps kept: the rate
# there is what it was). tests/test_demo_model.py checks these against the settings that
# gpt2_max/assets/austen-gpt2/training.json recorded for each phase.
RECIPE = (
    # aligned triples until a previous-token head starts, triples after random gaps until it is one,
    # then copy runs of 8-64 random ids
    ("--steps", "6000", "--copy-runs", "8", "64", "--copy-text-share", "0.0", "--stop-step", "1950"),
    # the induction stage again with shorter runs, half of them Austen passages, until an induction head
    (
        *("--steps", "4050", "--lr", "0.0025", "--warmup", "100"),
        *("--aligned-stage-steps", "0", "--previous-stage-steps", "0", "--induction-stage-steps", "2000"),
        *("--stop-step", "600"),
    ),
    # Austen in 256-token windows at a lower rate, with enough copy runs that the heads stay
    (
        *("--steps", "3000", "--lr", "0.0015", "--warmup", "50", "--copy-share", "0.3"),
        *("--aligned-stage-steps", "0", "--previous-stage-steps", "0", "--induction-stage-steps", "0"),
        *("--copy-text-share", "0.3"),
    ),
)
# What a run of the whole recipe may set; everything else is the recipe's.
RECIPE_OPTIONS = ("out", "threads", "eval_every", "one_phase")


def recipe_phases(args: argparse.Namespace, work_dir: Path) -> list[argparse.Namespace]:
    """Each phase of RECIPE as one phase's options: the last writes ``args.out``, the others a
    directory under ``work_dir`` that the next starts from."""
    phases, init = [], None
    for number, options in enumerate(RECIPE, start=1):
        out = args.out if number == len(RECIPE) else work_dir / f"phase-{number}"
        argv = [*options, "--one-phase", "--out", str(out), "--threads", str(args.threads)]
        argv += ["--eval-every", str(args.eval_every)]
        phases.append(parse_arguments(argv + (["--init", str(init)] if init else [])))
        init = out
    return phases


def check_recipe_run(args: argparse.Namespace) -> None:
    """Refuses options the recipe sets itself (they need --one-phase)."""
    defaults = parse_arguments([])
    changed = [k for k, v in vars(args).items() if k not in RECIPE_OPTIONS and getattr(defaults, k) != v]
    if changed:
        raise SystemExit(
            f"the recipe sets {', '.join('--' + k.replace('_', '-') for k in changed)} itself; "
            "add --one-phase to train one phase with your own options"
        )


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--out", type=Path, default=DEMO_OUT)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=7000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--copy-share", type=float, default=0.2, help="share of windows that are repeated random runs")
    parser.add_argument("--triples-share", type=float, default=0.05, help="share of windows of (a, b, a) triples")
    parser.add_argument(
        "--stage-context", type=int, default=64, help="window of the two head stages (batch scaled to as many tokens)"
    )
    parser.add_argument("--aligned-stage-steps", type=int, default=600, help="cap of the first stage (aligned triples)")
    parser.add_argument(
        "--previous-stage-steps", type=int, default=1800, help="cap of the first two stages (a previous-token head)"
    )
    parser.add_argument(
        "--induction-stage-steps", type=int, default=4000, help="cap of the first three stages (induction)"
    )
    parser.add_argument(
        "--copy-runs", type=int, nargs=2, default=[4, 24], metavar=("MIN", "MAX"), help="copy runs' lengths in ids"
    )
    parser.add_argument(
        "--copy-text-share", type=float, default=0.5, help="share of copy runs that are Austen passages, not random ids"
    )
    parser.add_argument("--stop-step", type=int, default=None, help="end at this step, keeping the schedule of --steps")
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--random-positions",
        dest="sinusoidal_positions",
        action="store_false",
        help="start the position rows random (GPT-2's init) instead of as sin/cos pairs (then trained)",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast: faster on a CPU with AVX512-BF16 or AMX, ~37x slower matmuls without (plain AVX2)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init", type=Path, default=None, help="start from a checkpoint this script exported (same seed and shape)"
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="stop early after this long (the schedule still ends)"
    )
    parser.add_argument(
        "--one-phase",
        action="store_true",
        help="train one phase with the options given (experiments); without it the script runs RECIPE",
    )
    return parser.parse_args(argv)
