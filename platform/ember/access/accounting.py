"""The replica's side of accounting: limits decided and usage delivered, keeper or not.

Every engine replica's gate talks to the shared `QuotaKeeper` through one
`KeeperLink`. Before issue 22, a keeper that could not be reached turned
every limited key's request into a 503 and silently dropped every usage row
(fire-and-forget calls to a dead actor). Design choices:
- Usage rows go to an outbox in the replica and are delivered in batches by
  one task, which waits for the keeper's acknowledgement (the rows are in the
  database by then) and re-sends what was not acknowledged. Each row has an
  id given here, unique in the table, so a re-sent row is written once: at
  least once, never twice. The outbox is bounded (`usage_buffer_rows`); past
  that the oldest rows are dropped and counted (metric, /health, log).
- Limits while the keeper is away come from a local view: this replica's own
  requests and tokens of the last minute (always kept, so it is warm when
  needed), and the key's spend as last seen from the keeper or read from the
  database. Each replica then enforces rpm/tpm on its own traffic (with N
  replicas a key may get up to N x its limit for that while); a spent budget
  stays refused. Only a budget that cannot be read at all answers an honest
  503 "accounting unavailable".
- A watch task pings the keeper (every `WATCH_S`, every `PROBE_S` while it is
  away), finds it again by name (another replica may have replaced it), and
  replaces one that has not answered for `replace_after_s` (stuck restarting,
  say): killed for good, then created anew, outside any placement group.
- `status()` feeds /health (degraded, with the reason), `ember status` and
  the `ember_service_up` / `ember_usage_rows_*` metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque

from ember.access.limits import Windows
from ember.access.metering import get_keeper, keeper_name

logger = logging.getLogger("ember.access")

CALL_TIMEOUT_S = 2.0  # an admit the keeper does not answer in this is decided locally
DELIVER_TIMEOUT_S = 15.0
BATCH_ROWS = 500
DELIVER_EVERY_S = 0.2
WATCH_S = 10.0
PROBE_S = 2.0
SPEND_CACHE_S = 5.0
SERVICE = "usage-keeper"


def keeper_errors() -> tuple[type[BaseException], ...]:
    """What a call to an actor that is dead, restarting or silent raises."""
    import ray

    return (ray.exceptions.RayActorError, ray.exceptions.RaySystemError, asyncio.TimeoutError)


class UsageOutbox:
    """Usage rows not yet acknowledged by the keeper, oldest first, at most `max_rows`."""

    def __init__(self, max_rows: int) -> None:
        self.rows: deque[dict] = deque()
        self.max_rows = max_rows
        self.dropped = 0
        self._open: dict[str, dict] = {}  # row id -> its open row, while queued

    def add(self, row: dict) -> int:
        """Queue a row; how many old rows had to be dropped to make room. A finished
        row whose open row is still queued takes that row's place instead."""
        queued = self._open.pop(row["row_id"], None)
        if queued is not None:
            queued.clear()
            queued.update(row)
            return 0
        if row.get("open"):
            self._open[row["row_id"]] = row
        self.rows.append(row)
        return self._trim()

    def take(self, count: int) -> list[dict]:
        batch = [self.rows.popleft() for _ in range(min(count, len(self.rows)))]
        for row in batch:
            self._open.pop(row["row_id"], None)
        return batch

    def put_back(self, batch: list[dict]) -> int:
        """An unacknowledged batch goes back in front, in its order."""
        self.rows.extendleft(reversed(batch))
        self._open.update((row["row_id"], row) for row in batch if row.get("open"))
        return self._trim()

    def _trim(self) -> int:
        dropped = 0
        while len(self.rows) > self.max_rows:
            self._open.pop(self.rows.popleft()["row_id"], None)
            dropped += 1
        self.dropped += dropped
        return dropped


