"""One real deployment for the whole integration session.

A local Ray cluster (its own, never the user's), the sample corpus ingested
through Ray Data into a Milvus Lite file of the session's own, Serve HTTP on a
free port, and the RAG application built from the default Serve config's
args, so the tests exercise what `ember up` deploys: real vLLM (CPU backend)
with the embedded SmolLM2, the real embedder, real Milvus Lite.
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


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "milvus.db")


@pytest.fixture(scope="session")
def sample_ingest(ray_cluster, milvus_uri):
    """The sample corpus in the collection the service searches by default."""
    from ember.data.config import IngestConfig
    from ember.data.pipeline import run_ingest

    return run_ingest(IngestConfig(paths=[str(SAMPLES)], collection=COLLECTION,
                                   milvus_uri=milvus_uri))


@pytest.fixture(scope="session")
def local_app_args(milvus_uri) -> dict:
    config = yaml.safe_load((REPO / "cluster" / "serve" / "local.yaml").read_text())
    args = config["applications"][0]["args"]
    args["rag"]["milvus_uri"] = milvus_uri
    assert args["rag"]["default_collection"] == COLLECTION
    return args


@pytest.fixture(scope="session")
def base_url(ray_cluster, local_app_args, sample_ingest) -> str:
    """URL of the deployed service (built through `serve_apps.rag:build_app`)."""
    from ray import serve

    from serve_apps.rag import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(local_app_args), name="ember", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="session")
def openai_client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
