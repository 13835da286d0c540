"""The provisioning session, end to end, on fresh lab boxes (root; `make test-infra`, CI):

fresh boxes -> site.yml -> second run changed=0 -> --check --diff changed=0 -> testinfra ->
a policy edit applied by reload (same MainPID) -> a broken config refused, box unchanged.

Both topologies: `open` (one hal0 box, trusted LAN) and `proxied` (nginx on another box in front).
Fast by design: the tiny test model (tests/infra/ci-vars.yml), the cached rootfs and wheels.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.infra.conftest import REPO

pytestmark = pytest.mark.infra

# image/lab writes here; HAL0_LAB_OUT (with HAL0_LAB_ID and HAL0_LAB_NET) runs a lab of one's own beside others.
INVENTORY = Path(os.environ.get("HAL0_LAB_OUT", REPO / "build" / "lab")) / "inventory.yml"
CI_VARS = REPO / "tests" / "infra" / "ci-vars.yml"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


# No command of a session may hang it: each is bounded, and one that runs over says what it was and what it printed.
COMMAND_TIMEOUT = int(os.environ.get("HAL0_SESSION_COMMAND_TIMEOUT", "1800"))


def run(*args: str | Path, check: bool = True, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    try:
        done = subprocess.run([str(a) for a in args], cwd=REPO, env={**ENV, **(env or {})}, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        err = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        pytest.fail(f"{' '.join(map(str, args))} did not finish within {timeout:.0f}s; what it printed:\n{out[-6000:]}\n{err[-3000:]}")
    print(f"$ {' '.join(map(str, args))}  ({time.monotonic() - started:.1f}s, rc={done.returncode})")
    if check and done.returncode != 0:
        pytest.fail(f"{args[0]} failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
    return done


def play(*extra: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(BIN / "ansible-playbook", "-i", INVENTORY, REPO / "site.yml", "-e", f"@{CI_VARS}", *extra, check=check)


def changed(output: str) -> dict[str, int]:
    return {host: int(count) for host, _, count, _, _ in RECAP.findall(output)}


def run_testinfra() -> None:
    """The README's verify command (tests/infra box and proxy checks) against every box of the lab."""
    run(
        BIN / "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "tests/infra/test_box.py",
        "tests/infra/test_proxy.py",
        "--hosts=ansible://hal0",
        f"--ansible-inventory={INVENTORY}",
    )


def box(name: str, command: str) -> str:
    return run(REPO / "image" / "lab", "ssh", name, command).stdout.strip()


@pytest.fixture(scope="module", params=["open", "proxied"])
def lab(request: pytest.FixtureRequest) -> Iterator[str]:
    run(REPO / "image" / "lab", "up", request.param)
    yield request.param
    run(REPO / "image" / "lab", "down", check=False)


