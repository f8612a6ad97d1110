"""API keys, limits and usage records against the real service.

The session deploys the shipped config (auth on) with two engine replicas
(conftest), so the per-key limits are shown to hold across replicas: they are
counted in the shared QuotaKeeper actor, not in one replica's memory.
"""

from __future__ import annotations

import time

import httpx
import pytest
import sqlalchemy as sa
from ember.access.keys import create_key, revoke
from ember.access.schema import USAGE
from ember.access.store import engine_for

from .conftest import MODEL


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def retrieve(base_url: str, headers: dict, **body) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/retrieve", headers=headers, timeout=120,
                      json={"query": "fares", "top_k": 1, **body})


def chat(base_url: str, headers: dict, **body) -> httpx.Response:
    payload = {"model": MODEL, "max_tokens": 4, "temperature": 0,
               "messages": [{"role": "user", "content": "Say hi."}], **body}
    return httpx.post(f"{base_url}/v1/chat/completions", headers=headers, json=payload,
                      timeout=300)


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


@pytest.mark.parametrize("headers, says", [
    ({}, "Missing API key"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "Malformed Authorization"),
    ({"Authorization": "Bearer ek-not-a-real-key"}, "Invalid or revoked API key"),
])
def test_requests_without_a_valid_key_get_401(base_url, headers, says):
    response = retrieve(base_url, headers)
    assert response.status_code == 401
    assert says in error_of(response)["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert httpx.get(f"{base_url}/health", timeout=60).status_code == 200  # open by design


def test_a_revoked_key_is_refused_within_the_cache_time(base_url, access_url, local_app_args):
    """A replica trusts a key lookup for access.key_cache_s, so every request sent that
    long after the revocation is refused (eight of them: both replicas answer some)."""
    cache_s = local_app_args["access"]["key_cache_s"]
    key, _ = create_key(access_url, "to-revoke")
    assert retrieve(base_url, bearer(key)).status_code == 200
    revoke(access_url, "to-revoke")
    refused_from = time.monotonic() + cache_s
    late: list[int] = []
    while len(late) < 8:
        sent = time.monotonic()
        status = retrieve(base_url, bearer(key)).status_code
        assert status in (200, 401), status
        if sent >= refused_from:
            late.append(status)
        else:
            time.sleep(0.1)
    assert late == [401] * 8, f"sent {cache_s} s or more after the revocation: {late}"


def test_a_key_outside_its_models_gets_403(base_url, access_url):
    key, _ = create_key(access_url, "rag-only", models=["rag*"])
    assert retrieve(base_url, bearer(key)).status_code == 200  # rag:docs is allowed
    refused = chat(base_url, bearer(key))
    assert refused.status_code == 403
    assert f"may not use model '{MODEL}'" in error_of(refused)["message"]
    assert error_of(refused)["param"] == "model"


def test_an_oversized_body_gets_413_before_it_is_read(base_url, auth):
    big = "x" * (2 * 1024 * 1024)
    response = retrieve(base_url, auth, query=big)
    assert response.status_code == 413
    assert "larger than 1 MB" in error_of(response)["message"]
    assert retrieve(base_url, auth).status_code == 200


@pytest.mark.parametrize("body, param", [
    ({"n": 1000}, "n"),
    ({"max_tokens": 100_000}, "max_tokens"),
])
def test_absurd_generation_requests_get_400_naming_the_limit(base_url, auth, body, param):
    response = chat(base_url, auth, **body)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param
    assert "this service allows at most" in error_of(response)["message"]


def test_too_many_embedding_inputs_get_400(base_url, auth):
    response = httpx.post(f"{base_url}/v1/embeddings", headers=auth, timeout=120,
                          json={"model": "all-minilm-l6-v2", "input": ["a"] * 10_000})
    assert response.status_code == 400
    assert error_of(response)["param"] == "input"


def test_requests_per_minute_hold_across_ingress_replicas(base_url, access_url):
    key, _ = create_key(access_url, "rpm-3", rpm=3)
    statuses = [retrieve(base_url, bearer(key)).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    refused = retrieve(base_url, bearer(key))
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "Rate limit reached for key 'rpm-3' (3 requests per minute)" in \
        error_of(refused)["message"]


def test_tokens_per_minute_count_what_requests_used(base_url, access_url):
    key, _ = create_key(access_url, "tpm-20", tpm=20)
    first = chat(base_url, bearer(key), max_tokens=8)  # ~30 prompt tokens: over at once
    assert first.status_code == 200
    # the usage row reaches the shared windows after the response; the keeper counts a
    # row's tokens before it writes the row, so once the row is stored they are counted
    wait_for_rows(access_url, "tpm-20", 1)
    second = chat(base_url, bearer(key))
    assert second.status_code == 429, second.text
    assert "20 tokens per minute" in error_of(second)["message"]


def usage_rows(access_url: str, key_name: str) -> list[dict]:
    engine = engine_for(access_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT u.* FROM usage u JOIN api_keys k ON k.id = u.key_id "
            "WHERE k.name = :name ORDER BY u.id"), {"name": key_name}).mappings().all()
    engine.dispose()
    return [dict(r) for r in rows]


def wait_for_rows(access_url: str, key_name: str, count: int) -> list[dict]:
    """The key's first `count` rows once finished (an admitted generation request's row is
    open, status 0, until its finished row replaces it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = usage_rows(access_url, key_name)
        if len(rows) >= count and all(r["status"] != 0 for r in rows[:count]):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"{count} usage rows for {key_name} not written in 30 s: {rows}")


def test_usage_rows_record_each_request_and_survive_a_keeper_restart(base_url, access_url):
    import ray
    from ember.access.metering import keeper_name

    key, _ = create_key(access_url, "metered")
    assert chat(base_url, bearer(key)).status_code == 200
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", headers=bearer(key),
                      timeout=300, json={"model": MODEL, "max_tokens": 5, "stream": True,
                                         "messages": [{"role": "user", "content": "Hi"}]}) as r:
        streamed = "".join(r.iter_text())
    assert '"usage"' not in streamed  # asked of the engine for the record, not shown
    assert chat(base_url, bearer(key), n=1000).status_code == 400
    rows = wait_for_rows(access_url, "metered", 3)
    plain, stream, refused = rows[:3]
    assert plain["route"] == "/v1/chat/completions" and plain["status"] == 200
    assert plain["model"] == MODEL and plain["prompt_tokens"] > 0
    assert 1 <= plain["completion_tokens"] <= 4 and plain["latency_s"] > 0
    assert 1 <= stream["completion_tokens"] <= 5 and stream["ttft_s"] < stream["latency_s"]
    assert refused["status"] == 400 and refused["completion_tokens"] == 0

    keeper = ray.get_actor(keeper_name(access_url), namespace="ember")
    ray.kill(keeper, no_restart=False)  # Ray restarts it (max_restarts=-1)
    assert len(usage_rows(access_url, "metered")) == 3  # what was written stays
    wait_until_answers(keeper)
    assert chat(base_url, bearer(key)).status_code == 200
    assert len(wait_for_rows(access_url, "metered", 4)) == 4


def wait_until_answers(keeper) -> None:
    """Until the keeper's new incarnation answers a call (calls racing the restart fail)."""
    import ray

    deadline = time.monotonic() + 60
    while True:
        try:
            ray.get(keeper.ping.remote(), timeout=10)
            return
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            assert time.monotonic() < deadline, "the keeper did not come back in 60 s"
            time.sleep(0.5)


def test_usage_table_is_real_and_queryable(base_url, access_url):
    """A key of its own sends a known number of requests: the table, queried in SQL,
    holds exactly that many rows for it, by route and status."""
    key, record = create_key(access_url, "counted")
    for _ in range(3):
        assert retrieve(base_url, bearer(key)).status_code == 200
    assert chat(base_url, bearer(key), n=1000).status_code == 400
    deadline = time.monotonic() + 30
    while (sum((counts := usage_counts(access_url, record.id)).values()) < 4
           or any(status == 0 for _, status in counts)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert counts == {("/v1/retrieve", 200): 3, ("/v1/chat/completions", 400): 1}, counts


def usage_counts(access_url: str, key_id: int) -> dict[tuple[str, int], int]:
    """{(route, status): rows} of one key, counted by the database."""
    query = (sa.select(USAGE.c.route, USAGE.c.status, sa.func.count())
             .where(USAGE.c.key_id == key_id).group_by(USAGE.c.route, USAGE.c.status))
    engine = engine_for(access_url)
    with engine.connect() as connection:
        counts = {(route, status): n for route, status, n in connection.execute(query)}
    engine.dispose()
    return counts


def test_measured_spend_is_charged_to_keys_and_a_spent_budget_gets_402(base_url, access_url):
    key, record = create_key(access_url, "tiny-budget", budget_usd=1e-9)
    assert chat(base_url, bearer(key)).status_code == 200
    deadline = time.monotonic() + 60
    while (refused := chat(base_url, bearer(key))).status_code == 200:
        assert time.monotonic() < deadline, "the budget was never charged"
        time.sleep(1)  # the keeper charges every cost_sample_s (2 s in this session)
    assert refused.status_code == 402, refused.text
    assert error_of(refused)["type"] == "insufficient_quota"
    assert "has spent its budget" in error_of(refused)["message"]
    engine = engine_for(access_url)
    with engine.connect() as connection:
        spend = connection.execute(sa.text(
            "SELECT model, replicas, seconds, tokens, usd FROM spend WHERE key_id = :k"),
            {"k": record.id}).mappings().all()
    engine.dispose()
    # the session's two engine replicas (conftest), each at usd_per_hour 0.10 (local.yaml):
    # the key's share is at most what they cost
    assert spend and all(r["model"] == MODEL and r["replicas"] == 2 for r in spend)
    assert 0 < sum(r["usd"] for r in spend) <= \
        0.10 * sum(r["replicas"] * r["seconds"] for r in spend) / 3600


def test_cost_report_prints_the_measured_figures(base_url, access_url):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ember.cli.main", "cost", "report",
                          "--database-url", access_url, "--since", "1h", "--by", "key"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| tiny-budget |" in out.stdout and "| total |" in out.stdout
    assert "hosted (gpt-4o-mini at $0.15/$0.6 per 1M input/output tokens)" in out.stdout
    assert "break-even:" in out.stdout


def keys_cli(access_url: str, *args: str) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ember.cli.main", "keys", "--database-url",
                           access_url, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_keys_update_changes_a_live_keys_limits(base_url, access_url, local_app_args):
    """`ember keys update` changes the limits of a key in use; the replicas apply it once
    their cached lookup expires (access.key_cache_s), and the key text stays the same."""
    cache_s = local_app_args["access"]["key_cache_s"]
    key, _ = create_key(access_url, "to-update")
    assert [retrieve(base_url, bearer(key)).status_code for _ in range(3)] == [200] * 3
    assert "rpm 2" in keys_cli(access_url, "update", "to-update", "--rpm", "2")
    time.sleep(cache_s + 0.5)  # both replicas' cached lookups have expired
    statuses = [retrieve(base_url, bearer(key)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert "(2 requests per minute)" in error_of(statuses[-1])["message"]
    assert "no limits" in keys_cli(access_url, "update", "to-update", "--rpm", "none",
                                   "--name", "updated")
    time.sleep(cache_s + 0.5)
    assert retrieve(base_url, bearer(key)).status_code == 200
    assert "updated " in keys_cli(access_url, "list")


def test_an_address_sending_bad_keys_gets_429_and_good_keys_elsewhere_do_not(
        base_url, local_app_args, auth):
    """A client (by X-Forwarded-For's last entry, `access.client_address_header` in the
    session's config: Serve's HAProxy hides the peer) guesses keys. Each of the two
    replicas counts its own failures, so within 2 x limit + 1 guesses one of them has seen
    more than `limit` and refuses (pigeonhole)."""
    assert local_app_args["access"]["client_address_header"] == "x-forwarded-for"
    limit = local_app_args["access"]["failed_auth_per_minute"]
    guesser = {"X-Forwarded-For": "10.9.9.9, 198.51.100.7"}  # a spoofed first entry: ignored
    statuses, response = [], None
    for attempt in range(2 * limit + 1):
        response = retrieve(base_url, {**guesser, **bearer(f"ek-guess-{attempt}")})
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
    assert len(statuses) > limit, statuses
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = error_of(response)
    assert error["type"] == "rate_limit_error" and "invalid API key" in error["message"]
    for headers in ({"X-Forwarded-For": "10.9.9.9"}, {"X-Forwarded-For": "198.51.100.8"}, {}):
        assert all(retrieve(base_url, {**headers, **auth}).status_code == 200
                   for _ in range(4)), headers
