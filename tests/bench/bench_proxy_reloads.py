"""Client keep-alive vs nginx reloads, through the fleet lab's proxy (root; `make lab TOPOLOGY=fleet` first).

    build/infra-venv/bin/python -m tests.bench.bench_proxy_reloads [--cycles 40] [--keepalive 65,0]

For each client keep-alive setting: set it in proxy-1's site (restored afterwards), then stream completions
through the proxy without pause (the fleet test's client) while hal0-upstream drains and undrains hal0-1
`--cycles` times (two nginx reloads a cycle), and count failed requests; then time GET /health (median of
200). Why the role's default is 0: a reload closes idle keep-alive connections, and a request sent on one
in that instant is lost. Writes results/bench_proxy_reloads.json. Traffic goes only to the lab boxes.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import tempfile
import time

import httpx
import yaml

from tests.bench.common import write_result
from tests.infra.test_fleet_session import Streamer, address, box
from tests.infra.test_lab_session import INVENTORY

SITE = "/etc/nginx/sites-available/hal0.conf"


def set_keepalive(seconds: int) -> None:
    box("proxy-1", f"sed -i -E 's/^( *keepalive_timeout) [0-9]+;/\\1 {seconds};/' {SITE} && nginx -t -q && systemctl reload nginx")


def health_latency_ms(url: str, auth: tuple[str, str], cafile: str, samples: int = 200) -> float:
    times = []
    with httpx.Client(base_url=url, auth=auth, verify=ssl.create_default_context(cafile=cafile), timeout=30) as http:
        for _ in range(samples):
            started = time.perf_counter()
            http.get("/health").raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=40, help="drain+undrain cycles per setting")
    parser.add_argument("--keepalive", default="65,0", help="client keep-alive seconds to compare")
    args = parser.parse_args()

    proxy = yaml.safe_load(INVENTORY.read_text())["all"]["children"]["proxy"]
    auth = ("hal0", proxy["vars"]["reverse_proxy_basic_auth_users"][0]["password"])
    url = f"https://{address('proxy-1')}"
    target = f"{address('hal0-1')}:8080"
    original = int(box("proxy-1", f"grep -oP '^ *keepalive_timeout \\K[0-9]+' {SITE}"))
    loop = (f"for i in $(seq {args.cycles}); do hal0-upstream drain {target} >/dev/null; sleep 0.7; "
            f"hal0-upstream undrain {target} >/dev/null; sleep 0.7; done")
    results = []
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as cafile:
        cafile.write(box("proxy-1", "cat /etc/nginx/hal0/selfsigned.crt") + "\n")
        cafile.flush()
        try:
            for seconds in (int(part) for part in args.keepalive.split(",")):
                set_keepalive(seconds)
                with Streamer(url, auth, cafile.name) as streamer:
                    box("proxy-1", loop)
                row = {"keepalive_timeout_s": seconds, "reloads": 2 * args.cycles, "ok": streamer.outcomes["ok"],
                       "failed": streamer.outcomes["failed"], "health_median_ms": health_latency_ms(url, auth, cafile.name),
                       "failures": streamer.failures[:5]}
                results.append(row)
                print(f"keepalive {seconds:>3} s: {row['reloads']} reloads, {row['ok']} ok, {row['failed']} failed; "
                      f"GET /health median {row['health_median_ms']:.2f} ms")
        finally:
            set_keepalive(original)
    path = write_result("bench_proxy_reloads", {"cycles": args.cycles, "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