def test_session(lab: str, tmp_path: Path) -> None:
    timings: dict[str, float] = {}

    def step(name: str) -> None:
        timings[name] = time.monotonic()

    step("first play")
    first = play()
    assert set(changed(first.stdout)) >= {"hal0-1"} | ({"proxy-1"} if lab == "proxied" else set())

    step("second play")
    second = play()
    assert changed(second.stdout) and all(v == 0 for v in changed(second.stdout).values()), changed(second.stdout)

    step("check mode")
    dry = play("--check", "--diff")
    assert all(v == 0 for v in changed(dry.stdout).values()), dry.stdout[-4000:]

    step("testinfra")
    run_testinfra()

    if lab == "proxied":
        step("client certificate identity")
        client_cert_identity(tmp_path)
        step("forward_auth identity")
        forward_auth_identity(tmp_path)

    step("policy reload")
    pid = box("hal0-1", "systemctl show -p MainPID --value hal0")
    restarts = box("hal0-1", "systemctl show -p NRestarts --value hal0")
    policy = yaml.safe_load((REPO / "config" / "hal0.yaml").read_text())
    policy["agents"]["personas"][0]["system_prompt"] = "You are a terse assistant (edited by the infra test)."
    edited = tmp_path / "hal0.yaml"
    edited.write_text(yaml.safe_dump(policy, sort_keys=False))
    reload = play("--tags", "hal0_config", "-e", f"hal0_config_file={edited}")
    assert re.search(r"RUNNING HANDLER \[hal0 : Reload the service[^\]]*\]\s*\*+\s*\nchanged: \[hal0-1\]", reload.stdout), reload.stdout[-4000:]
    assert "RUNNING HANDLER [hal0 : Restart the service]" not in reload.stdout
    assert "edited by the infra test" in box("hal0-1", "cat /etc/hal0/hal0.yaml")
    assert box("hal0-1", "systemctl show -p MainPID --value hal0") == pid, "a policy change must not restart hal0"
    assert box("hal0-1", "systemctl show -p NRestarts --value hal0") == restarts
    # Behind a proxy on another box, hal0 binds its LAN address (ansible_host), not loopback.
    host = "127.0.0.1" if lab == "open" else yaml.safe_load(INVENTORY.read_text())["all"]["children"]["hal0"]["hosts"]["hal0-1"]["ansible_host"]
    health = box("hal0-1", f"python3 -c \"import urllib.request as u; print(u.urlopen('http://{host}:8080/health').read().decode())\"")
    assert '"status":"ok"' in health.replace(" ", "")

    step("broken config")
    before = box("hal0-1", "sha256sum /etc/hal0/hal0.yaml")
    broken = tmp_path / "broken.yaml"
    text = (REPO / "config" / "hal0.yaml").read_text()
    broken.write_text(text.replace("n_gpu_layers: 0", 'n_gpu_layers: "all"', 1))
    refused = play("-e", f"hal0_config_file={broken}", check=False)
    assert refused.returncode != 0
    assert f"{broken}:" in refused.stdout and "n_gpu_layers" in refused.stdout, refused.stdout[-3000:]
    assert "hal0-1" not in changed(refused.stdout) or changed(refused.stdout)["hal0-1"] == 0
    assert box("hal0-1", "sha256sum /etc/hal0/hal0.yaml") == before, "a refused config must leave the box unchanged"
    assert box("hal0-1", "systemctl show -p MainPID --value hal0") == pid
    assert box("hal0-1", "systemctl is-active hal0") == "active"

    step("end")
    names = list(timings)
    print(f"\n{lab} topology timings: " + ", ".join(f"{a} {timings[b] - timings[a]:.0f}s" for a, b in itertools.pairwise(names)))


def openssl(*args: str | Path) -> None:
    run("openssl", *args)


def client_cert_identity(tmp_path: Path) -> None:
    """reverse_proxy_identity client_cert: a certificate the lab CA signed with CN robot-1 is agent robot-1,
    whatever X-hal0-Agent the client sends; then the proxy is put back as it was."""
    import ssl

    import httpx

    ca, ca_key, key, csr, cert = (tmp_path / name for name in ("ca.pem", "ca.key", "robot.key", "robot.csr", "robot.pem"))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-subj", "/CN=hal0 lab CA", "-days", "2")
    openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", "/O=hal0 lab/CN=robot-1")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2")
    inventory = yaml.safe_load(INVENTORY.read_text())
    proxy = inventory["all"]["children"]["proxy"]
    address = proxy["hosts"]["proxy-1"]["ansible_host"]
    user = proxy["vars"]["reverse_proxy_basic_auth_users"][0]
    served = tmp_path / "proxy.pem"
    served.write_text(box("proxy-1", "cat /etc/nginx/hal0/selfsigned.crt") + "\n")
    context = ssl.create_default_context(cafile=str(served))
    context.load_cert_chain(str(cert), str(key))
    play("--tags", "reverse_proxy_config", "-e", f"reverse_proxy_client_ca={ca}", "-e", "reverse_proxy_identity=client_cert")
    try:
        with httpx.Client(base_url=f"https://{address}", verify=context, auth=(user["name"], user["password"]), timeout=30) as http:
            me = http.get("/api/whoami", headers={"X-hal0-Agent": "mallory"})
            assert me.status_code == 200, me.text
            assert me.json()["agent"] == "robot-1" and me.json()["source"] == "header", me.json()
        without = httpx.get(f"https://{address}/api/whoami", verify=str(served), auth=(user["name"], user["password"]), timeout=30)
        assert without.status_code == 400, without.text  # nginx: no required SSL certificate was sent
    finally:
        play("--tags", "reverse_proxy_config")  # back to basic_auth identity, no client CA


