"""testinfra checks of a provisioned hal0 box (posture-aware: trusted LAN or behind a proxy).

pytest tests/infra --hosts=ansible://hal0 --ansible-inventory=build/lab/inventory.yml
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.box

HARDENING = {
    "User": "hal0",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateUsers": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "SystemCallArchitectures": "native",
    "ReadWritePaths": "/var/lib/hal0",
    "UMask": "0077",
}

# A tiny HTTP client run with the box's own python3 (no curl needed on a minimal Debian).
BOX_HTTP = """
import json, sys, urllib.request, urllib.error
req = json.loads(sys.argv[1])
r = urllib.request.Request(req["url"], method=req["method"], headers=req["headers"],
                           data=req["body"].encode() if req["body"] is not None else None)
try:
    with urllib.request.urlopen(r, timeout=60) as resp:
        print(json.dumps({"status": resp.status, "body": resp.read().decode()}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
"""

MCP_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "testinfra", "version": "0"}},
}


def as_root(host: Any) -> contextlib.AbstractContextManager[Any]:
    """sudo, unless Ansible already connects as root (the lab does; a minimal Debian has no sudo)."""
    return contextlib.nullcontext() if host.user().name == "root" else host.sudo()


def box_http(host: Any, url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = {"url": url, "method": method, "headers": headers or {}, "body": json.dumps(body) if body is not None else None}
    out = host.check_output("python3 -c %s %s", BOX_HTTP, json.dumps(request))
    result = json.loads(out)
    return result["status"], result["body"]


@pytest.fixture(scope="module")
def config(host: Any) -> dict[str, Any]:
    with as_root(host):
        return yaml.safe_load(host.file("/etc/hal0/hal0.yaml").content_string)


@pytest.fixture(scope="module")
def posture(host: Any) -> str:
    variables = host.ansible.get_variables()
    proxies = variables.get("groups", {}).get("proxy", [])
    if not proxies:
        return "open"
    return "proxy-same-box" if variables["inventory_hostname"] in proxies else "proxy-remote"


@pytest.fixture(scope="module")
def local_url(config: dict[str, Any]) -> str:
    # Loopback, unless hal0 binds one address (its LAN address behind a proxy on another box).
    bind = config["server"]["bind"]
    return f"http://{'127.0.0.1' if bind in ('0.0.0.0', '::', '127.0.0.1') else bind}:{config['server']['port']}"


@pytest.mark.parametrize("package", ["python3-venv", "libgomp1"])
def test_packages(host: Any, package: str) -> None:
    assert host.package(package).is_installed


def test_root_is_traversable(host: Any) -> None:
    # A 0700 `/` (a rootfs tarred from a mktemp -d) locks out dbus, logind and the hal0 user: the box never settles.
    root = host.file("/")
    assert (root.mode, root.user, root.group) == (0o755, "root", "root")


def test_user(host: Any) -> None:
    user = host.user("hal0")
    assert user.exists
    assert user.uid < 1000, "a system user"
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert user.home == "/var/lib/hal0"
    assert user.groups == ["hal0"], "no extra groups on a CPU box"


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/etc/hal0", "root", "hal0", 0o750),
        ("/etc/hal0/hal0.yaml", "root", "hal0", 0o640),
        ("/var/lib/hal0", "hal0", "hal0", 0o750),
        ("/var/lib/hal0/models", "root", "hal0", 0o750),
        ("/opt/hal0/venv/bin/hal0", "root", "root", 0o755),
        ("/etc/systemd/system/hal0.service", "root", "root", 0o644),
    ],
)
def test_paths(host: Any, path: str, owner: str, group: str, mode: int) -> None:
    with as_root(host):
        f = host.file(path)
        assert f.exists, path
        assert (f.user, f.group, f.mode) == (owner, group, mode)


def test_models_readable_by_the_service_only(host: Any, config: dict[str, Any]) -> None:
    with as_root(host):
        for model in config["models"]:
            f = host.file(model["path"])
            assert f.is_file, model["path"]
            assert (f.user, f.group, f.mode) == ("root", "hal0", 0o640)


def test_service_enabled_and_running(host: Any) -> None:
    service = host.service("hal0")
    assert service.is_enabled
    assert service.is_running


def test_unit_hardening_properties(host: Any) -> None:
    shown = host.check_output("systemctl show hal0 --property=%s", ",".join(HARDENING))
    actual = dict(line.split("=", 1) for line in shown.splitlines())
    wrong = {key: actual.get(key) for key, value in HARDENING.items() if actual.get(key) != value}
    assert not wrong, f"unit properties differ from the hardening baseline: {wrong}"
    assert "@system-service" in host.file("/etc/systemd/system/hal0.service").content_string


def test_unit_passes_the_state_paths_and_the_first_boot_notice(host: Any) -> None:
    # roles/hal0 derives them from hal0_state_dir; hal0 reads the first boot's error file from HAL0_FIRSTBOOT_ERROR.
    shown = host.check_output("systemctl show hal0 --property=Environment,WorkingDirectory,ReadOnlyPaths")
    actual = dict(line.split("=", 1) for line in shown.splitlines())
    assert "HAL0_FIRSTBOOT_ERROR=/var/lib/hal0/firstboot-error.txt" in actual["Environment"].split()
    assert "HOME=/var/lib/hal0" in actual["Environment"].split()
    assert (actual["WorkingDirectory"], actual["ReadOnlyPaths"]) == ("/var/lib/hal0", "/var/lib/hal0/models")


def test_no_device_access_without_gpu_backend(host: Any) -> None:
    if host.ansible.get_variables().get("hal0_gpu_backend"):
        pytest.skip("a GPU backend is set on this box")
    shown = host.check_output("systemctl show hal0 --property=PrivateDevices,DevicePolicy")
    assert "PrivateDevices=yes" in shown
    assert "DevicePolicy=closed" in shown


def test_security_score(host: Any) -> None:
    out = host.check_output("systemd-analyze security hal0 --no-pager")
    match = re.search(r"Overall exposure level for hal0\.service: ([0-9.]+)", out)
    assert match, out[-400:]
    score = float(match.group(1))
    print(f"systemd-analyze security hal0: {score}")
    assert score <= 2.0


def test_listening_socket_per_posture(host: Any, config: dict[str, Any], posture: str) -> None:
    port = config["server"]["port"]
    if posture == "proxy-same-box":
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    elif posture == "proxy-remote":
        # Its LAN address only (ansible_host), never every interface.
        assert config["server"]["bind"] == host.ansible.get_variables()["ansible_host"]
        assert host.socket(f"tcp://{config['server']['bind']}:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    else:
        assert host.socket(f"tcp://{config['server']['bind']}:{port}").is_listening


def test_health_on_the_box(host: Any, local_url: str) -> None:
    status, body = box_http(host, f"{local_url}/health")
    assert status == 200, body
    assert json.loads(body)["status"] == "ok"


def test_chat_completion_on_the_box(host: Any, local_url: str) -> None:
    status, body = box_http(
        host,
        f"{local_url}/v1/chat/completions",
        "POST",
        {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8},
        {"Content-Type": "application/json"},
    )
    assert status == 200, body
    reply = json.loads(body)
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert reply["usage"]["prompt_tokens"] >= 1


def test_text_completion_generates_tokens_on_the_box(host: Any, local_url: str) -> None:
    # A base model (the demo Gemma 3 270M) may end a chat turn at once; a text prompt always continues.
    status, body = box_http(
        host,
        f"{local_url}/v1/completions",
        "POST",
        {"prompt": "The capital of France is", "max_tokens": 8},
        {"Content-Type": "application/json"},
    )
    assert status == 200, body
    reply = json.loads(body)
    assert reply["usage"]["completion_tokens"] >= 1
    assert reply["choices"][0]["text"]


def test_memory_off_by_default(host: Any, config: dict[str, Any], local_url: str) -> None:
    assert config["memory"]["enabled"] is False
    with as_root(host):
        assert not host.file(config["memory"]["path"]).exists
    status, _ = box_http(
        host,
        f"{local_url}/mcp/memory/",
        "POST",
        MCP_INITIALIZE,
        {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"},
    )
    assert not 200 <= status < 300, f"/mcp/memory answered {status} although memory is off"


def test_mcp_gate(host: Any, config: dict[str, Any], local_url: str) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    lan_host = "192.168.77.7"
    assert lan_host not in config["mcp"]["allowed_hosts"]
    status, body = box_http(host, f"{local_url}/mcp/admin", "POST", MCP_INITIALIZE, {**headers, "Host": lan_host})
    assert (status, body) == (421, "Invalid Host header")
    # A `host:*` entry allows that host on any port: send it with hal0's own.
    allowed_hosts = [h.replace(":*", f":{config.get('server', {}).get('port', 8080)}") for h in config["mcp"]["allowed_hosts"]]
    for allowed in ["localhost", *allowed_hosts]:
        status, body = box_http(host, f"{local_url}/mcp/admin", "POST", MCP_INITIALIZE, {**headers, "Host": allowed})
        assert status == 200, f"Host {allowed}: {status} {body[:200]}"


def test_reachable_from_the_lan_only_when_open(host: Any, config: dict[str, Any], posture: str) -> None:
    address = host.ansible.get_variables().get("ansible_host", host.backend.host)
    port = config["server"]["port"]
    try:
        with socket.create_connection((address, port), timeout=3):
            reachable = True
    except OSError:
        reachable = False
    if posture == "open":
        assert reachable, f"trusted-LAN posture: {address}:{port} should answer"
    else:
        assert not reachable, f"behind a proxy, {address}:{port} must not be reachable from the LAN"
