"""Ember's service actors (usage keeper, Milvus Lite server) live apart from the replicas.

Issue 22: the keeper and the Milvus Lite server were started from inside an
engine replica and so lived in its placement group; a replica's death killed
them, and the keeper then waited forever to restart in a removed group,
while every limited key got 503 and no usage row was written. Here, against
the session's real deployment (two engine replicas):
- both live outside every placement group, on the head node;
- a keeper that stops answering: limited keys still get 200/429 from each
  replica's own view (never 503), a spent budget stays 402, /health says
  degraded with the reason, the silent keeper is replaced, and every usage row
  of the outage arrives, once;
- the Milvus Lite server SIGKILLed: Ray restarts it on its port, nothing
  acknowledged is lost, retrieval keeps answering, and an ingestion after it
  writes each chunk once.
The replica-kill test (`test_serving_faults`) checks the keeper and the
server again after an engine replica dies under load.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import sqlalchemy as sa
from ember.access.keys import create_key
from ember.access.store import engine_for

from .conftest import COLLECTION, MODEL


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def retrieve(base_url: str, headers: dict) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/retrieve", headers=headers, timeout=120,
                      json={"query": "fares", "top_k": 1})


def chat(base_url: str, headers: dict) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/chat/completions", headers=headers, timeout=300,
                      json={"model": MODEL, "max_tokens": 2,
                            "messages": [{"role": "user", "content": "Hi"}]})


def service(name_prefix: str) -> dict:
    from ember.service_actors import service_actors

    alive = [a for a in service_actors() if a["name"].startswith(name_prefix)
             and a["state"] == "ALIVE"]
    assert len(alive) == 1, alive
    return alive[0]


def assert_outside_placement_groups(actor: dict) -> None:
    from ember.service_actors import head_node_id

    assert actor["placement_group_id"] is None, actor
    assert actor["node_id"] == head_node_id(), actor


def count_usage(access_url: str, key_id: int) -> int:
    engine = engine_for(access_url)
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM usage WHERE key_id = :k"),
                                   {"k": key_id}).scalar()
    engine.dispose()
    return count


def wait_for_usage(access_url: str, key_id: int, count: int, within_s: float = 60) -> int:
    deadline = time.monotonic() + within_s
    while (found := count_usage(access_url, key_id)) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def wait_for_new_server(old_pid: int, within_s: float = 120) -> dict:
    """The Milvus Lite server's next incarnation, once it answers (Ray's actor list can
    show the killed process as ALIVE for a moment)."""
    import ray
    from ember.service_actors import service_actors

    deadline = time.monotonic() + within_s
    while True:
        try:
            alive = [a for a in service_actors() if a["name"].startswith("milvus-lite:")
                     and a["state"] == "ALIVE" and a["pid"] != old_pid]
            if alive:
                handle = ray.get_actor(alive[0]["name"], namespace="ember")
                ray.get(handle.uri.remote(), timeout=10)
                return alive[0]
        except (ray.exceptions.RayError, ValueError):
            pass  # restarting
        assert time.monotonic() < deadline, "the Milvus Lite server did not come back"
        time.sleep(1)


def wait_until_the_store_answers(milvus_uri: str, within_s: float = 60) -> None:
    """Until a client of the restarted server lists its collections: the actor answers
    once its server is bound, and a client's first call may still race its start (seen
    once in CI: the re-run's first call failed to connect)."""
    from ember.vectorstore.lite_server import shared_uri
    from ember.vectorstore.milvus import MilvusStore

    deadline = time.monotonic() + within_s
    while True:
        try:
            store = MilvusStore(shared_uri(milvus_uri))
            try:
                store.client.list_collections()
                return
            finally:
                store.close()
        except Exception:  # noqa: BLE001 - any client error: not back yet
            assert time.monotonic() < deadline, "the restarted Milvus Lite server never answered"
            time.sleep(1)


def test_service_actors_live_outside_every_placement_group(base_url, auth):
    assert retrieve(base_url, auth).status_code == 200  # both exist once a request ran
    assert_outside_placement_groups(service("ember-quota-"))
    assert_outside_placement_groups(service("milvus-lite:"))


