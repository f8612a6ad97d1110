"""`ember up` on a fresh HOME: Ray's auth token is created once, with the real Ray CLI."""

from __future__ import annotations

import pytest
from ember.cluster import local


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    return tmp_path


def test_a_fresh_home_gets_a_token_once_and_says_so(fresh_home):
    lines = []
    assert local.auth_token_source() is None
    local.ensure_auth_token(lines.append)
    token_file = fresh_home / ".ray" / "auth_token"
    token = token_file.read_text()
    assert len(token) >= 32
    assert lines == [f"created Ray's auth token at {token_file} (`ray get-auth-token "
                     f"--generate`); Ember's commands send it"]
    assert token not in lines[0]  # the secret is never printed

    local.ensure_auth_token(lines.append)  # second time: nothing to do, nothing said
    assert token_file.read_text() == token and len(lines) == 1


def test_a_token_from_the_environment_is_used_as_is(fresh_home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x" * 32)
    local.ensure_auth_token(lambda line: pytest.fail(line))
    assert not (fresh_home / ".ray").exists()
