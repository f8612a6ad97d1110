"""Synchronous SDK client for an Ember (or any OpenAI-compatible) endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from ember.client import types as t


class Client:
    """Talks to a running Ember service.

    >>> client = Client("http://127.0.0.1:8000")
    >>> client.chat("What is the capital of France?", max_tokens=32).content
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.base_url = t.normalize_base_url(base_url)
        self._http = httpx.Client(
            base_url=self.base_url, headers=t.auth_headers(api_key), timeout=timeout
        )
        self._default_model: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def models(self) -> list[t.ModelInfo]:
        response = self._http.get("/v1/models")
        t.raise_for_error(response.status_code, response.text)
        return t.parse_models(response.json())

    def chat(self, messages: t.Messages, model: str | None = None, **sampling) -> t.ChatResult:
        body = t.chat_body(messages, self._model(model), stream=False, sampling=sampling)
        response = self._http.post("/v1/chat/completions", json=body)
        t.raise_for_error(response.status_code, response.text)
        return t.parse_chat(response.json())

    def chat_json(self, body: dict) -> dict:
        """POST a chat completion body as given; the server's JSON as is, with vLLM's
        extensions (prompt_logprobs, prompt_token_ids) that `chat` drops."""
        return self._post("/v1/chat/completions", body)

    def stream_chat(
        self,
        messages: t.Messages,
        model: str | None = None,
        stream: t.ChatStream | None = None,
        **sampling,
    ) -> Iterator[str]:
        """Yield text deltas as they arrive. Pass a `ChatStream` to read usage afterwards."""
        state = stream if stream is not None else t.ChatStream()
        body = t.chat_body(messages, self._model(model), stream=True, sampling=sampling)
        for event in self._events("/v1/chat/completions", body):
            if delta := state.consume(event):
                yield delta

    def retrieve(self, query: str, collection: str | None = None,
                 top_k: int | None = None, mode: str | None = None,
                 rerank: bool | None = None) -> list[t.Hit]:
        """Ranked chunks of `collection` (default: the service's) for `query`.

        `mode`: dense, keyword or hybrid; `rerank`: cross-encoder rescoring
        (defaults: the service's `rag.mode` / `rag.rerank`).
        """
        return [t.Hit(**h) for h in self.retrieve_raw(query, collection, top_k, mode,
                                                      rerank)["hits"]]

    def retrieve_raw(self, query: str, collection: str | None = None,
                     top_k: int | None = None, mode: str | None = None,
                     rerank: bool | None = None) -> dict:
        """/v1/retrieve's whole answer: hits, the mode used, `reranked`, `notices`."""
        body = {"query": query, "collection": collection, "top_k": top_k, "mode": mode,
                "rerank": rerank}
        return self._post("/v1/retrieve", {k: v for k, v in body.items() if v is not None})

    def rag(self, question: str, collection: str | None = None, top_k: int | None = None,
            **sampling) -> t.RagResult:
        """A grounded answer with the sources it was given."""
        return t.RagResult(**self._post("/rag-generate", t.rag_body(
            question, collection, top_k, False, sampling)))

    def stream_rag(self, question: str, collection: str | None = None, top_k: int | None = None,
                   stream: t.RagStream | None = None, **sampling) -> Iterator[str]:
        """Yield answer deltas; pass a `RagStream` to read `sources` and `usage`."""
        state = stream if stream is not None else t.RagStream()
        body = t.rag_body(question, collection, top_k, True, sampling)
        for event in self._events("/rag-generate", body):
            if delta := state.consume(event):
                yield delta

    def embed(self, texts: str | list[str], model: str = "all-minilm-l6-v2"
              ) -> list[list[float]]:
        inputs = [texts] if isinstance(texts, str) else texts
        return t.embedding_vectors(self._post("/v1/embeddings",
                                              {"model": model, "input": inputs}))

    def _events(self, path: str, body: dict) -> Iterator[dict]:
        """The JSON events of a streamed (SSE) response, until [DONE]."""
        with self._http.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                t.raise_for_error(response.status_code, response.read().decode())
            try:
                yield from t.sse_events(response.iter_lines())
            except httpx.TransportError as exc:  # the connection was cut mid-stream
                raise t.stream_cut(exc) from exc

    def _post(self, path: str, body: dict) -> dict:
        response = self._http.post(path, json=body)
        t.raise_for_error(response.status_code, response.text)
        return response.json()

    def _model(self, model: str | None) -> str:
        """The given model, else the first model the server lists."""
        if model:
            return model
        if self._default_model is None:
            listed = self.models()
            if not listed:
                raise t.EmberAPIError(404, "the server lists no models")
            self._default_model = listed[0].id
        return self._default_model
