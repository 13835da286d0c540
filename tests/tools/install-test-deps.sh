#!/usr/bin/env bash
# What `make test` needs on a fresh Debian 12 machine (root): every Debian package of the lab, the image
# build and the tests in one step (image/host-packages test), the MCP Inspector CLI (Node 22, under
# $HAL0_NPM_PREFIX), the dev venv, and Playwright in it for the dashboard's browser tests (also run through
# the fleet's proxy). Idempotent: a second run installs nothing (CI checks that).
set -euo pipefail
cd "$(dirname "$0")/../.."

image/host-packages test
bash tests/tools/install-inspector.sh >/dev/null
make --no-print-directory venv
bash tests/tools/install-browser.sh .venv
