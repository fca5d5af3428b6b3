"""Command line: ``python -m gpt2_max {trace,generate,attribute,heads,selfcheck,download,warmup} ...``.

python -m gpt2_max download --model openai-community/gpt2
python -m gpt2_max warmup --model openai-community/gpt2   # download + compile every graph the app uses
python -m gpt2_max selfcheck --model openai-community/gpt2
python -m gpt2_max trace "The cat sat on the" --out trace.npz
python -m gpt2_max generate "The cat sat on the" --max-new-tokens 20 --temperature 0
python -m gpt2_max attribute "When Mary and John went to the store, John gave a drink to" --token " Mary" --minus " John"
python -m gpt2_max heads          # the induction test; or give a text
"""

from __future__ import annotations

import argparse
import sys
import time

from gpt2_max.errors import ExplorerError
from gpt2_max.weights import DEFAULT_MODEL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gpt2_max", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", help="fetch a checkpoint into the Hugging Face cache for offline use")
    download.add_argument("--model", default=DEFAULT_MODEL, help="Hub repo id")

    warmup = commands.add_parser(
        "warmup",
        help="download a checkpoint if needed and compile every graph the app uses into MAX's cache, then exit",
    )
    warmup.add_argument(
        "--model",
        action="append",
        default=None,
        help=f"Hub repo id, local directory, or austen-gpt2; repeat for several (default: {DEFAULT_MODEL})",
    )

    trace = commands.add_parser("trace", help="run the model on text and save every intermediate as .npz")
    trace.add_argument("text")
    trace.add_argument(
        "--model", default=DEFAULT_MODEL, help="Hub repo id, local directory, or austen-gpt2 (the bundled demo model)"
    )
    trace.add_argument("--out", default="trace.npz", help="where to write the arrays")
    trace.add_argument("--no-causal", action="store_true", help="switch the causal mask off")
    trace.add_argument(
        "--ablate", action="append", default=[], metavar="LAYER:HEAD", help="zero one head's output (repeatable)"
    )

    attribute = commands.add_parser("attribute", help="direct logit attribution of a next token at the last position")
    attribute.add_argument("text")
    attribute.add_argument(
        "--model", default=DEFAULT_MODEL, help="Hub repo id, local directory, or austen-gpt2 (the bundled demo model)"
    )
    attribute.add_argument(
        "--token", default=None, help="the token to explain, e.g. ' Mary' (default: the top prediction)"
    )
    attribute.add_argument("--minus", default=None, help="subtract this token's logit, e.g. ' John'")
    attribute.add_argument("--top", type=int, default=12, help="how many components to list")

    heads = commands.add_parser("heads", help="score every head as previous-token, duplicate-token and induction head")
    heads.add_argument("text", nargs="?", default=None, help="default: the induction test (random tokens repeated)")
    heads.add_argument(
        "--model", default=DEFAULT_MODEL, help="Hub repo id, local directory, or austen-gpt2 (the bundled demo model)"
    )
    heads.add_argument("--top", type=int, default=5, help="heads listed per detector")

    generate = commands.add_parser("generate", help="generate text, printing tokens as they come")
    generate.add_argument("text")
    generate.add_argument(
        "--model", default=DEFAULT_MODEL, help="Hub repo id, local directory, or austen-gpt2 (the bundled demo model)"
    )
    generate.add_argument("--max-new-tokens", type=int, default=32)
    generate.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    generate.add_argument("--top-k", type=int, default=0, help="0 = off")
    generate.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    generate.add_argument("--seed", type=int, default=None)

    selfcheck = commands.add_parser(
        "selfcheck",
        help="measure published numbers of the real GPT-2 small and print which hold (exit 0 only if all do)",
    )
    selfcheck.add_argument(
        "--model", default=DEFAULT_MODEL, help="Hub repo id, local directory, or austen-gpt2 (the bundled demo model)"
    )
    return parser


def _parse_ablation(specs: list[str]) -> list[tuple[int, int]]:
    pairs = []
    for spec in specs:
        layer, sep, head = spec.partition(":")
        if not sep or not layer.strip().isdigit() or not head.strip().isdigit():
            raise ExplorerError(f"--ablate wants LAYER:HEAD like 0:3, got {spec!r}")
        pairs.append((int(layer), int(head)))
    return pairs


# The graphs the app compiles after a model's trace graph (explorer.loading.ModelLoader._load);
# gpt2_max.load compiles the trace graph itself.
GRAPHS_AFTER_LOAD = ("analysis", "decode")


def _warmup(models: list[str]) -> int:
    """Loads each model (downloading it if needed) and compiles all its graphs, so that MAX's cache
    holds them and an app started afterwards on the same cache loads in seconds."""
    from max._core.engine import max_cache_dir

    import gpt2_max

    print(f"MAX cache: {max_cache_dir()}", flush=True)
    for name in models:
        started = time.perf_counter()
        model = gpt2_max.load(name)
        for graph in GRAPHS_AFTER_LOAD:
            model.engine.warm(graph)
        compiled = ", ".join(f"{graph} {seconds:.1f} s" for graph, seconds in model.engine.compile_seconds.items())
        # Each graph's seconds: a compile, or a read from MAX's cache when it already held the graph.
        print(f"{name}: every graph ready in {time.perf_counter() - started:.1f} s ({compiled})", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "download":
            from gpt2_max.weights import locate

            checkpoint = locate(args.model)
            print(f"{args.model} is ready in {checkpoint.directory}")
            return 0

        if args.command == "warmup":
            return _warmup(args.model or [DEFAULT_MODEL])

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

        if args.command == "heads":
            from gpt2_max import attribution

            ids = model.tokenizer.encode(args.text) if args.text else attribution.induction_test_ids(25)
            scores = attribution.head_scores(model, model.trace(ids), token_ids=ids)
            for name, values in scores.items():
                best = attribution.strongest(values, args.top)
                listed = (
                    ", ".join(f"{layer}.{head} {value:.3f}" for layer, head, value in best) or "no query has such a key"
                )
                print(f"{name:16} {listed}")
            return 0

        ids = model.tokenizer.encode(args.text)
        if args.command == "attribute":
            from gpt2_max import attribution

            trace = model.trace(ids)
            first = lambda text: model.tokenizer.encode(text)[:1] or [None]  # noqa: E731
            token = first(args.token)[0] if args.token else int(trace["logits"][-1].argmax())
            if token is None:
                raise ExplorerError("--token encodes to no token")
            minus = first(args.minus)[0] if args.minus else None
            result = attribution.attribute(model, trace, -1, token, minus)
            parts = result.parts()
            what = f"logit({model.tokenizer.token(token).display!r})"
            if minus is not None:
                what += f" - logit({model.tokenizer.token(minus).display!r})"
            print(f"{what} at the last position = {result.logit:.4f}; {len(parts)} shares sum to {result.total:.4f}")
            for name in sorted(parts, key=lambda n: -abs(parts[n]))[: args.top]:
                print(f"  {name:28} {parts[name]:+.4f}")
            return 0
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
