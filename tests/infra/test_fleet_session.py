"""The fleet session (root; `make test-fleet`, CI): proxy-1 in front of hal0-1..3 on fresh lab boxes.

fresh boxes -> site.yml -> second run changed=0 -> testinfra on every box (agent affinity, balancing,
only the proxy reaches hal0) -> a box fails: its agents move to a neighbour -> rolling updates while a
client streams through the proxy without pause, counting failed requests (there must be none):
  1. a policy change, one box at a time: drained at the proxy, reloaded, back once /health shows the new
     config digest;
  2. a restart-class change (server.*) with hal0-2 made unable to start: hal0-1 restarts, hal0-2 fails,
     the rollout aborts and hal0-3 is left untouched, still serving; hal0-2 stays drained (also when the
     proxy's role is re-run), and the dashboard's Overview through the proxy shows it;
  3. hal0-2 repaired, the play re-run: hal0-2 and hal0-3 finish the rollout.
Traffic goes only to the lab boxes; the client is bounded and stops by itself.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.infra.conftest import REPO
from tests.infra.test_lab_session import INVENTORY, changed, controller, play, run, run_testinfra  # noqa: F401 - controller: autouse, plays from the README's controller venv

pytestmark = pytest.mark.infra

BOXES = ["hal0-1", "hal0-2", "hal0-3"]
AGENTS = [f"agent-{i}" for i in range(12)]
CLIENT_LIMIT_S = 300  # the streaming client stops by itself after this, whatever happens


def box(name: str, command: str, check: bool = True) -> str:
    return run(REPO / "image" / "lab", "ssh", name, command, check=check).stdout.strip()


def address(name: str) -> str:
    """A box's LAN address, from the inventory image/lab wrote (HAL0_LAB_NET may move the lab)."""
    for group in yaml.safe_load(INVENTORY.read_text())["all"]["children"].values():
        if name in (group.get("hosts") or {}):
            return str(group["hosts"][name]["ansible_host"])
    raise KeyError(name)


def health_on(name: str, check: bool = True) -> dict[str, object]:
    """/health of a box, asked on the box itself (only the proxy may reach it from the LAN); {} when down."""
    script = f"import urllib.request as u; print(u.urlopen('http://{address(name)}:8080/health').read().decode())"
    out = box(name, f'python3 -c "{script}"', check=check)
    return json.loads(out) if out.startswith("{") else {}


@dataclass
class Streamer:
    """Streams completions through the proxy without pause, from two threads, and counts outcomes."""

    url: str
    auth: tuple[str, str]
    cafile: str
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self, index: int) -> None:
        deadline = time.monotonic() + CLIENT_LIMIT_S
        context = ssl.create_default_context(cafile=self.cafile)
        n = 0
        with httpx.Client(base_url=self.url, auth=self.auth, verify=context, timeout=60) as http:
            while not self.stop.is_set() and time.monotonic() < deadline:
                n += 1
                # Half the requests name an agent (affine), half do not (balanced).
                agent = AGENTS[(index * 7 + n) % len(AGENTS)] if n % 2 else None
                headers = {"X-hal0-Agent": agent} if agent else {}
                body = {"prompt": "Once upon a time", "max_tokens": 12, "stream": True}
                try:
                    with http.stream("POST", "/v1/completions", json=body, headers=headers) as response:
                        if response.status_code != 200:
                            raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:200]!r}")
                        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
                    if not events or events[-1] != "[DONE]":
                        raise RuntimeError(f"stream ended without [DONE] after {len(events)} events")
                    with self.lock:
                        self.outcomes["ok"] += 1
                        self.tokens += len(events) - 1
                except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                    with self.lock:
                        self.outcomes["failed"] += 1
                        self.failures.append(f"{time.strftime('%H:%M:%S')} agent={agent}: {type(error).__name__}: {error}")

    def __enter__(self) -> Streamer:
        self.threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(2)]
        for thread in self.threads:
            thread.start()
        time.sleep(1)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(1)
        self.stop.set()
        for thread in self.threads:
            thread.join(70)


@pytest.fixture(scope="module")
def fleet() -> Iterator[None]:
    run(REPO / "image" / "lab", "up", "fleet")
    yield
    run(REPO / "image" / "lab", "down", check=False)


def edited_config(tmp_path: Path, name: str, prompt: str, **server: object) -> Path:
    policy = yaml.safe_load((REPO / "config" / "hal0.yaml").read_text())
    policy["agents"]["personas"][0]["system_prompt"] = prompt
    policy["server"].update(server)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def handler_hosts(output: str, handler: str) -> list[str]:
    """Hosts a handler changed, in the order the play ran them (serial: one batch per box)."""
    pattern = rf"RUNNING HANDLER \[hal0 : {re.escape(handler)}[^\]]*\]\s*\*+\s*\n((?:changed|ok|skipping|fatal): \[[^\]]+\].*\n?)+"
    hosts = []
    for block in re.finditer(pattern, output):
        hosts += re.findall(r"^changed: \[([^\]\s]+)", block.group(0), re.MULTILINE)
    return hosts


