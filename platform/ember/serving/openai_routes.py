"""Ember's OpenAI routes: Ray's `OpenAiIngress` with clearer input errors.

Not a Serve ingress of its own: the engine replica (`engine_replica`) is the
app's ingress and binds these methods as routes on its own FastAPI app
(`ROUTES`), behind the access gate, beside its hot path.

Ray already validates most requests (vLLM names the limit for an over-long
prompt or an absurd `max_tokens`). This subclass adds what a client needs:
- every error as an OpenAI error object, message unwrapped (`ember.openai_errors`),
  unknown models as 404 listing the models of the kind asked for (chat and
  completions: the LLMs, adapters and rolled-out names; embeddings: the embedders);
- a served model answers to its id in any case and to its aliases
  (`ember.serving.model_names`), checked and routed as its own name;
- LoRA adapters registered for a served model (`ember.models.adapters`) answer as
  their own names: listed in /v1/models with their base as `parent`, and routed to
  the base's replicas with the adapter's name kept, where vLLM loads them
  (`ember.serving.adapters`);
- a name under rollout (`ember.models.rollouts`) answers from the version the
  request's key is assigned (stable or canary), under that version's name;
- an empty `messages` list refused up front, naming the field;
- the access gate's checks that need the parsed body (`ember.access.gate`):
  the key's models (403) and the per-request ceilings (400); a streamed
  request asks the engine for its usage (for the usage record and tokens per
  minute) and the gate strips that event if the client did not ask for it.
It extends Ray's class rather than re-implementing the protocol, so every
OpenAI route of Ray's ingress keeps working unchanged.
"""

from __future__ import annotations

import time
import typing
from types import SimpleNamespace

from fastapi import HTTPException, Request
from starlette.responses import JSONResponse, Response

from ember.access.config import AccessConfig
from ember.access.gate import AccessGate
from ember.access.request_state import (
    key_of,
    set_adapter_base,
    set_served_model,
    set_strip_usage,
    set_version,
    version_of,
)
from ember.models import rollouts
from ember.models.adapters import Adapter, find_adapter, list_adapters
from ember.openai_errors import openai_error
from ember.ray_internals import (
    DEFAULT_ENDPOINTS,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelCard,
    ModelList,
    OpenAIHTTPException,
    OpenAiIngress,
    ingress_model_cards,
)
from ember.serving.batch_routes import BATCH_ROUTES, BatchRoutes
from ember.serving.model_names import ModelNames

ADAPTER_CHECK_S = 2.0  # a registered or removed adapter is seen within this

# Ray's OpenAI routes, the Batch API, /health, and /v1/responses for the models the hot path
# does not serve it for; `engine_replica.routes_app` binds them
ROUTES = {**DEFAULT_ENDPOINTS, **BATCH_ROUTES, "health": lambda app: app.get("/health"),
          "responses": lambda app: app.post("/v1/responses")}


