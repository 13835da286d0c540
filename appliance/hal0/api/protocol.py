"""The HTTP/1.1 protocol `hal0 serve` runs: uvicorn's httptools protocol with a bound on the request head.

Neither uvicorn's httptools protocol nor llhttp limits the request line and headers: five 40 MB header
lines were read and kept in memory (RSS 120 MB -> 387 MB). Here every byte fed to the parser before the
head is complete is counted, and a head larger than MAX_HEAD_BYTES is answered 431 and the connection
closed, before more of it is read. Body bytes are not counted (server.max_body_bytes bounds those).
"""

from __future__ import annotations

import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("hal0")

# The request line plus every header, in bytes. 32 KiB is nginx's default total (4 buffers of 8 KiB:
# behind the proxy nginx refuses first) and twice Node's default; hal0's own clients send under 1 KiB.
MAX_HEAD_BYTES = 32 * 1024

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
    """uvicorn's httptools protocol, refusing (431) a request head over MAX_HEAD_BYTES."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._head_bytes = 0  # fed to the parser since the current message began
        self._in_body = False

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
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
