"""GPU layers are never silently run on the CPU: a model that asks for `n_gpu_layers` on a llama.cpp
that sees no GPU device fails to load with an error naming the field and the devices it saw (issue 28).
And hal0 reports what llama.cpp really did with a loaded model's layers (backend, devices, layers offloaded
of the total, bytes per device) from llama.cpp's own load log, in /v1/models, /metrics, the dashboard and
`hal0 models list`. This machine's build is the CPU wheel, whose only device is the CPU: every model
reports 0 layers offloaded, its bytes on the host and none on a device."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hal0.config.models import ModelConfig
from hal0.inference.backend import captured_log
from hal0.inference.devices import DeviceType, OffloadUnavailable, check_offload, devices
from hal0.inference.runtime import ModelRuntime

from tests.conftest import Server

TINY_LAYERS = 2  # the tiny model's repeating layers: llama.cpp counts 3 with the output layer


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


def load(tiny_model: Path, **fields: Any) -> ModelRuntime:
    runtime = ModelRuntime(ModelConfig(id="tiny", path=str(tiny_model), n_ctx=512, n_threads=1, **fields))
    asyncio.run(runtime.load())
    assert runtime.error is None
    return runtime


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_cpu_load_reports_every_layer_on_the_cpu_from_llamas_own_log(tiny_model: Path, parallel: int) -> None:
    runtime = load(tiny_model, parallel=parallel)
    try:
        offload = runtime.offload
        assert offload is not None
        assert (offload.backend, offload.layers_offloaded, offload.layers_total) == ("CPU", 0, TINY_LAYERS + 1)
        reported = offload.as_json()
        (host,) = reported["devices"]
        assert host["name"] == "CPU" and host["type"] == "cpu" and host["layers"] == TINY_LAYERS + 1
        # The tiny model's weights (0.45 MiB mapped) and its KV (f16, 2 layers x 2 x 16 x 512 cells per sequence).
        assert host["bytes"]["model"] == round(0.45 * 1024 * 1024) and host["bytes"]["kv"] >= 256 * 1024 and host["bytes"]["compute"] > 0
        assert reported["device_bytes"] == {"model": 0, "kv": 0, "compute": 0} and reported["host_bytes"] == host["bytes"]
    finally:
        runtime.close()


def test_a_verbose_load_still_prints_llamas_log(tiny_model: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # The journal of an offloading box shows the per-layer assignment: capturing it must not swallow it.
    runtime = ModelRuntime(ModelConfig(id="tiny", path=str(tiny_model), n_ctx=512, n_threads=1), verbose=True)
    asyncio.run(runtime.load())
    runtime.close()
    printed = capfd.readouterr().err
    assert "load_tensors: layer   0 assigned to device CPU" in printed and "CPU KV buffer size" in printed


def test_the_capture_holds_only_its_own_threads_lines(tiny_model: Path) -> None:
    from llama_cpp import Llama

    loaded: list[Any] = []

    def load_here() -> None:
        with captured_log() as lines:
            loaded.append(Llama(model_path=str(tiny_model), n_ctx=256, n_threads=1, verbose=False))
        loaded.append(lines)

    with captured_log() as lines:
        loader = threading.Thread(target=load_here)
        loader.start()
        loader.join(120)
    loaded[0].close()
    assert any("assigned to device CPU" in line for line in loaded[1])  # the loading thread's capture has them
    assert not any("assigned to device" in line for line in lines)  # another thread's does not


def test_a_served_model_reports_its_offload_everywhere(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(models=[
        {"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 512, "n_threads": 1},
        {"id": "later", "path": str(tiny_model), "load": "on_demand", "n_ctx": 512, "n_threads": 1},
    ])
    listed = {item["id"]: item for item in httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"]}
    assert listed["later"]["state"] == "unloaded" and listed["later"]["offload"] is None  # nothing loaded, nothing claimed
    offload = listed["tiny"]["offload"]
    assert {key: offload[key] for key in ("backend", "layers_offloaded", "layers_total")} == {"backend": "CPU", "layers_offloaded": 0, "layers_total": 3}
    assert [device["name"] for device in offload["devices"]] == ["CPU"] and offload["device_bytes"] == {"model": 0, "kv": 0, "compute": 0}
    model_bytes = offload["host_bytes"]["model"]
    assert model_bytes > 0

    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert 'hal0_model_layers{model="tiny"} 3.0' in metrics
    assert 'hal0_model_layers_offloaded{backend="CPU",model="tiny"} 0.0' in metrics
    assert f'hal0_model_device_bytes{{device="CPU",kind="model",model="tiny"}} {float(model_bytes)}' in metrics
    offload_lines = [line for line in metrics.splitlines() if line.startswith(("hal0_model_layers", "hal0_model_device_bytes"))]
    assert offload_lines and not any('model="later"' in line for line in offload_lines)
    assert not any("agent" in line or "persona" in line for line in offload_lines)  # labels: model, backend, device, kind

    models_tab = httpx.get(f"{server.url}/ui/models", timeout=30).text
    assert re.search(r'data-model-offload="tiny">.*CPU: 0 / 3 layers offloaded', models_tab)
    assert 'data-offload-device="CPU">CPU (' in models_tab and "asked: n_gpu_layers 0" in models_tab

    listing = subprocess.run([sys.executable, "-m", "hal0.cli", "models", "list", "--config", str(server.config_path)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    row = next(line for line in listing.splitlines() if line.startswith("tiny (default)"))
    assert "\tstate=ready\toffloaded=0/3 layers (CPU)\tCPU: 3 layers, 0.45 MiB model, " in row, row
    assert "\tstate=unloaded" in next(line for line in listing.splitlines() if line.startswith("later"))
