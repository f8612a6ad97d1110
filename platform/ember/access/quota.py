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
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict, deque

import ray

WINDOW_S = 60.0
FLUSH_S = 1.0


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


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=1000)
class QuotaKeeper:
    def __init__(self, url: str) -> None:
        from ember.access.store import engine_for

        self.engine = engine_for(url)
        self.windows = Windows()
        self.pending: list[dict] = []
        self._flusher: asyncio.Task | None = None

    async def admit(self, key_id: int, rpm: int | None, tpm: int | None) -> float | None:
        return self.windows.admit(key_id, rpm, tpm, time.time())

    async def record(self, row: dict) -> None:
        """A finished request's usage row; its tokens count against the key's tpm."""
        self._ensure_flusher()
        self.pending.append(row)
        if row.get("key_id") is not None:
            spent = row.get("prompt_tokens", 0) + row.get("completion_tokens", 0)
            self.windows.spend(row["key_id"], spent, row["ts"])

    async def flush(self) -> int:
        """Write the buffered rows now; how many were written."""
        rows, self.pending = self.pending, []
        if rows:
            await asyncio.to_thread(self._insert, rows)
        return len(rows)

    def _insert(self, rows: list[dict]) -> None:
        from ember.access.schema import USAGE

        with self.engine.begin() as connection:
            connection.execute(USAGE.insert(), rows)

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush()


def keeper_name(url: str) -> str:
    return "ember-quota-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def get_keeper(url: str):
    """The keeper of this database, started (detached) by the first replica that asks."""
    return QuotaKeeper.options(name=keeper_name(url), namespace="ember", get_if_exists=True,
                               lifetime="detached").remote(url)