# A stand-in for oauth2-proxy's /oauth2/auth (not packaged in Debian or on PyPI): 2xx with the user header
# for a request carrying the lab's session cookie, 401 otherwise. nginx's auth_request is the real thing.
AUTH_SERVICE = """
import http.server
class Check(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = "lab_session=forward-1" in (self.headers.get("Cookie") or "")
        self.send_response(202 if ok else 401)
        if ok:
            self.send_header("X-Auth-Request-User", "forward-1")
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", 4180), Check).serve_forever()
"""


def forward_auth_identity(tmp_path: Path) -> None:
    """reverse_proxy_identity forward_auth: nginx asks the auth service (auth_request) and the agent is its
    X-Auth-Request-User, whatever X-hal0-Agent the client sends; then the proxy is put back as it was."""
    import httpx

    inventory = yaml.safe_load(INVENTORY.read_text())
    proxy = inventory["all"]["children"]["proxy"]
    address = proxy["hosts"]["proxy-1"]["ansible_host"]
    user = proxy["vars"]["reverse_proxy_basic_auth_users"][0]
    served = tmp_path / "proxy-fa.pem"
    served.write_text(box("proxy-1", "cat /etc/nginx/hal0/selfsigned.crt") + "\n")
    script = tmp_path / "auth.py"
    script.write_text(AUTH_SERVICE)
    box("proxy-1", "systemctl stop hal0-lab-auth 2>/dev/null; systemctl reset-failed hal0-lab-auth 2>/dev/null; true")
    run(REPO / "image" / "lab", "ssh", "proxy-1", f"systemd-run --unit=hal0-lab-auth python3 -c '{AUTH_SERVICE}'")
    play(
        "--tags", "reverse_proxy_config", "-e", "reverse_proxy_identity=forward_auth", "-e", "reverse_proxy_forward_auth_url=http://127.0.0.1:4180/oauth2/auth"
    )
    try:
        site = box("proxy-1", "cat /etc/nginx/sites-available/hal0.conf")
        assert "auth_request /_hal0_auth;" in site and "$upstream_http_x_auth_request_user" in site
        with httpx.Client(base_url=f"https://{address}", verify=str(served), auth=(user["name"], user["password"]), timeout=30) as http:
            me = http.get("/api/whoami", headers={"X-hal0-Agent": "mallory", "Cookie": "lab_session=forward-1"})
            assert me.status_code == 200, me.text
            assert me.json()["agent"] == "forward-1" and me.json()["source"] == "header", me.json()
            refused = http.get("/api/whoami", headers={"X-hal0-Agent": "mallory"})
            assert refused.status_code == 401, refused.text  # the auth service said no
    finally:
        play("--tags", "reverse_proxy_config")  # back to basic_auth identity
        box("proxy-1", "systemctl stop hal0-lab-auth; true")


def test_lab_down_leaves_nothing_behind() -> None:
    run(REPO / "image" / "lab", "down", check=False)
    assert "hal0lab-" not in run("ip", "netns", "list").stdout
    assert "hl-" not in run("ip", "-o", "link", "show").stdout
    assert "hal0lab" not in run("nft", "list", "tables").stdout
    assert not (REPO / "build" / "lab" / "inventory.yml").exists()
    assert shutil.which("systemd-nspawn")