def test_fleet_session(fleet: None, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    report: list[str] = []

    def step(name: str) -> None:
        timings[name] = time.monotonic()

    step("first play")
    # Fresh boxes serve nothing yet: provision them all at once (a rollout is one at a time).
    first = play("-e", "hal0_serial=100%")
    assert set(changed(first.stdout)) >= {*BOXES, "proxy-1"}

    step("second play")
    second = play("-e", "hal0_serial=100%")  # nothing changes, so nothing to roll: all at once
    assert changed(second.stdout) and all(v == 0 for v in changed(second.stdout).values()), changed(second.stdout)

    step("testinfra")
    run_testinfra()

    inventory = yaml.safe_load(INVENTORY.read_text())
    password = inventory["all"]["children"]["proxy"]["vars"]["reverse_proxy_basic_auth_users"][0]["password"]
    cafile = tmp_path / "proxy.pem"
    cafile.write_text(box("proxy-1", "cat /etc/nginx/hal0/selfsigned.crt") + "\n")
    auth = ("hal0", password)
    proxy_url = f"https://{address('proxy-1')}"
    http = httpx.Client(base_url=proxy_url, auth=auth, verify=ssl.create_default_context(cafile=str(cafile)), timeout=30)

    def dashboard_shows(expect: dict[str, str], stragglers: int, drained: tuple[str, ...] = ()) -> None:
        """The Overview through the proxy, in headless Chromium (tests/browser, the dev venv's Playwright)."""
        python = REPO / ".venv" / "bin" / "python"
        if not python.exists():
            report.append("dashboard fleet view: not checked (no .venv: make venv, tests/tools/install-browser.sh)")
            return
        env = {
            "HAL0_FLEET_PROXY": proxy_url,
            "HAL0_FLEET_AUTH": ":".join(auth),
            "HAL0_FLEET_EXPECT": ",".join(f"{address(name)}:8080={state}" for name, state in expect.items()),
            "HAL0_FLEET_STRAGGLERS": str(stragglers),
            "HAL0_FLEET_DRAINED": ",".join(f"{address(name)}:8080" for name in drained),
        }
        test = "tests/browser/test_fleet_view.py::test_fleet_through_the_proxy"
        done = run(python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", test, env=env)
        assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
        report.append(f"dashboard fleet view: {expect}, drained {list(drained)}, {stragglers} straggler(s) shown")

    def home_of(agent: str) -> str:
        return str(http.get("/health", headers={"X-hal0-Agent": agent}).json()["hostname"])

    step("failover")
    homes = {agent: home_of(agent) for agent in AGENTS}
    victim = homes[AGENTS[0]]
    box(victim, "systemctl stop hal0")
    moved = {agent: home_of(agent) for agent in AGENTS}
    assert moved[AGENTS[0]] != victim and moved[AGENTS[0]] in BOXES
    assert all(moved[a] == homes[a] for a in AGENTS if homes[a] != victim), "only the failed box's agents move"
    box(victim, "systemctl start hal0")
    for _ in range(60):
        if health_on(victim, check=False).get("status") == "ok":
            break
        time.sleep(1)
    time.sleep(2)  # the proxy retries a failed box after fail_timeout (lab: 10 s), passively
    deadline = time.monotonic() + 30
    seen: list[str] = []
    while (home := home_of(AGENTS[0])) != victim and time.monotonic() < deadline:
        seen.append(home)
        time.sleep(1)
    # Back for good, whichever nginx worker takes the connection (the workers share one upstream zone).
    after = [home_of(AGENTS[0]) for _ in range(12)] if home == victim else []
    if home != victim or set(after) != {victim}:
        pytest.fail(
            f"a box that comes back gets its agents back: waited 30 s for {AGENTS[0]} to reach {victim} again; "
            f"before: {Counter(seen)}, then 12 requests went to {Counter(after)}; {victim} /health: {health_on(victim, check=False)}\n"
            f"proxy error log:\n{box('proxy-1', 'tail -n 30 /var/log/nginx/error.log', check=False)}\n"
            f"proxy access log:\n{box('proxy-1', 'tail -n 30 /var/log/nginx/hal0-access.log', check=False)}\n"
            f"{victim} journal:\n{box(victim, 'journalctl -u hal0 -n 20 --no-pager', check=False)}"
        )
    report.append(f"failover: {victim} stopped, agent-0 moved to {moved[AGENTS[0]]} and back")

    def rollout(name: str, *args: str, expect_rc: int = 0) -> tuple[subprocess.CompletedProcess[str], Streamer]:
        started = time.monotonic()
        with Streamer(proxy_url, auth, str(cafile)) as streamer:
            result = play(*args, check=expect_rc == 0)
        took = time.monotonic() - started
        report.append(
            f"{name}: play {took:.0f}s, {streamer.outcomes['ok']} streamed requests ok, {streamer.outcomes['failed']} failed, {streamer.tokens} tokens"
        )
        assert result.returncode == expect_rc, result.stdout[-4000:]
        assert streamer.outcomes["failed"] == 0, "\n".join(streamer.failures[:20])
        assert streamer.outcomes["ok"] >= 10, streamer.outcomes
        return result, streamer

    step("rolling policy change")
    pids = {name: box(name, "systemctl show -p MainPID --value hal0") for name in BOXES}
    policy = edited_config(tmp_path, "policy.yaml", "You are a terse assistant (rolled out by the fleet test).")
    result, _ = rollout("policy rollout (reload)", "--tags", "hal0_config", "-e", f"hal0_config_file={policy}")
    assert handler_hosts(result.stdout, "Drain the box at the proxies") == BOXES, result.stdout[-4000:]
    assert handler_hosts(result.stdout, "Reload the service") == BOXES
    assert "RUNNING HANDLER [hal0 : Restart the service]" not in result.stdout
    digests = {name: health_on(name)["config_digest"] for name in BOXES}
    assert len(set(digests.values())) == 1, digests
    assert {name: box(name, "systemctl show -p MainPID --value hal0") for name in BOXES} == pids, "a reload keeps the process"
    assert box("proxy-1", "grep -c ' down;' /etc/nginx/sites-available/hal0.conf", check=False) == "0"

    step("rolling restart, hal0-2 broken")
    box(
        "hal0-2",
        "mkdir -p /run/systemd/system/hal0.service.d && printf '[Service]\\nExecStartPre=/bin/false\\n' "
        ">/run/systemd/system/hal0.service.d/broken.conf && systemctl daemon-reload",
    )
    restart = edited_config(tmp_path, "restart.yaml", "You are a terse assistant (rolled out by the fleet test).", queue_limit=33)
    result, _ = rollout("restart rollout, hal0-2 broken", "--tags", "hal0_config", "-e", f"hal0_config_file={restart}", expect_rc=2)
    assert handler_hosts(result.stdout, "Restart the service") == ["hal0-1"], result.stdout[-4000:]
    assert "hal0-3" not in handler_hosts(result.stdout, "Drain the box at the proxies")
    assert re.search(r"fatal: \[hal0-2\]", result.stdout)
    assert box("proxy-1", f"hal0-upstream status {address('hal0-2')}:8080") == "drained", "a box that did not come back stays drained"
    assert health_on("hal0-1")["config_digest"] != digests["hal0-1"]
    assert health_on("hal0-3")["config_digest"] == digests["hal0-3"], "the rollout stops before hal0-3"
    assert box("hal0-3", "systemctl show -p MainPID --value hal0") == pids["hal0-3"]
    # Re-running the proxy's role mid-rollout (a certificate change, say) keeps the broken box out of rotation.
    proxy_only = play("--tags", "reverse_proxy", "-e", f"hal0_config_file={restart}")
    assert changed(proxy_only.stdout).get("proxy-1") == 0, proxy_only.stdout[-3000:]
    assert box("proxy-1", f"hal0-upstream status {address('hal0-2')}:8080") == "drained"
    # The Overview through the proxy spots it: hal0-2 unreachable, hal0-1 and hal0-3 on different configs.
    dashboard_shows({"hal0-1": "hal0-1", "hal0-2": "unreachable", "hal0-3": "hal0-3"}, stragglers=1, drained=("hal0-2",))

    step("rolling restart, resumed")
    box("hal0-2", "rm -r /run/systemd/system/hal0.service.d && systemctl daemon-reload && systemctl reset-failed hal0")
    result, _ = rollout("restart rollout resumed", "--tags", "hal0_config", "-e", f"hal0_config_file={restart}")
    assert handler_hosts(result.stdout, "Restart the service") == ["hal0-3"], result.stdout[-4000:]
    final = {name: health_on(name)["config_digest"] for name in BOXES}
    assert len(set(final.values())) == 1 and final["hal0-1"] != digests["hal0-1"], final
    assert box("proxy-1", f"hal0-upstream status {address('hal0-2')}:8080") == "serving"
    assert box("hal0-3", "systemctl show -p MainPID --value hal0") != pids["hal0-3"]
    dashboard_shows({name: name for name in BOXES}, stragglers=0)

    step("end")
    names = list(timings)
    print("\nfleet timings: " + ", ".join(f"{a} {timings[b] - timings[a]:.0f}s" for a, b in itertools.pairwise(names)))
    print("\n".join(["fleet report:", *report]))
    http.close()
