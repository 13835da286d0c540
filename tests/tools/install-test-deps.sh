#!/usr/bin/env bash
# What `make test` needs on a fresh Debian 12 machine (root), installed once and skipped when present:
# build and lab prerequisites, the MCP Inspector CLI (Node 22, cached under /var/cache/hal0/npm), the
# dev venv, and Debian's chromium for the dashboard's browser tests (also run through the fleet's proxy).
set -euo pipefail
cd "$(dirname "$0")/../.."

export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in python3-venv python3-dev build-essential cmake git curl debootstrap systemd-container nftables iproute2 openssh-client; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

bash tests/tools/install-inspector.sh >/dev/null
make --no-print-directory venv
bash tests/tools/install-browser.sh .venv
