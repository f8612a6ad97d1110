"""API keys, the keys database and the gate's checks (real SQLite, real Alembic)."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
import sqlalchemy as sa
from ember.access import keys, store
from ember.access.config import AccessConfig, RequestLimits
from ember.access.limits import Windows
from ember.access.schema import METADATA


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'access' / 'ember.db'}"


def test_keys_are_shown_once_and_stored_as_hashes(url, tmp_path):
    key, record = keys.create_key(url, "alice", rpm=10, models=["smollm2-*"])
    assert key.startswith("ek-") and len(key) > 40
    assert record.name == "alice" and record.rpm == 10 and record.models == ("smollm2-*",)
    raw = (tmp_path / "access" / "ember.db").read_bytes()
    assert key.encode() not in raw and keys.hash_key(key).encode() in raw
    assert keys.KeyLookup(url).find(key) == record
    assert keys.KeyLookup(url).find(key + "x") is None


def test_revoked_keys_are_refused(url):
    key, _ = keys.create_key(url, "bob")
    keys.revoke(url, "bob")
    assert keys.KeyLookup(url, cache_s=0).find(key) is None
    assert keys.list_keys(url)[0].revoked_at is not None


def test_bad_key_requests_name_what_is_wrong(url):
    keys.create_key(url, "carol")
    with pytest.raises(store.AccessStoreError, match="'carol' already exists"):
        keys.create_key(url, "carol")
    with pytest.raises(store.AccessStoreError, match="--rpm must be positive"):
        keys.create_key(url, "dave", rpm=0)
    with pytest.raises(store.AccessStoreError, match="no key named 'erin'"):
        keys.revoke(url, "erin")


def test_model_patterns():
    key = keys.ApiKey(id=1, name="k", prefix="ek-", created_at=0, models=("rag*", "smollm2"))
    assert key.allows("rag:docs") and key.allows("smollm2") and not key.allows("llama")
    assert keys.ApiKey(id=2, name="all", prefix="ek-", created_at=0).allows("anything")


def test_migrated_schema_matches_the_code(url):
    store.migrate(url)
    inspector = sa.inspect(store.engine_for(url))
    for table in METADATA.sorted_tables:
        migrated = {c["name"] for c in inspector.get_columns(table.name)}
        assert migrated == {c.name for c in table.columns}, table.name


def test_a_missing_database_stops_the_service_with_what_to_do(url):
    with pytest.raises(store.AccessStoreError, match="does not exist.*ember keys create"):
        store.check_ready(url)


def test_a_corrupt_database_stops_the_service(url, tmp_path):
    store.migrate(url)
    (tmp_path / "access" / "ember.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(store.AccessStoreError, match="cannot be read"):
        store.check_ready(url)


def test_an_old_schema_stops_the_service(url, tmp_path):
    store.migrate(url)
    with sqlite3.connect(tmp_path / "access" / "ember.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(store.AccessStoreError, match="ember keys migrate"):
        store.check_ready(url)


def test_windows_count_requests_and_tokens_per_minute():
    windows = Windows()
    assert windows.admit(1, rpm=2, tpm=None, now=0.0) is None
    assert windows.admit(1, rpm=2, tpm=None, now=1.0) is None
    assert windows.admit(1, rpm=2, tpm=None, now=2.0) == pytest.approx(58.0)
    assert windows.admit(2, rpm=2, tpm=None, now=2.0) is None  # other keys unaffected
    assert windows.admit(1, rpm=2, tpm=None, now=60.5) is None  # the first left the window
    windows.spend(3, 150, now=10.0)
    assert windows.admit(3, rpm=None, tpm=100, now=20.0) == pytest.approx(50.0)
    assert windows.admit(3, rpm=None, tpm=100, now=70.5) is None


class Body:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def gate_for(limits: RequestLimits):
    from ember.access.gate import AccessGate

    gate = AccessGate.__new__(AccessGate)  # the checks only; no database or Ray needed
    gate.limits = limits
    return gate


def test_per_request_ceilings_name_the_field():
    gate = gate_for(RequestLimits(max_n=4, max_tokens=100, max_embedding_inputs=8))
    assert gate.check_generation(Body(n=2, max_tokens=50)) is None
    refused = gate.check_generation(Body(n=1000, max_tokens=50))
    error = json.loads(refused.body)["error"]
    assert refused.status_code == 400 and error["param"] == "n"
    assert "at most 4" in error["message"]
    refused = gate.check_generation(Body(n=None, max_tokens=None, max_completion_tokens=101))
    assert json.loads(refused.body)["error"]["param"] == "max_completion_tokens"
    assert gate.check_embedding_inputs(9).status_code == 400
    refused = gate.check_generation(Body(n=None, max_tokens=None, max_output_tokens=101))
    assert json.loads(refused.body)["error"]["param"] == "max_output_tokens"  # /v1/responses


def test_the_meter_reads_usage_and_strips_the_event_the_client_did_not_ask_for():
    from ember.access.gate import UsageMeter

    sent = []

    async def send(message):
        sent.append(message)

    async def run():
        meter = UsageMeter()
        scope = {"state": {"ember_strip_usage": True}}
        metered = meter.wrap(send, scope)
        await metered({"type": "http.response.start", "status": 200,
                       "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        chunk = {"model": "m", "choices": [{"delta": {"content": "hi"}}]}
        await metered({"type": "http.response.body", "more_body": True,
                       "body": f"data: {json.dumps(chunk)}\n\n".encode()})
        usage = {"model": "m", "choices": [],
                 "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
        await metered({"type": "http.response.body", "more_body": True,
                       "body": f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()})
        return meter

    meter = asyncio.run(run())
    assert (meter.status, meter.model, meter.prompt_tokens, meter.completion_tokens) == \
        (200, "m", 7, 3)
    streamed = b"".join(m.get("body", b"") for m in sent)
    assert b'"usage"' not in streamed and b"[DONE]" in streamed and b'"hi"' in streamed


def test_access_is_on_by_default():
    assert AccessConfig().auth is True


def test_the_usage_outbox_keeps_order_and_counts_what_it_drops():
    from ember.access.accounting import UsageOutbox

    box = UsageOutbox(max_rows=5)
    for i in range(4):
        assert box.add({"row_id": str(i), "n": i}) == 0
    batch = box.take(3)
    assert [r["n"] for r in batch] == [0, 1, 2] and len(box.rows) == 1
    box.add({"row_id": "4", "n": 4})
    assert box.put_back(batch) == 0  # unacknowledged: back in front, in order
    assert [r["n"] for r in box.rows] == [0, 1, 2, 3, 4]
    assert box.add({"row_id": "5", "n": 5}) == 1 and box.dropped == 1  # full: the oldest goes
    assert [r["n"] for r in box.rows] == [1, 2, 3, 4, 5]


def test_a_finished_row_replaces_its_open_row_until_that_one_left():
    from ember.access.accounting import UsageOutbox

    box = UsageOutbox(max_rows=3)
    box.add({"row_id": "a", "status": 0, "open": True})
    box.add({"row_id": "b", "status": 0, "open": True})
    box.add({"row_id": "a", "status": 200})  # a ended before its open row left: one row
    assert list(box.rows) == [{"row_id": "a", "status": 200},
                              {"row_id": "b", "status": 0, "open": True}]
    sent = box.take(2)  # b's open row left: its finished row follows it
    box.add({"row_id": "b", "status": 200})
    assert [r["status"] for r in box.rows] == [200]
    box.put_back(sent)  # not acknowledged: sent again, before the finished row
    assert [(r["row_id"], r["status"]) for r in box.rows] == [("a", 200), ("b", 0), ("b", 200)]
    box.add({"row_id": "c", "status": 0, "open": True})  # full: a's row is dropped
    box.add({"row_id": "c", "status": 499})
    assert [(r["row_id"], r["status"]) for r in box.rows] == [("b", 0), ("b", 200), ("c", 499)]
    assert box.dropped == 1


def test_a_usage_row_delivered_twice_is_written_once(url):
    from ember.access.metering import insert_usage

    store.migrate(url)
    engine = store.engine_for(url)
    row = {"row_id": "a" * 32, "ts": 1.0, "key_id": None, "model": "m", "served_model": "m",
           "route": "/v1/chat/completions", "status": 200, "prompt_tokens": 3,
           "completion_tokens": 4, "latency_s": 0.1, "ttft_s": None}
    insert_usage(engine, [row])
    insert_usage(engine, [row, {**row, "row_id": "b" * 32}])  # a retry, plus a new one
    with engine.connect() as connection:
        ids = connection.execute(sa.text("SELECT row_id FROM usage ORDER BY id")).scalars().all()
    assert ids == ["a" * 32, "b" * 32]


def test_an_open_row_is_replaced_by_its_finished_row_and_nothing_else(url):
    """An admitted request's open row (status 0) stays until the finished row of its id
    arrives; a late open row or a second finished row changes nothing."""
    from ember.access.metering import insert_usage

    store.migrate(url)
    engine = store.engine_for(url)
    opened = {"row_id": "o" * 32, "ts": 1.0, "key_id": None, "model": None,
              "served_model": None, "route": "/v1/chat/completions", "status": 0,
              "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0, "ttft_s": None,
              "open": True}
    finished = {**opened, "status": 200, "model": "m", "served_model": "m",
                "prompt_tokens": 3, "completion_tokens": 4, "latency_s": 0.5}
    del finished["open"]
    cut_short = {**opened, "row_id": "c" * 32}  # its replica died: only the open row
    insert_usage(engine, [opened, cut_short])
    insert_usage(engine, [finished])
    insert_usage(engine, [opened])  # re-sent late
    insert_usage(engine, [{**finished, "status": 503, "completion_tokens": 1}])  # the guard's
    with engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT row_id, status, prompt_tokens, completion_tokens, model FROM usage "
            "ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("o" * 32, 200, 3, 4, "m"), ("c" * 32, 0, 0, 0, None)]


def test_request_state_written_by_a_route_is_read_by_the_gate():
    """The route sees a copy of the gate's scope (the hot path rewrites its headers);
    both share one state dict."""
    from ember.access import request_state
    from starlette.requests import Request

    gate_scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                  "headers": []}
    request_state.set_key(gate_scope, "the key")
    request = Request({**gate_scope, "headers": [(b"content-length", b"2")]})
    request_state.set_served_model(request.scope, "smollm2")
    request_state.set_strip_usage(request.scope)
    assert request_state.key_of(request.scope) == "the key"
    assert request_state.served_model_of(gate_scope) == "smollm2"
    assert request_state.strips_usage(gate_scope)


def test_the_meter_reads_the_usage_of_a_responses_answer_and_stream():
    from ember.access.gate import UsageMeter

    async def send(message):
        pass

    async def meter_of(content_type: bytes, *bodies: bytes) -> UsageMeter:
        meter = UsageMeter()
        metered = meter.wrap(send, {})
        await metered({"type": "http.response.start", "status": 200,
                       "headers": [(b"content-type", content_type)]})
        for body in bodies:
            await metered({"type": "http.response.body", "body": body, "more_body": True})
        await metered({"type": "http.response.body", "body": b""})
        return meter

    usage = {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16}
    answer = {"id": "resp_1", "object": "response", "model": "m", "usage": usage}
    meter = asyncio.run(meter_of(b"application/json", json.dumps(answer).encode()))
    assert (meter.model, meter.prompt_tokens, meter.completion_tokens) == ("m", 11, 5)

    def event(kind: str, **data) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    meter = asyncio.run(meter_of(
        b"text/event-stream", event("response.created", response={**answer, "usage": None}),
        event("response.output_text.delta", delta="hi"),
        event("response.completed", response=answer)))
    assert (meter.model, meter.prompt_tokens, meter.completion_tokens) == ("m", 11, 5)
