"""Oversized request heads are refused with 431 at the documented limit (hal0.api.protocol.MAX_HEAD_BYTES),
over a real socket to `hal0 serve`: before, five 40 MB header lines were read and kept (issue 20)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from hal0.api.protocol import MAX_HEAD_BYTES

from tests.conftest import Server


def _exchange(server: Server, head: bytes, body: bytes = b"", chunk: int = 1 << 16) -> bytes:
    """Send a raw request (stopping if the server closes early) and return what it answered."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        data = head + body
        try:
            for start in range(0, len(data), chunk):
                sock.sendall(data[start:start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send: the answer is already on its way
        answer = b""
        try:
            while piece := sock.recv(1 << 16):
                answer += piece
        except ConnectionResetError:
            pass
    return answer


def _head(extra: list[tuple[str, str]], method: str = "GET", path: str = "/health", length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *(f"{n}: {v}" for n, v in extra)]
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("size", [MAX_HEAD_BYTES, 40 * 1024 * 1024])
def test_one_huge_header_is_431(server: Server, size: int) -> None:
    answer = _exchange(server, _head([("X-Big", "a" * size)]))
    assert _status(answer) == 431
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "headers_too_large" and str(MAX_HEAD_BYTES) in error["message"]


def test_many_headers_over_the_limit_are_431(server: Server) -> None:
    many = [(f"X-H{i}", "v" * 100) for i in range(MAX_HEAD_BYTES // 100)]
    assert _status(_exchange(server, _head(many))) == 431


def test_a_long_request_line_is_431(server: Server) -> None:
    assert _status(_exchange(server, _head([], path="/health?" + "q" * MAX_HEAD_BYTES))) == 431


def test_heads_under_the_limit_and_large_bodies_pass(server: Server) -> None:
    near = [(f"X-H{i}", "v" * 100) for i in range((MAX_HEAD_BYTES - 1024) // 110)]
    answer = _exchange(server, _head(near))
    assert _status(answer) == 200, answer[:200]
    # a body far larger than the head limit, sent in one piece with its head, is not counted as head
    body = json.dumps({"input": "x " * 200_000}).encode()
    answer = _exchange(server, _head([], "POST", "/v1/embeddings", len(body)), body, chunk=len(body) + 1024)
    assert _status(answer) != 431, answer[:300]


def test_the_server_keeps_serving_after_refusals(server: Server) -> None:
    for _ in range(5):
        assert _status(_exchange(server, _head([("X-Big", "a" * (4 * 1024 * 1024))]))) == 431
    assert httpx.get(f"{server.url}/health").status_code == 200
    with httpx.Client(base_url=server.url) as client:  # keep-alive: several requests on one connection
        assert [client.get("/health", headers={"X-Pad": "p" * 1000}).status_code for _ in range(3)] == [200] * 3
