"""The soak, short enough for CI (20 s); `make soak` runs the 10-minute one."""

from __future__ import annotations

from tests.soak.soak import soak


def test_short_soak_has_no_server_errors_and_bounded_memory() -> None:
    result = soak(duration=20, rate=15)
    assert result["server_alive"]
    assert result["server_errors"] == {}, result["counts"]
    assert result["cut_off"] == 0
    assert sum(result["counts"].values()) > 200
    assert any(key.startswith("approval-approve") or key.startswith("approval-deny") for key in result["counts"])
    assert result["rss_growth"] < 0.10, result
