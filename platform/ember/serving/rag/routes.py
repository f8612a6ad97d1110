"""The RAG routes: Ember's OpenAI routes plus retrieval, on the engine replica.

- every OpenAI route of Ray's ingress, unchanged (inherited through `OpenAIRoutes`);
- `rag` / `rag:<collection>` as models in /v1/models: a chat with one of them
  retrieves, assembles a cited prompt and generates; the response carries
  `sources` (on the first chunk when streaming); `rag@<model>` and
  `rag:<collection>@<model>` answer with another served model (a fine-tuned
  one, say) instead of the default answering model;
- `/v1/embeddings` for the embedder, by its name in any case or an alias (its
  sentence-transformers name); an unknown model's 404 lists the embedder;
- plain endpoints: POST /v1/retrieve, /generate, /rag-generate; GET /health.

Answers are counted by endpoint and status, and retrievals timed, in Ray's
metrics (`ember.access.telemetry`: `ray_ember_rag_requests_total`,
`ray_ember_retrieval_seconds`).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request
from starlette.responses import JSONResponse, Response

from ember.access.telemetry import count_rag_request
from ember.openai_errors import openai_error
from ember.ray_internals import ChatCompletionRequest, EmbeddingRequest, ModelCard, ModelList
from ember.serving.model_names import ModelNames
from ember.serving.openai_routes import ROUTES as OPENAI_ROUTES
from ember.serving.openai_routes import OpenAIRoutes, request_key
from ember.serving.rag import streams
from ember.serving.rag.config import RAG_MODEL, RetrievalConfig
from ember.serving.rag.prompt import ContextTooLong, fit_sources
from ember.serving.rag.protocol import GenerateRequest, RagGenerateRequest, RetrieveRequest
from ember.serving.rag.retrieval import RetrievalError, Retriever

logger = logging.getLogger("ember.rag")
RAG_ROUTES = {
    "retrieve": lambda app: app.post("/v1/retrieve"),
    "generate": lambda app: app.post("/generate"),
    "rag_generate": lambda app: app.post("/rag-generate"),
    "health": lambda app: app.get("/health"),
}
ROUTES = {**OPENAI_ROUTES, **RAG_ROUTES}


class RAGRoutes(OpenAIRoutes):
    def __init__(self, llm_deployments, model_cards, *, lora_paths=None, embedder=None,
                 rag: dict | None = None, answering: dict | None = None,
                 embedder_aliases: list[str] | None = None, **kwargs) -> None:
        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths, **kwargs)
        self.rag = RetrievalConfig(**(rag or {}))
        self.names = ModelNames({**self.names.aliases,
                                 self.rag.embedder: list(embedder_aliases or [])})
        self.retriever = Retriever(self.rag.embedder, self.rag.milvus_uri, self.rag.max_top_k,
                                   self.rag.score_threshold, self.rag.search_settings(),
                                   embedder_handle=embedder)
        self.retriever.warm(self.rag.default_collection)
        self.answering = answering or {}  # {"model", "tokenizer", "max_model_len"}
        self._tokenizer = None

    # --- OpenAI routes -------------------------------------------------------
    async def models(self) -> ModelList:
        listed = await super().models()
        try:
            collections = await self._collections()
        except Exception as exc:  # noqa: BLE001 - the models still answer; /health says why
            logger.warning("/v1/models without collections: the vector store did not "
                           "answer (%s)", exc)
            collections = []
        extra = [RAG_MODEL] + [f"{RAG_MODEL}:{c}" for c in collections]
        listed.data += [ModelCard(id=name, object="model", owned_by="ember", permission=[],
                                  metadata={"kind": "rag", "generator": self.answering["model"]})
                        for name in extra]
        listed.data.append(ModelCard(id=self.rag.embedder, object="model", owned_by="ember",
                                     permission=[], metadata={"kind": "embedding"}))
        return listed

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        if not _is_rag(body.model):
            return await super().chat(body, request)
        collection, explicit = _parse_rag_model(body.model)
        if refusal := self._refusal(request, body, body.model, explicit):
            return refusal
        collection = collection or self.rag.default_collection
        answering = self.names.canonical(explicit) or self.answering["model"]
        served = [card.id for card in (await super().models()).data]
        if answering not in served:
            return openai_error(404, f"model '{answering}' (after '@' in '{body.model}') is "
                                f"not served; served models: {served}", "model")
        question = _last_user_text(body.messages)
        try:
            sources = (await self.retriever.retrieve(question, collection,
                                                     self.rag.top_k)).sources
            max_tokens = body.max_tokens or body.max_completion_tokens \
                or self.rag.default_max_tokens
            messages, kept = await self._fit(list(body.messages), sources, max_tokens)
        except (RetrievalError, ContextTooLong) as exc:
            return self._error(exc)
        llm_body = body.model_copy(update={"model": answering,
                                           "messages": messages, "max_tokens": max_tokens})
        response = await self._chat(llm_body, request)
        return streams.with_sources(response, [s.as_dict() for s in kept], body.model)

    def chat_models(self) -> list[str]:
        return [*super().chat_models(), RAG_MODEL, f"{RAG_MODEL}:<collection>"]

    def embedding_models(self) -> list[str]:
        return [self.rag.embedder]

    async def embeddings(self, body: EmbeddingRequest, request: Request) -> Response:
        body = self.named(body)
        if body.model != self.rag.embedder:  # 404 listing the embedder (no model: Ray's 400)
            return await super().embeddings(body, request)
        if refusal := self._embedding_refusal(request, body):
            return refusal
        given = getattr(body, "input", None)  # a chat-form request (`messages`) has none
        if given is None:
            return openai_error(400, f"'{body.model}' embeds 'input' (a string or a list of "
                                     f"strings); chat-form embeddings ('messages') are not "
                                     f"supported for it", "input")
        texts = [given] if isinstance(given, str) else list(given)
        if not texts or not all(isinstance(t, str) and t for t in texts):
            return openai_error(400, "'input' must be a non-empty string or list of strings",
                                "input")
        vectors = await self.retriever.embedder.embed.remote(texts)
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse({"object": "list", "model": body.model,
                             "data": [{"object": "embedding", "index": i, "embedding": v}
                                      for i, v in enumerate(vectors)],
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # --- plain endpoints -----------------------------------------------------
    async def retrieve(self, body: RetrieveRequest, request: Request) -> Response:
        collection = body.collection or self.rag.default_collection
        if refusal := self.gate.check_model(request_key(request), f"{RAG_MODEL}:{collection}"):
            return refusal
        try:
            found = await self.retriever.retrieve(body.query, collection,
                                                  self._top_k(body.top_k), body.mode,
                                                  body.rerank)
        except RetrievalError as exc:
            return self._error(exc, "retrieve")
        count_rag_request("retrieve", 200)
        return JSONResponse({"collection": collection, "query": body.query,
                             "mode": found.mode, "reranked": found.reranked,
                             "notices": found.notices,
                             "hits": [s.as_dict() for s in found.sources]})

    async def generate(self, body: GenerateRequest, request: Request) -> Response:
        chat = self._chat_request(body.model or self.answering["model"],
                                  [{"role": "user", "content": body.prompt}], body)
        if refusal := self._refusal(request, chat):
            return refusal
        response = await self._chat(chat, request)
        count_rag_request("generate", response.status_code)
        return streams.plain(response, lambda text, usage: {"text": text, "usage": usage})

    async def rag_generate(self, body: RagGenerateRequest, request: Request) -> Response:
        collection = body.collection or self.rag.default_collection
        if refusal := self._refusal(request, body, f"{RAG_MODEL}:{collection}"):
            return refusal
        try:
            sources = (await self.retriever.retrieve(body.question, collection,
                                                     self._top_k(body.top_k))).sources
            messages, kept = await self._fit([{"role": "user", "content": body.question}],
                                             sources, body.max_tokens)
        except (RetrievalError, ContextTooLong) as exc:
            return self._error(exc, "rag-generate")
        found = [s.as_dict() for s in kept]
        response = await self._chat(
            self._chat_request(self.answering["model"], messages, body), request)
        count_rag_request("rag-generate", response.status_code)
        return streams.plain(
            response, lambda text, usage: {"answer": text, "sources": found, "usage": usage},
            first_event={"sources": found})

    def _no_responses_reason(self, model: str) -> str | None:
        if _is_rag(model):
            return f"'{model}' is a RAG model: ask it on /v1/chat/completions"
        if model == self.rag.embedder:
            return f"'{model}' is an embedder: use /v1/embeddings"
        return super()._no_responses_reason(model)

    async def health(self) -> Response:
        """503 without the embedder; `degraded` (200) while the vector store or the
        usage keeper is away: chats, and searches of loaded collections, still answer."""
        try:
            info = await asyncio.wait_for(self.retriever.embedder.info.remote(), timeout=10)
        except Exception as exc:  # noqa: BLE001 - any failing embedder means unhealthy
            return JSONResponse({"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"},
                                status_code=503)
        problems, collections = [], None
        try:
            collections = await asyncio.wait_for(self._collections(), timeout=10)
        except Exception as exc:  # noqa: BLE001 - reported, the service keeps answering
            problems.append(f"vector store: {type(exc).__name__}: {exc}"[:300])
        return JSONResponse(self.health_report(
            problems, embedder=info, collections=collections,
            query_encoder=self.retriever.query_encoder_backend()))

    # --- helpers -------------------------------------------------------------
    def _top_k(self, requested: int | None) -> int:
        return self.rag.top_k if requested is None else requested

    async def _collections(self) -> list[str]:
        return await asyncio.to_thread(self.retriever.collections)

    async def _fit(self, conversation, sources, max_tokens: int):
        budget = self.answering["max_model_len"] - max_tokens
        return await asyncio.to_thread(fit_sources, conversation, sources,
                                       self._count_tokens, budget)

    def _count_tokens(self, messages: list[dict]) -> int:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.answering["tokenizer"])
        ids = self._tokenizer.apply_chat_template(messages, tokenize=True,
                                                  add_generation_prompt=True)
        return len(ids["input_ids"] if isinstance(ids, dict) else ids)

    def _chat_request(self, model: str, messages: list[dict], body) -> ChatCompletionRequest:
        return ChatCompletionRequest(
            model=model, messages=messages, max_tokens=body.max_tokens,
            temperature=body.temperature, stream=body.stream,
            stream_options={"include_usage": True} if body.stream else None)

    def _error(self, exc: Exception, endpoint: str = "chat") -> Response:
        status = getattr(exc, "status_code", 400)
        count_rag_request(endpoint, status)
        return openai_error(status, getattr(exc, "message", str(exc)),
                            getattr(exc, "param", None))


def _is_rag(model: str | None) -> bool:
    return model is not None and (model == RAG_MODEL or model.startswith(
        (f"{RAG_MODEL}:", f"{RAG_MODEL}@")))


def _parse_rag_model(model: str) -> tuple[str | None, str | None]:
    """`rag:<collection>@<model>` -> (collection, model); missing parts are None."""
    rest, _, answering = model.partition("@")
    _, _, collection = rest.partition(":")
    return collection or None, answering or None


def _last_user_text(messages) -> str:
    for message in reversed(list(messages)):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or ""
    return ""


