"""The appliance image tests: build the CI image, boot it as a box and under qemu (root; `make test-image`).

Run only with `-m image` as root; a plain `pytest tests` skips them.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds the appliance image and boots it (root, minutes; make test-image)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wants_image = "image" in (config.getoption("markexpr", "") or "")
    for item in items:
        if item.get_closest_marker("image"):
            if not wants_image:
                item.add_marker(pytest.mark.skip(reason="image build: run with -m image (make test-image)"))
            elif os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="image build needs root (nspawn, netns, nft)"))
