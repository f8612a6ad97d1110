"""Per-key request and token windows shared by every ingress replica; the usage writer.

One named Ray actor per keys database (`ember-quota-<hash>` in namespace
`ember`), so the counts hold across ingress replicas and processes, not in
one replica's memory. Design choices:
- Sliding one-minute windows: requests per minute counts admitted requests,
  tokens per minute the prompt + completion tokens of finished ones. A key
  over either gets the seconds until its oldest entry leaves the window,
  which becomes the 429's Retry-After.
- Only keys with an rpm or tpm limit cost an actor round trip before their
  request; every request's usage row is sent fire-and-forget after it.
- Usage rows are buffered and written to the database once a second in one
  transaction (one writer for SQLite, and a small write per second instead of
  one per request). A killed actor loses at most that last second.
- Cost is measured, not priced from a list: every `sample_s` seconds the keeper
  counts each priced model's RUNNING replicas (Serve's status), charges
  replicas x USD/hour x seconds, and splits that among the keys by the tokens
  each used of that model in the interval (`spend` rows; an idle interval is
  one row without a key). A key's spend so far is what its budget is checked
  against.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict, deque

import ray

from ember.access.schema import SPEND, USAGE

WINDOW_S = 60.0
FLUSH_S = 1.0
SAMPLE_S = 10.0  # cost intervals: how often replicas are counted

logger = logging.getLogger("ember.access")


class Windows:
    """Sliding one-minute windows of requests and tokens per key (pure logic)."""

    def __init__(self) -> None:
        self.requests: dict[int, deque[float]] = defaultdict(deque)
        self.tokens: dict[int, deque[tuple[float, int]]] = defaultdict(deque)

    def admit(self, key_id: int, rpm: int | None, tpm: int | None, now: float) -> float | None:
        """None if the request may go ahead (and it is counted); else seconds to wait."""
        requests, tokens = self._prune(key_id, now)
        if rpm is not None and len(requests) >= rpm:
            return max(requests[0] + WINDOW_S - now, 0.001)
        if tpm is not None and sum(n for _, n in tokens) >= tpm:
            return max(tokens[0][0] + WINDOW_S - now, 0.001)
        requests.append(now)
        return None

    def spend(self, key_id: int, tokens: int, now: float) -> None:
        if tokens:
            self.tokens[key_id].append((now, tokens))

    def _prune(self, key_id: int, now: float):
        requests, tokens = self.requests[key_id], self.tokens[key_id]
        while requests and requests[0] <= now - WINDOW_S:
            requests.popleft()
        while tokens and tokens[0][0] <= now - WINDOW_S:
            tokens.popleft()
        return requests, tokens


def allocate(usd: float, tokens_by_key: dict[int | None, int]) -> list[tuple]:
    """One interval's cost split among keys by their tokens: [(key_id, usd, tokens)].

    An interval in which nobody used the model is idle cost: one row, key None.
    """
    total = sum(tokens_by_key.values())
    if total <= 0:
        return [(None, usd, 0)]
    return [(key, usd * n / total, n) for key, n in tokens_by_key.items() if n > 0]


def running_replicas(models: list[str]) -> dict[str, int]:
    """RUNNING replicas of each model's `LLMServer:<model>` deployment, over all apps."""
    from ray import serve

    counts = dict.fromkeys(models, 0)
    for app in serve.status().applications.values():
        for name, deployment in app.deployments.items():
            prefix, _, model = name.partition(":")
            if prefix == "LLMServer" and model in counts:
                counts[model] += sum(n for state, n in deployment.replica_states.items()
                                     if str(getattr(state, "value", state)) == "RUNNING")
    return counts


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=1000)
class QuotaKeeper:
    def __init__(self, url: str, sample_s: float = SAMPLE_S,
                 prices: dict[str, float] | None = None) -> None:
        from ember.access.store import engine_for

        self.engine = engine_for(url)
        self.windows = Windows()
        self.pending: list[dict] = []
        self.prices: dict[str, float] = dict(prices or {})  # model -> USD per replica-hour
        self.interval_tokens: dict[str, dict[int | None, int]] = defaultdict(
            lambda: defaultdict(int))
        self.interval_requests: dict[str, int] = defaultdict(int)
        self.recent: deque[tuple] = deque()  # (ts, model, usd, requests, tokens), 15 min
        self.key_names: dict[int, str] = {}
        self.spent = self._load_spent()  # key_id -> USD so far (budgets)
        self.sample_s, self.last_sample = sample_s, time.time()
        self._tasks: list[asyncio.Task] = []

    async def admit(self, key_id: int, rpm: int | None, tpm: int | None,
                    budget_usd: float | None = None) -> dict | None:
        """None if the request may go ahead (and it is counted), else why not."""
        if budget_usd is not None and self.spent.get(key_id, 0.0) >= budget_usd:
            return {"reason": "budget", "spent": self.spent[key_id]}
        wait = self.windows.admit(key_id, rpm, tpm, time.time())
        return None if wait is None else {"reason": "rate", "retry_after": wait}

    async def record(self, row: dict, usd_per_hour: float | None = None) -> None:
        """A finished request's usage row; its tokens count against the key's tpm."""
        if usd_per_hour is not None:
            self.prices[row["served_model"]] = usd_per_hour
        self._start_loops()
        self.pending.append(row)
        spent = row.get("prompt_tokens", 0) + row.get("completion_tokens", 0)
        if row.get("key_id") is not None:
            self.windows.spend(row["key_id"], spent, row["ts"])
        if row.get("served_model"):
            self.interval_tokens[row["served_model"]][row.get("key_id")] += spent
            self.interval_requests[row["served_model"]] += 1

    async def set_prices(self, prices: dict[str, float]) -> None:
        """USD per replica-hour of served models (each ingress replica sends its app's)."""
        self.prices.update(prices)
        self._start_loops()

    async def flush(self) -> int:
        """Write the buffered rows now; how many were written."""
        rows, self.pending = self.pending, []
        if rows:
            await asyncio.to_thread(self._insert, USAGE, rows)
        return len(rows)

    async def sample(self) -> list[dict]:
        """Close the cost interval: replicas x price x seconds, split by tokens; written."""
        if not self.prices:
            return []
        counts = await asyncio.to_thread(running_replicas, list(self.prices))
        now = time.time()
        seconds, self.last_sample = now - self.last_sample, now
        rows = []
        for model, price in self.prices.items():
            usd = counts.get(model, 0) * price * seconds / 3600
            tokens = self.interval_tokens.pop(model, {})
            for key_id, share, n in allocate(usd, tokens):
                rows.append({"ts": now, "model": model, "key_id": key_id,
                             "replicas": counts.get(model, 0), "seconds": seconds,
                             "tokens": n, "usd": share})
                if key_id is not None:
                    self.spent[key_id] = self.spent.get(key_id, 0.0) + share
        await self.flush()  # usage rows first: spend rows refer to the same keys
        await asyncio.to_thread(self._insert, SPEND, rows)
        await asyncio.to_thread(self._export, rows, counts, now)
        return rows

    def _export(self, rows: list[dict], counts: dict[str, int], now: float) -> None:
        """The interval into Prometheus: cost per key, replicas, 15-minute unit costs."""
        from ember.access.telemetry import cost_metrics

        m = cost_metrics()
        for row in rows:
            if row["usd"] > 0:
                m["cost"].inc(row["usd"], {"model": row["model"],
                                           "key": self._key_name(row["key_id"])})
        for model in self.prices:
            m["replicas"].set(counts.get(model, 0), {"model": model})
            requests = self.interval_requests.pop(model, 0)
            tokens = sum(r["tokens"] for r in rows if r["model"] == model)
            usd = sum(r["usd"] for r in rows if r["model"] == model)
            self.recent.append((now, model, usd, requests, tokens))
        while self.recent and self.recent[0][0] < now - 900:
            self.recent.popleft()
        for model in self.prices:
            usd, requests, tokens = (sum(r[i] for r in self.recent if r[1] == model)
                                     for i in (2, 3, 4))
            if requests:
                m["per_1k"].set(1000 * usd / requests, {"model": model})
            if tokens:
                m["per_1m"].set(1e6 * usd / tokens, {"model": model})

    def _key_name(self, key_id: int | None) -> str:
        if key_id is None:
            return "(idle)"
        if key_id not in self.key_names:
            import sqlalchemy as sa

            from ember.access.schema import API_KEYS

            with self.engine.connect() as connection:
                self.key_names = dict(connection.execute(
                    sa.select(API_KEYS.c.id, API_KEYS.c.name)).all())
        return self.key_names.get(key_id, str(key_id))

    def _insert(self, table, rows: list[dict]) -> None:
        with self.engine.begin() as connection:
            connection.execute(table.insert(), rows)

    def _load_spent(self) -> dict[int, float]:
        import sqlalchemy as sa

        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(SPEND.c.key_id, sa.func.sum(SPEND.c.usd))
                                      .where(SPEND.c.key_id.is_not(None))
                                      .group_by(SPEND.c.key_id)).all()
        return {key_id: usd for key_id, usd in rows}

    def _start_loops(self) -> None:
        if self._tasks and not any(t.done() for t in self._tasks):
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(FLUSH_S, self.flush)),
                       loop.create_task(self._every(self.sample_s, self.sample))]

    async def _every(self, seconds: float, action) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception:  # noqa: BLE001 - a failed write is retried next time
                logger.exception("QuotaKeeper: %s failed", action.__name__)


def keeper_name(url: str) -> str:
    return "ember-quota-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def get_keeper(url: str, sample_s: float = SAMPLE_S, prices: dict[str, float] | None = None):
    """The keeper of this database, started (detached) by the first replica that asks."""
    return QuotaKeeper.options(name=keeper_name(url), namespace="ember", get_if_exists=True,
                               lifetime="detached").remote(url, sample_s, prices)
