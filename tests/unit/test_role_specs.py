"""Each role's variables are declared once and documented: defaults/main.yml, meta/argument_specs.yml and
the README's table name the same variables, with the same defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROLES = sorted(path.parent.parent for path in (Path(__file__).parents[2] / "roles").glob("*/meta/argument_specs.yml"))


def options(role: Path) -> dict[str, dict[str, object]]:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def defaults(role: Path) -> dict[str, object]:
    return yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}


def documented(role: Path) -> set[str]:
    """Variable names in the README's table rows (a row may name several: `a`, `b`)."""
    names: set[str] = set()
    for row in re.findall(r"^\| (.+?) \|", (role / "README.md").read_text(), re.MULTILINE):
        names.update(re.findall(r"`([a-z][a-z0-9_]*)`", row))
    return names


def test_every_role_has_specs() -> None:
    assert {role.name for role in ROLES} >= {"hal0", "reverse_proxy", "appliance_os", "firstboot"}


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_defaults_are_declared_with_the_same_value(role: Path) -> None:
    declared = options(role)
    for name, value in defaults(role).items():
        assert name in declared, f"{role.name}: {name} has a default but no argument spec"
        assert declared[name].get("default") == value, f"{role.name}: {name} default differs from its argument spec"


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_declared_options_have_defaults_or_are_required(role: Path) -> None:
    values = defaults(role)
    for name, spec in options(role).items():
        assert name in values or spec.get("required"), f"{role.name}: {name} has neither a default nor required: true"


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_readme_documents_every_option(role: Path) -> None:
    missing = set(options(role)) - documented(role)
    assert not missing, f"{role.name}/README.md does not document {sorted(missing)}"
