"""A stream whose connection is cut mid-body raises in Ember's SDK, sync and async.

Behind Serve's HAProxy ingress, a replica that dies mid-stream leaves HAProxy only one
thing to do: close the client's connection before the chunked body's last chunk
(docs/architecture.md, "When a stream breaks"). The server here does exactly that, over a
real socket: two SSE events, then the connection closes with no terminating chunk.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from ember.client import AsyncClient, Client, EmberAPIError

EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'


def serve_once_then_cut(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with connection:
        request = b""
        while b"\r\n\r\n" not in request:
            request += connection.recv(65536)
        head, _, rest = request.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        while len(rest) < length:
            rest += connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                           b"transfer-encoding: chunked\r\n\r\n")
        for _ in range(2):
            connection.sendall(b"%x\r\n%s\r\n" % (len(EVENT), EVENT))
        # no b"0\r\n\r\n": the body is cut, as HAProxy cuts it when its server dies


@pytest.fixture
def cutting_server():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    thread = threading.Thread(target=serve_once_then_cut, args=(listener,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    thread.join(timeout=5)
    listener.close()


def test_sync_stream_chat_raises_on_a_cut_connection(cutting_server):
    client = Client(cutting_server, api_key="none")
    received = []
    with pytest.raises(EmberAPIError, match="connection was cut") as cut:
        for delta in client.stream_chat("hello", model="m"):
            received.append(delta)
    assert cut.value.status_code == 502
    assert received == ["Hi", "Hi"]  # what came before the cut was given, then the error


def test_async_stream_chat_raises_on_a_cut_connection(cutting_server):
    async def consume() -> list[str]:
        client = AsyncClient(cutting_server, api_key="none")
        received = []
        try:
            async for delta in client.stream_chat("hello", model="m"):
                received.append(delta)
        finally:
            await client.aclose()
        return received

    with pytest.raises(EmberAPIError, match="connection was cut"):
        asyncio.run(consume())