class KeeperLink:
    def __init__(self, url: str, sample_s: float, prices: dict[str, float],
                 buffer_rows: int, replace_after_s: float) -> None:
        self.url, self.sample_s, self.prices = url, sample_s, prices
        self.name = keeper_name(url)
        self.replace_after_s = replace_after_s
        self.local = Windows()  # this replica's own traffic: the view used when alone
        self.known_spent: dict[int, float] = {}
        self.spend_read: dict[int, tuple[float, float]] = {}  # key -> (usd, read at)
        self.outbox = UsageOutbox(buffer_rows)
        self.handle = get_keeper(url, sample_s, prices)
        self.available, self.down_since, self.reason = True, None, ""
        self.replaced = 0
        self._silent: tuple[str, float] | None = None  # (actor id, not answering since)
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._db = None
        if prices:
            self.handle.set_prices.remote(prices)

    # --- limits --------------------------------------------------------------
    async def admit(self, key) -> dict:
        """The keeper's verdict, or the local view's while it is away (see the module doc)."""
        self._start()
        now = time.time()
        if self.available:
            try:
                verdict = await asyncio.wait_for(
                    self.handle.admit.remote(key.id, key.rpm, key.tpm, key.budget_usd),
                    CALL_TIMEOUT_S)
            except keeper_errors() as exc:
                self._lost(exc)
            else:
                self.known_spent[key.id] = verdict.get("spent", 0.0)
                if verdict["reason"] is None:
                    self.local.admit(key.id, None, None, now)  # counted here too
                return verdict
        return await self.local_verdict(key, now)

    async def local_verdict(self, key, now: float) -> dict:
        if key.budget_usd is not None:
            spent = await self._spent(key.id)
            if spent is None:
                return {"reason": "unavailable", "why": self.reason}
            if spent >= key.budget_usd:
                return {"reason": "budget", "spent": spent}
        wait = self.local.admit(key.id, key.rpm, key.tpm, now)
        return {"reason": None} if wait is None else {"reason": "rate", "retry_after": wait}

    async def _spent(self, key_id: int) -> float | None:
        """The key's spend: the larger of the keeper's last word and the database's."""
        cached = self.spend_read.get(key_id)
        if cached is None or time.time() - cached[1] > SPEND_CACHE_S:
            try:
                usd = await asyncio.to_thread(self._read_spend, key_id)
            except Exception as exc:  # noqa: BLE001 - any database error: cannot decide
                logger.warning("cannot read key %s's spend from the database: %s", key_id, exc)
                return self.known_spent.get(key_id)
            cached = self.spend_read[key_id] = (usd, time.time())
        return max(cached[0], self.known_spent.get(key_id, 0.0))

    def _read_spend(self, key_id: int) -> float:
        import sqlalchemy as sa

        from ember.access.schema import SPEND
        from ember.access.store import engine_for

        self._db = self._db or engine_for(self.url)
        with self._db.connect() as connection:
            return connection.execute(sa.select(sa.func.coalesce(sa.func.sum(SPEND.c.usd), 0.0))
                                      .where(SPEND.c.key_id == key_id)).scalar()

    # --- usage ---------------------------------------------------------------
    def record(self, row: dict) -> None:
        """A usage row (a finished request's, or an admitted one's `open` row): queued now,
        delivered by the outbox task."""
        self._start()
        row.setdefault("row_id", uuid.uuid4().hex)
        if row.get("key_id") is not None and not row.get("open"):
            tokens = row.get("prompt_tokens", 0) + row.get("completion_tokens", 0)
            self.local.spend(row["key_id"], tokens, row["ts"])
        self._count_drops(self.outbox.add(row))
        self._wake.set()

    async def _deliver_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(DELIVER_EVERY_S)  # let a batch gather
            self._wake.clear()
            while self.outbox.rows:
                if not self.available:
                    await asyncio.sleep(PROBE_S)  # the watch task brings it back
                    continue
                batch = self.outbox.take(BATCH_ROWS)
                try:
                    await asyncio.wait_for(self.handle.record_rows.remote(batch, self.prices),
                                           DELIVER_TIMEOUT_S)
                except keeper_errors() as exc:
                    self._count_drops(self.outbox.put_back(batch))
                    self._lost(exc)
            self._export()

    def _count_drops(self, dropped: int) -> None:
        if dropped:
            from ember.access.telemetry import service_metrics

            service_metrics()["dropped"].inc(dropped)
            logger.error("usage outbox full (%d rows, access.usage_buffer_rows): dropped %d "
                         "of the oldest rows, %d so far; the keeper is away: %s",
                         self.outbox.max_rows, dropped, self.outbox.dropped, self.reason)

    # --- the keeper's health ---------------------------------------------------
    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S if self.available else PROBE_S)
            await self.probe()

    async def probe(self) -> bool:
        """Ping the keeper found by name (made anew if it is gone); replace a silent one."""
        handle = self.handle
        try:
            handle = await asyncio.to_thread(get_keeper, self.url, self.sample_s, self.prices)
            await asyncio.wait_for(handle.ping.remote(), CALL_TIMEOUT_S * 2)
        except keeper_errors() as exc:
            self._lost(exc)
            await self._replace_if_silent(handle)
            return False
        except Exception as exc:  # noqa: BLE001 - e.g. the name is still held by a dying actor
            self._lost(exc)
            return False
        self.handle, self._silent = handle, None
        if not self.available:
            logger.warning("usage keeper is back after %.0fs; delivering %d buffered rows",
                           time.time() - self.down_since, len(self.outbox.rows))
            self.handle.set_prices.remote(self.prices)
            self.available, self.down_since, self.reason = True, None, ""
            self._wake.set()
        self._export()
        return True

    async def _replace_if_silent(self, handle) -> None:
        import ray

        from ember.ray_internals import actor_id

        ident, now = actor_id(handle), time.time()
        if self._silent is None or self._silent[0] != ident:
            self._silent = (ident, now)
            return
        if now - self._silent[1] < self.replace_after_s:
            return
        logger.error("usage keeper %s has not answered for %.0fs (%s): replacing it", ident,
                     now - self._silent[1], self.reason)
        ray.kill(handle, no_restart=True)
        self.replaced += 1
        self._silent = None

    def _lost(self, exc: BaseException) -> None:
        reason = _describe(exc)
        if self.available:
            logger.warning("usage keeper unavailable (%s): limits from this replica's view, "
                           "usage rows buffered until it is back", reason)
            self.available, self.down_since = False, time.time()
        self.reason = reason
        self._export()

    def status(self) -> dict:
        down_for = time.time() - self.down_since if self.down_since else 0.0
        return {"keeper": "ok" if self.available else "unavailable",
                "reason": None if self.available else self.reason,
                "down_for_s": round(down_for, 1), "buffered_rows": len(self.outbox.rows),
                "dropped_rows": self.outbox.dropped, "replaced": self.replaced}

    def _export(self) -> None:
        from ember.access.telemetry import service_metrics

        m = service_metrics()
        m["up"].set(1 if self.available else 0, {"service": SERVICE})
        m["buffered"].set(len(self.outbox.rows))

    def _start(self) -> None:
        """The outbox and watch tasks, on the replica's event loop (made on first use)."""
        if self._tasks and not any(t.done() for t in self._tasks):
            return
        for task in self._tasks:  # one ended with an error (logged): start both again
            task.cancel()
        loop = asyncio.get_running_loop()
        self._wake = self._wake or asyncio.Event()
        self._tasks = [loop.create_task(_logged(self._deliver_forever())),
                       loop.create_task(_logged(self._watch_forever()))]
        if self.outbox.rows:
            self._wake.set()


async def _logged(loop_body) -> None:
    try:
        await loop_body
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("accounting task failed; it restarts with the next request")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "it did not answer in time"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]
