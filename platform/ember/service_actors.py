"""Ember's service actors: detached, named, and never inside a replica's placement group.

The usage keeper, the Milvus Lite server and the batch runners are detached
actors that a replica starts on first use. Ray Serve LLM's engine replica
captures the tasks and actors it starts into its own placement group (its vLLM
workers need that), so an actor it started without saying otherwise lived in
that group and was killed with the replica when Serve removed the group; a
restartable one then waited forever to restart inside a group that no longer
existed (issue 22). Design choices:
- Every service actor is created with an explicit scheduling strategy, which
  Ray never replaces with the caller's placement group: node affinity to the
  head node (soft: any node if the head cannot take it). The head holds the
  cluster's state and is the node an autoscaler never removes.
- They reserve no CPU (`num_cpus=0`): they are light, and a logical CPU taken
  here is one an engine or an ingestion cannot use. The node gives them memory
  and a process like any actor.
- `service_actors()` lists them with where they live, for `ember status`, the
  tests and anyone asking "is the keeper alive, and where?".
"""

from __future__ import annotations

import logging

NAMESPACE = "ember"
HEAD_RESOURCE = "node:__internal_head__"

logger = logging.getLogger("ember.services")


def head_node_id() -> str | None:
    """The head node's id (it carries Ray's head marker resource), if it is alive."""
    import ray

    for node in ray.nodes():
        if node.get("Alive") and HEAD_RESOURCE in (node.get("Resources") or {}):
            return node["NodeID"]
    return None


def outside_placement_groups():
    """A scheduling strategy that keeps an actor out of its creator's placement group."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = head_node_id()
    return NodeAffinitySchedulingStrategy(head, soft=True) if head else "DEFAULT"


def service_actor_options(name: str, **overrides) -> dict:
    """`.options(...)` for a named, detached service actor (found again if it exists)."""
    return {"name": name, "namespace": NAMESPACE, "lifetime": "detached",
            "get_if_exists": True, "num_cpus": 0,
            "scheduling_strategy": outside_placement_groups(), **overrides}


def service_actors(address: str | None = None) -> list[dict]:
    """Ember's named actors: name, state, node, placement group (None: outside any)."""
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("ray_namespace", "=", NAMESPACE)],
                         detail=True, limit=1000, raise_on_missing_output=False)
    return [{"name": a.name, "class": a.class_name, "state": a.state, "pid": a.pid,
             "node_id": a.node_id, "placement_group_id": a.placement_group_id,
             "actor_id": a.actor_id}
            for a in actors if a.name]
