"""Reading what a load really did from llama.cpp's load log (issue 28): the per-layer assignment and the
buffers, never the `offloaded N/M layers to GPU` summary, which a Vulkan build prints even when every layer
stays on the CPU. llama_logs/ holds real loads of the tiny model (2 layers plus the output layer) by the
Vulkan wheel of llama-cpp-python 0.3.36 on Mesa's llvmpipe (GGML_VK_VISIBLE_DEVICES=0), captured by
backend.captured_log (tensor and graph debug lines left out); vulkan_log() fills llama.cpp's format strings as
the issue saw them for gemma3-270m (18 layers plus the output layer). CPU loads are checked live in
tests/integration/test_offload.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hal0.inference.devices import Device, DeviceType
from hal0.inference.offload import MemoryKind, OffloadUnknown, read_load_log
from hal0.inference.prompt_cache import MIB

CPU = Device("CPU", "Intel(R) Xeon(R) Processor", DeviceType.CPU, "CPU", "CPU")
LLVMPIPE = Device("Vulkan0", "llvmpipe (LLVM 15.0.6, 256 bits)", DeviceType.GPU, "Vulkan", "Vulkan0")
GEMMA_LAYERS = 18
TINY_LAYERS = 2
LOGS = Path(__file__).parent / "llama_logs"


def real_log(name: str) -> list[str]:
    return (LOGS / f"{name}.log").read_text().splitlines()


def test_a_real_vulkan_load_with_every_layer_on_llvmpipe() -> None:
    offload = read_load_log(real_log("vulkan-all-layers"), [LLVMPIPE, CPU], TINY_LAYERS)
    assert (offload.backend, offload.layers_offloaded, offload.layers_total) == ("Vulkan", 3, 3)
    assert offload.as_json()["device_bytes"] == {"model": round(0.38 * MIB), "kv": round(0.25 * MIB), "compute": round(1.51 * MIB)}
    assert offload.as_json()["host_bytes"] == {"model": round(0.07 * MIB), "kv": 0, "compute": round(0.76 * MIB)}  # CPU_Mapped, Vulkan_Host


def test_a_real_vulkan_load_with_one_layer_offloaded() -> None:
    # n_gpu_layers 1: the output layer only.
    offload = read_load_log(real_log("vulkan-one-layer"), [LLVMPIPE, CPU], TINY_LAYERS)
    assert (offload.backend, offload.layers_offloaded, offload.layers_total) == ("Vulkan", 1, 3)
    assert [(use.device.name, use.layers) for use in offload.devices] == [("Vulkan0", 1), ("CPU", 2)]
    assert offload.as_json()["device_bytes"]["kv"] == 0  # the KV of layers 0 and 1 stays with them, on the CPU


def test_a_real_vulkan_build_that_sees_no_device_runs_every_layer_on_the_cpu() -> None:
    # Without GGML_VK_VISIBLE_DEVICES, ggml skips llvmpipe ("ggml_vulkan: No devices found."); asked for -1 layers
    # (hal0 refuses that before loading: this is llama.cpp's own load), every layer is on the CPU.
    lines = real_log("vulkan-no-device")
    assert "ggml_vulkan: No devices found." in lines
    offload = read_load_log(lines, [CPU], TINY_LAYERS)
    assert (offload.backend, offload.layers_offloaded, offload.layers_total) == ("CPU", 0, 3)
    assert offload.as_json()["device_bytes"] == {"model": 0, "kv": 0, "compute": 0}


def vulkan_log(devices: list[str]) -> list[str]:
    """A Vulkan build's load of gemma3-270m whose layer `i` went to `devices[i]`, summary line included."""
    lines = ["llama_model_load_from_file_impl: using device Vulkan0 (llvmpipe (LLVM 15.0.6, 256 bits)) (unknown id) - 64261 MiB free",
             "load_tensors: loading model tensors, this can take a while... (load_mode = mmap)"]
    lines += [f"load_tensors: layer {layer:3d} assigned to device {device}, is_swa = {int(layer % 6 != 5 and layer < GEMMA_LAYERS)}"
              for layer, device in enumerate(devices)]
    offloaded = sum(device != "CPU" for device in devices)
    lines += [
        "load_tensors: offloading output layer to GPU",
        f"load_tensors: offloading {GEMMA_LAYERS} repeating layers to GPU",
        "load_tensors: offloaded 19/19 layers to GPU",  # printed whatever happened: must be ignored
        f"load_tensors: {'Vulkan0' if offloaded else 'CPU_REPACK':>12s} model buffer size = {'  230.62' if offloaded else '   81.00'} MiB",
        "load_tensors:   CPU_Mapped model buffer size =   241.41 MiB",
        "llama_context: Vulkan_Host  output buffer size =     1.00 MiB",
        "llama_kv_cache_iswa: creating non-SWA KV cache, size = 4096 cells",
        f"llama_kv_cache: {'Vulkan0' if offloaded else 'CPU':>10s} KV buffer size =    24.00 MiB",
        "llama_kv_cache_iswa: creating     SWA KV cache, size = 768 cells",
        f"llama_kv_cache: {'Vulkan0' if offloaded else 'CPU':>10s} KV buffer size =    22.50 MiB",
        f"sched_reserve: {'Vulkan0' if offloaded else 'CPU':>10s} compute buffer size =   257.00 MiB",
        "sched_reserve: Vulkan_Host compute buffer size =     9.01 MiB",
    ]
    return lines


