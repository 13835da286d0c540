"""The HTTP/1.1 protocol `hal0 serve` runs: uvicorn's httptools protocol with bounds on the request head.

Neither uvicorn's httptools protocol nor llhttp limits the request line and headers: five 40 MB header
lines were read and kept in memory (RSS 120 MB -> 387 MB). Here every byte fed to the parser before the
head is complete is counted, and a head larger than MAX_HEAD_BYTES is answered 431 and the connection
closed, before more of it is read. Body bytes are not counted (server.max_body_bytes bounds those).

Nor does uvicorn bound how long a head or a body may take (a slow-loris held 1,100 connections with
unfinished heads; a body trickled at a byte every 2 s was still read after 20 s): a head must be complete
within `header_timeout_s` of its first byte (or of the connection's opening), a body within `body_timeout_s`
of its head, or the connection is closed. Each request's scope carries ABORT_KEY, a callable that drops its
connection at once (a streaming client that stopped reading, api/generation.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("hal0")

# The request line plus every header, in bytes. 32 KiB is nginx's default total (4 buffers of 8 KiB:
# behind the proxy nginx refuses first) and twice Node's default; hal0's own clients send under 1 KiB.
MAX_HEAD_BYTES = 32 * 1024

ABORT_KEY = "hal0.abort"  # in a request's scope: drops its connection, discarding what is unsent

_BODY = json.dumps({"error": {
    "message": f"request headers are larger than the limit of {MAX_HEAD_BYTES} bytes (request line and headers together)",
    "type": "invalid_request_error", "param": None, "code": "headers_too_large",
}}).encode()
_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_BODY)}\r\nconnection: close\r\n\r\n".encode()
    + _BODY
)


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing (431) a request head over MAX_HEAD_BYTES and closing a
    connection whose head or body takes longer than the timeouts set by `with_timeouts`."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._head_bytes = 0  # fed to the parser since the current message began
        self._in_body = False
        self._deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeouts(cls, header_timeout_s: float, body_timeout_s: float) -> type[BoundedHeadProtocol]:
        """The protocol class with these timeouts (uvicorn makes one instance per connection)."""
        return type(cls.__name__, (cls,), {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s})

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expire, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, what: str, seconds: float) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closed a connection from %s: its request %s took longer than %gs", self.client, what, seconds)
            self.transport.abort()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.header_timeout_s, "head")

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._arm(self.body_timeout_s, "body")
        self.scope[ABORT_KEY] = self.transport.abort  # type: ignore[index]
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        self._disarm()
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        # Feed at most the head's remaining room at a time, so the parser never holds more than the limit
        # of an unfinished head; whatever follows a completed head is body and goes through whole.
        while data and not self.transport.is_closing():
            if self._in_body:
                super().data_received(data)
                return
            room = MAX_HEAD_BYTES - self._head_bytes
            if room <= 0:
                self._refuse()
                return
            part, data = data[:room], data[room:]
            self._head_bytes += len(part)
            super().data_received(part)

    def _refuse(self) -> None:
        log.warning("refused a request whose headers exceed %d bytes (431) from %s", MAX_HEAD_BYTES, self.client)
        self.transport.write(_RESPONSE)
        self.transport.close()
