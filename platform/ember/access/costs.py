"""Cost figures from what the cluster spent: `ember cost report` and `ember cost estimate`.

The keeper (`metering.py`) writes `spend` rows: replicas x USD/hour x seconds per
sampling interval, split among keys by tokens. From those and the `usage` rows:

    cost            = sum of spend.usd over the period (idle intervals included)
    per request     = cost / requests
    per 1k requests = 1000 x cost / requests
    per 1M tokens   = 1e6 x cost / (prompt + completion tokens)
    monthly         = cost / covered seconds x 30 days      (at the current rate)
    hosted          = prompt x $in/1M + completion x $out/1M (the same traffic, priced)
    break-even      = self-hosted monthly cost / hosted price per request
                      (requests per month above which self-hosting is cheaper)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from ember.access.schema import API_KEYS, SPEND, USAGE
from ember.access.store import opened

MONTH_S = 30 * 86400
# The documents' comparison: GPT-4o-mini, USD per 1M input / output tokens.
HOSTED_DEFAULT = ("gpt-4o-mini", 0.15, 0.60)


@dataclass
class Line:
    name: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    replica_s: float = 0.0
    usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def per_request(self) -> float | None:
        return self.usd / self.requests if self.requests else None

    def per_1m_tokens(self) -> float | None:
        return 1e6 * self.usd / self.tokens if self.tokens else None


@dataclass
class Report:
    since: float
    covered_s: float
    lines: list[Line] = field(default_factory=list)
    hosted: tuple[str, float, float] = HOSTED_DEFAULT

    @property
    def total(self) -> Line:
        total = Line("total")
        for line in self.lines:
            total.requests += line.requests
            total.prompt_tokens += line.prompt_tokens
            total.completion_tokens += line.completion_tokens
            total.replica_s += line.replica_s
            total.usd += line.usd
        return total

    def monthly(self, usd: float) -> float:
        return usd / self.covered_s * MONTH_S if self.covered_s > 0 else 0.0

    def hosted_usd(self, line: Line) -> float:
        _, usd_in, usd_out = self.hosted
        return (line.prompt_tokens * usd_in + line.completion_tokens * usd_out) / 1e6

    def break_even_requests(self) -> float | None:
        total = self.total
        if not total.requests or not self.hosted_usd(total):
            return None
        return self.monthly(total.usd) / (self.hosted_usd(total) / total.requests)


def load_report(url: str, since_s: float, by: str = "model",
                hosted: tuple[str, float, float] = HOSTED_DEFAULT,
                now: float | None = None) -> Report:
    """The period's spend and usage, one line per model or per key."""
    now = now or time.time()
    since = now - since_s
    with opened(url) as engine:
        with engine.connect() as connection:
            lines = _lines(connection, since, by)
            first = connection.execute(sa.select(sa.func.min(SPEND.c.ts - SPEND.c.seconds))
                                       .where(SPEND.c.ts >= since)).scalar()
    covered = now - max(since, first) if first is not None else 0.0
    return Report(since=since, covered_s=covered, lines=lines, hosted=hosted)


def _lines(connection, since: float, by: str) -> list[Line]:
    if by == "key":
        usage_key, spend_key = USAGE.c.key_id, SPEND.c.key_id
    else:
        usage_key, spend_key = USAGE.c.served_model, SPEND.c.model
    lines: dict = {}
    for name, requests, prompt, completion in connection.execute(
            sa.select(usage_key, sa.func.count(), sa.func.sum(USAGE.c.prompt_tokens),
                      sa.func.sum(USAGE.c.completion_tokens))
            .where(USAGE.c.ts >= since).group_by(usage_key)):
        lines[name] = Line(_label(name), requests, prompt or 0, completion or 0)
    for name, replica_s, usd in connection.execute(
            sa.select(spend_key, sa.func.sum(SPEND.c.replicas * SPEND.c.seconds),
                      sa.func.sum(SPEND.c.usd))
            .where(SPEND.c.ts >= since).group_by(spend_key)):
        line = lines.setdefault(name, Line(_label(name)))
        line.replica_s, line.usd = replica_s or 0.0, usd or 0.0
    if by == "key":
        names = dict(connection.execute(sa.select(API_KEYS.c.id, API_KEYS.c.name)).all())
        for key_id, line in lines.items():
            # No key: traffic of an app with auth off, and idle replica time.
            line.name = names.get(key_id, str(key_id)) if key_id is not None \
                else "(no key, or idle)"
    return sorted(lines.values(), key=lambda line: -line.usd)


