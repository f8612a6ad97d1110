"""One real deployment for the whole integration session.

A local Ray cluster (its own, never the user's), the sample corpus ingested
through Ray Data into a Milvus Lite file of the session's own, Serve HTTP on a
free port, and the default Serve config (cluster/serve/local.yaml) applied
through Serve's REST API as `serve deploy` and `ember up` do, so the tests
exercise what `ember up` deploys: real vLLM (CPU backend) with the embedded
SmolLM2, the real embedder, real Milvus Lite. Declarative, not `serve.run`:
`ember serve-model` extends the deployed config, as on a user's cluster.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
COLLECTION = "docs"
SAMPLES = REPO / "samples" / "corpus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_fixed_port(start: int = 21000, end: int = 29999) -> int:
    """A free port below Linux's ephemeral range (32768-60999) and above Ray's worker
    ports (10002-19999), for a server that binds it later: a port from `free_port()`
    can be taken meanwhile by an outgoing connection (it was, once, HAProxy's stats port)."""
    import random

    for port in random.sample(range(start, end), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{end}")


@pytest.fixture(scope="session")
def ray_cluster():
    import os

    import ray
    from ember.cluster.environment import NODE_ENV

    # the node's processes get NODE_ENV, as `ember up` starts its head (the proxy's stream
    # guard, Serve's request path); this driver keeps its own: with Serve's router on the
    # caller's loop (a node setting) a test's handle would need an event loop
    # HAProxy's side ports, free ones: the session may run beside `ember up`'s cluster
    node_env = {**NODE_ENV, "RAY_SERVE_HAPROXY_STATS_PORT": str(free_fixed_port()),
                "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_fixed_port()),
                "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_fixed_port())}
    saved = {name: os.environ.get(name) for name in node_env}
    os.environ.update(node_env)
    ray.init(address="local", num_cpus=8, include_dashboard=True, dashboard_port=free_fixed_port(),
             log_to_driver=False)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name)
        else:
            os.environ[name] = value
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def dashboard_url(ray_cluster) -> str:
    from ray._private.worker import global_worker

    return f"http://{global_worker.node.address_info['webui_url']}"


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "milvus.db")


@pytest.fixture(scope="session")
def sample_ingest(ray_cluster, milvus_uri):
    """The sample corpus in the collection the service searches by default."""
    from ember.ingest.config import IngestConfig
    from ember.ingest.pipeline import run_ingest

    return run_ingest(IngestConfig(paths=[str(SAMPLES)], collection=COLLECTION,
                                   milvus_uri=milvus_uri))


@pytest.fixture(scope="session")
def access_url(tmp_path_factory) -> str:
    """The session's own keys and usage database."""
    return f"sqlite:///{tmp_path_factory.mktemp('access') / 'ember.db'}"


@pytest.fixture(scope="session")
def api_key(access_url) -> str:
    """An admin key of the session's database, as `ember up` makes one.

    Exported as EMBER_API_KEY, which Ember's SDK, CLI and benchmarks read, the
    way a user's shell would; the tests' direct HTTP calls send it explicitly.
    """
    import os

    from ember.access.keys import create_key

    key, _ = create_key(access_url, "admin", admin=True)
    previous = os.environ.get("EMBER_API_KEY")
    os.environ["EMBER_API_KEY"] = key
    yield key
    if previous is None:
        os.environ.pop("EMBER_API_KEY", None)
    else:
        os.environ["EMBER_API_KEY"] = previous


@pytest.fixture(scope="session")
def auth(api_key) -> dict:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """An MLflow store (SQLite) of the test module's own: training and sweep runs."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def serve_config(milvus_uri, access_url, tmp_path_factory) -> dict:
    """cluster/serve/local.yaml with the session's port, Milvus file and keys database."""
    config = yaml.safe_load((REPO / "cluster" / "serve" / "local.yaml").read_text())
    config["http_options"]["port"] = free_fixed_port()
    args = config["applications"][0]["args"]
    args["rag"]["milvus_uri"] = milvus_uri
    assert args["access"]["auth"] is True  # the shipped config guards the service
    args["access"]["database_url"] = access_url
    args["access"]["cost_sample_s"] = 2  # budgets are charged within seconds (test_access)
    args["access"]["keeper_replace_after_s"] = 10  # a silent keeper (test_service_actors)
    # Serve's HAProxy hides clients' addresses: failed-auth throttling counts by this header
    # (test_access), as behind a load balancer that sets it; requests without it are not counted
    args["access"]["client_address_header"] = "x-forwarded-for"
    # Two engine replicas (each answers HTTP): per-key limits must hold across them
    # (test_access), and one of them is killed under load (test_serving_faults).
    args["models"][0]["autoscaling"].update(min_replicas=2, max_replicas=2)
    # small Batch API ceilings, so test_batch_api can cross them cheaply
    args["batch"].update(files_dir=str(tmp_path_factory.mktemp("batches")), max_lines=300,
                         max_file_mb=1, sync_max_requests=8,
                         # the watchdog's test freezes an engine: it must not wait 10 minutes
                         stall_timeout_s=45)
    assert args["rag"]["default_collection"] == COLLECTION
    return config


@pytest.fixture(scope="session")
def local_app_args(serve_config) -> dict:
    return serve_config["applications"][0]["args"]


@pytest.fixture(scope="session")
def base_url(ray_cluster, dashboard_url, serve_config, sample_ingest, api_key) -> str:
    """URL of the deployed service (`serve_apps.rag:build_app`, applied like `serve deploy`)."""
    from ember.cluster.serve_status import wait_until_running
    from ray import serve
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(dashboard_url).deploy_applications(serve_config)
    wait_until_running(dashboard_url, ["ember"], timeout_s=900)
    yield f"http://127.0.0.1:{serve_config['http_options']['port']}"
    serve.shutdown()


@pytest.fixture(scope="session")
def openai_client(base_url, api_key):
    from openai import OpenAI

    return OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=300)
