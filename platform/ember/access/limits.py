"""Per-key request and token windows: the rpm/tpm limits, as pure logic.

Sliding one-minute windows: requests per minute counts admitted requests,
tokens per minute the prompt + completion tokens of finished ones. A key over
either gets the seconds until its oldest entry leaves the window, which becomes
the 429's Retry-After. The usage keeper (`metering.QuotaKeeper`) keeps one set
for the whole service; each replica keeps its own (`accounting.KeeperLink`), the
view it decides from while the keeper is away.
"""

from __future__ import annotations

from collections import defaultdict, deque

WINDOW_S = 60.0


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
