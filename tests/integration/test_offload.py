"""GPU layers are never silently run on the CPU: a model that asks for `n_gpu_layers` on a llama.cpp
that sees no GPU device fails to load with an error naming the field and the devices it saw (issue 28).
This machine's build is the CPU wheel, whose only device is the CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hal0.inference.devices import DeviceType, OffloadUnavailable, check_offload, devices

from tests.conftest import Server


def test_the_cpu_build_lists_only_the_cpu() -> None:
    found = devices()
    assert found and found[0].type is DeviceType.CPU and not any(device.offloads for device in found)


@pytest.mark.parametrize("layers", [-1, 1, 99])
def test_offload_without_a_gpu_device_is_refused_naming_the_field(layers: int) -> None:
    with pytest.raises(OffloadUnavailable, match=rf"models\[\]\.n_gpu_layers is {layers}, but llama.cpp sees no GPU device .*CPU"):
        check_offload("tiny", layers)
    check_offload("tiny", 0)


def test_a_server_reports_the_refusal_and_serves_nothing_on_the_cpu(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 512, "n_threads": 1, "n_gpu_layers": -1}])
    health = server.wait_healthy()
    model = next(item for item in health["models"] if item["id"] == "tiny")
    assert model["state"] == "failed" and "n_gpu_layers is -1" in model["error"], model
    reply = httpx.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
    assert reply.status_code == 503 and "n_gpu_layers" in reply.text
