#!/usr/bin/env bash
# What the dashboard's browser tests (tests/browser) need: Debian's chromium (image/host-packages test
# installs it) and the Playwright Python package in the given venv. Playwright only drives the distro's
# browser (executable_path); `playwright install` is never run: nothing downloads a browser build.
# Idempotent: a second run only checks.
#
#   tests/tools/install-browser.sh [VENV]      # VENV: default .venv
set -euo pipefail

VENV="${1:-.venv}"

command -v chromium >/dev/null 2>&1 || { echo "install-browser: no chromium; run image/host-packages test" >&2; exit 1; }
if ! "$VENV/bin/python" -c "import playwright" >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q "playwright>=1.40,<2" >&2
fi
echo "chromium: $(command -v chromium) ($(chromium --version 2>/dev/null | head -1)); playwright: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("playwright"))')" >&2
