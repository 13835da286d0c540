"""roles/hal0/files/hal0-fetch-model (the url model source), against a server on loopback: resumes with Range,
starts over when the server ignores it, checks the sha256 before installing, refuses public addresses and
redirects without connecting, and gives up on a stalled server within its timeout, saying what it got."""

from __future__ import annotations

import hashlib
import http.server
import importlib.machinery
import importlib.util
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "hal0" / "files" / "hal0-fetch-model"
SERVER = REPO / "tests" / "tools" / "range_server.py"
DATA = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(DATA).hexdigest()


def fetch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The Range-capable server on 127.0.0.1 serving model.gguf; yields (base URL, request log)."""
    root = tmp_path / "served"
    root.mkdir()
    (root / "model.gguf").write_bytes(DATA)
    log = tmp_path / "requests.log"
    log.touch()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--bind", "127.0.0.1", "--port", "0", "--dir", str(root), "--log", str(log)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_fetches_checks_and_installs(server: tuple[str, Path], tmp_path: Path) -> None:
    url, log = server
    dest = tmp_path / "models" / "m.gguf"
    done = fetch(f"{url}/model.gguf", SHA, str(dest))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "changed"
    assert dest.read_bytes() == DATA and dest.stat().st_mode & 0o777 == 0o640
    assert not (dest.parent / ".m.gguf.part").exists()
    assert log.read_text() == "GET /model.gguf -\n"


def test_resumes_a_part_file_with_range(server: tuple[str, Path], tmp_path: Path) -> None:
    url, log = server
    dest = tmp_path / "m.gguf"
    (tmp_path / ".m.gguf.part").write_bytes(DATA[:300_000])
    done = fetch(f"{url}/model.gguf", SHA, str(dest))
    assert done.returncode == 0, done.stderr
    assert "resuming at byte 300000" in done.stderr
    assert log.read_text() == "GET /model.gguf bytes=300000-\n"
    assert dest.read_bytes() == DATA


def test_a_wrong_sha256_installs_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    dest = tmp_path / "m.gguf"
    done = fetch(f"{url}/model.gguf", "0" * 64, str(dest))
    assert done.returncode == 1
    assert f"has sha256 {SHA}, expected {'0' * 64}: removed, nothing installed" in done.stderr
    assert not dest.exists() and not (tmp_path / ".m.gguf.part").exists()


def test_public_addresses_and_bad_urls_are_refused_before_any_connection(tmp_path: Path) -> None:
    for url in ("http://203.0.113.7/m.gguf", "http://[2a00:1450:4001::1]/m.gguf", "ftp://10.0.0.1/m.gguf"):
        done = fetch(url, SHA, str(tmp_path / "m.gguf"), "--timeout", "1")
        assert done.returncode == 2, (url, done.stderr)
        assert "refused:" in done.stderr
    assert "not a private (LAN) address" in fetch("http://203.0.113.7/m.gguf", SHA, str(tmp_path / "m.gguf")).stderr
    assert not list(tmp_path.iterdir())


def test_the_addresses_allowed() -> None:
    loader = importlib.machinery.SourceFileLoader("hal0_fetch_model", str(SCRIPT))
    spec = importlib.util.spec_from_loader("hal0_fetch_model", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    for address in ("10.1.2.3", "172.16.0.1", "192.168.1.5", "127.0.0.1", "169.254.1.1", "fd00::1", "fe80::1", "::ffff:10.0.0.1"):
        assert module._private(address), address
    for address in ("8.8.8.8", "172.32.0.1", "100.64.0.1", "192.0.2.1", "2001:db8::1", "2a00:1450::1", "::ffff:8.8.8.8"):
        assert not module._private(address), address


class _Quirky(http.server.BaseHTTPRequestHandler):
    mode = "redirect"

    def do_GET(self) -> None:
        if self.mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://203.0.113.7/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.mode == "ignore-range":
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA)
        else:  # stall: half the body, then nothing
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA[:1000])
            self.wfile.flush()
            time.sleep(5)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def quirky() -> Iterator[tuple[str, type[_Quirky]]]:
    handler = type("Handler", (_Quirky,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/m.gguf", handler
    finally:
        server.shutdown()
        server.server_close()


def test_redirects_are_not_followed(quirky: tuple[str, type[_Quirky]], tmp_path: Path) -> None:
    url, _ = quirky
    done = fetch(url, SHA, str(tmp_path / "m.gguf"))
    assert done.returncode == 2 and "redirects are not followed" in done.stderr


def test_a_server_that_ignores_range_starts_over(quirky: tuple[str, type[_Quirky]], tmp_path: Path) -> None:
    url, handler = quirky
    handler.mode = "ignore-range"
    (tmp_path / ".m.gguf.part").write_bytes(b"x" * 5000)
    done = fetch(url, SHA, str(tmp_path / "m.gguf"))
    assert done.returncode == 0, done.stderr
    assert "ignored the Range request (200): starting over (5000 bytes discarded)" in done.stderr
    assert (tmp_path / "m.gguf").read_bytes() == DATA


def test_a_stalled_server_fails_within_the_timeout_and_keeps_the_part(quirky: tuple[str, type[_Quirky]], tmp_path: Path) -> None:
    url, handler = quirky
    handler.mode = "stall"
    started = time.monotonic()
    done = fetch(url, SHA, str(tmp_path / "m.gguf"), "--timeout", "1", "--attempts", "2", timeout=30)
    assert done.returncode == 1
    assert time.monotonic() - started < 15
    assert "attempt 1: no data for 1s after 1000 bytes" in done.stderr
    assert "gave up" in done.stderr and "1000 bytes kept in" in done.stderr and "a re-run resumes" in done.stderr
    assert (tmp_path / ".m.gguf.part").stat().st_size == 1000 and not (tmp_path / "m.gguf").exists()
