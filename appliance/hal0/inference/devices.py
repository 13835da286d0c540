"""The compute devices llama.cpp sees, from ggml's own device registry, and the offload check.

llama.cpp runs layers asked for the GPU on the CPU when no GPU device is usable, and may even log
"offloaded N/N layers to GPU" while every layer is assigned to the CPU (a Vulkan build that skips a
CPU-type device). So what hal0 reports and refuses rests on ggml's device list, never on the config
or that summary line. llama-cpp-python does not bind ggml's device API: it is read here, from the
libggml shipped in its wheel, with ctypes.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import os
from dataclasses import dataclass


class DeviceType(enum.IntEnum):
    """ggml_backend_dev_type."""

    CPU = 0
    GPU = 1
    IGPU = 2  # an integrated GPU, sharing the host's memory
    ACCEL = 3  # an accelerator used alongside the CPU (BLAS, AMX): holds no offloaded layers


@dataclass(frozen=True)
class Device:
    name: str  # "CPU", "Vulkan0", "CUDA0": what llama.cpp's load log names it by
    description: str  # "llvmpipe (LLVM 15.0.6, 256 bits)", the GPU's model
    type: DeviceType
    backend: str = ""  # the ggml backend that registered it: "CPU", "Vulkan", "CUDA"
    buffer_type: str = ""  # the name of its own memory's buffer type ("Vulkan0"); "Vulkan_Host" and the like are host memory

    @property
    def offloads(self) -> bool:
        """Whether llama.cpp can place model layers on it (n_gpu_layers)."""
        return self.type in (DeviceType.GPU, DeviceType.IGPU)


class OffloadUnavailable(RuntimeError):
    """A model asks for GPU layers and llama.cpp has no device to put them on."""


@functools.cache
def _ggml() -> ctypes.CDLL:
    import llama_cpp

    library = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml.so"))
    library.ggml_backend_dev_count.restype = ctypes.c_size_t
    library.ggml_backend_dev_get.restype = ctypes.c_void_p
    library.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(library, name).restype = ctypes.c_char_p
        getattr(library, name).argtypes = [ctypes.c_void_p]
    library.ggml_backend_dev_type.restype = ctypes.c_int
    library.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    for name in ("ggml_backend_dev_backend_reg", "ggml_backend_dev_buffer_type"):
        getattr(library, name).restype = ctypes.c_void_p
        getattr(library, name).argtypes = [ctypes.c_void_p]
    for name in ("ggml_backend_reg_name", "ggml_backend_buft_name"):
        getattr(library, name).restype = ctypes.c_char_p
        getattr(library, name).argtypes = [ctypes.c_void_p]
    return library


def _text(value: bytes | None) -> str:
    return (value or b"").decode(errors="replace")


def devices() -> list[Device]:
    """Every device llama.cpp's backends registered in this process (its environment decides:
    CUDA_VISIBLE_DEVICES, GGML_VK_VISIBLE_DEVICES...)."""
    import llama_cpp

    llama_cpp.llama_backend_init()  # loads the backends, once per process
    library = _ggml()
    found = []
    for index in range(library.ggml_backend_dev_count()):
        device = library.ggml_backend_dev_get(index)
        kind = library.ggml_backend_dev_type(device)
        registry = library.ggml_backend_dev_backend_reg(device)
        buffer_type = library.ggml_backend_dev_buffer_type(device)
        found.append(Device(
            _text(library.ggml_backend_dev_name(device)),
            _text(library.ggml_backend_dev_description(device)),
            DeviceType(kind) if kind in DeviceType._value2member_map_ else DeviceType.ACCEL,
            _text(library.ggml_backend_reg_name(registry)) if registry else "",
            _text(library.ggml_backend_buft_name(buffer_type)) if buffer_type else "",
        ))
    return found


def check_offload(model_id: str, n_gpu_layers: int) -> None:
    """Refuse GPU layers that llama.cpp would silently run on the CPU."""
    if n_gpu_layers == 0:
        return
    found = devices()
    if not any(device.offloads for device in found):
        seen = ", ".join(f"{device.name} ({device.description})" for device in found) or "none"
        raise OffloadUnavailable(
            f"model {model_id!r}: models[].n_gpu_layers is {n_gpu_layers}, but llama.cpp sees no GPU device to offload to "
            f"(devices: {seen}); install a GPU build of llama-cpp-python (image/llama-wheel cuda or vulkan) and make "
            f"the device visible, or set n_gpu_layers: 0"
        )
