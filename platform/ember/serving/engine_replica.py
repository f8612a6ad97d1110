"""The engine replica answers HTTP itself: Ember's serving hot path.

Before, a streamed token crossed three processes: engine replica -> (Ray
stream, batched every 50 ms) -> ingress replica -> (Ray stream) -> Serve proxy
-> client. That cost latency (the batching) or throughput (no batching), and
on a GPU it lost a quarter of plain vLLM's tokens/s (issue 11).

Now the first model's deployment *is* the Serve ingress (Serve's late-bound
ASGI ingress, the hook Ray's own direct streaming uses): each engine replica
builds one ASGI app in its own process, with its own event loop:

    AccessMiddleware (keys, limits, usage)         ember.access.gate
     BodyCheck (UTF-8, JSON depth: 400)            ember.serving.request_body
      HotPath
        POST /v1/chat/completions, /v1/completions, /v1/responses for this
          replica's model, a LoRA adapter on it, or a rolled-out name's version of one
          -> vLLM's own OpenAI server app on this replica's engine client
             (the code a plain `vllm serve` runs; no Ray hop per token; vLLM
             loads an adapter through Ember's resolver, `serving/adapters.py`;
             Ray's ingress has no Responses route, so only this path serves it)
        everything else (rag:* models, other models, an adapter that failed to
          load, /v1/models, /v1/retrieve, /health, ...) -> Ember's routes
          (`OpenAIRoutes` / `RAGRoutes`, bound on Ray's OpenAI FastAPI app by
          `routes_app`), whose calls to this
          replica's model run in-process (`LocalHandle`) and to other models
          through Serve handles, as before. Their non-2xx answers are reshaped as
          OpenAI errors where the frameworks underneath answered in their own
          shapes (`ember.serving.error_shape`); vLLM's app answers OpenAI errors itself.

Serve still routes each request to a replica (power of two choices over
replicas, autoscaling, placement groups for tensor parallelism): only the
request is routed; the stream goes from vLLM's server code to the proxy in
one hop, in whatever batches the proxy takes them.
"""

from __future__ import annotations

import importlib
import json
import logging
from types import SimpleNamespace
from typing import Any

from ember.access.request_state import (
    key_of,
    set_adapter_base,
    set_served_model,
    set_strip_usage,
)
from ember.ray_internals import (
    LLMServer,
    build_engine_asgi_app,
    build_openai_fastapi_app,
    engine_client,
    run_request,
    served_model_id,
)
from ember.serving.request_body import read_body, replay

logger = logging.getLogger("ember.engine_replica")
HOT_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
# where a streamed request is asked for a usage event (Responses always end with one)
STREAM_OPTIONS_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class EngineServer(LLMServer):
    """Ray's LLMServer whose engine records metrics per step and request, not per token
    (`engine_metrics`), and whose CPU engine worker gets its core first (`cpu_priority`)."""

    async def __init__(self, llm_config, *, cpu_worker_niceness: int | None = None) -> None:
        from ember.serving import engine_metrics

        engine_metrics.install()  # before the engine starts: Ray imports the logger then
        if llm_config.engine_kwargs.get("enable_lora"):
            from ember.serving.adapters import install_resolver

            install_resolver(llm_config.model_id)  # before vLLM's server code lists resolvers
        await super().__init__(llm_config)
        if llm_config.engine_kwargs.get("enable_lora"):
            from ember.serving.adapters import record_load_failures

            record_load_failures(engine_client(self))
        from ember.serving.cpu_priority import on_cpu_engine, prioritise_engine_workers

        if cpu_worker_niceness is not None and on_cpu_engine():
            threads = prioritise_engine_workers(cpu_worker_niceness)
            logger.info("engine worker threads at niceness %d: %d", cpu_worker_niceness,
                        threads)


class EmberServer(EngineServer):
    """An LLMServer whose replica also serves Ember's HTTP API (see the module doc)."""

    async def __init__(self, llm_config, *, routes_cls: str, route_map: str,
                   other_models: dict | None = None, model_cards: dict | None = None,
                   routes_kwargs: dict | None = None,
                   cpu_worker_niceness: int | None = None) -> None:
        # Ember's routes first: their access gate refuses to start without the keys
        # database, before minutes of engine start-up.
        handles = {**(other_models or {}), llm_config.model_id: LocalHandle(self)}
        self._routes = _load(routes_cls)(handles, dict(model_cards or {}),
                                         **(routes_kwargs or {}))
        self._route_map = _load(route_map)
        await super().__init__(llm_config, cpu_worker_niceness=cpu_worker_niceness)

    async def unfinished_requests(self) -> int:
        """Requests this replica's engine is still working on (through a Serve handle)."""
        return engine_client(self).get_num_unfinished_requests()

    async def __serve_build_asgi_app__(self):
        from ember.access.gate import AccessMiddleware
        from ember.serving.request_body import BodyCheck

        engine_app = await build_engine_asgi_app(self)
        hot_path = HotPath(served_model_id(self), self._routes, engine_app,
                           routes_app(self._routes, self._route_map))
        return AccessMiddleware(BodyCheck(hot_path), self._routes.gate)


