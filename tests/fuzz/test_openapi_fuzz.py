"""schemathesis against a live hal0, driven by hal0's own /openapi.json: no input makes a 500.

The server serves the tiny model with a short request timeout, so generated completions stay quick.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from hal0.inference.test_model import write_test_model
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import Server, free_port


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    config = {
        "server": {"bind": "127.0.0.1", "port": port, "log_level": "warning", "request_timeout_s": 1, "queue_limit": 8},
        "memory": {"enabled": True, "path": str(root / "memory.db")},
        "models": [{"id": "tiny", "path": str(write_test_model(root / "tiny.gguf")), "default": True, "n_ctx": 512, "n_threads": 1}],
        "agents": {"approvals": {"path": str(root / "approvals.db")}},
    }
    path = root / "hal0.yaml"
    path.write_text(yaml.safe_dump(config))
    log = root / "hal0.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "hal0.cli", "serve", "--config", str(path)], stdout=out, stderr=subprocess.STDOUT,
                                   env=os.environ.copy())
    server = Server(path, port, process, log)
    server.wait_healthy()
    yield server
    server.stop()


EXAMPLES = int(os.environ.get("HAL0_FUZZ_EXAMPLES", "25"))


def test_no_input_makes_a_server_error(fuzz_server: Server) -> None:
    """Every operation, EXAMPLES generated cases each (schemathesis strategies run by hypothesis)."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            case.validate_response(response, checks=(not_a_server_error,))

        try:
            check()
        except Exception as error:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {error}")
    assert operations >= 15
    assert not failures, "\n\n".join(failures)


def _documented_routes(config_path: Path) -> set[tuple[str, str]]:
    """Every (path, method) the app serves outside the dashboard, /metrics, /openapi.json and the MCP mounts."""
    from hal0 import dashboard
    from hal0.app import create_app
    from hal0.config import load_config
    from starlette.routing import Route

    undocumented = {id(route) for route in dashboard.routes}
    app = create_app(load_config(config_path), load_models=False)
    served: set[tuple[str, str]] = set()
    for route in app.routes:
        if not isinstance(route, Route) or id(route) in undocumented or route.path in ("/metrics", "/openapi.json"):
            continue
        served |= {(route.path, method.lower()) for method in route.methods or () if method != "HEAD"}
    return served


def test_openapi_names_every_route(fuzz_server: Server) -> None:
    import httpx

    spec = httpx.get(f"{fuzz_server.url}/openapi.json").json()
    assert spec["openapi"] == "3.1.0"
    described = {(path, method) for path, item in spec["paths"].items() for method in item if method != "parameters"}
    served = _documented_routes(fuzz_server.config_path)
    assert len(served) >= 15
    assert served - described == set(), "routes the app serves that /openapi.json does not describe"
    assert described - served == set(), "operations /openapi.json describes that the app does not serve"
    assert spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"}
    assert "ChatCompletionRequest" in spec["components"]["schemas"]


def test_the_server_survived(fuzz_server: Server) -> None:
    assert fuzz_server.process.poll() is None
    assert "Traceback" not in Path(fuzz_server.log_path).read_text(errors="replace")
