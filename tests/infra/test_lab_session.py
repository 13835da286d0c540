"""The provisioning session, end to end, on fresh lab boxes (root; `make test-infra`, CI):

fresh boxes -> site.yml -> second run changed=0 -> --check --diff changed=0 -> testinfra ->
a policy edit applied by reload (same MainPID) -> a broken config refused, box unchanged.

Both topologies: `open` (one hal0 box, trusted LAN) and `proxied` (nginx on another box in front).
Fast by design: the tiny test model (tests/infra/ci-vars.yml), the cached rootfs and wheels.

The documented path is the tested path: every play here runs from a controller venv made only by the README's
controller steps (the block between `controller-steps` markers in README.md, run as written from a PATH with no
venv on it; build/controller-venv is removed first), with only the lab's inventory, `MODEL_PACKAGES=` and
`-e @tests/infra/ci-vars.yml` (the tiny test model) added. The `open` session ends with a `url` model source:
a model file served from the lab host's bridge address (tests/tools/range_server.py, started and stopped here),
fetched by the box, resumed from a part file, sha256-checked, then a re-run that changes nothing.

HAL0_LAB_ID, HAL0_LAB_NET and HAL0_LAB_OUT (image/lab) select a lab of one's own; they pass through.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shlex
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

LAB_ID = os.environ.get("HAL0_LAB_ID", "")
# image/lab writes here; HAL0_LAB_OUT (with HAL0_LAB_ID and HAL0_LAB_NET) runs a lab of one's own beside others.
INVENTORY = Path(os.environ.get("HAL0_LAB_OUT", REPO / "build" / "lab")) / "inventory.yml"
CI_VARS = REPO / "tests" / "infra" / "ci-vars.yml"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
# An operator's shell: no venv on PATH, no Python or Ansible settings from this test run.
OPERATOR_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "ANSIBLE_", "PYTEST"))},
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ANSIBLE_FORCE_COLOR": "0",
}
CONTROLLER_VENV = REPO / "build" / "controller-venv"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


# No command of a session may hang it: each is bounded, and one that runs over says what it was and what it printed.
COMMAND_TIMEOUT = int(os.environ.get("HAL0_SESSION_COMMAND_TIMEOUT", "1800"))


def run(
    *args: str | Path, check: bool = True, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT, operator: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a command from the repo root: with the test's venv on PATH, or as an operator would (operator=True)."""
    started = time.monotonic()
    try:
        full = {**(OPERATOR_ENV if operator else ENV), **(env or {})}
        done = subprocess.run([str(a) for a in args], cwd=REPO, env=full, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        err = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        pytest.fail(f"{' '.join(map(str, args))} did not finish within {timeout:.0f}s; what it printed:\n{out[-6000:]}\n{err[-3000:]}")
    print(f"$ {' '.join(map(str, args))}  ({time.monotonic() - started:.1f}s, rc={done.returncode})")
    if check and done.returncode != 0:
        pytest.fail(f"{args[0]} failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
    return done


def readme_controller_steps() -> list[str]:
    """The commands of README.md's controller steps, in order (comments and blank lines dropped)."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- controller-steps:begin -->", 1)[1].split("<!-- controller-steps:end -->", 1)[0]
    body = block.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in body.splitlines()]
    return [c for c in commands if c]


PLAY: list[str] = []  # the README's play command, set by the controller fixture


@pytest.fixture(scope="module", autouse=True)
def controller() -> None:
    """A controller venv made only by following the README's controller steps."""
    steps = readme_controller_steps()
    assert [s.split()[:2] for s in steps[:2]] == [["make", "controller"], ["make", "wheelhouse"]], steps
    assert steps[2].endswith(" -i INVENTORY site.yml"), steps
    shutil.rmtree(CONTROLLER_VENV, ignore_errors=True)
    run("bash", "-c", steps[0], operator=True, timeout=900)
    run("bash", "-c", f"{steps[1]} MODEL_PACKAGES=", operator=True, timeout=1800)
    PLAY[:] = [part.replace("INVENTORY", str(INVENTORY)) for part in shlex.split(steps[2])]
    assert Path(REPO / PLAY[0]).resolve().is_relative_to(CONTROLLER_VENV), PLAY


def play(*extra: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(*PLAY, "-e", f"@{CI_VARS}", *extra, check=check, operator=True)


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

    if lab == "open":
        step("url model")
        url_model_source(tmp_path)

    step("end")
    names = list(timings)
    print(f"\n{lab} topology timings: " + ", ".join(f"{a} {timings[b] - timings[a]:.0f}s" for a, b in itertools.pairwise(names)))


def url_model_source(tmp_path: Path) -> None:
    """A model the box fetches from the lab host (the bridge address): resumed, checked, then left alone."""
    lan_client = yaml.safe_load(INVENTORY.read_text())["all"]["vars"]["hal0_lab_lan_client"]
    served = tmp_path / "served"
    served.mkdir()
    model = served / "lan-model.gguf"
    run(BIN / "hal0", "models", "make-test-model", model)
    data = model.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    log = tmp_path / "requests.log"
    log.touch()
    server = subprocess.Popen(
        [sys.executable, REPO / "tests" / "tools" / "range_server.py", "--bind", lan_client, "--dir", served, "--log", log],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://{lan_client}:{server.stdout.readline().strip()}/lan-model.gguf"
        dest = "/var/lib/hal0/models/lan-model.gguf"
        half = len(data) // 2
        # An interrupted fetch: the first half is already in the part file.
        fetch_half = (
            f"import urllib.request as u; open('/var/lib/hal0/models/.lan-model.gguf.part', 'wb').write(u.urlopen('{url}', timeout=30).read()[:{half}])"
        )
        box("hal0-1", f'python3 -c "{fetch_half}"')
        models = yaml.safe_load(CI_VARS.read_text())["hal0_config_overrides"]["models"]
        variables = tmp_path / "url-source.yml"
        variables.write_text(
            yaml.safe_dump(
                {
                    "hal0_model_sources": {"gemma3-270m": {"source": "test"}, "lan-model": {"source": "url", "url": url, "sha256": sha}},
                    "hal0_config_overrides": {"models": [*models, {"id": "lan-model", "path": dest, "sha256": sha, "n_ctx": 512, "n_gpu_layers": 0}]},
                }
            )
        )
        fetched = play("-e", f"@{variables}")
        task = r"TASK \[hal0 : Fetch models from a LAN server\][^\n]*\n(?:[^\n]*\n)*?changed: \[hal0-1\] => \(item=lan-model\)"
        assert re.search(task, fetched.stdout), fetched.stdout[-4000:]
        assert log.read_text().splitlines() == ["GET /lan-model.gguf -", f"GET /lan-model.gguf bytes={half}-"]
        assert box("hal0-1", f"sha256sum {dest}").split()[0] == sha
        assert box("hal0-1", f"stat -c '%U:%G %a' {dest}") == "root:hal0 640"
        assert box("hal0-1", "ls -a /var/lib/hal0/models").count(".part") == 0
        listed = box("hal0-1", "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/v1/models').read().decode())\"")
        assert '"lan-model"' in listed.replace(" ", ""), listed
        again = play("-e", f"@{variables}")
        assert changed(again.stdout).get("hal0-1") == 0, again.stdout[-4000:]
        assert len(log.read_text().splitlines()) == 2, "a model already in place must not be fetched again"
    finally:
        server.terminate()
        server.wait(timeout=10)


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
    assert (f"h0lab{LAB_ID}-" if LAB_ID else "hal0lab-") not in run("ip", "netns", "list").stdout
    assert (f"h{LAB_ID}-" if LAB_ID else "hl-") not in run("ip", "-o", "link", "show").stdout
    assert (f"h0lab{LAB_ID}" if LAB_ID else "hal0lab") not in run("nft", "list", "tables").stdout
    assert not INVENTORY.exists()
    assert shutil.which("systemd-nspawn")
