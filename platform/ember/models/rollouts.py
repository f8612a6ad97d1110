"""Served names that map to weighted versions: canary rollouts of fine-tuned adapters.

A rollout is the serving view of an MLflow registered model's aliases: the name
clients send (`lantern-keeper`) answers from a *stable* version (the `champion`)
and, while a rollout runs, from a *canary* (the `challenger`) for `weight` percent
of API keys. Each version is a registered adapter of its own (`lantern-keeper.v2`,
`ember.models.adapters`), so versions share the base's engines and a version can
also be asked for by its own name, as OpenAI's dated snapshots can. An answer
carries the version's name in `model`, and so do its usage row and metrics:
usage, cost and the dashboard split by version with no extra bookkeeping.

Which keys see the canary: a key's position on a Weyl sequence (its id times the
golden ratio, mod 1, offset per rollout) below `weight` / 100. It is sticky (one
key, one version, for as long as the weight holds or grows: raising the weight
only adds keys) and even: keys created one after another split within about one
key of the weight. Requests without a key (auth off) are split at random.

State lives in `$EMBER_HOME/data/rollouts/NAME.json`, written whole and renamed
into place; replicas re-read a name at most every `CHECK_S` seconds.
"""

from __future__ import annotations

import json
import math
import random
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ember.config.paths import data_dir
from ember.errors import EmberError
from ember.models.adapters import NAME, check_name

CHECK_S = 1.0  # how stale a replica's view of a rollout may be
GOLDEN = (math.sqrt(5) - 1) / 2


class RolloutError(EmberError):
    pass


@dataclass(frozen=True)
class Track:
    """One served version: the adapter that serves it and its registry version."""

    adapter: str
    version: str | None = None  # the MLflow version; None for an adapter from a folder


@dataclass
class Rollout:
    name: str
    stable: Track
    registered: str | None = None  # the MLflow registered model the versions come from
    canary: Track | None = None
    weight: int = 0  # percent of keys on the canary
    previous: Track | None = None  # the stable before the last completed rollout
    history: list[dict] = field(default_factory=list)

    def pick(self, key_id: int | None) -> Track:
        """The version that answers this key (see the module doc)."""
        if self.canary is None or self.weight <= 0:
            return self.stable
        if self.weight >= 100:
            return self.canary
        position = key_position(self.name, key_id)
        return self.canary if position < self.weight / 100 else self.stable

    def note(self, event: str, **details) -> None:
        self.history.append({"at": time.time(), "event": event, **details})
        del self.history[:-50]

    def describe(self) -> str:
        stable = _label(self.stable)
        if self.canary is None:
            return f"{self.name}: {stable} (100%)"
        return (f"{self.name}: {stable} ({100 - self.weight}%), canary {_label(self.canary)} "
                f"({self.weight}%)")


def _label(track: Track) -> str:
    return f"v{track.version} ({track.adapter})" if track.version else track.adapter


def key_position(name: str, key_id: int | None) -> float:
    if key_id is None:
        return random.random()
    offset = (zlib.crc32(name.encode()) % 1000) / 1000
    return (key_id * GOLDEN + offset) % 1.0


def version_adapter_name(name: str, version: str) -> str:
    adapter = f"{name}.v{version}"
    check_name(adapter)
    return adapter


def rollouts_dir() -> Path:
    return data_dir() / "rollouts"


def save(rollout: Rollout) -> None:
    check_name(rollout.name)
    rollouts_dir().mkdir(parents=True, exist_ok=True)
    target = rollouts_dir() / f"{rollout.name}.json"
    staging = target.with_suffix(f".{time.time_ns()}.tmp")
    staging.write_text(json.dumps(asdict(rollout), indent=1))
    staging.replace(target)  # replicas never read a half-written state


def load(name: str | None) -> Rollout | None:
    """The rollout serving `name`, or None (also for names that cannot be one)."""
    if not name or not NAME.match(name):
        return None
    try:
        data = json.loads((rollouts_dir() / f"{name}.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RolloutError(f"the rollout state of '{name}' cannot be read: {exc}") from None
    return _from_dict(data)


def _from_dict(data: dict) -> Rollout:
    def track(value):
        return Track(**value) if value else None

    return Rollout(name=data["name"], stable=track(data["stable"]),
                   registered=data.get("registered"), canary=track(data.get("canary")),
                   weight=int(data.get("weight") or 0), previous=track(data.get("previous")),
                   history=list(data.get("history") or []))


def list_rollouts() -> list[Rollout]:
    if not rollouts_dir().is_dir():
        return []
    found = (load(p.stem) for p in sorted(rollouts_dir().glob("*.json")))
    return [r for r in found if r is not None]


def remove(name: str) -> None:
    (rollouts_dir() / f"{name}.json").unlink(missing_ok=True)


def adapters_in_use() -> dict[str, str]:
    """Adapter name -> the rollout that serves it (they must not be removed under it)."""
    used = {}
    for rollout in list_rollouts():
        for track in (rollout.stable, rollout.canary, rollout.previous):
            if track is not None:
                used[track.adapter] = rollout.name
    return used
