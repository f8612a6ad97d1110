"""Share one Milvus Lite data dir between processes through a Ray actor.

Milvus Lite locks its data dir to one process (a second opener fails with
DataDirLockedError), while Ember reads and writes from many: ingestion
tasks, the RAG ingress replicas, the CLI. On a Ray cluster a detached actor
owns the data dir and serves it over gRPC on loopback (Milvus Lite's own
server), and everyone connects by URI. Milvus Lite is single-node by nature;
at scale, point `milvus_uri` at a Milvus server and this is bypassed.
"""

from __future__ import annotations

import functools
import os

NAMESPACE = "ember"


def is_server_uri(uri: str) -> bool:
    return "://" in uri


def shared_uri(uri: str) -> str:
    """A URI every process can use: server URIs as-is, Lite files via the actor.

    Outside Ray (a plain script, unit tests) the file is opened in-process.
    """
    if is_server_uri(uri):
        return uri
    import ray

    if not ray.is_initialized():
        return uri
    path = os.path.abspath(uri)
    server = _server_class().options(
        name=f"milvus-lite:{path}", namespace=NAMESPACE, lifetime="detached",
        get_if_exists=True, num_cpus=0).remote(path)
    return ray.get(server.uri.remote())


@functools.cache
def _server_class():
    import ray

    @ray.remote
    class MilvusLiteServer:
        def __init__(self, path: str) -> None:
            from milvus_lite.adapter.grpc.server import start_server_in_thread

            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.path = path
            self.server, self.db, self.port = start_server_in_thread(
                data_dir=path, host="127.0.0.1", port=0)

        def uri(self) -> str:
            return f"http://127.0.0.1:{self.port}"

    return MilvusLiteServer
