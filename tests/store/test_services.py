"""The test-service helper: a missing server skips, unless services are required."""

from __future__ import annotations

import pytest

from services import find_postgres_bin, free_port, unavailable


def test_missing_service_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTILUX_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server here"):
        unavailable("no server here")


def test_missing_service_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTILUX_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="no server here.*REQUIRE_SERVICES"):
        unavailable("no server here")


def test_helpers() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert find_postgres_bin("surely-not-a-postgres-binary") is None