def test_every_layer_on_the_vulkan_device() -> None:
    offload = read_load_log(vulkan_log(["Vulkan0"] * (GEMMA_LAYERS + 1)), [CPU, LLVMPIPE], GEMMA_LAYERS)
    assert (offload.backend, offload.layers_offloaded, offload.layers_total) == ("Vulkan", 19, 19)
    device, host = offload.devices
    assert device.device is LLVMPIPE and device.layers == 19 and host.device is CPU and host.layers == 0
    assert device.bytes == {MemoryKind.MODEL: round(230.62 * MIB), MemoryKind.KV: round(46.5 * MIB), MemoryKind.COMPUTE: 257 * MIB}
    # Mapped and pinned host buffers (CPU_Mapped, Vulkan_Host) are the host's memory, not the device's.
    assert host.bytes == {MemoryKind.MODEL: round(241.41 * MIB), MemoryKind.KV: 0, MemoryKind.COMPUTE: round(10.01 * MIB)}
    reported = offload.as_json()
    assert reported["device_bytes"] == {"model": round(230.62 * MIB), "kv": round(46.5 * MIB), "compute": 257 * MIB}
    assert reported["devices"][0] == {"name": "Vulkan0", "description": "llvmpipe (LLVM 15.0.6, 256 bits)", "type": "gpu", "layers": 19,
                                      "bytes": reported["device_bytes"]}


def test_the_summary_line_is_not_evidence_every_layer_on_the_cpu_is_zero_offloaded() -> None:
    # A Vulkan build that skipped its CPU-type device (no GGML_VK_VISIBLE_DEVICES): "offloaded 19/19" all the same.
    offload = read_load_log(vulkan_log(["CPU"] * (GEMMA_LAYERS + 1)), [CPU], GEMMA_LAYERS)
    assert (offload.backend, offload.layers_offloaded, offload.layers_total) == ("CPU", 0, 19)
    assert [use.device.name for use in offload.devices] == ["CPU"]
    assert offload.as_json()["device_bytes"] == {"model": 0, "kv": 0, "compute": 0}


def test_a_partial_offload_counts_the_layers_on_each_device() -> None:
    # n_gpu_layers 10: llama.cpp offloads the last 10 (output included), the first 9 stay on the CPU.
    offload = read_load_log(vulkan_log(["CPU"] * 9 + ["Vulkan0"] * 10), [CPU, LLVMPIPE], GEMMA_LAYERS)
    assert (offload.backend, offload.layers_offloaded, offload.layers_total) == ("Vulkan", 10, 19)
    assert [(use.device.name, use.layers) for use in offload.devices] == [("Vulkan0", 10), ("CPU", 9)]


def test_two_gpus_are_one_backend() -> None:
    cards = [Device(f"CUDA{index}", "NVIDIA H100", DeviceType.GPU, "CUDA", f"CUDA{index}") for index in (0, 1)]
    lines = [f"load_tensors: layer {layer:3d} assigned to device CUDA{layer // 2}, is_swa = 0" for layer in range(4)]
    lines += ["load_tensors:        CUDA0 model buffer size =   100.00 MiB", "load_tensors:        CUDA1 model buffer size =   120.00 MiB",
              "load_tensors:    CUDA_Host model buffer size =    50.00 MiB"]
    offload = read_load_log(lines, [CPU, *cards], 3)
    assert (offload.backend, offload.layers_offloaded) == ("CUDA", 4)
    assert offload.as_json()["device_bytes"]["model"] == 220 * MIB and offload.as_json()["host_bytes"]["model"] == 50 * MIB


def test_a_log_without_the_assignment_reports_nothing_rather_than_a_guess() -> None:
    with pytest.raises(OffloadUnknown, match="assigned no layer"):
        read_load_log(["load_tensors: offloaded 19/19 layers to GPU"], [CPU, LLVMPIPE], GEMMA_LAYERS)
    with pytest.raises(OffloadUnknown, match=r"expected 0\.\.18"):
        read_load_log(vulkan_log(["Vulkan0"] * 5), [CPU, LLVMPIPE], GEMMA_LAYERS)
