"""One real deployment for the whole integration session.

A local Ray cluster (its own, never the user's), Serve HTTP on a free port,
and the OpenAI application built from the default Serve config's args, so the
tests exercise exactly what `ember up` deploys: real vLLM (CPU backend) with
the embedded SmolLM2.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


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
def local_app_args() -> dict:
    config = yaml.safe_load((REPO / "cluster" / "serve" / "local.yaml").read_text())
    return config["applications"][0]["args"]


@pytest.fixture(scope="session")
def base_url(ray_cluster, local_app_args) -> str:
    """URL of the deployed service (built through `serve_apps.llm:build_app`)."""
    from ray import serve

    from serve_apps.llm import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(local_app_args), name="ember", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="session")
def openai_client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
