"""testinfra checks of a GPU box (hal0_gpu_backend set): the runtime, the device llama.cpp sees, and where the
model's layers really went. Boxes without a GPU backend skip them.

    pytest tests/infra/test_gpu_box.py --hosts=ansible://hal0 --ansible-inventory=build/lab/inventory.yml

The evidence is llama.cpp's own: ggml's device registry (roles/hal0/files/hal0-gpu-devices, run as the service
would) and the per-layer assignment in the running service's load log (`layer N assigned to device Vulkan0`),
never the summary line `offloaded N/M layers to GPU`, which a Vulkan build prints even when every layer is on
the CPU.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.test_box import as_root, box_http

pytestmark = pytest.mark.box

VULKAN_PACKAGES = ["libvulkan1", "mesa-vulkan-drivers", "vulkan-tools"]
ENVIRONMENT_NAME = {"vulkan": "GGML_VK_VISIBLE_DEVICES", "cuda": "CUDA_VISIBLE_DEVICES"}
LAYER = re.compile(r"load_tensors: layer +(\d+) assigned to device (\S+?),")
N_LAYER = re.compile(r"print_info: n_layer += (\d+)")


@pytest.fixture(scope="module")
def backend(host: Any) -> str:
    name = host.ansible.get_variables().get("hal0_gpu_backend") or ""
    if not name:
        pytest.skip("no GPU backend on this box")
    return str(name)


@pytest.fixture(scope="module")
def config(host: Any) -> dict[str, Any]:
    import yaml

    with as_root(host):
        return yaml.safe_load(host.file("/etc/hal0/hal0.yaml").content_string)


@pytest.fixture(scope="module")
def offloading(config: dict[str, Any]) -> list[dict[str, Any]]:
    models = [model for model in config["models"] if model.get("n_gpu_layers", 0) != 0]
    if not models:
        pytest.skip("no model on this box asks for GPU layers")
    return models


def unit_environment(host: Any) -> dict[str, str]:
    shown = host.check_output("systemctl show hal0 --property=Environment --value")
    return dict(item.split("=", 1) for item in shown.split())


def ggml_devices(host: Any) -> list[list[str]]:
    """The devices llama.cpp sees as the service does: its user, its GPU environment, the venv's llama.cpp."""
    environment = {key: value for key, value in unit_environment(host).items() if key in ENVIRONMENT_NAME.values()}
    pairs = " ".join(f"{key}={value}" for key, value in environment.items())
    with as_root(host):
        out = host.check_output(f"runuser -u hal0 -- env -i PATH=/usr/bin:/bin HOME=/var/lib/hal0 {pairs} /opt/hal0/venv/bin/python /opt/hal0/hal0-gpu-devices")
    return [[*line.split(" ", 2), "", ""][:3] for line in out.splitlines()]  # TYPE NAME DESCRIPTION


def service_log(host: Any) -> str:
    """The running service's journal, this invocation only (an earlier start may have loaded elsewhere)."""
    invocation = host.check_output("systemctl show hal0 --property=InvocationID --value")
    with as_root(host):
        return host.check_output(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}")


def test_vulkan_runtime_installed(host: Any, backend: str) -> None:
    if backend != "vulkan":
        pytest.skip("not a vulkan box")
    missing = [name for name in VULKAN_PACKAGES if not host.package(name).is_installed]
    assert not missing, f"Vulkan runtime packages missing: {missing}"


def test_vulkan_loader_lists_a_device(host: Any, backend: str) -> None:
    if backend != "vulkan":
        pytest.skip("not a vulkan box")
    summary = host.check_output("vulkaninfo --summary 2>/dev/null")
    assert re.search(r"deviceName\s*=\s*\S", summary), summary[-2000:]


def test_unit_environment_is_the_configs_gpu_devices(host: Any, backend: str, config: dict[str, Any]) -> None:
    wanted = config["server"].get("gpu_devices")
    environment = unit_environment(host)
    name = ENVIRONMENT_NAME[backend]
    if wanted is None:
        assert name not in environment, environment
    else:
        assert environment.get(name) == ",".join(map(str, wanted)), environment


def test_unit_allows_only_the_gpu_device_nodes(host: Any, backend: str) -> None:
    shown = host.check_output("systemctl show hal0 --property=PrivateDevices,DevicePolicy,DeviceAllow")
    assert "PrivateDevices=no" in shown and "DevicePolicy=closed" in shown, shown
    assert ("char-drm rw" if backend == "vulkan" else "char-nvidia-frontend rw") in shown, shown


def test_llama_cpp_sees_a_gpu_device(host: Any, backend: str) -> None:
    devices = ggml_devices(host)
    gpus = [device for device in devices if device[0] in ("GPU", "IGPU")]
    assert gpus, f"ggml sees no GPU device as the service would: {devices}"
    if backend == "vulkan":
        assert gpus[0][1] == "Vulkan0", devices


def test_every_layer_is_assigned_to_the_gpu_in_the_services_load_log(host: Any, backend: str, offloading: list[dict[str, Any]]) -> None:
    log = service_log(host)
    device = {"vulkan": "Vulkan0", "cuda": "CUDA0"}[backend]
    counts = [int(n) for n in N_LAYER.findall(log)]
    assert counts, f"no 'print_info: n_layer' in the service's journal (is llama.cpp's load log verbose?):\n{log[-3000:]}"
    assigned = [(int(layer), where) for layer, where in LAYER.findall(log)]
    # One load per offloading model; llama.cpp counts the output layer as layer n_layer.
    expected = sum(n + 1 for n in counts[: len(offloading)])
    assert len(assigned) >= expected, f"{len(assigned)} per-layer lines, expected {expected}:\n{log[-3000:]}"
    elsewhere = [(layer, where) for layer, where in assigned if where != device]
    assert not elsewhere, f"layers not on {device}: {elsewhere}"
    assert {layer for layer, _ in assigned} == set(range(counts[0] + 1))
    assert f"using device {device} (" in log, log[-3000:]
    assert re.search(rf"{device} model buffer size = +[0-9.]+ MiB", log), log[-3000:]


def test_v1_models_reports_the_offload(host: Any, backend: str, config: dict[str, Any], offloading: list[dict[str, Any]]) -> None:
    status, body = box_http(host, f"http://127.0.0.1:{config['server']['port']}/v1/models")
    assert status == 200, body
    entries = {entry["id"]: entry for entry in json.loads(body)["data"]}
    for model in offloading:
        entry = entries[model["id"]]
        offload = entry["offload"]
        assert offload["backend"] == {"vulkan": "Vulkan", "cuda": "CUDA"}[backend], offload
        assert offload["layers_offloaded"] == offload["layers_total"] > 0, offload
        assert offload["devices"][0]["name"] == {"vulkan": "Vulkan0", "cuda": "CUDA0"}[backend], offload


def test_a_completion_works_on_the_gpu(host: Any, backend: str, config: dict[str, Any], offloading: list[dict[str, Any]]) -> None:
    body = {"model": offloading[0]["id"], "prompt": "hello", "max_tokens": 8, "temperature": 0}
    status, text = box_http(host, f"http://127.0.0.1:{config['server']['port']}/v1/completions", method="POST", body=body)
    assert status == 200, text
    reply = json.loads(text)
    assert reply["usage"]["completion_tokens"] > 0, reply