def _label(name) -> str:
    return "(none)" if name is None else str(name)


def format_report(report: Report, by: str) -> str:
    head = (f"| {by} | requests | prompt tok | completion tok | replica-h | cost USD | "
            f"USD/request | USD/1k req | USD/1M tok |")
    rows = [head, "|" + "---|" * 9]
    for line in [*report.lines, report.total]:
        rows.append(f"| {line.name} | {line.requests} | {line.prompt_tokens} | "
                    f"{line.completion_tokens} | {line.replica_s / 3600:.3f} | {line.usd:.6f} | "
                    f"{_money(line.per_request())} | {_money(line.per_request(), 1000)} | "
                    f"{_money(line.per_1m_tokens())} |")
    total = report.total
    name, usd_in, usd_out = report.hosted
    hosted = report.hosted_usd(total)
    rows += [
        "",
        f"period covered: {report.covered_s / 3600:.2f} h (cost sampled from the replicas "
        f"running: replicas x usd_per_hour x seconds)",
        f"self-hosted: ${total.usd:.6f} in the period -> ${report.monthly(total.usd):,.2f} "
        f"per month at this rate",
        f"hosted ({name} at ${usd_in}/${usd_out} per 1M input/output tokens): "
        f"${hosted:.6f} for the same traffic -> ${report.monthly(hosted):,.2f} per month",
    ]
    break_even = report.break_even_requests()
    if break_even is not None:
        now_monthly = total.requests / report.covered_s * MONTH_S if report.covered_s else 0
        rows.append(f"break-even: {break_even:,.0f} requests per month at this traffic's "
                    f"tokens per request (now {now_monthly:,.0f}); above it self-hosting "
                    f"is cheaper")
    return "\n".join(rows)


def _money(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.6f}"


@dataclass
class Estimate:
    requests_per_day: float
    output_tok_s_needed: float
    capacity_tok_s: float
    replicas: int
    self_hosted_monthly: float
    hosted_monthly: float
    break_even_users: float


def estimate(users: int, messages_per_day: float, input_tokens: int, output_tokens: int,
             capacity_tok_s: float, usd_per_hour: float, peak_factor: float = 1.0,
             hosted: tuple[str, float, float] = HOSTED_DEFAULT) -> Estimate:
    """The documents' planning question from a measured throughput per replica."""
    _, usd_in, usd_out = hosted
    per_day = users * messages_per_day
    needed = per_day / 86400 * output_tokens * peak_factor
    replicas = max(1, math.ceil(needed / capacity_tok_s))
    self_hosted = replicas * usd_per_hour * 24 * 30
    per_request_hosted = (input_tokens * usd_in + output_tokens * usd_out) / 1e6
    hosted_monthly = per_day * 30 * per_request_hosted
    user_month_hosted = messages_per_day * 30 * per_request_hosted
    break_even = usd_per_hour * 24 * 30 / user_month_hosted if user_month_hosted else math.inf
    return Estimate(per_day, needed, capacity_tok_s, replicas, self_hosted, hosted_monthly,
                    break_even)


def best_throughput(bench: list[dict] | dict, target: str | None = None) -> float:
    """The highest output tok/s of an `ember bench serve --json` result (one target).

    The file holds {"runs": [...], "medians": [...]}; the medians are used
    (a plain list of rows, the older format, is read too)."""
    bench_rows = bench.get("medians") or bench.get("runs") or [] \
        if isinstance(bench, dict) else bench
    rows = [r for r in bench_rows if target is None or r.get("target") == target]
    if not rows:
        raise ValueError(f"no rows for target {target!r} in the benchmark file")
    return max(float(r["output_tok_s"]) for r in rows if not r.get("errors"))
