"""`ember keys update` on a real SQLite database, and the failed-auth throttle (issue 26)."""

from __future__ import annotations

import logging

import pytest
from ember.access import keys
from ember.access.auth_throttle import WINDOW_S, FailedAuthThrottle
from ember.access.store import AccessStoreError


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'access' / 'ember.db'}"


def test_update_changes_limits_and_name_and_keeps_the_key(url):
    key, created = keys.create_key(url, "alice", rpm=10, tpm=500, models=["rag*"])
    updated = keys.update_key(url, "alice", rpm=2, tpm=None, models=None, new_name="bob")
    assert (updated.id, updated.name, updated.rpm, updated.tpm, updated.models) == \
        (created.id, "bob", 2, None, None)
    assert keys.KeyLookup(url, cache_s=0).find(key) == updated
    assert keys.update_key(url, "bob", budget_usd=1.5).rpm == 2  # the rest unchanged


@pytest.mark.parametrize("change, says", [
    ({"name": "nobody", "rpm": 3}, "no key named 'nobody'"),
    ({"name": "alice"}, "nothing to update"),
    ({"name": "alice", "rpm": -1}, "--rpm must be positive, got -1"),
    ({"name": "alice", "new_name": "carol"}, "a key named 'carol' already exists"),
])
def test_update_refusals_say_what_to_do(url, change, says):
    keys.create_key(url, "alice")
    keys.create_key(url, "carol")
    with pytest.raises(AccessStoreError, match=says):
        keys.update_key(url, change.pop("name"), **change)


def test_the_cli_parses_none_as_removing_a_limit(url, capsys):
    from ember.cli.main import main

    keys.create_key(url, "alice", rpm=10, models=["rag*"])
    assert main(["keys", "--database-url", url, "update", "alice", "--rpm", "none",
                 "--models", "none", "--tpm", "7"]) == 0
    assert "updated key 'alice' (tpm 7)" in capsys.readouterr().out


def test_an_address_is_refused_after_the_limit_until_its_window_ends(caplog):
    throttle = FailedAuthThrottle(limit=3)
    with caplog.at_level(logging.WARNING, logger="ember.access"):
        for second in range(3):
            assert throttle.retry_after("10.0.0.1", 100.0 + second) is None
            throttle.failed("10.0.0.1", 100.0 + second)
        assert throttle.retry_after("10.0.0.1", 103.0) == WINDOW_S - 3
        throttle.failed("10.0.0.1", 104.0)  # more failures: still one log line
    assert len(caplog.records) == 1 and "10.0.0.1" in caplog.records[0].getMessage()
    assert throttle.retry_after("10.0.0.2", 104.0) is None  # other addresses unaffected
    assert throttle.retry_after("10.0.0.1", 100.0 + WINDOW_S) is None
    assert not throttle.blocked


def test_failures_spread_over_more_than_a_window_are_never_refused():
    throttle = FailedAuthThrottle(limit=3)
    for minute in range(5):
        for second in (0, 1):
            throttle.failed("10.0.0.1", minute * WINDOW_S + second)
    assert not throttle.blocked


def test_the_address_is_the_headers_last_entry_or_the_peer_where_it_is_the_client():
    scope = {"client": ("10.0.0.5", 4242)}
    by_header = FailedAuthThrottle(3, "X-Forwarded-For", peer_is_client=False)
    assert by_header.address(scope, {b"x-forwarded-for": b"6.6.6.6, 198.51.100.7"}) == \
        "198.51.100.7"
    assert by_header.address(scope, {}) is None  # behind HAProxy: not told apart, not counted
    by_header.failed(None, 0.0)
    assert not by_header.windows
    assert FailedAuthThrottle(3).address(scope, {b"x-forwarded-for": b"6.6.6.6"}) == "10.0.0.5"


def test_behind_haproxy_without_a_header_throttling_is_off(monkeypatch):
    from ember.access.auth_throttle import build_throttle
    from ember.access.config import AccessConfig

    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    assert build_throttle(AccessConfig()) is None
    assert build_throttle(AccessConfig(client_address_header="x-forwarded-for")) is not None
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY")
    assert build_throttle(AccessConfig()).peer_is_client
    assert build_throttle(AccessConfig(failed_auth_per_minute=None)) is None
