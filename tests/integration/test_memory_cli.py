"""`hal0 memory export|import`: move a namespace from one real server to another (two boxes of a fleet)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hal0.cli import main

from tests.conftest import Server


def test_export_then_import_moves_a_namespace(start_server: Callable[..., Server], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = start_server(memory={"enabled": True, "path": str(tmp_path / "old.db")})
    new = start_server(memory={"enabled": True, "path": str(tmp_path / "new.db")})
    with old.client(headers={"X-hal0-Agent": "alice"}) as http:
        for i in range(130):  # more than one page (100)
            body = {"text": f"fact {i}", "tags": ["fleet"], "metadata": {"n": i}}
            assert http.post("/api/memory", json=body).status_code == 201
    with old.client(headers={"X-hal0-Agent": "bob"}) as http:
        assert http.post("/api/memory", json={"text": "not alice's"}).status_code == 201

    dump = tmp_path / "alice.jsonl"
    assert main(["memory", "export", "--agent", "alice", "--url", old.url, "-o", str(dump)]) == 0
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(lines) == 130
    assert {line["text"] for line in lines} == {f"fact {i}" for i in range(130)}
    assert all(line["tags"] == ["fleet"] and set(line) == {"text", "tags", "metadata", "id", "created", "updated"} for line in lines)
    assert "exported 130 items of agent alice" in capsys.readouterr().err

    assert main(["memory", "import", "--agent", "alice", "--url", new.url, "-i", str(dump)]) == 0
    assert "imported 130 items into agent alice" in capsys.readouterr().err
    with new.client(headers={"X-hal0-Agent": "alice"}) as http:
        found = http.get("/api/memory", params={"q": "fact 129"}).json()["items"]
    assert any(item["text"] == "fact 129" and item["metadata"] == {"n": 129} for item in found)
    with new.client(headers={"X-hal0-Agent": "bob"}) as http:
        assert http.get("/api/memory").json()["items"] == [], "only alice's namespace moves"


def test_import_names_the_bad_line(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    assert main(["memory", "import", "--agent", "alice", "--url", server.url, "-i", str(bad)]) == 1
    assert "line 2: not JSON" in capsys.readouterr().err


def test_disabled_memory_is_reported(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "export", "--agent", "alice", "--url", server.url]) == 1
    assert "hal0 memory: 404" in capsys.readouterr().err
