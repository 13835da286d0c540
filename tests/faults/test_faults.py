"""Faults: kill -9 during writes, a full disk, a corrupt or vanished model, a broken reload.

Each leaves hal0 answering or failing cleanly with a clear error, and no committed data lost
(checked by reading it back after the fault).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server


def memory_at(path: Path) -> dict:
    return {"enabled": True, "path": str(path)}


def test_kill_9_during_memory_writes_loses_no_acknowledged_item(start_server: Callable[..., Server], tmp_path: Path) -> None:
    memory = memory_at(tmp_path / "state" / "memory.db")
    server = start_server(memory=memory)
    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    def writer(worker: int) -> None:
        with httpx.Client(base_url=server.url, headers={"X-hal0-Agent": f"writer{worker}"}, timeout=5) as client:
            for index in range(100_000):
                if stop.is_set():
                    return
                text = f"note {worker}-{index} " + "x" * 200
                try:
                    response = client.post("/api/memory", json={"text": text})
                except httpx.TransportError:
                    return
                if response.status_code == 201:
                    acknowledged[response.json()["id"]] = text

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.process.kill()  # SIGKILL mid-write: some requests are in flight
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) > 20
    revived = start_server(memory=memory)
    found: dict[str, str] = {}
    for worker in range(3):
        cursor = None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = httpx.get(f"{revived.url}/api/memory", params=params, headers={"X-hal0-Agent": f"writer{worker}"}).json()
            found.update({item["id"]: item["text"] for item in page["items"]})
            cursor = page["next_cursor"]
            if not cursor:
                break
    missing = set(acknowledged) - set(found)
    assert not missing, f"{len(missing)} acknowledged items lost"
    assert all(found[item] == text for item, text in acknowledged.items())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: the state directory on a disk that fills up (needs root to mount)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_clean_error_and_keeps_what_was_written(start_server: Callable[..., Server], small_disk: Path) -> None:
    server = start_server(memory=memory_at(small_disk / "memory.db"))
    headers = {"X-hal0-Agent": "filler"}
    stored: list[str] = []
    statuses: set[int] = set()
    for index in range(400):
        response = httpx.post(f"{server.url}/api/memory", json={"text": f"item {index} " + "y" * 2000}, headers=headers)
        statuses.add(response.status_code)
        if response.status_code == 201:
            stored.append(response.json()["id"])
        else:
            break
    assert 500 not in statuses
    assert response.status_code == 507, response.text
    assert response.json()["error"]["code"] == "storage_full"
    assert "disk" in response.json()["error"]["message"]
    assert stored
    # Still answering, and everything acknowledged reads back.
    for item in stored[-5:]:
        assert httpx.get(f"{server.url}/api/memory/{item}", headers=headers).status_code == 200
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_a_corrupt_model_file_fails_cleanly(start_server: Callable[..., Server], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(4096))
    server = start_server(models=[{"id": "broken", "path": str(corrupt), "default": True}])
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 503 and health.json()["status"] == "failed"
    assert "broken" in health.json()["reason"]
    response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x"})
    assert response.status_code == 503 and "failed to load" in response.json()["error"]["message"]
    assert server.process.poll() is None


def test_a_model_file_that_vanishes_keeps_serving_until_restart(start_server: Callable[..., Server], tiny_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "vanishing.gguf"
    shutil.copy(tiny_model, copy)
    models = [{"id": "tiny", "path": str(copy), "default": True, "n_ctx": 512}]
    server = start_server(models=models)
    copy.unlink()
    # The weights are memory-mapped: serving continues, and the operator sees the problem on restart.
    assert httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 3}, timeout=30).status_code == 200
    server.stop()
    restarted = start_server(models=models)
    health = httpx.get(f"{restarted.url}/health").json()
    assert health["status"] == "failed" and f"model file not found: {copy}" in health["reason"]
