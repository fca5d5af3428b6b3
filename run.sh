#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash run.sh app [--model ID_OR_DIR] [--port N] [--share]   set up, then start the explorer
#   bash run.sh test [pytest args]                             set up, then run the whole test suite
# Both create .venv in the repo root on first use and reuse it afterwards.
set -euo pipefail
cd "$(dirname "$0")"
export MODULAR_TELEMETRY_ENABLED=0

setup_venv() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  # Reinstall only when requirements.txt changed since the last install.
  local stamp=.venv/.requirements.sha256
  local want
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r requirements.txt
    echo "$want" > "$stamp"
  fi
}

setup_browser() {
  # The UI test drives Debian's Chromium (a browser download by Playwright is
  # not possible offline). Installed when missing and we may use apt.
  if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
}

command=${1:-}
shift || true
case "$command" in
  app)
    setup_venv
    exec .venv/bin/python app.py "$@"
    ;;
  test)
    setup_venv
    setup_browser
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: bash run.sh app [--model ID_OR_DIR] [--port N] [--share] | bash run.sh test [pytest args]" >&2
    exit 2
    ;;
esac
