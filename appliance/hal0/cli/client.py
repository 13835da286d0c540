"""The one HTTP client helper for the CLI commands that talk to a running hal0 (approvals, memory)."""

from __future__ import annotations

import os
from typing import Any

import httpx

from hal0.agents.rules import CONFIG_CHECKS
from hal0.config import ConfigError, load_config


class CliError(Exception):
    """A problem to print on stderr (exit 1)."""


def default_url(config_path: str) -> str:
    """hal0's URL on this machine, from the config's bind and port (loopback when it binds everything)."""
    try:
        server = load_config(config_path, checks=CONFIG_CHECKS).config.server
    except ConfigError:
        return "http://127.0.0.1:8080"
    host = "127.0.0.1" if server.bind in ("0.0.0.0", "::", "127.0.0.1") else server.bind
    return f"http://{host}:{server.port}"


def check_response(response: httpx.Response) -> Any:
    """The JSON body, or CliError carrying the server's own error message."""
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise CliError(f"{response.status_code}: {message}")
    return response.json()


class Hal0Client:
    """One connection to hal0 (directly or through the proxy: basic auth, a CA file, an agent header)."""

    def __init__(self, url: str, *, user: str | None = None, cacert: str | None = None, insecure: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        user = user or os.environ.get("HAL0_USER")
        auth = None
        if user:
            name, _, password = user.partition(":")
            auth = (name, password or os.environ.get("HAL0_PASSWORD", ""))
        verify: Any = False if insecure else (cacert or True)
        self.http = httpx.Client(base_url=self.url, auth=auth, verify=verify, timeout=60, headers=headers or {})

    def __enter__(self) -> Hal0Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.close()

    def send(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one request; CliError for an unreachable server or an error status."""
        try:
            return check_response(self.http.request(method, path, **kwargs))
        except httpx.TransportError as error:
            raise CliError(f"cannot reach hal0 at {self.url}: {error} (is it running? see --url)") from None
