"""How a served version is doing, from Ember's own usage rows: what a rollout watches.

Every answered request leaves a usage row with the version that served it
(`served_model`), its status and its time to first byte. A canary is judged on
its rows since the rollout began, beside the stable version's over the same time:
- error rate: rows with status >= 400, except the limits' 402 and 429 (the gate's
  other refusals, 401/403/413, happen before a version is chosen and carry none);
  rows still open (status 0: the request is running) are not counted yet;
- TTFT p95 over its successful rows: at most `max_ttft_p95_ms` if set, else at most
  `ttft_ratio` times the stable version's p95 plus 50 ms (once the stable version
  has `min_requests` rows itself).
Nothing is judged before the canary has `min_requests` finished rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ember.access.schema import USAGE
from ember.access.store import opened

LIMIT_STATUSES = (402, 429)


@dataclass(frozen=True)
class VersionStats:
    requests: int
    errors: int
    ttft_p95_s: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def describe(self) -> str:
        ttft = f"{self.ttft_p95_s * 1000:.0f} ms" if self.ttft_p95_s is not None else "-"
        return f"{self.requests} requests, {self.errors} errors ({self.error_rate:.1%}), " \
               f"TTFT p95 {ttft}"


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.05
    max_ttft_p95_ms: float | None = None
    ttft_ratio: float = 1.5
    min_requests: int = 10


def version_stats(url: str, served_model: str, since: float) -> VersionStats:
    with opened(url) as engine, engine.connect() as connection:
        rows = connection.execute(
            sa.select(USAGE.c.status, USAGE.c.ttft_s)
            .where(USAGE.c.served_model == served_model, USAGE.c.ts >= since,
                   USAGE.c.status != 0)).all()
    counted = [r for r in rows if r.status not in LIMIT_STATUSES]
    errors = sum(1 for r in counted if r.status >= 400)
    ttfts = sorted(r.ttft_s for r in counted if r.status < 400 and r.ttft_s is not None)
    return VersionStats(len(counted), errors, _p95(ttfts))


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(0.95 * len(values)))]


def breach(canary: VersionStats, stable: VersionStats, limits: Thresholds) -> str | None:
    """Why the canary must be rolled back, or None (see the module doc)."""
    if canary.requests < limits.min_requests:
        return None
    if canary.error_rate > limits.max_error_rate:
        return (f"error rate {canary.error_rate:.1%} ({canary.errors} of {canary.requests}) "
                f"is above {limits.max_error_rate:.1%}")
    if canary.ttft_p95_s is None:
        return None
    if limits.max_ttft_p95_ms is not None:
        if canary.ttft_p95_s * 1000 > limits.max_ttft_p95_ms:
            return (f"TTFT p95 {canary.ttft_p95_s * 1000:.0f} ms is above "
                    f"{limits.max_ttft_p95_ms:.0f} ms")
        return None
    if stable.requests >= limits.min_requests and stable.ttft_p95_s is not None:
        ceiling = stable.ttft_p95_s * limits.ttft_ratio + 0.05
        if canary.ttft_p95_s > ceiling:
            return (f"TTFT p95 {canary.ttft_p95_s * 1000:.0f} ms is above {ceiling * 1000:.0f}"
                    f" ms ({limits.ttft_ratio:g} x the stable version's "
                    f"{stable.ttft_p95_s * 1000:.0f} ms + 50 ms)")
    return None
