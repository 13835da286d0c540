"""testinfra checks of provisioned hal0 boxes, and the lab session that drives them.

Box checks run only when pytest-testinfra targets hosts:
    pytest tests/infra --hosts=ansible://hal0 --ansible-inventory=build/lab/inventory.yml
The lab session (fresh boxes, plays, these checks, reload, broken config) runs only as root with
`-m infra` (`make test-infra`); a plain `pytest tests` skips everything here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "infra: builds lab boxes and provisions them (root, minutes; make test-infra)")
    config.addinivalue_line("markers", "box: a testinfra check of a provisioned box (needs --hosts)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    targeted = bool(getattr(config.option, "hosts", None))
    wants_infra = "infra" in (config.getoption("markexpr", "") or "")
    for item in items:
        if item.get_closest_marker("box") and not targeted:
            item.add_marker(pytest.mark.skip(reason="testinfra box check: pass --hosts=ansible://hal0 --ansible-inventory=..."))
        if item.get_closest_marker("infra"):
            if not wants_infra:
                item.add_marker(pytest.mark.skip(reason="lab session: run with -m infra (make test-infra)"))
            elif os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="lab session needs root (netns, nspawn, nft)"))


@pytest.fixture(scope="module")
def inventory_path(request: pytest.FixtureRequest) -> str:
    path = getattr(request.config.option, "ansible_inventory", None)
    if not path:
        pytest.skip("needs --ansible-inventory")
    return path


@pytest.fixture(scope="module")
def runner(inventory_path: str) -> Any:
    from testinfra.utils.ansible_runner import AnsibleRunner

    return AnsibleRunner(inventory_path)


def address_of(runner: Any, name: str) -> str:
    return runner.get_variables(name).get("ansible_host", name)
