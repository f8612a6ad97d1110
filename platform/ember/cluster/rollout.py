"""Promote, roll out and roll back registered versions of a served adapter.

`ember models promote`, `rollout` and `rollback` (cli/models_cmd.py) run these.
The registry's aliases say what should serve (`ember.models.promotion`); the
rollout state says what the replicas serve (`ember.models.rollouts`); every
change here writes both, in the order that keeps the service answering: a new
version's adapter is registered before any key is sent to it, and a canary's
share drops to 0 before its alias goes.

A rollout (`run_rollout`) sends the canary `steps` percent of keys, one step per
`interval`, and watches the canary's usage rows against the stable version's
(`ember.access.version_health`) every `poll` seconds. It rolls back on its own
the moment a threshold is crossed, and completes at 100%: the canary becomes
the stable version and MLflow's `champion`, the old one `previous` (for
`ember models rollback` after the fact). It runs in the foreground, as
`kubectl rollout status` does; interrupted, the split stays where it was.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

from ember.access.version_health import Thresholds, breach, version_stats
from ember.errors import ClusterError
from ember.models import rollouts
from ember.models.adapters import find_adapter
from ember.models.promotion import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_MARGIN,
    PREVIOUS,
    Registry,
    check_gate,
)
from ember.models.rollouts import Rollout, Track

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass
class RolloutPlan:
    steps: list[int]
    interval_s: float = 60.0
    poll_s: float = 2.0
    thresholds: Thresholds = Thresholds()
    margin: float = DEFAULT_MARGIN
    force: bool = False
    reason: str | None = None


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ClusterError(f"--steps {text!r}: expected percentages, e.g. 10,50,100") from None
    if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise ClusterError(f"--steps {text!r}: percentages from 1 to 100, increasing "
                           f"(e.g. 10,50,100)")
    return steps


def resolve_target(state: Rollout | None, name: str, to: str) -> tuple[str, str]:
    """(registered model, version) for `--to`: a version number of the name's registered
    model, or a models:/NAME/VERSION URI."""
    if (match := MODEL_URI.match(to)) and match.group("version"):
        return match.group("name"), match.group("version")
    if to.isdigit():
        registered = state.registered if state else None
        if registered:
            return registered, to
        raise ClusterError(f"'{name}' does not come from the MLflow registry; name the version "
                           f"as models:/NAME/{to}")
    raise ClusterError(f"--to {to!r}: a version number or models:/NAME/VERSION")


def current_state(name: str, registry: Registry) -> Rollout:
    """The rollout serving `name`, or one made from the adapter served under it."""
    state = rollouts.load(name)
    if state is not None:
        return state
    adapter = find_adapter(name)
    if adapter is None:
        raise ClusterError(f"nothing is served as '{name}': serve its first version with "
                           f"`ember serve-model models:/NAME/VERSION --name {name}`")
    registered = version = None
    if adapter.source and (match := MODEL_URI.match(adapter.source)):
        registered = match.group("name")
        version = match.group("version") or registry.alias(registered, match.group("alias"))
    return Rollout(name=name, stable=Track(adapter.name, version), registered=registered)


def serve_version(dashboard: str, registry: Registry, state: Rollout, registered: str,
                  version: str, app: str, progress=print) -> Track:
    """The version's adapter, registered on the stable version's base (no restart)."""
    from ember.cluster.serve_models import add_model

    adapter_name = rollouts.version_adapter_name(state.name, version)
    source = f"models:/{registered}/{version}"
    registry.version(registered, version)  # a clear error for an unknown version
    existing = find_adapter(adapter_name)
    if existing is not None and existing.source == source:
        return Track(adapter_name, version)
    if existing is not None:
        raise ClusterError(f"an adapter named '{adapter_name}' is served from "
                           f"{existing.source}; remove it first")
    stable = find_adapter(state.stable.adapter)
    add_model(dashboard, source, adapter_name, app, registry.uri, progress,
              base=stable.base if stable else None)
    if find_adapter(adapter_name) is None:
        raise ClusterError(f"{source} is a full model: rollouts serve LoRA adapters on a "
                           f"shared base (serve a full model with `ember serve-model`)")
    return Track(adapter_name, version)


def promote(dashboard: str, registry: Registry, registered: str, version: str, app: str,
            margin: float = DEFAULT_MARGIN, force: bool = False, reason: str | None = None,
            progress=print) -> list[str]:
    """Gate, then `champion` -> version; served names that follow `registered` switch to
    it at once (a one-step rollout). The names switched."""
    check_gate(registry, registered, version, margin, force, reason, progress)
    switched = []
    for state in rollouts.list_rollouts():
        if state.registered == registered and state.stable.version != version:
            track = serve_version(dashboard, registry, state, registered, version, app,
                                  progress)
            complete(replace(state, canary=track, weight=100), registry, progress)
            switched.append(state.name)
    if not switched:
        registry.set_alias(registered, CHAMPION, version)
    progress(f"models:/{registered}/{version} is '{CHAMPION}'")
    return switched


def run_rollout(dashboard: str, registry: Registry, name: str, to: str, app: str,
                plan: RolloutPlan, database_url: str, progress=print) -> Rollout:
    state = current_state(name, registry)
    registered, version = resolve_target(state, name, to)
    if state.canary is not None and state.canary.version != version:
        raise ClusterError(f"'{name}' is already rolling out {state.canary.adapter}: finish "
                           f"it or `ember models rollback {name}` first")
    if state.stable.version == version and state.registered == registered:
        raise ClusterError(f"models:/{registered}/{version} already serves '{name}'")
    check_gate(registry, registered, version, plan.margin, plan.force, plan.reason, progress)
    state.registered = registered
    state.canary = serve_version(dashboard, registry, state, registered, version, app, progress)
    registry.set_alias(registered, CHALLENGER, version)
    started = _canary_since(state, version)
    for i, step in enumerate(plan.steps):
        if step == 100:
            return complete(state, registry, progress)
        state.weight = step
        state.note("canary", version=version, weight=step)
        rollouts.save(state)
        progress(f"{state.describe()}")
        advancing = i + 1 < len(plan.steps)  # a last step below 100 holds: no evidence needed
        reason = watch(state, started, plan, database_url, progress, advancing)
        if reason is not None:
            return rollback(state, registry, reason, progress)
    progress(f"holding at {state.weight}%: continue with `ember models rollout {name} --to "
             f"{version} --steps 100`, or `ember models rollback {name}`")
    return state


def _canary_since(state: Rollout, version: str) -> float:
    """When this canary began taking traffic (a resumed rollout keeps its evidence)."""
    since = None
    for event in state.history:
        if event["event"] in ("complete", "rollback"):
            since = None
        elif event["event"] == "canary" and event.get("version") == version and since is None:
            since = event["at"]
    return since or time.time()


def watch(state: Rollout, since: float, plan: RolloutPlan, database_url: str,
          progress=print, advancing: bool = True) -> str | None:
    """Watch the canary for one step: a reason to roll back, or None when the step is
    over: its interval passed, and, before advancing, at least `min_requests` judged."""
    step_ends = time.monotonic() + plan.interval_s
    waiting_noted = False
    while True:
        canary = version_stats(database_url, state.canary.adapter, since)
        stable = version_stats(database_url, state.stable.adapter, since)
        if (reason := breach(canary, stable, plan.thresholds)) is not None:
            progress(f"  canary {canary.describe()}; stable {stable.describe()}")
            return reason
        if time.monotonic() >= step_ends:
            if canary.requests >= plan.thresholds.min_requests or not advancing:
                progress(f"  canary {canary.describe()}; stable {stable.describe()}")
                return None
            if not waiting_noted:
                progress(f"  waiting for traffic: the canary has {canary.requests} of "
                         f"{plan.thresholds.min_requests} requests to judge")
                waiting_noted = True
        time.sleep(plan.poll_s)


def complete(state: Rollout, registry: Registry, progress=print) -> Rollout:
    """The canary becomes the stable version (and MLflow's champion)."""
    old, new = state.stable, state.canary
    state.previous, state.stable, state.canary, state.weight = old, new, None, 0
    state.note("complete", version=new.version, previous=old.version)
    rollouts.save(state)
    if state.registered and new.version:
        registry.set_alias(state.registered, CHAMPION, new.version)
        if old.version:
            registry.set_alias(state.registered, PREVIOUS, old.version)
        registry.drop_alias(state.registered, CHALLENGER)
    progress(f"rollout complete: {state.describe()}")
    return state


def rollback(state: Rollout, registry: Registry, reason: str, progress=print) -> Rollout:
    """A running canary's share to 0; without one, the previous stable version back."""
    if state.canary is not None:
        dropped = state.canary
        state.canary, state.weight = None, 0
        state.note("rollback", version=dropped.version, reason=reason)
        rollouts.save(state)  # keys go back first; then the registry says so
        if state.registered and dropped.version:
            registry.drop_alias(state.registered, CHALLENGER)
            registry.tag(state.registered, dropped.version, {"ember.rolled_back": reason})
        progress(f"ROLLED BACK {dropped.adapter}: {reason}; {state.describe()}")
        return state
    if state.previous is None:
        raise ClusterError(f"'{state.name}' has no rollout to roll back and no previous "
                           f"version")
    bad, state.stable, state.previous = state.stable, state.previous, None
    state.note("rollback", version=bad.version, reason=reason)
    rollouts.save(state)
    if state.registered and state.stable.version:
        registry.set_alias(state.registered, CHAMPION, state.stable.version)
        registry.drop_alias(state.registered, PREVIOUS)
        if bad.version:
            registry.tag(state.registered, bad.version, {"ember.rolled_back": reason})
    progress(f"ROLLED BACK to {state.stable.adapter}: {reason}; {state.describe()}")
    return state
