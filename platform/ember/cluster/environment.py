"""What every Ember process that talks to Ray needs in its environment.

A light module (no Ray import): the CLI applies it before any command runs.
RAY_AUTH_MODE=token because a Ray 2.60 head requires its token and Ray's
clients default to sending none (docs/architecture.md); HF_HUB_OFFLINE because no model
hub is assumed; no usage stats.
"""

CLIENT_ENV = {"RAY_AUTH_MODE": "token", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}

# What a Ray node serving Ember needs from the start (`ray start` reads it once;
# the cluster files set the same for `ray up` and KubeRay), whatever the ingress:
# - workers at the raylet's priority: Ray starts them at nice 15, so on a small
#   machine the engine lost CPU to Ray's own daemons and to the clients it serves
#   (docs/architecture.md: "Serving hot path");
# - a dead worker's process group is killed with it: a SIGKILLed engine replica
#   would otherwise leave its vLLM engine processes (GBs each) running;
# - Serve's request path, lighter (Ray's "throughput optimized" settings, chosen
#   by measurement: docs/benchmarks.md "Serving hot path"): user code (the engine replica's
#   ASGI app) on the replica's own event loop and the router on its caller's
#   loop, no thread hops.
_NODE_BASE = {
    "RAY_process_group_cleanup_enabled": "true",
    "RAY_worker_niceness": "0",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}
# How HTTP reaches the engine replicas (docs/architecture.md, "Serving hot path"):
# - "proxy": Serve's Python proxy on each node, which loads Ember's stream guard (a
#   stream whose replica died ends with an error event, ember.serving.proxy_guard) and
#   streams from replicas over gRPC instead of one Ray object per ASGI message;
# - "haproxy": Serve's HAProxy ingress (Ray 2.56+): HAProxy on each node forwards each
#   request to an engine replica's own HTTP server (Serve's direct ingress), no Python
#   process and no Ray hop in between.
INGRESS_ENV = {
    "proxy": {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH":
              "ember.serving.proxy_guard:proxy_middlewares",
              "RAY_SERVE_PROXY_USE_GRPC": "1"},
    # Ray's high-throughput settings with it (request-path logs buffered, not to stderr;
    # the garbage collector's start-up objects frozen). A stopping replica keeps serving
    # 5 s, not Ray's 30 (sized for an outside load balancer's health checks): Serve's
    # controller itself tells each node's HAProxy, within a fraction of a second, and the
    # 30 s held every redeploy, `ember down` and test session. No stream guard: Serve would
    # load it into each replica's own HTTP server too, where it costs every event and
    # guards nothing (a dead replica takes it along).
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5"},
}
DEFAULT_INGRESS = "haproxy"
HAPROXY_MAXCONN = 4096  # Ray 2.60's default; Ray 2.58's (20,000) needs ~50,000 descriptors


def ingress_settings(ingress: str = DEFAULT_INGRESS) -> dict[str, str]:
    """The node settings for this ingress that are the same on every machine (the cluster
    files carry them: tests/unit/test_cluster_configs.py)."""
    if ingress not in INGRESS_ENV:
        raise ValueError(f"unknown ingress '{ingress}': one of {', '.join(INGRESS_ENV)}")
    return {**_NODE_BASE, **INGRESS_ENV[ingress]}


def node_env(ingress: str = DEFAULT_INGRESS) -> dict[str, str]:
    """What `ray start` needs on a node serving Ember with this ingress, on this machine."""
    env = ingress_settings(ingress)
    if ingress == "haproxy":
        env["RAY_SERVE_HAPROXY_MAXCONN"] = str(haproxy_maxconn())
    return env


def haproxy_maxconn() -> int:
    """HAProxy's connection ceiling within this machine's file-descriptor limit.

    HAProxy raises its own descriptor limit to about 2.5 per connection at start and
    refuses to start when the hard limit is lower ("Cannot raise FD limit"): with Ray
    2.58's default of 20,000 connections it needed 50,036 where the hard limit was 20,000.
    """
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return HAPROXY_MAXCONN
    return max(256, min(HAPROXY_MAXCONN, (hard - 1024) * 2 // 5))


NODE_ENV = node_env()
