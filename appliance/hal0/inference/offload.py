"""What a model's load really did: which device each layer went to, and the memory it took where.

The config says what was asked (`n_gpu_layers`); llama.cpp decides what happens, and its C API (this
version) does not tell: the per-layer device assignment and the buffers live in the model's private
state, and the C++ staging API that returns a memory breakdown (`llama_get_memory_breakdown`) returns a
std::map. What llama.cpp does publish is its load log, written from the loading thread, one line per layer
and per buffer, formatted by llama.cpp itself:

    load_tensors: layer   0 assigned to device Vulkan0, is_swa = 0
    load_tensors:      Vulkan0 model buffer size =    0.45 MiB
    llama_kv_cache:    Vulkan0 KV buffer size =    0.25 MiB
    llama_context:     Vulkan0 compute buffer size =    1.02 MiB

So hal0 captures that log per load (backend.captured_log) and reads those lines. Never the summary
`offloaded N/M layers to GPU`: a Vulkan build prints it even when every layer is assigned to the CPU.
Sizes are logged in MiB with two decimals, so byte counts are exact to 0.005 MiB (about 5 KiB).
Device names are resolved in ggml's own registry (devices.py): a buffer is a device's memory when its name
is that device's own buffer type ("Vulkan0"); every other buffer (CPU, CPU_Mapped, CPU_REPACK,
Vulkan_Host, CUDA_Host: pinned or mapped host memory) is the host's.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hal0.inference.devices import Device, DeviceType
from hal0.inference.prompt_cache import MIB


class MemoryKind(enum.StrEnum):
    MODEL = "model"  # the weights
    KV = "kv"  # the KV cache (and a recurrent model's state)
    COMPUTE = "compute"  # the contexts' compute and output buffers


_LAYER = re.compile(r"^load_tensors: layer +(\d+) assigned to device (.+?), is_swa = \d+\s*$")
_BUFFER = re.compile(r"^\w+: +(\S+) +(model|KV|RS|compute|output) buffer size = +(\d+(?:\.\d+)?) MiB\s*$")
_BUFFER_KINDS = {"model": MemoryKind.MODEL, "KV": MemoryKind.KV, "RS": MemoryKind.KV, "compute": MemoryKind.COMPUTE, "output": MemoryKind.COMPUTE}


def _no_bytes() -> dict[MemoryKind, int]:
    return dict.fromkeys(MemoryKind, 0)


@dataclass(frozen=True)
class DeviceUse:
    """One device a loaded model uses: the layers assigned to it and the bytes of its buffers on it."""

    device: Device
    layers: int
    bytes: dict[MemoryKind, int] = field(default_factory=_no_bytes)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.device.name, "description": self.device.description, "type": self.device.type.name.lower(),
            "layers": self.layers, "bytes": {kind.value: self.bytes[kind] for kind in MemoryKind},
        }


@dataclass(frozen=True)
class Offload:
    """Where a loaded model runs, as llama.cpp's load log says. Layers count as llama.cpp counts them in
    `n_gpu_layers`: every repeating layer plus the output layer."""

    backend: str  # the ggml backend of the devices holding offloaded layers ("Vulkan", "CUDA"), else "CPU"
    layers_offloaded: int  # layers assigned to a device other than the CPU
    layers_total: int
    devices: tuple[DeviceUse, ...]  # offload devices first, the host last; only those holding layers or bytes

    def bytes(self, *, on_host: bool) -> dict[MemoryKind, int]:
        """Bytes by kind on the offload devices (on_host False: the GPUs' own memory) or on the host."""
        total = _no_bytes()
        for use in self.devices:
            if (use.device.type is DeviceType.CPU) == on_host:
                for kind in MemoryKind:
                    total[kind] += use.bytes[kind]
        return total

    def as_json(self) -> dict[str, object]:
        """The `offload` object of /v1/models (README, The API): field names other tools assert on."""
        return {
            "backend": self.backend,
            "layers_offloaded": self.layers_offloaded,
            "layers_total": self.layers_total,
            "devices": [use.as_json() for use in self.devices],
            "device_bytes": {kind.value: count for kind, count in self.bytes(on_host=False).items()},
            "host_bytes": {kind.value: count for kind, count in self.bytes(on_host=True).items()},
        }


class OffloadUnknown(ValueError):
    """The load log did not show what llama.cpp did (its format changed?): nothing is reported rather than a guess."""


def read_load_log(lines: Iterable[str], known: Sequence[Device], n_layer: int | None = None) -> Offload:
    """The Offload that a load's log lines show. `known`: ggml's devices (devices.devices()); `n_layer`:
    llama_model_n_layer, to check that every layer's assignment was seen. OffloadUnknown when it was not."""
    by_name = {device.name: device for device in known}
    host = next((device for device in known if device.type is DeviceType.CPU), Device("CPU", "", DeviceType.CPU, "CPU", "CPU"))
    own_memory = {device.buffer_type: device for device in known if device.type is not DeviceType.CPU and device.buffer_type}
    assigned: dict[int, str] = {}
    sizes: dict[str, dict[MemoryKind, int]] = {}
    for line in lines:
        if match := _LAYER.match(line):
            assigned[int(match[1])] = match[2]
        elif match := _BUFFER.match(line):
            owner = own_memory.get(match[1], host).name
            kind = _BUFFER_KINDS[match[2]]
            sizes.setdefault(owner, _no_bytes())[kind] += round(float(match[3]) * MIB)
    if not assigned:
        raise OffloadUnknown("llama.cpp's load log assigned no layer to a device")
    if n_layer is not None and sorted(assigned) != list(range(n_layer + 1)):
        raise OffloadUnknown(f"llama.cpp's load log assigned layers {sorted(assigned)}, expected 0..{n_layer} (the output layer last)")

    def device(name: str) -> Device:
        # A name outside the registry (never seen) is not the CPU, so it counts as offloaded.
        return by_name.get(name) or Device(name, "", DeviceType.GPU)

    layers = Counter(assigned.values())
    names = list(dict.fromkeys([*layers, *sizes]))  # layers' devices in layer order, then buffers'
    uses = [DeviceUse(device(name), layers.get(name, 0), sizes.get(name, _no_bytes())) for name in names]
    uses.sort(key=lambda use: use.device.type is DeviceType.CPU)  # stable: offload devices first
    offloaded = [use for use in uses if use.device.type is not DeviceType.CPU and use.layers]
    backend = "+".join(dict.fromkeys(use.device.backend or use.device.name for use in offloaded)) or host.backend or "CPU"
    return Offload(backend, sum(use.layers for use in offloaded), len(assigned), tuple(uses))


__all__ = ["DeviceUse", "MemoryKind", "Offload", "OffloadUnknown", "read_load_log"]
