#!/usr/bin/env bash
# What `make test` needs on a fresh Debian 12 machine (root): every Debian package of the lab, the image
# build and the tests in one step (image/host-packages test), the MCP Inspector CLI (Node 22, under
# $HAL0_NPM_PREFIX), the dev venv, Playwright in it for the dashboard's browser tests (also run through
# the fleet's proxy), llama-server with the sdist's chat templates for the template differential, and
# llama-chat-parse, the reference of the native tool-call parse tests (both built here, once and cached by
# key, so no test waits on a build within its timeout: llama-server 13 min on a quiet 2-core machine,
# llama-chat-parse 17 min on a busy one). Idempotent: a second run installs nothing (CI checks that).
set -euo pipefail
cd "$(dirname "$0")/../.."

image/host-packages test
bash tests/tools/install-inspector.sh >/dev/null
make --no-print-directory venv
bash tests/tools/install-browser.sh .venv
image/llama-server >/dev/null
image/llama-chat-parse >/dev/null
image/llama-templates >/dev/null
# The vulkan wheel for the vulkan lab session (make test-vulkan): built once, cached by key like the cpu one. Long
# cold (README, GPU boxes); HAL0_VULKAN_WHEEL=cached-only leaves a missing one unbuilt and the session skips, loudly.
if [ "${HAL0_VULKAN_WHEEL:-}" != cached-only ]; then
  image/llama-wheel vulkan >/dev/null
fi
