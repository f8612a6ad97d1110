"""Asynchronous SDK client; same surface as `Client`, with `await` / `async for`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from ember.client import types as t


class AsyncClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.base_url = t.normalize_base_url(base_url)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=t.auth_headers(api_key), timeout=timeout
        )
        self._default_model: str | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def models(self) -> list[t.ModelInfo]:
        response = await self._http.get("/v1/models")
        t.raise_for_error(response.status_code, response.text)
        return t.parse_models(response.json())

    async def chat(
        self, messages: t.Messages, model: str | None = None, **sampling
    ) -> t.ChatResult:
        body = t.chat_body(messages, await self._model(model), stream=False, sampling=sampling)
        response = await self._http.post("/v1/chat/completions", json=body)
        t.raise_for_error(response.status_code, response.text)
        return t.parse_chat(response.json())

    async def stream_chat(
        self,
        messages: t.Messages,
        model: str | None = None,
        stream: t.ChatStream | None = None,
        **sampling,
    ) -> AsyncIterator[str]:
        state = stream if stream is not None else t.ChatStream()
        body = t.chat_body(messages, await self._model(model), stream=True, sampling=sampling)
        async for event in self._events("/v1/chat/completions", body):
            if delta := state.consume(event):
                yield delta

    async def retrieve(self, query: str, collection: str | None = None,
                       top_k: int | None = None, mode: str | None = None,
                       rerank: bool | None = None) -> list[t.Hit]:
        body = {"query": query, "collection": collection, "top_k": top_k, "mode": mode,
                "rerank": rerank}
        payload = await self._post("/v1/retrieve",
                                   {k: v for k, v in body.items() if v is not None})
        return [t.Hit(**h) for h in payload["hits"]]

    async def rag(self, question: str, collection: str | None = None,
                  top_k: int | None = None, **sampling) -> t.RagResult:
        return t.RagResult(**await self._post("/rag-generate", t.rag_body(
            question, collection, top_k, False, sampling)))

    async def stream_rag(self, question: str, collection: str | None = None,
                         top_k: int | None = None, stream: t.RagStream | None = None,
                         **sampling) -> AsyncIterator[str]:
        state = stream if stream is not None else t.RagStream()
        body = t.rag_body(question, collection, top_k, True, sampling)
        async for event in self._events("/rag-generate", body):
            if delta := state.consume(event):
                yield delta

    async def embed(self, texts: str | list[str], model: str = "all-minilm-l6-v2"
                    ) -> list[list[float]]:
        inputs = [texts] if isinstance(texts, str) else texts
        return t.embedding_vectors(await self._post("/v1/embeddings",
                                                    {"model": model, "input": inputs}))

    async def _events(self, path: str, body: dict) -> AsyncIterator[dict]:
        """The JSON events of a streamed (SSE) response, until [DONE]."""
        async with self._http.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                t.raise_for_error(response.status_code, (await response.aread()).decode())
            try:
                async for line in response.aiter_lines():
                    event = t.parse_sse_line(line)
                    if event is t.SSE_DONE:
                        return
                    if event is not None:
                        yield event
            except httpx.TransportError as exc:  # the connection was cut mid-stream
                raise t.stream_cut(exc) from exc
        raise t.stream_cut()

    async def _post(self, path: str, body: dict) -> dict:
        response = await self._http.post(path, json=body)
        t.raise_for_error(response.status_code, response.text)
        return response.json()

    async def _model(self, model: str | None) -> str:
        if model:
            return model
        if self._default_model is None:
            listed = await self.models()
            if not listed:
                raise t.EmberAPIError(404, "the server lists no models")
            self._default_model = listed[0].id
        return self._default_model