def replace_keeper_with_a_silent_one(access_url: str):
    """The keeper's name held by an actor that never answers (a stuck keeper, as a
    replica sees one); each replica's watch must notice and replace it."""
    import ray
    from ember.access.metering import keeper_name

    @ray.remote(max_concurrency=100)
    class Silent:
        async def admit(self, *args, **kwargs):
            import asyncio
            await asyncio.sleep(3600)

        ping = record_rows = set_prices = admit

    name = keeper_name(access_url)
    for _ in range(20):
        try:
            ray.kill(ray.get_actor(name, namespace="ember"), no_restart=True)
        except ValueError:
            pass  # no keeper under that name right now
        try:
            return Silent.options(name=name, namespace="ember", lifetime="detached",
                                  num_cpus=0).remote()
        except ValueError:  # a replica made a new keeper first, or the old one is dying
            time.sleep(0.2)
    raise AssertionError("could not take the keeper's name")


def wait_for_health(base_url: str, status: str, within_s: float) -> dict:
    """Until a /health answer says `status` (each call lands on one of two replicas)."""
    deadline = time.monotonic() + within_s
    while True:
        health = httpx.get(f"{base_url}/health", timeout=60).json()
        if health["status"] == status or time.monotonic() > deadline:
            return health
        time.sleep(1)


def test_a_silent_keeper_leaves_limits_working_and_loses_no_usage(base_url, access_url):
    import ray
    from ember.access.metering import keeper_name

    rate_key, rate = create_key(access_url, "outage-rpm-3", rpm=3)
    budget_key, budget = create_key(access_url, "outage-spent", budget_usd=1e-9)
    assert chat(base_url, bearer(budget_key)).status_code == 200  # tokens: a share of cost
    budget_sent, deadline = 2, time.monotonic() + 60
    while chat(base_url, bearer(budget_key)).status_code != 402:  # charged
        assert time.monotonic() < deadline, "the budget was never charged"
        budget_sent += 1
        time.sleep(1)
    silent = replace_keeper_with_a_silent_one(access_url)

    statuses = [retrieve(base_url, bearer(rate_key)).status_code for _ in range(8)]
    # each replica counts its own requests (3 each at most): never 503
    assert set(statuses) <= {200, 429} and 3 <= statuses.count(200) <= 6, statuses
    assert retrieve(base_url, bearer(budget_key)).status_code == 402  # still spent

    health = wait_for_health(base_url, "degraded", 30)
    assert health["status"] == "degraded", health
    assert "usage keeper" in " ".join(health["reasons"]), health
    assert health["accounting"]["keeper"] == "unavailable"

    # replaced after access.keeper_replace_after_s (10 s in this session), then the
    # rows of the outage arrive: every request sent, once
    assert wait_for_health(base_url, "ok", 90)["status"] == "ok"
    keeper = ray.get_actor(keeper_name(access_url), namespace="ember")
    assert keeper._actor_id != silent._actor_id
    assert_outside_placement_groups(service("ember-quota-"))
    assert wait_for_usage(access_url, rate.id, 8) == 8
    assert wait_for_usage(access_url, budget.id, budget_sent + 1) == budget_sent + 1
    time.sleep(3)  # nothing arrives twice
    assert count_usage(access_url, rate.id) == 8


