"""schemathesis against a live hal0, driven by hal0's own /openapi.json: no input makes a 500.

The server serves the tiny model with a short request timeout, so generated completions stay quick.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import schemathesis
import yaml
from hal0.inference.tiny_model import write_test_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# The input classes an adversarial pass turned into 500s (issue 20), grafted onto schemathesis's cases so every
# route, including routes added later, gets them: lone surrogates, unicode digits, integers past 64 bits (and
# past Python's 4300-digit conversion limit), and nesting past the recursion limit. Bodies are written as raw
# JSON text, since Python's encoder can itself neither nest that deep nor spell every one of these.
HOSTILE_STRINGS = ["a\\ud800b", "\\udfff", "\\ud83d", "²", "١٠", "𝟗𝟗", "9" * 5000]
HOSTILE_LITERALS = [str(2**64), str(-(2**63) - 1), str(10**30), "9" * 5000, "1e400", "[" * 3000 + "]" * 3000,
                    "{" + '"a":{' * 1500 + "}" * 1501]
HOSTILE_QUERY = ["%C2%B2", "%D9%A1%D9%A0", "%ED%A0%80", "9" * 5000, "-1", "1e3", "%F0%9D%9F%97"]
_MARK = "\u0000hal0-hostile\u0000"


def _leaves(value: object, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [path, *(leaf for key, item in value.items() for leaf in _leaves(item, (*path, key)))]
    if isinstance(value, list):
        return [path, *(leaf for index, item in enumerate(value) for leaf in _leaves(item, (*path, index)))]
    return [path]


def _graft(body: object, path: tuple, literal: str) -> str:
    """`body` as JSON text with the value at `path` replaced by the raw JSON `literal`."""
    if not path:
        return literal
    import copy

    marked = copy.deepcopy(body)
    node = marked
    for part in path[:-1]:
        node = node[part]  # type: ignore[index]
    node[path[-1]] = _MARK  # type: ignore[index]
    return json.dumps(marked).replace(json.dumps(_MARK), literal)


def test_hostile_input_classes_make_no_server_error(fuzz_server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    failures: list[str] = []
    client = httpx.Client(base_url=fuzz_server.url, timeout=30)
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(), data=st.data())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case, data: st.DataObject) -> None:
            headers = {key: value for key, value in (case.headers or {}).items() if key.lower() != "content-length"}
            query = "&".join(f"{quote(str(k))}={quote(str(v))}" for k, v in (case.query or {}).items())
            content = None
            body = case.body if isinstance(case.body, dict | list) else None
            where = data.draw(st.sampled_from(["body", "query"] if body is not None else ["query"]))
            if where == "body":
                path = data.draw(st.sampled_from(_leaves(body)))
                kind = data.draw(st.sampled_from(["string", "literal"]))
                literal = '"' + data.draw(st.sampled_from(HOSTILE_STRINGS)) + '"' if kind == "string" else data.draw(
                    st.sampled_from(HOSTILE_LITERALS))
                content = _graft(body, path, literal).encode()
                headers["Content-Type"] = "application/json"
            else:
                name = data.draw(st.sampled_from([*(case.query or {}), "limit", "cursor"]))
                query = "&".join(filter(None, [query, f"{name}={data.draw(st.sampled_from(HOSTILE_QUERY))}"]))
            url = case.formatted_path + (f"?{query}" if query else "")
            response = client.request(case.method, url, content=content, headers=headers)
            assert response.status_code < 500, f"{case.method} {url} {(content or b'')[:200]!r}: {response.status_code} {response.text[:300]}"

        try:
            check()
        except Exception as error:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {error}")
    client.close()
    assert not failures, "\n\n".join(failures)


def test_openapi_names_every_route(fuzz_server: Server) -> None:
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
