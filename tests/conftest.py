"""Shared fixtures: the tiny generated model, config files, and a real `hal0 serve` process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hal0.inference.tiny_model import write_test_model

HAL0 = [sys.executable, "-m", "hal0.cli"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real GGUF (llama architecture, random weights), made by the same code the lab uses."""
    return write_test_model(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="module")
def vocab(tiny_model: Path) -> Iterator[Any]:
    """The tiny model's vocabulary (a Llama with no weights): tokens for the constraint tests."""
    from llama_cpp import Llama

    llm = Llama(str(tiny_model), vocab_only=True, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def constraints(vocab: Any) -> Any:
    """The tiny model's constraint engine (inference.constraint.Constraints)."""
    from hal0.inference.constraint import Constraints

    return Constraints(vocab._model)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_config(model_path: Path, port: int, **sections: Any) -> dict[str, Any]:
    """A minimal valid config serving the tiny model on loopback; `sections` override keys."""
    config: dict[str, Any] = {
        "server": {"bind": "127.0.0.1", "port": port, "log_level": "warning"},
        "models": [{"id": "tiny", "path": str(model_path), "default": True, "n_ctx": 1024, "n_threads": 1}],
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    return config


@dataclass
class Server:
    """A `hal0 serve` child process on loopback."""

    config_path: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        self.config_path.write_text(text)

    def reload(self) -> None:
        self.process.send_signal(signal.SIGHUP)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hal0 serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                last = httpx.get(f"{self.url}/health", timeout=2)
                if last.status_code == 200:
                    return last.json()
                if last.json().get("status") == "failed":
                    return last.json()
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"hal0 did not become healthy: {last}\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def serve(root: Path, config: dict[str, Any]) -> Server:
    """`hal0 serve` of `config` (written to `root`), healthy: for module-scoped servers of their own config."""
    path = root / "hal0.yaml"
    path.write_text(yaml.safe_dump(config))
    log = root / "hal0.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*HAL0, "serve", "--config", str(path)], stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    server = Server(path, config["server"]["port"], process, log)
    try:
        server.wait_healthy()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def start_server(tmp_path: Path, tiny_model: Path) -> Iterator[Callable[..., Server]]:
    """Start `hal0 serve` with the tiny model; keyword arguments override config sections."""
    servers: list[Server] = []

    def start(*, env: dict[str, str] | None = None, wait: bool = True, **sections: Any) -> Server:
        port = free_port()
        config_path = tmp_path / f"hal0-{port}.yaml"
        config = tiny_config(tiny_model, port, **sections)
        # State stays in the test's directory unless the test names a path itself.
        approvals = config.setdefault("agents", {}).setdefault("approvals", {})
        approvals.setdefault("path", str(tmp_path / f"approvals-{port}.db"))
        config_path.write_text(yaml.safe_dump(config))
        log_path = tmp_path / f"hal0-{port}.log"
        child_env = {**os.environ, **(env or {})}
        with log_path.open("wb") as log:
            process = subprocess.Popen([*HAL0, "serve", "--config", str(config_path)], stdout=log, stderr=subprocess.STDOUT, env=child_env)
        server = Server(config_path, port, process, log_path, env or {})
        servers.append(server)
        if wait:
            server.wait_healthy()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()
