"""Writes precomputed traces of the app's example prompts, for a useful page while a host warms up.

    .venv/bin/python scripts/precompute_examples.py [--model openai-community/gpt2] [--out examples]

Run it once on a machine where the model loads, then commit ``examples/<model>/``:
the app shows these traces, labelled "precomputed", until its own model is compiled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import EXAMPLES  # noqa: E402
from explorer.examples import example_path, save_example  # noqa: E402
from explorer.service import ExplorerService  # noqa: E402
from explorer.settings import Settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=Settings().model)
    parser.add_argument("--out", default="examples")
    args = parser.parse_args()
    service = ExplorerService(Settings(model=args.model, examples_dir=args.out), args.model)
    service.loader.start_loading().join()
    if service.model is None:
        print(f"error: {service.loader.slot(None).error}", file=sys.stderr)
        return 2
    for text in EXAMPLES:
        run = service.run(text)
        path = example_path(args.out, args.model, run.text)
        save_example(path, run)
        print(f"{path}  ({run.n_tokens} tokens, {path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
