"""Runs the Dockerfile's steps on this machine, without Docker: where no container engine is at hand
(the build machine has none), this is how each step of the image is tried.

    python deploy/dockerfile_dry_run.py --root /tmp/image [--build-arg MODEL=ID] [--port 7860]

The image's filesystem paths are put under --root (/home/user becomes ROOT/home/user); the ARG,
ENV, WORKDIR and COPY lines are applied in order, each RUN line runs in bash with that environment
(what creates the image's user is skipped: the steps run as the current user), and the CMD is started
and watched until the explorer's model is ready (deploy/replica_ready.py), then stopped. The Python
is the one first on PATH, as in the image (give a python:3.11 one). Variables of the environment this
is started in pass through unless the Dockerfile sets them (HF_HUB_OFFLINE=1 and HF_HUB_CACHE let the
warmup find a checkpoint that cannot be downloaded here).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))

from replica_ready import is_ready  # noqa: E402

SKIPPED_RUNS = ("useradd",)  # the image's user: the steps here run as whoever starts this
# What .dockerignore keeps out of the image, for COPY (its patterns are simple names here).
IGNORED = {
    line.strip().removeprefix("**/")
    for line in (REPO / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines() if line.strip()
    ]


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), text)


def copy(source: Path, target: Path) -> None:
    ignore = shutil.ignore_patterns(*IGNORED)
    if source.is_dir():
        shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="where the image's paths go")
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    args = parser.parse_args()
    root = args.root.resolve()
    build_args = dict(arg.split("=", 1) for arg in args.build_arg)
    inside = lambda path: root / path.lstrip("/")  # noqa: E731 - an image path, here
    variables: dict[str, str] = {}
    env = dict(os.environ)
    cwd = root
    for instruction, rest in instructions((REPO / "Dockerfile").read_text()):
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            variables[name] = build_args.get(name, default)
        elif instruction == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                value = expand(value, {**env, **variables})
                # Absolute image paths move under the root; PATH keeps the host's entries too.
                value = ":".join(str(inside(part)) if part.startswith("/home/") else part for part in value.split(":"))
                env[name] = variables[name] = value
        elif instruction == "WORKDIR":
            cwd = inside(rest)
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            *sources, destination = parts
            base = inside(destination) if destination.startswith("/") else cwd / destination
            for source in sources:
                if source == ".":  # the build context's contents
                    copy(REPO, base)
                elif destination.endswith("/") or destination == ".":
                    copy(REPO / source, base / Path(source).name)
                else:
                    copy(REPO / source, base)
        elif instruction == "RUN":
            if rest.startswith(SKIPPED_RUNS):
                print(f"-- skipped: RUN {rest}", flush=True)
                continue
            command = expand(rest, {**env, **variables})
            print(f"-- RUN {command}", flush=True)
            started = time.monotonic()
            subprocess.run(["bash", "-c", command], cwd=cwd, env=env, check=True)
            print(f"-- done in {time.monotonic() - started:.1f} s", flush=True)
        elif instruction == "CMD":
            command = [expand(part, env) for part in json.loads(rest)]
            port = command[command.index("--port") + 1]
            print(f"-- CMD {command}", flush=True)
            started = time.monotonic()
            process = subprocess.Popen(command, cwd=cwd, env=env)
            try:
                while not is_ready(f"http://127.0.0.1:{port}"):
                    if process.poll() is not None:
                        raise SystemExit(f"the CMD exited with {process.returncode}")
                    if time.monotonic() - started > args.ready_timeout:
                        raise SystemExit(f"not ready within {args.ready_timeout:.0f} s")
                    time.sleep(0.5)
                print(
                    f"-- the explorer's model was ready {time.monotonic() - started:.1f} s after the CMD started",
                    flush=True,
                )
            finally:
                process.terminate()
                process.wait(timeout=30)
        # FROM, USER and EXPOSE describe the image or the container; nothing to do here.
    return 0


if __name__ == "__main__":
    sys.exit(main())
