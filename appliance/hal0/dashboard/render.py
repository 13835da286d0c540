"""Rendering dashboard pages: one Jinja2 environment, the base URL, and the response headers.

Every URL in the templates is relative to the app's root, resolved by `<base href>`: "./" on `/`,
"../" one level down, or X-Forwarded-Prefix when a proxy mounts hal0 on a sub-path. Nothing is
absolute, so the same HTML works on its own port, on a proxy vhost and under a prefix.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# A proxy's prefix is echoed into <base href>: only plain path segments, so it cannot inject markup.
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+/?$")
# The dashboard carries the human channel (approve/deny): no framing (clickjacking), no inline
# script, nothing loaded from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m", f"{secs}s"] if not days else [f"{minutes}m"]
    return " ".join(parts)


def size(value: int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(when=when, duration=duration, size=size, pretty=pretty, compact=compact)


def base_href(request: Request) -> str:
    prefix = request.headers.get("x-forwarded-prefix", "").strip()
    if prefix and _PREFIX.fullmatch(prefix):
        return prefix.rstrip("/") + "/"
    depth = request.url.path.count("/") - 1
    return "../" * depth if depth > 0 else "./"


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    html = ENV.get_template(template).render(base=base_href(request), **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