class OpenAIRoutes(BatchRoutes, OpenAiIngress):
    def __init__(self, llm_deployments, model_cards, *, access: dict | None = None,
                 prices: dict[str, float] | None = None, batch: dict | None = None,
                 lora_bases: list[str] | None = None, hot_path_model: str | None = None,
                 aliases: dict[str, list[str]] | None = None, **kwargs) -> None:
        super().__init__(llm_deployments, model_cards, **kwargs)
        self.names = ModelNames({name: (aliases or {}).get(name, []) for name in model_cards})
        self.lora_bases = set(lora_bases or [])  # served models whose engines load adapters
        self.hot_path_model = hot_path_model  # the model whose replica serves these routes
        self._adapters: dict[str, tuple[Adapter | None, float]] = {}
        self._rollouts: dict[str, tuple[rollouts.Rollout | None, float]] = {}
        access_config = AccessConfig(**(access or {}))
        self.gate = AccessGate(access_config, prices)  # the replica's AccessMiddleware's too
        self._init_batches(batch, access_config.url())
        self.gate.path_limits["/v1/files"] = (int(self.batch_settings.max_file_mb * 2**20),
                                              "batch.max_file_mb")

    def _refusal(self, request: Request, body, *models: str | None) -> Response | None:
        """403/400 for this key and body (its model, or `models` if given), or None.
        Prompt log-probabilities are checked on the model that will answer (body's)."""
        return (self.gate.check_model(request_key(request), *(models or (body.model,)))
                or self.gate.check_generation(body)
                or self._prompt_logprobs_refusal(body, isinstance(body, ChatCompletionRequest)))

    def _prompt_logprobs_refusal(self, body, chat: bool) -> Response | None:
        """400 for prompt log-probabilities on an engine that serves LoRA adapters. vLLM
        (0.32; seen on its CPU backend) computes them without the adapters' mapping once
        one is loaded, and its engine core dies (vllm-project/vllm#16668): one request
        would take every model on the replica down, base-model requests included."""
        asked = ("prompt_logprobs" if getattr(body, "prompt_logprobs", None) is not None
                 else "echo" if getattr(body, "echo", False) and (
                     chat or getattr(body, "logprobs", None) is not None) else None)
        if asked is None:  # nearly every request: nothing more to look up
            return None
        model = getattr(body, "model", None)
        adapter = self.adapter(model)
        if adapter is None and model not in self.lora_bases:
            return None
        engine = (f"LoRA adapter '{model}'" if adapter
                  else f"'{model}' (its engine serves LoRA adapters)")
        return openai_error(
            400, f"'{asked}' asks for prompt log-probabilities, which the {engine} cannot "
                 f"give: vLLM fails on them with LoRA on (vllm-project/vllm#16668). Leave "
                 f"'{asked}' out, or ask a model served without `lora:`.", param=asked)

    def _embedding_refusal(self, request: Request, body: EmbeddingRequest) -> Response | None:
        given = getattr(body, "input", None)  # chat-form embeddings carry `messages`
        count = 1 if isinstance(given, str) or given is None else len(given)
        return (self.gate.check_model(request_key(request), body.model)
                or self.gate.check_embedding_inputs(count))

    def hot_path_refusal(self, path: str, data: dict, key,
                         asked: str | None = None) -> Response | None:
        """The checks of `chat`/`completions` on a raw body (`engine_replica.HotPath`);
        the key's rights by `asked`, the name the client sent (a rolled-out name)."""
        if path == "/v1/chat/completions" and data.get("messages") == []:
            return _no_messages()
        body = SimpleNamespace(**data)
        return (self.gate.check_model(key, asked or data.get("model"))
                or self.gate.check_generation(body)
                or self._prompt_logprobs_refusal(body, path == "/v1/chat/completions"))

    def hot_path_adapter(self, model: str | None, base: str, scope: dict) -> Adapter | None:
        """The adapter on `base` that answers `model` (itself, or a rolled-out name's
        version for this request's key), for the hot path to hand to vLLM's server code
        directly; None leaves the request to these routes (not an adapter of `base`, or
        one that failed to load: its refusal is theirs)."""
        adapter = self.adapter(self._version(model, scope))
        if adapter is None or adapter.base != base or adapter.load_error:
            return None
        return adapter

    async def _chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        """Ray's chat route, after Ember's checks (internal calls come here directly)."""
        body = self._routed(body, request)  # RAG's answerer may be a rolled-out name
        set_served_model(request.scope, body.model)  # the usage row's LLM (RAG: the answerer)
        self._note_adapter(body.model, request)
        return await OpenAiIngress.chat(self, with_usage(body, request), request)

    def _note_adapter(self, model: str | None, request: Request) -> None:
        if (adapter := self.adapter(model)) is not None:
            set_adapter_base(request.scope, adapter.base)

    def adapter(self, model: str | None) -> Adapter | None:
        """The registered adapter `model` names, if its base is served here with LoRA on."""
        def find(name: str) -> Adapter | None:
            found = find_adapter(name)
            return found if found is not None and found.base in self.lora_bases else None

        return self._looked_up(self._adapters, model, find, ADAPTER_CHECK_S)

    def rollout(self, model: str | None) -> rollouts.Rollout | None:
        """The rollout serving `model` (an unreadable state keeps what was read last)."""
        def find(name: str) -> rollouts.Rollout | None:
            try:
                return rollouts.load(name)
            except rollouts.RolloutError:
                cached = self._rollouts.get(name)
                return cached[0] if cached else None

        return self._looked_up(self._rollouts, model, find, rollouts.CHECK_S)

    def _looked_up(self, cache: dict, model: str | None, find, max_age_s: float):
        """`find(model)`, read from disk at most every `max_age_s` per name: the registry
        may be on network storage, and this runs on the replica's event loop. None for the
        replica's own models and where no model here loads adapters."""
        if not self.lora_bases or model is None or model in ingress_model_cards(self):
            return None
        now = time.monotonic()
        cached = cache.get(model)
        if cached is None or now - cached[1] > max_age_s:
            cached = (find(model), now)
            if len(cache) >= 10_000:  # names clients made up
                cache.clear()
            cache[model] = cached
        return cached[0]

    def _routed(self, body, request: Request):
        """`body` for the version of a rolled-out name that this request's key sees."""
        version = self._version(body.model, request.scope)
        return body if version == body.model else body.model_copy(update={"model": version})

    def _version(self, model: str | None, scope: dict) -> str | None:
        """The adapter that answers `model` for this request: a rolled-out name's version
        for its key (chosen once per request), else `model` itself."""
        if (rollout := self.rollout(model)) is None:
            return model
        chosen = version_of(scope, model)
        if chosen is None:
            key = key_of(scope)
            chosen = rollout.pick(key.id if key else None).adapter
            set_version(scope, model, chosen)
        return chosen

    async def models(self) -> ModelList:
        listed = await super().models()
        adapters = list_adapters(self.lora_bases)
        listed.data += [_adapter_card(a) for a in adapters]
        names = {a.name for a in adapters}
        listed.data += [_rollout_card(r) for r in rollouts.list_rollouts()
                        if r.name not in names and self.adapter(r.stable.adapter)]
        return listed

    async def _get_model_id(self, model: str | None) -> str:
        if (adapter := self.adapter(model)) is not None:
            if adapter.load_error:
                raise OpenAIHTTPException(
                    400, f"The adapter '{model}' could not be loaded on '{adapter.base}': "
                    f"{adapter.load_error}. It is not retried: fix its files and serve it "
                    f"again (ember models remove {model}, then ember serve-model).",
                    type="adapter_load_failed")
            return adapter.base  # the base's replicas; the body keeps the adapter's name
        try:
            return await super()._get_model_id(model)
        except HTTPException as exc:  # Ray raises FastAPI's; re-shaped as an OpenAI error
            available = self.names.listing(self.chat_models())
            message = (
                f"The model '{model}' does not exist. Available models: {available}."
                if exc.status_code == 404
                else f"{exc.detail} Available: {available}."
            )
            raise OpenAIHTTPException(exc.status_code, message, type="invalid_model") from None

    def chat_models(self) -> list[str]:
        """What chat and completions requests may name: the LLMs, adapters, rolled-out names."""
        adapters = [a.name for a in list_adapters(self.lora_bases)]
        rolled = [r.name for r in rollouts.list_rollouts() if r.name not in adapters] \
            if self.lora_bases else []
        return sorted(ingress_model_cards(self)) + adapters + rolled

    def embedding_models(self) -> list[str]:
        """What /v1/embeddings may name here: the served models (Ray's route asks them)."""
        return sorted(ingress_model_cards(self))

    def unknown_model(self, model, names: list[str], route: str) -> Response:
        return openai_error(404, f"The model '{model}' does not exist for {route}. Available "
                                 f"models: {self.names.listing(names)}.", "model")

    def _model_required(self, names: list[str]) -> Response:
        return openai_error(400, f"'model' is required: name the model to answer "
                                 f"({self.names.listing(names)}).", "model")

    def named(self, body):
        """`body` naming its served model's id if it named it by an alias or in another case."""
        model = self.names.canonical(body.model)
        return body if model == body.model else body.model_copy(update={"model": model})

    async def _process_llm_request(
        self, body, call_method: str, raw_request: Request | None = None
    ) -> Response:
        try:
            return await super()._process_llm_request(body, call_method, raw_request)
        except OpenAIHTTPException as exc:
            return openai_error(exc.status_code, exc.message)

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        if not body.messages:
            return _no_messages()
        if not body.model:
            return self._model_required(self.chat_models())
        body = self.named(body)
        asked, body = body.model, self._routed(body, request)  # the key's rights: by `asked`
        if refusal := self._refusal(request, body, asked):
            return refusal
        return await self._chat(body, request)

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        if not body.model:
            return self._model_required(self.chat_models())
        body = self.named(body)
        asked, body = body.model, self._routed(body, request)
        if refusal := self._refusal(request, body, asked):
            return refusal
        self._note_adapter(body.model, request)
        return await super().completions(with_usage(body, request), request)

    async def embeddings(self, body: EmbeddingRequest, request: Request) -> Response:
        if not body.model:  # vLLM's models allow none; Ray's route then fails (a 500)
            return self._model_required(self.embedding_models())
        body = self.named(body)
        if refusal := self._embedding_refusal(request, body):
            return refusal
        if body.model not in self.embedding_models():
            return self.unknown_model(body.model, self.embedding_models(), "/v1/embeddings")
        return await super().embeddings(body, request)

    async def responses(self, request: Request) -> Response:
        """/v1/responses that the hot path did not take: it serves the Responses API from
        vLLM's own code for the ingress replica's model and its adapters only (Ray's
        ingress has no Responses route to reach other models through). The key's rights
        first, as on every route; then what the client can do instead."""
        try:
            data = await request.json()
        except ValueError:
            data = None
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, str) or not model:
            return openai_error(400, f"'model' is required: name the model to answer (e.g. "
                                     f"'{self.hot_path_model}').", param="model")
        if refusal := self.gate.check_model(request_key(request), model):
            return refusal
        if (reason := self._no_responses_reason(model)) is None:
            try:
                await self._get_model_id(model)  # 404 listing the models, 400 a failed adapter
            except OpenAIHTTPException as exc:
                return openai_error(exc.status_code, exc.message, param="model")
            reason = (f"'{model}' is served by another deployment: ask it on "
                      f"/v1/chat/completions")
        return openai_error(
            400, f"/v1/responses is served for '{self.hot_path_model}' and its adapters; "
                 f"{reason}.", param="model")

    def _no_responses_reason(self, model: str) -> str | None:
        """Why a model that exists cannot answer on /v1/responses, and what to do instead
        (None: not one of this app's own kinds of model)."""
        return None

    async def health(self) -> Response:
        return JSONResponse(self.health_report())

    def health_report(self, problems: list[str] | None = None, **parts) -> dict:
        """`ok`, or `degraded` with the reasons: the service answers, but something it
        relies on is away (usage accounting, the vector store). Open, like all /health."""
        reasons = list(problems or [])
        accounting = self.gate.health()
        if accounting["keeper"] != "ok":
            reasons.append(
                f"accounting: the usage keeper has been unavailable for "
                f"{accounting['down_for_s']:.0f}s ({accounting['reason']}); this replica "
                f"holds {accounting['buffered_rows']} usage rows for it and enforces "
                f"limits from its own view")
        if accounting["dropped_rows"]:
            reasons.append(f"accounting: {accounting['dropped_rows']} usage rows were dropped "
                           f"(outbox full, access.usage_buffer_rows)")
        from ray import serve

        # which replica answered: each /health lands on one of them
        return {"status": "degraded" if reasons else "ok", "reasons": reasons,
                "replica": serve.get_replica_context().replica_id.unique_id,
                "models": sorted(ingress_model_cards(self)), "accounting": accounting, **parts}

    async def model_data(self, model: str):
        model = self.names.canonical(model)
        if (adapter := self.adapter(model)) is not None:
            return _adapter_card(adapter)
        if (rollout := self.rollout(model)) is not None:
            return _rollout_card(rollout)
        try:
            return await super().model_data(model)
        except OpenAIHTTPException as exc:
            return openai_error(
                exc.status_code, f"The model '{model}' does not exist.", param="model"
            )


def _adapter_card(adapter: Adapter) -> ModelCard:
    return ModelCard(id=adapter.name, object="model", owned_by="ember", permission=[],
                     metadata={"kind": "adapter", "parent": adapter.base, "rank": adapter.rank})


def _rollout_card(rollout: rollouts.Rollout) -> ModelCard:
    versions = {rollout.stable.adapter: 100 - rollout.weight}
    if rollout.canary is not None:
        versions[rollout.canary.adapter] = rollout.weight
    return ModelCard(id=rollout.name, object="model", owned_by="ember", permission=[],
                     metadata={"kind": "rollout", "registered": rollout.registered,
                               "versions": versions})


def _no_messages() -> Response:
    return openai_error(400, "'messages' must contain at least one message.", param="messages")


def with_usage(body, request: Request):
    """A streamed request that asks for usage; the gate strips it if the client did not."""
    if not body.stream or (body.stream_options and body.stream_options.include_usage):
        return body
    set_strip_usage(request.scope)
    options_cls = typing.get_args(type(body).model_fields["stream_options"].annotation)[0]
    return body.model_copy(update={"stream_options": options_cls(include_usage=True)})


def request_key(request: Request):
    """The ApiKey the gate found for this request (None with auth off)."""
    return key_of(request.scope)
