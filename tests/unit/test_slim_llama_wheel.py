"""image/slim-llama-wheel: the wheelhouse's llama.cpp wheel keeps each library under the two names that load it
(libX.so by llama_cpp's Python, libX.so.0 by SONAME) and drops the fully versioned copies and the stray top-level
lib/ and include/ trees, with RECORD rewritten to match."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "image" / "slim-llama-wheel"
KEPT = [
    "llama_cpp/__init__.py",
    "llama_cpp/lib/libllama.so",
    "llama_cpp/lib/libllama.so.0",
    "llama_cpp/lib/libggml-vulkan.so",
    "llama_cpp/lib/libggml-vulkan.so.0",
    "llama_cpp_python-0.3.36.dist-info/METADATA",
]
DROPPED = ["llama_cpp/lib/libllama.so.0.5.0", "llama_cpp/lib/libggml-vulkan.so.0.25.3", "lib/libllama.so", "lib/cmake/x.cmake", "include/llama.h"]
RECORD = "llama_cpp_python-0.3.36.dist-info/RECORD"


def test_only_the_loaded_names_are_kept_and_record_matches(tmp_path: Path) -> None:
    fat, slim = tmp_path / "fat.whl", tmp_path / "slim.whl"
    with zipfile.ZipFile(fat, "w") as wheel:
        for name in KEPT + DROPPED:
            wheel.writestr(name, b"x" * 10)
        wheel.writestr(RECORD, "".join(f"{name},sha256=abc,10\n" for name in [*KEPT, *DROPPED, RECORD]))
    subprocess.run([sys.executable, SCRIPT, fat, slim], check=True)
    with zipfile.ZipFile(slim) as wheel:
        assert sorted(wheel.namelist()) == sorted([*KEPT, RECORD])
        assert [line.split(",")[0] for line in wheel.read(RECORD).decode().splitlines()] == [*KEPT, RECORD]
        assert wheel.read("llama_cpp/lib/libllama.so.0") == b"x" * 10


def test_a_wheel_without_libllama_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "odd.whl"
    with zipfile.ZipFile(odd, "w") as wheel:
        wheel.writestr("other/lib.so", b"")
    done = subprocess.run([sys.executable, SCRIPT, odd, tmp_path / "out.whl"], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "no llama_cpp/lib/libllama.so" in done.stderr
