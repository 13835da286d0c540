"""A second, independent MCP client: the MCP Inspector CLI (Node >= 22), against both servers.

Install it with tests/tools/install-inspector.sh (into $HAL0_NPM_PREFIX or /var/cache/hal0/npm);
without it, or without Node 22, these tests skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.integration.mcp_helpers import memory_on

PREFIX = Path(os.environ.get("HAL0_NPM_PREFIX", "/var/cache/hal0/npm"))


@pytest.fixture
def inspector() -> tuple[list[str], dict[str, str]]:
    """The command and environment that run the Inspector CLI, or skip naming what is missing."""
    local_bin = PREFIX / "node_modules" / ".bin"
    path = f"{local_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    node = shutil.which("node", path=path)
    if node is None:
        pytest.skip("Node.js not found; run tests/tools/install-inspector.sh (needs Node >= 22)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < 22:
        pytest.skip(f"MCP Inspector needs Node >= 22, found {version}; run tests/tools/install-inspector.sh")
    env = {**os.environ, "PATH": path, "npm_config_cache": str(PREFIX / ".npm-cache")}
    if (local_bin / "mcp-inspector").exists():
        return [str(local_bin / "mcp-inspector")], env
    npx = shutil.which("npx", path=path)
    if npx is None:
        pytest.skip("neither mcp-inspector nor npx found; run tests/tools/install-inspector.sh")
    return [npx, "--yes", "@modelcontextprotocol/inspector"], env


def _run(command: list[str], env: dict[str, str], *args: str) -> dict:
    done = subprocess.run([*command, "--cli", *args], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture
def hal0(start_server, tmp_path: Path) -> Server:
    return start_server(memory=memory_on(tmp_path))


def test_inspector_lists_tools_on_both_servers(inspector: tuple[list[str], dict[str, str]], hal0: Server) -> None:
    command, env = inspector
    admin = _run(command, env, f"{hal0.url}/mcp/admin", "--transport", "http", "--method", "tools/list")
    assert {"status", "load_model", "reload_config"} <= {tool["name"] for tool in admin["tools"]}
    memory = _run(command, env, f"{hal0.url}/mcp/memory", "--transport", "http", "--method", "tools/list")
    tools = {tool["name"]: tool for tool in memory["tools"]}
    assert {"remember", "recall", "list", "get", "forget", "forget_all"} <= set(tools)
    assert tools["forget_all"]["annotations"]["destructiveHint"] is True


def test_inspector_calls_a_tool_with_an_agent_header(inspector: tuple[list[str], dict[str, str]], hal0: Server) -> None:
    command, env = inspector
    url = f"{hal0.url}/mcp/memory"
    common = ["--transport", "http", "--header", "X-hal0-Agent: inspector"]
    _run(command, env, url, *common, "--method", "tools/call", "--tool-name", "remember", "--tool-arg", "text=hello from node")
    found = _run(command, env, url, *common, "--method", "tools/call", "--tool-name", "recall", "--tool-arg", "query=node")
    assert "hello from node" in json.dumps(found)
