"""Failed-auth throttling: a client address that sends many bad keys is refused for a while.

After `limit` failed authentications (401: missing, malformed, unknown or revoked
key) from one address within a one-minute window, every request from that address
gets 429 with Retry-After until the window ends, so guessing keys costs a minute per
`limit` guesses. Good keys from other addresses are unaffected.

Design choices:
- per replica, in memory: each engine replica counts the failures it sees (Serve
  spreads a client's requests over replicas, so with R replicas a client is refused
  after `limit` to R x `limit` bad keys). Sharing the counts through the usage keeper
  would cost a remote call per failure, and a guess costs the attacker as much.
- a fixed window per address, opened by its first failure: one small list per
  address, no timestamps per failure. Logged once per window, when it starts refusing.
- cheap for good keys: a request is checked against the blocked addresses only while
  there are some (`blocked` is an empty dict otherwise), with no allocation.
- the address is the ASGI client's (Serve's proxy passes it on). Behind a load balancer
  that hides it, every client shares the balancer's address: turn this off there
  (`access.failed_auth_per_minute: null`) or let the balancer throttle.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger("ember.access")
WINDOW_S = 60.0
MAX_ADDRESSES = 100_000  # beyond: expired windows are dropped (many addresses guessing)


class FailedAuthThrottle:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.windows: dict[str, list[float]] = {}  # address -> [window start, failures]
        self.blocked: dict[str, float] = {}  # address -> when its window ends

    def retry_after(self, address: str | None, now: float) -> int | None:
        """Seconds until `address` may try again, or None if it may now."""
        until = self.blocked.get(address)
        if until is None:
            return None
        if now < until:
            return max(1, math.ceil(until - now))
        del self.blocked[address]
        return None

    def failed(self, address: str | None, now: float) -> None:
        """Count one failed authentication from `address`."""
        window = self.windows.get(address)
        if window is None or now - window[0] >= WINDOW_S:
            if len(self.windows) >= MAX_ADDRESSES:
                self._drop_expired(now)
            window = self.windows[address] = [now, 0]
        window[1] += 1
        if window[1] == self.limit:
            self.blocked[address] = window[0] + WINDOW_S
            logger.warning("client %s sent %d requests with a bad API key within %.0f s: "
                           "refused (429) for %.0f s (access.failed_auth_per_minute)",
                           address, self.limit, now - window[0], window[0] + WINDOW_S - now)

    def _drop_expired(self, now: float) -> None:
        self.windows = {a: w for a, w in self.windows.items() if now - w[0] < WINDOW_S}
