"""A client of a Milvus Lite server that was killed and came back answers within seconds.

Real server processes (milvus-lite's gRPC server, as the `milvus-lite:` actor runs it),
killed with SIGKILL, down for 20 s, restarted on the same port. With gRPC's default
reconnect backoff the same client went on failing for ~16 s after the restart; with
`RECONNECT_OPTIONS` and the retriever's `on_store` it answers at once.
"""

import multiprocessing
import os
import signal
import time

from ember.serving.rag.retrieval import Retriever
from ember.vectorstore.milvus import MilvusStore, is_unreachable

DOWN_S = 20


def _serve(path: str, port: int, ready) -> None:
    from ember.vectorstore.lite_server import start_lite_server

    server, _, port = start_lite_server(path, port)
    ready.put(port)
    server.wait_for_termination()


def _start(context, path: str, port: int = 0):
    ready = context.Queue()
    process = context.Process(target=_serve, args=(path, port, ready), daemon=True)
    process.start()
    return process, ready.get(timeout=120)


def test_a_restarted_server_answers_the_same_client_at_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    path = str(tmp_path / "milvus.db")
    server, port = _start(context, path)
    try:
        store = MilvusStore(f"http://127.0.0.1:{port}")
        store.ensure_collection("docs", "all-minilm-l6-v2", 384)
        os.kill(server.pid, signal.SIGKILL)
        server.join()
        for _ in range(3):  # the client keeps trying while the server is down
            try:
                store.collections()
                raise AssertionError("a killed server answered")
            except Exception as exc:  # noqa: BLE001 - the error is what is checked
                assert is_unreachable(exc), exc
            time.sleep(DOWN_S / 3)
        server, _ = _start(context, path, port)
        retriever = Retriever("all-minilm-l6-v2", f"http://127.0.0.1:{port}", 10, None)
        retriever._store = store  # the replica's client, which saw the server die
        started = time.monotonic()
        assert retriever.collections() == ["docs"]
        assert time.monotonic() - started < 5
    finally:
        server.kill()
