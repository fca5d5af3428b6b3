#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash run.sh app [--model ID_OR_DIR] [--port N] [--share]   set up, then start the explorer
#   bash run.sh warmup [--model ID_OR_DIR ...]                 set up, download the checkpoint and
#                                                              compile every graph into MAX's cache
#   bash run.sh replicas N [--model ID_OR_DIR] [--port N]      set up, then N replicas behind HAProxy
#   bash run.sh test [pytest args]                             set up, then run the whole test suite
# All create .venv in the repo root on first use and reuse it afterwards.
set -euo pipefail
cd "$(dirname "$0")"
export MODULAR_TELEMETRY_ENABLED=0

# The sha256 of the given requirements files together (their names and contents).
requirements_hash() {
  sha256sum "$@" | sha256sum | cut -d' ' -f1
}

setup_venv() {
  # $1: the requirements file to install: requirements.txt (the app, what a Space installs)
  # or requirements-test.txt (the test-only packages; it starts with `-r requirements.txt`).
  # Reinstall only when a file it installs changed since the last install: the app's stamp
  # hashes requirements.txt, the tests' stamp both files.
  local file=$1
  local files=(requirements.txt)
  [ "$file" = requirements.txt ] || files+=("$file")
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  local stamp=".venv/.${file%.txt}.sha256"
  local want
  want=$(requirements_hash "${files[@]}")
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r "$file"
    echo "$want" > "$stamp"
    # requirements.txt was installed with it: the app's stamp is current too.
    requirements_hash requirements.txt > .venv/.requirements.sha256
  fi
}

setup_browser() {
  # The UI test drives Debian's Chromium (a browser download by Playwright is
  # not possible offline). Installed when missing and we may use apt.
  if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
}

setup_haproxy() {
  # The replicas try-out and its test run Debian's HAProxy; installed when missing and we may use apt.
  if ! command -v haproxy >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  fi
}

command=${1:-}
shift || true
case "$command" in
  app)
    setup_venv requirements.txt
    exec .venv/bin/python app.py "$@"
    ;;
  warmup)
    setup_venv requirements.txt
    exec .venv/bin/python -m gpt2_max warmup "$@"
    ;;
  replicas)
    setup_venv requirements.txt
    setup_haproxy
    count=${1:?usage: bash run.sh replicas N [--model ID_OR_DIR] [--port N]}
    shift
    exec .venv/bin/python deploy/replicas.py --replicas "$count" "$@"
    ;;
  test)
    setup_venv requirements-test.txt
    setup_browser
    setup_haproxy
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: bash run.sh app [--model ID_OR_DIR] [--port N] [--share] | bash run.sh warmup [--model ID_OR_DIR ...]" >&2
    echo "       bash run.sh replicas N [--model ID_OR_DIR] [--port N] | bash run.sh test [pytest args]" >&2
    exit 2
    ;;
esac
