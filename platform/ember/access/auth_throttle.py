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
- the address is the ASGI client's (Serve's Python proxy passes it on), or the last
  entry of `access.client_address_header` (e.g. X-Forwarded-For, the entry the load
  balancer in front appended) where one is configured. Behind Serve's HAProxy ingress
  (Ember's default) every request arrives from HAProxy's own address, which does not
  add X-Forwarded-For (Ray 2.60's template): counting by it would refuse every client
  after one client's bad keys, so there throttling is off unless a header is configured
  (logged at start).
"""

from __future__ import annotations

import logging
import math
import os

logger = logging.getLogger("ember.access")
WINDOW_S = 60.0
MAX_ADDRESSES = 100_000  # beyond: expired windows are dropped (many addresses guessing)


def build_throttle(config) -> FailedAuthThrottle | None:
    """The throttle an `AccessConfig` asks for, or None (auth off, or no address to count)."""
    if not config.auth or not config.failed_auth_per_minute:
        return None
    header = config.client_address_header
    behind_haproxy = os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
    if header is None and behind_haproxy:
        logger.warning("failed-auth throttling is off: behind Serve's HAProxy ingress every "
                       "request comes from HAProxy's address. Set access.client_address_header "
                       "(e.g. x-forwarded-for) if a load balancer in front sets it.")
        return None
    return FailedAuthThrottle(config.failed_auth_per_minute, header,
                              peer_is_client=not behind_haproxy)


class FailedAuthThrottle:
    def __init__(self, limit: int, header: str | None = None,
                 peer_is_client: bool = True) -> None:
        self.limit = limit
        self.header = header.lower().encode() if header else None
        self.peer_is_client = peer_is_client  # False behind HAProxy: the peer is HAProxy
        self.windows: dict[str, list[float]] = {}  # address -> [window start, failures]
        self.blocked: dict[str, float] = {}  # address -> when its window ends

    def address(self, scope, headers: dict[bytes, bytes]) -> str | None:
        """The client's address: the configured header's last entry, else the peer's;
        None (not counted) where neither tells clients apart."""
        if self.header is not None and (value := headers.get(self.header)):
            return value.decode("latin-1").rsplit(",", 1)[-1].strip()
        client = scope.get("client") if self.peer_is_client else None
        return client[0] if client else None

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
        if address is None:
            return
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
