#!/usr/bin/env bash
# Install Node 22 (from the npm registry's `node` package) and the MCP Inspector CLI into a local
# prefix, so the second, independent MCP client can run where the system Node is older than 22.
# Idempotent: a second run only checks. Prints the prefix's bin directory on the last line.
#
#   tests/tools/install-inspector.sh            # prefix: $HAL0_NPM_PREFIX or /var/cache/hal0/npm
#   export PATH="$(tests/tools/install-inspector.sh | tail -1):$PATH"
set -euo pipefail

PREFIX="${HAL0_NPM_PREFIX:-/var/cache/hal0/npm}"
NODE_SPEC="${HAL0_NODE_SPEC:-node@22}"
INSPECTOR_SPEC="${HAL0_INSPECTOR_SPEC:-@modelcontextprotocol/inspector@0}"

# Downloaded tarballs are cached apart from the prefix, so a fresh prefix (CI makes one each run, so the
# install branches below run every time) costs an install, not a download.
export npm_config_cache="${HAL0_NPM_CACHE:-/var/cache/hal0/npm-cache}"
mkdir -p "$PREFIX" "$npm_config_cache"
BIN="$PREFIX/node_modules/.bin"

node_major() { "$BIN/node" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ "$(node_major)" -lt 22 ]; then
  # The `node` package ships the official binary for this platform as a dependency.
  timeout 600 npm install --prefix "$PREFIX" --no-audit --no-fund "$NODE_SPEC" >&2 ||
    { echo "install-inspector: npm install $NODE_SPEC failed or took over 600s" >&2; exit 1; }
fi
if [ ! -x "$BIN/mcp-inspector" ]; then
  # Installed with the Node 22 from above first on PATH, so any install scripts run under it.
  PATH="$BIN:$PATH" timeout 600 npm install --prefix "$PREFIX" --no-audit --no-fund "$INSPECTOR_SPEC" >&2 ||
    { echo "install-inspector: npm install $INSPECTOR_SPEC failed or took over 600s" >&2; exit 1; }
fi
echo "node $("$BIN/node" --version), inspector: $BIN/mcp-inspector" >&2
echo "$BIN"
