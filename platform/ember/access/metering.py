"""Metering: the usage keeper, which writes usage rows and samples measured cost.

`QuotaKeeper` is one named Ray actor per keys database (`ember-quota-<hash>` in
namespace `ember`), shared by every engine replica: it holds the per-key request
and token windows (`limits.Windows`) across replicas and processes, writes the
replicas' usage rows, and charges each key its share of the replicas' measured
cost. Replicas reach it through `accounting.KeeperLink`, which keeps serving
(from a local view) while the keeper is away. Design choices:
- Only keys with an rpm, tpm or budget cost an actor round trip before their
  request; usage rows come in batches from each replica's outbox.
- A batch of usage rows is written to the database before the call returns:
  a row the keeper acknowledged is stored, and a replica re-sends what was
  not acknowledged. Each row carries the id its replica gave it (unique in
  the table), so a re-sent row is written once.
- Cost is measured, not priced from a list: every `sample_s` seconds the keeper
  counts each priced model's RUNNING replicas (Serve's status), charges
  replicas x USD/hour x seconds, and splits that among the keys by the tokens
  each used of that model in the interval (`spend` rows; an idle interval is
  one row without a key). A key's spend so far is what its budget is checked
  against. Replicas are counted by deployment name (`LLM_DEPLOYMENT_PREFIX`).
- The keeper is a service actor (`ember.service_actors`): it lives outside
  every replica's placement group, so a replica's death does not take it along.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import time
from collections import defaultdict, deque

import ray

from ember.access.limits import Windows
from ember.access.schema import SPEND, USAGE
from ember.deployment_names import LLM_DEPLOYMENT_PREFIX
from ember.service_actors import service_actor_options

SEEN_ROWS = 100_000  # row ids remembered, so a re-sent row is not counted in the windows twice
SAMPLE_S = 10.0  # cost intervals: how often replicas are counted

logger = logging.getLogger("ember.access")


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
            if prefix == LLM_DEPLOYMENT_PREFIX and model in counts:
                counts[model] += sum(n for state, n in deployment.replica_states.items()
                                     if str(getattr(state, "value", state)) == "RUNNING")
    return counts


@ray.remote(max_restarts=-1, max_concurrency=1000)
class QuotaKeeper:
    def __init__(self, url: str, sample_s: float = SAMPLE_S,
                 prices: dict[str, float] | None = None) -> None:
        from ember.access.store import engine_for

        self.engine = engine_for(url)
        self.windows = Windows()
        self.seen: dict[str, None] = {}  # recent row ids, oldest first
        self.rows_written = 0
        self.prices: dict[str, float] = dict(prices or {})  # model -> USD per replica-hour
        self.interval_tokens: dict[str, dict[int | None, int]] = defaultdict(
            lambda: defaultdict(int))
        self.interval_requests: dict[str, int] = defaultdict(int)
        self.recent: deque[tuple] = deque()  # (ts, model, usd, requests, tokens), 15 min
        self.key_names: dict[int, str] = {}
        self.spent = self._load_spent()  # key_id -> USD so far (budgets)
        self.sample_s, self.last_sample = sample_s, time.time()
        self._tasks: list[asyncio.Task] = []

    async def ping(self) -> dict:
        """Proof of life, with who answered (a replaced keeper has a new id)."""
        return {"actor_id": ray.get_runtime_context().get_actor_id(),
                "rows_written": self.rows_written}

    async def admit(self, key_id: int, rpm: int | None, tpm: int | None,
                    budget_usd: float | None = None) -> dict:
        """The verdict: `reason` None (admitted, and counted), "budget" or "rate";
        `spent` (the key's USD so far) lets the replica decide budgets alone later."""
        spent = self.spent.get(key_id, 0.0)
        if budget_usd is not None and spent >= budget_usd:
            return {"reason": "budget", "spent": spent}
        wait = self.windows.admit(key_id, rpm, tpm, time.time())
        if wait is not None:
            return {"reason": "rate", "retry_after": wait, "spent": spent}
        return {"reason": None, "spent": spent}

    async def record_rows(self, rows: list[dict], prices: dict[str, float] | None = None) -> int:
        """Finished requests' usage rows, written before this returns (the acknowledgement).

        A row seen before (re-sent after a lost answer) is neither counted nor written
        again; its tokens count against the key's tpm once. An `open` row (an admitted
        request's, status 0) is written, not counted; the finished row of its id replaces it.
        """
        if prices:
            self.prices.update(prices)
        self._start_loops()
        if any("key_hash" in row for row in rows):
            rows = await asyncio.to_thread(self._resolve_keys, rows)
        fresh = [row for row in rows
                 if not row.get("open") and row.get("row_id") not in self.seen]
        for row in fresh:
            self._count(row)
        if rows:
            await asyncio.to_thread(insert_usage, self.engine, rows)
        self.rows_written += len(fresh)
        return len(rows)

    def _resolve_keys(self, rows: list[dict]) -> list[dict]:
        """Rows the Serve proxy wrote for a replica that died before answering carry the
        bearer key's hash, not its id; a hash this database does not know is not ours."""
        import sqlalchemy as sa

        from ember.access.schema import API_KEYS

        kept = []
        for row in rows:
            if "key_hash" not in row:
                kept.append(row)
                continue
            digest = row.pop("key_hash")
            if digest is None:
                kept.append(row)
                continue
            with self.engine.connect() as connection:
                row["key_id"] = connection.execute(sa.select(API_KEYS.c.id).where(
                    API_KEYS.c.key_hash == digest)).scalar()
            if row["key_id"] is not None:
                kept.append(row)
        return kept

    def _count(self, row: dict) -> None:
        if row.get("row_id"):
            self.seen[row["row_id"]] = None
            if len(self.seen) > SEEN_ROWS:
                del self.seen[next(iter(self.seen))]
        spent = row.get("prompt_tokens", 0) + row.get("completion_tokens", 0)
        if row.get("key_id") is not None:
            self.windows.spend(row["key_id"], spent, row["ts"])
        engine = row.get("engine") or row.get("served_model")  # an adapter: its base
        if engine:
            self.interval_tokens[engine][row.get("key_id")] += spent
            self.interval_requests[engine] += 1

    async def set_prices(self, prices: dict[str, float]) -> None:
        """USD per replica-hour of served models (each engine replica sends its app's)."""
        self.prices.update(prices)
        self._start_loops()

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
        self._tasks = [loop.create_task(self._every(self.sample_s, self.sample))]

    async def _every(self, seconds: float, action) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception:  # noqa: BLE001 - a failed sample is taken again next time
                logger.exception("QuotaKeeper: %s failed", action.__name__)


def keeper_name(url: str) -> str:
    return "ember-quota-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def insert_usage(engine, rows: list[dict]) -> None:
    """Insert usage rows by `row_id`: a row whose id is stored is skipped, unless the
    stored one is still open (status 0), which the new one replaces."""
    table = USAGE
    rows = [{k: v for k, v in row.items() if k not in ("open", "engine")} for row in rows]
    if not rows:
        return
    if engine.dialect.name in ("sqlite", "postgresql"):
        dialect = importlib.import_module(f"sqlalchemy.dialects.{engine.dialect.name}")
        statement = dialect.insert(table)
        columns = [c.name for c in table.columns if c.name not in ("id", "row_id")]
        statement = statement.on_conflict_do_update(
            index_elements=["row_id"], set_={c: statement.excluded[c] for c in columns},
            where=table.c.status == 0)
    else:  # other databases: drop the open rows about to be replaced, skip stored ones
        statement = table.insert()
        rows = _unstored(engine, rows)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:  # an executemany takes rows of one shape (the guard's differ)
        groups[tuple(sorted(row))].append(row)
    with engine.begin() as connection:
        for group in groups.values():
            connection.execute(statement, group)


def _unstored(engine, rows: list[dict]) -> list[dict]:
    import sqlalchemy as sa

    ids = [r["row_id"] for r in rows if r.get("row_id")]
    with engine.begin() as connection:
        connection.execute(USAGE.delete().where(USAGE.c.row_id.in_(ids), USAGE.c.status == 0))
        stored = set(connection.execute(sa.select(USAGE.c.row_id)
                                        .where(USAGE.c.row_id.in_(ids))).scalars())
    return [r for r in rows if r.get("row_id") not in stored]


def get_keeper(url: str, sample_s: float = SAMPLE_S, prices: dict[str, float] | None = None):
    """The keeper of this database, started (detached, outside any placement group)
    by the first replica that asks."""
    return QuotaKeeper.options(**service_actor_options(keeper_name(url))).remote(
        url, sample_s, prices)
