"""Patterns that validate input match the whole value: with `re.match`, a pattern's `$` also accepts a
trailing newline, so `"hal0.lan\n"` used to pass as an allowed host (issue 20)."""

from __future__ import annotations

import pytest
from hal0.config.models import check_host_entry, check_origin_entry
from hal0.memory import InvalidInputError
from hal0.memory.model import clean_tags


@pytest.mark.parametrize("entry", ["hal0.lan\n", "hal0.lan:8080\n", "box:*\n"])
def test_host_entries_with_a_trailing_newline_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="expected host"):
        check_host_entry(entry)
    assert check_host_entry(entry.rstrip("\n")) == entry.rstrip("\n")


@pytest.mark.parametrize("entry", ["http://hal0.lan\n", "https://box:8443\n"])
def test_origin_entries_with_a_trailing_newline_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="expected an origin"):
        check_origin_entry(entry)
    assert check_origin_entry(entry.rstrip("\n")) == entry.rstrip("\n")


def test_memory_tags_with_a_trailing_newline_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        clean_tags(["evil\n"])
    assert clean_tags(["evil"]) == ("evil",)
