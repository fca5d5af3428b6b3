"""Command line: ``python -m gpt2_max {trace,generate,download,selfcheck} ...``.

    python -m gpt2_max download --model openai-community/gpt2
    python -m gpt2_max selfcheck --model openai-community/gpt2
    python -m gpt2_max trace "The cat sat on the" --out trace.npz
    python -m gpt2_max generate "The cat sat on the" --max-new-tokens 20 --temperature 0
"""

from __future__ import annotations

import argparse
import sys

from gpt2_max.errors import ExplorerError
from gpt2_max.weights import DEFAULT_MODEL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gpt2_max", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", help="fetch a checkpoint into the Hugging Face cache for offline use")
    download.add_argument("--model", default=DEFAULT_MODEL, help="Hub repo id")

    trace = commands.add_parser("trace", help="run the model on text and save every intermediate as .npz")
    trace.add_argument("text")
    trace.add_argument("--model", default=DEFAULT_MODEL, help="Hub repo id or local directory")
    trace.add_argument("--out", default="trace.npz", help="where to write the arrays")
    trace.add_argument("--no-causal", action="store_true", help="switch the causal mask off")
    trace.add_argument(
        "--ablate", action="append", default=[], metavar="LAYER:HEAD", help="zero one head's output (repeatable)"
    )

    generate = commands.add_parser("generate", help="generate text, printing tokens as they come")
    generate.add_argument("text")
    generate.add_argument("--model", default=DEFAULT_MODEL, help="Hub repo id or local directory")
    generate.add_argument("--max-new-tokens", type=int, default=32)
    generate.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    generate.add_argument("--top-k", type=int, default=0, help="0 = off")
    generate.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    generate.add_argument("--seed", type=int, default=None)

    selfcheck = commands.add_parser(
        "selfcheck",
        help="measure published numbers of the real GPT-2 small and print which hold (exit 0 only if all do)",
    )
    selfcheck.add_argument("--model", default=DEFAULT_MODEL, help="Hub repo id or local directory")
    return parser


def _parse_ablation(specs: list[str]) -> list[tuple[int, int]]:
    pairs = []
    for spec in specs:
        layer, sep, head = spec.partition(":")
        if not sep or not layer.strip().isdigit() or not head.strip().isdigit():
            raise ExplorerError(f"--ablate wants LAYER:HEAD like 0:3, got {spec!r}")
        pairs.append((int(layer), int(head)))
    return pairs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "download":
            from gpt2_max.weights import locate

            checkpoint = locate(args.model)
            print(f"{args.model} is ready in {checkpoint.directory}")
            return 0

        import numpy as np

        import gpt2_max
        from gpt2_max.sampling import SamplingSettings

        model = gpt2_max.load(args.model)
        if args.command == "selfcheck":
            from gpt2_max.selfcheck import format_table, run_checks

            results = run_checks(model)
            print(f"{args.model}, against published values of openai-community/gpt2 (GPT-2 small):\n")
            print(format_table(results))
            return 0 if all(result.holds for result in results) else 1

        ids = model.tokenizer.encode(args.text)
        if args.command == "trace":
            trace = model.trace(ids, causal=not args.no_causal, ablate=_parse_ablation(args.ablate))
            np.savez(args.out, token_ids=np.asarray(ids, dtype=np.int64), **trace)
            top = model.tokenizer.token(int(trace["logits"][-1].argmax())).display
            print(f"{len(ids)} tokens, {len(trace)} arrays -> {args.out}; most likely next token: {top!r}")
            return 0

        settings = SamplingSettings(args.temperature, args.top_k, args.top_p, args.seed)
        print(args.text, end="", flush=True)
        steps = model.stream(ids, args.max_new_tokens, settings)
        new_ids: list[int] = []
        shown = ""
        for step in steps:
            new_ids.append(step.token_id)
            # Decode the whole tail so multi-byte characters split over tokens print whole.
            text = model.tokenizer.decode(new_ids)
            print(text[len(shown) :], end="", flush=True)
            shown = text
        print()
        return 0
    except ExplorerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
