"""Share one Milvus Lite data dir between processes through a Ray actor.

Milvus Lite locks its data dir to one process (a second opener fails with
DataDirLockedError), while Ember reads and writes from many: ingestion
tasks, the engine replicas' RAG routes, the CLI. On a Ray cluster a detached actor
owns the data dir and serves it over gRPC on loopback (Milvus Lite's own
server), and everyone connects by URI. Milvus Lite is single-node by nature;
at scale, point `milvus_uri` at a Milvus server and this is bypassed.
"""

from __future__ import annotations

import functools
import os
import socket

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
    from ember.service_actors import service_actor_options

    path = os.path.abspath(uri)
    server = _server_class().options(
        **service_actor_options(server_name(path), max_restarts=-1)).remote(path)
    return ray.get(server.uri.remote())


def server_name(path: str) -> str:
    return f"milvus-lite:{path}"


@functools.cache
def _server_class():
    import ray

    @ray.remote
    class MilvusLiteServer:
        def __init__(self, path: str) -> None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.path = path
            port_file = f"{path}.port"
            self.server, self.db, self.port = start_lite_server(path, _last_port(port_file))
            with open(port_file, "w") as f:
                f.write(str(self.port))

        def uri(self) -> str:
            return f"http://127.0.0.1:{self.port}"

    return MilvusLiteServer


# pymilvus clients send a keepalive ping every 10 s, idle or not; gRPC servers by
# default answer a second ping within 5 minutes with GOAWAY "too_many_pings", after
# which that cached connection fails. Milvus Lite's own server builder sets no
# keepalive policy, so Ember builds the same server with one that accepts them.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
]


def _last_port(port_file: str) -> int:
    """The port a previous server of this data dir listened on, if it is free again."""
    try:
        with open(port_file) as f:
            port = int(f.read().strip())
    except (OSError, ValueError):
        return 0
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def start_lite_server(path: str, port: int = 0):
    """Milvus Lite's gRPC server (milvus-lite 3.2.2 internals) on loopback (0: a free port)."""
    from concurrent import futures

    import grpc
    from milvus_lite.adapter.grpc import server as lite

    db = lite.MilvusLite(path)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=lite.DEFAULT_MAX_WORKERS),
        options=[("grpc.max_receive_message_length", lite._MAX_MESSAGE_SIZE),
                 ("grpc.max_send_message_length", lite._MAX_MESSAGE_SIZE),
                 *KEEPALIVE_OPTIONS])
    lite.milvus_pb2_grpc.add_MilvusServiceServicer_to_server(lite.MilvusServicer(db), server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, db, port