def test_a_killed_milvus_server_comes_back_on_its_port_with_every_row(
        base_url, auth, milvus_uri):
    from ember.vectorstore.lite_server import shared_uri
    from ember.vectorstore.milvus import MilvusStore

    uri = shared_uri(milvus_uri)
    store = MilvusStore(uri)
    before = store.count(COLLECTION)
    rows = [{"source": f"kill-test-{i}", "title": "t", "position": i, "text": f"row {i}",
             "content_hash": "h", "file_hash": "f", "vector": [0.01 * (i + 1)] * 384}
            for i in range(50)]
    store.ensure_collection("kill_test", "all-minilm-l6-v2", 384)
    store.upsert_chunks("kill_test", rows)  # acknowledged, not flushed
    server = service("milvus-lite:")
    os.kill(server["pid"], signal.SIGKILL)

    # retrieval keeps answering meanwhile (the replicas search loaded snapshots)
    assert retrieve(base_url, auth).status_code == 200
    restarted = wait_for_new_server(server["pid"])
    deadline = time.monotonic() + 120
    while True:
        try:
            counted = store.count("kill_test")  # the same client, the same URI
            break
        except Exception:  # noqa: BLE001 - the server is restarting
            assert time.monotonic() < deadline, "the Milvus Lite server did not come back"
            time.sleep(1)
    assert counted == 50
    assert store.count(COLLECTION) == before
    assert_outside_placement_groups(restarted)
    assert shared_uri(milvus_uri) == uri  # the same port
    assert retrieve(base_url, auth).status_code == 200
    health = httpx.get(f"{base_url}/health", timeout=60).json()
    assert COLLECTION in health["collections"], health
    store.client.drop_collection("kill_test")
    store.client.drop_collection("kill_test__files")
    store.close()


def test_chat_with_a_limited_key_after_the_keeper_tests(base_url, access_url):
    """Sanity after the faults above: a limited key's chat is admitted and metered."""
    key, record = create_key(access_url, "after-faults", rpm=100, budget_usd=100)
    response = httpx.post(f"{base_url}/v1/chat/completions", headers=bearer(key), timeout=300,
                          json={"model": MODEL, "max_tokens": 4,
                                "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200, response.text
    assert "x-ember-usage" not in response.headers  # the proxy's guard strips it
    assert wait_for_usage(access_url, record.id, 1) == 1


def test_an_ingestion_that_loses_its_server_finishes_or_says_so_and_a_rerun_completes(
        milvus_uri, sample_ingest):
    """SIGKILL the Milvus Lite server while Ray Data ingests the sample corpus: the run
    either rides over the restart or fails naming the cause; once re-run, the collection
    holds exactly the chunks of a clean ingestion (none lost, none twice)."""
    import threading

    from ember.ingest.config import IngestConfig
    from ember.ingest.pipeline import VectorStoreLost, run_ingest
    from ember.vectorstore.lite_server import shared_uri
    from ember.vectorstore.milvus import MilvusStore

    from .conftest import SAMPLES

    config = IngestConfig(paths=[str(SAMPLES)], collection="killed_store", local_max_mb=0,
                          milvus_uri=milvus_uri)
    pid = service("milvus-lite:")["pid"]
    killer = threading.Timer(4.0, os.kill, (pid, signal.SIGKILL))
    killer.start()
    try:
        first = run_ingest(config, progress=lambda line: None)
        outcome = f"finished across the restart ({first.chunks_total} chunks)"
    except VectorStoreLost as exc:
        assert "Run the same `ember ingest` again" in str(exc)
        outcome = f"failed, saying so: {str(exc)[:120]}"
    killer.join()
    print(f"\nthe ingestion {outcome}")
    restarted = wait_for_new_server(pid)  # it was killed, and Ray restarts it
    assert_outside_placement_groups(restarted)
    wait_until_the_store_answers(milvus_uri)  # "once the store is back", as the error says
    again = run_ingest(config, progress=lambda line: None)
    store = MilvusStore(shared_uri(milvus_uri))
    assert store.count("killed_store") == again.chunks_total == sample_ingest.chunks_total
    store.client.drop_collection("killed_store")
    store.client.drop_collection("killed_store__files")
    store.close()


def test_an_ingestion_into_an_unreachable_store_says_what_to_do(ray_cluster, tmp_path):
    from ember.ingest.config import IngestConfig
    from ember.ingest.pipeline import VectorStoreLost, run_ingest

    from .conftest import SAMPLES, free_port

    config = IngestConfig(paths=[str(SAMPLES)], collection="nowhere",
                          milvus_uri=f"http://127.0.0.1:{free_port()}")
    try:
        run_ingest(config, progress=lambda line: None)
    except VectorStoreLost as exc:
        assert "did not answer" in str(exc) and "Run the same `ember ingest` again" in str(exc)
    else:
        raise AssertionError("an ingestion into a store nobody serves did not fail")
