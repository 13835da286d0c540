"""A tiny HTTP file server with Range support, for the url model source's tests (roles/hal0/files/hal0-fetch-model).

    python3 tests/tools/range_server.py --bind ADDRESS --port PORT --dir DIR --log FILE

Serves DIR read-only; GET with `Range: bytes=N-` answers 206 with the rest. Every request is logged to FILE as
one line `GET PATH RANGE-or--`. Python's http.server ignores Range (and the fetch must resume), hence this.
Stops on SIGTERM. Bind it only to loopback or the lab bridge.
"""

from __future__ import annotations

import argparse
import http.server
import re
from pathlib import Path


def handler(root: Path, log: Path) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            wanted = self.headers.get("Range")
            with log.open("a") as out:
                out.write(f"GET {self.path} {wanted or '-'}\n")
            path = (root / self.path.lstrip("/")).resolve()
            if root not in path.parents or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
            if match:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer((args.bind, args.port), handler(args.dir.resolve(), args.log))
    print(server.server_address[1], flush=True)  # the port, for a caller that asked for 0
    server.serve_forever()


if __name__ == "__main__":
    main()