class HotPath:
    """Send this replica's model's generation requests straight to vLLM's app.

    The body is read once here (the model decides the route); Ember's checks on
    it (empty `messages`, the key's models, per-request ceilings) run first,
    and a streamed request asks for usage (the gate meters it and strips the
    event if the client did not ask for it), exactly as on Ember's own routes.
    """

    def __init__(self, model_id: str, routes, engine_app, ember_app) -> None:
        self.model_id, self.routes = model_id, routes
        self.engine_app, self.ember_app = engine_app, ember_app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":  # vLLM's lifespan (its stats logger)
            await self.engine_app(scope, receive, send)
            return
        if not (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in HOT_PATHS):
            await self.ember_app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # the client left
            return
        data = _json_object(body)
        sent = data.get("model") if data is not None else None
        asked = sent if sent == self.model_id else self.routes.names.canonical(sent)
        served = self._served(asked, scope)
        if served is None:
            await self.ember_app(scope, replay(body, receive), send)
            return
        set_served_model(scope, served)
        checked = data if served == sent else {**data, "model": served}  # no copy: base
        if refusal := self.routes.hot_path_refusal(scope["path"], checked, key_of(scope), asked):
            await refusal(scope, receive, send)
            return
        rewrite = served != sent
        options = data.get("stream_options")
        if (data.get("stream") is True and scope["path"] in STREAM_OPTIONS_PATHS
                and (options is None or isinstance(options, dict))  # else vLLM's 400 names it
                and not (options or {}).get("include_usage")):
            set_strip_usage(scope)  # see openai_routes.with_usage
            data["stream_options"] = {**(options or {}), "include_usage": True}
            rewrite = True
        if rewrite:
            body = json.dumps({**data, "model": served}).encode()
            scope = {**scope, "headers": _with_length(scope["headers"], len(body))}
        await self.engine_app(scope, replay(body, receive), send)

    def _served(self, asked: str | None, scope: dict) -> str | None:
        """The model vLLM's server code answers `asked` with here: this replica's model, or
        an adapter on it (vLLM loads it through Ember's resolver); None: Ember's routes."""
        if asked == self.model_id:
            return asked
        if not isinstance(asked, str) or not self.routes.lora_bases:
            return None
        adapter = self.routes.hot_path_adapter(asked, self.model_id, scope)
        if adapter is None:
            return None
        set_adapter_base(scope, adapter.base)  # its tokens share the base's replica cost
        return adapter.name


class LocalHandle:
    """A stand-in for a DeploymentHandle to this replica's own LLMServer.

    Ray's ingress code calls `handle.options(stream=True).chat.remote(body,
    raw_request_info)` and iterates the chunks; here that runs in-process, with
    no stream batching (batching only pays across a Ray hop).
    """

    def __init__(self, server: LLMServer) -> None:
        self._server = server

    def options(self, **_: Any) -> LocalHandle:
        return self

    def __getattr__(self, method: str) -> SimpleNamespace:
        async def stream(body, raw_request_info=None):
            chunks = await run_request(self._server, body, method, raw_request_info)
            async for chunk in chunks:
                yield chunk

        return SimpleNamespace(remote=stream)


def routes_app(routes, route_map: dict):
    """Ray's OpenAI FastAPI app (its error handling, CORS, request ids) with
    `routes`' bound methods as the routes of `route_map`, answering OpenAI errors only."""
    from ember.serving.error_shape import ErrorShape, install_error_handlers

    app = build_openai_fastapi_app()
    install_error_handlers(app)
    for method_name, route in route_map.items():
        route(app)(getattr(routes, method_name))
    return ErrorShape(app)


def _json_object(body: bytes) -> dict | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # BodyCheck refused deep nesting; never a crash
        return None
    return data if isinstance(data, dict) else None


def _with_length(headers, length: int) -> list:
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]


def _load(path_or_obj):
    """A class named "package.module:Name" or "package.module.Name" (Serve args are JSON)."""
    if not isinstance(path_or_obj, str):
        return path_or_obj
    module, _, name = path_or_obj.rpartition(":" if ":" in path_or_obj else ".")
    return getattr(importlib.import_module(module), name)
