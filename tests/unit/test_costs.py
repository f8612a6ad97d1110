"""Cost accounting: allocation by tokens, the report's arithmetic, the planning estimate."""

from __future__ import annotations

import pytest
from ember.access import keys, store
from ember.access.costs import Line, best_throughput, estimate, format_report, load_report
from ember.access.metering import allocate
from ember.access.schema import SPEND, USAGE
from ember.cli.cost_cmd import parse_hosted, parse_period
from ember.errors import EmberError


def test_an_interval_is_split_by_tokens_and_idle_time_has_no_key():
    assert allocate(1.0, {1: 300, 2: 100}) == [(1, 0.75, 300), (2, 0.25, 100)]
    assert allocate(0.5, {}) == [(None, 0.5, 0)]
    assert allocate(0.5, {1: 0}) == [(None, 0.5, 0)]


def test_report_figures_follow_the_formulas(tmp_path):
    url = f"sqlite:///{tmp_path / 'ember.db'}"
    _, alice = keys.create_key(url, "alice")
    engine = store.engine_for(url)
    now = 10_000.0
    with engine.begin() as db:
        db.execute(USAGE.insert(), [
            {"ts": now - 50, "key_id": alice.id, "model": "m", "served_model": "m",
             "route": "/v1/chat/completions", "status": 200, "prompt_tokens": 600,
             "completion_tokens": 400, "latency_s": 1.0},
            {"ts": now - 40, "key_id": alice.id, "model": "rag:docs", "served_model": "m",
             "route": "/v1/chat/completions", "status": 200, "prompt_tokens": 400,
             "completion_tokens": 600, "latency_s": 1.0}])
        # 100 s of one replica at $3.60/h = $0.10: $0.08 to alice, $0.02 idle.
        db.execute(SPEND.insert(), [
            {"ts": now - 20, "model": "m", "key_id": alice.id, "replicas": 1, "seconds": 80,
             "tokens": 2000, "usd": 0.08},
            {"ts": now, "model": "m", "key_id": None, "replicas": 1, "seconds": 20,
             "tokens": 0, "usd": 0.02}])
    engine.dispose()
    report = load_report(url, since_s=3600, by="model", now=now)
    (line,) = report.lines
    assert (line.name, line.requests, line.tokens) == ("m", 2, 2000)
    assert line.usd == pytest.approx(0.10) and line.replica_s == pytest.approx(100)
    assert line.per_request() == pytest.approx(0.05)
    assert line.per_1m_tokens() == pytest.approx(50.0)
    assert report.covered_s == pytest.approx(100)
    assert report.monthly(0.10) == pytest.approx(0.10 / 100 * 30 * 86400)
    # hosted: 1000 in x 0.15 + 1000 out x 0.60 per 1M = $0.00075
    assert report.hosted_usd(report.total) == pytest.approx(0.00075)
    assert report.break_even_requests() == pytest.approx(report.monthly(0.10) / 0.000375)
    by_key = load_report(url, since_s=3600, by="key", now=now)
    assert {(x.name, round(x.usd, 6)) for x in by_key.lines} == {("alice", 0.08),
                                                                  ("(no key, or idle)", 0.02)}
    text = format_report(report, "model")
    assert "| m | 2 | 1000 | 1000 | 0.028 | 0.100000 | 0.050000 | 50.000000 | 50.000000 |" in text
    assert "break-even" in text


def test_the_documents_planning_question():
    # 10,000 users x 50 messages/day, 500 in + 200 out tokens, GPT-4o-mini prices.
    e = estimate(10_000, 50, 500, 200, capacity_tok_s=1000.0, usd_per_hour=2.0)
    assert e.requests_per_day == 500_000
    assert e.output_tok_s_needed == pytest.approx(500_000 / 86400 * 200)  # 1157.4
    assert e.replicas == 2 and e.self_hosted_monthly == pytest.approx(2 * 2.0 * 720)
    assert e.hosted_monthly == pytest.approx(500_000 * 30 * (500 * 0.15 + 200 * 0.60) / 1e6)
    assert e.break_even_users == pytest.approx(1440 / (50 * 30 * 0.000195))


def test_cli_arguments_are_checked():
    assert parse_period("24h") == 86400 and parse_period("30m") == 1800
    assert parse_hosted("gpt-4o-mini=0.15/0.60") == ("gpt-4o-mini", 0.15, 0.60)
    with pytest.raises(EmberError, match="--since"):
        parse_period("yesterday")
    with pytest.raises(EmberError, match="NAME=USD_IN/USD_OUT"):
        parse_hosted("cheap")
    rows = [{"target": "ember", "output_tok_s": 80.0, "errors": 0},
            {"target": "ember", "output_tok_s": 240.0, "errors": 0},
            {"target": "vllm", "output_tok_s": 300.0, "errors": 0}]
    assert best_throughput(rows, "ember") == 240.0
    assert best_throughput({"runs": rows, "medians": rows[1:]}, "vllm") == 300.0
    assert Line("x").per_request() is None

