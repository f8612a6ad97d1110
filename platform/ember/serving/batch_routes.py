"""The Batch API routes: /v1/files, /v1/batches, and the synchronous /v1/batch.

The asynchronous routes hand the work to `ember.batch.service` (a separate vLLM
engine on Ray Data LLM, state in the access database). `/v1/batch` is for small
batches: its requests go to the online engine, `sync_concurrency` at a time, and
the answer is their results in order.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import Request
from starlette.responses import JSONResponse, Response

from ember.access.request_state import key_of
from ember.batch.config import BatchServiceConfig
from ember.batch.requests import BATCH_URLS
from ember.batch.service import (
    UNFINISHED,
    BatchApiError,
    BatchRunner,
    BatchStore,
    batch_object,
    file_object,
    finalize,
    results_path,
    runner_name,
)
from ember.openai_errors import error_body, openai_error

BATCH_ROUTES = {
    "files_create": lambda app: app.post("/v1/files"),
    "file_get": lambda app: app.get("/v1/files/{file_id}"),
    "file_content": lambda app: app.get("/v1/files/{file_id}/content"),
    "batches_create": lambda app: app.post("/v1/batches"),
    "batches_list": lambda app: app.get("/v1/batches"),
    "batch_get": lambda app: app.get("/v1/batches/{batch_id}"),
    "batch_cancel": lambda app: app.post("/v1/batches/{batch_id}/cancel"),
    "batch_sync": lambda app: app.post("/v1/batch"),
}


def _owner(request: Request) -> int | None:
    """The key a new file or batch belongs to (None with auth off)."""
    key = key_of(request.scope)
    return None if key is None else key.id


def _key_id(request: Request) -> int | None:
    """Whose files and batches a request may see: its key's; admins and auth-off: all."""
    key = key_of(request.scope)
    return None if key is None or getattr(key, "admin", False) else key.id


def _error(exc: BatchApiError) -> Response:
    return openai_error(exc.status_code, exc.message, exc.param)


class BatchRoutes:
    """Mixed into `OpenAIRoutes`; `_init_batches` is called from its __init__."""

    def _init_batches(self, batch: dict | None, database_url: str) -> None:
        batch = batch or {}
        self.batch_settings = BatchServiceConfig(**batch.get("settings", {}))
        self.batch_models: dict = batch.get("models", {})
        self._batch_db_url = database_url
        self._batch_store: BatchStore | None = None

    def _store(self) -> BatchStore:
        if not self.batch_settings.enabled:
            raise BatchApiError(404, "the Batch API is off on this service (batch.enabled)")
        if self._batch_store is None:
            self._batch_store = BatchStore(self._batch_db_url, self.batch_settings.files_dir)
        return self._batch_store

    # --- files ------------------------------------------------------------------
    async def files_create(self, request: Request) -> Response:
        try:
            store = self._store()
            form = await request.form()
            upload, purpose = form.get("file"), form.get("purpose")
            if purpose != "batch":
                raise BatchApiError(400, f"'purpose' must be 'batch', got {purpose!r}",
                                    "purpose")
            if upload is None or isinstance(upload, str):
                raise BatchApiError(400, "a multipart 'file' field is required", "file")
            content = await upload.read()
            lines = self._check_upload(content)
            row = await asyncio.to_thread(store.add_file, _owner(request),
                                          upload.filename or "upload.jsonl", "batch",
                                          content, lines)
        except BatchApiError as exc:
            return _error(exc)
        return JSONResponse(file_object(row))

    def _check_upload(self, content: bytes) -> int:
        limit = self.batch_settings.max_file_mb
        if len(content) > limit * 2**20:
            raise BatchApiError(413, f"the file is {len(content) / 2**20:.1f} MB; the limit "
                                     f"is {limit:g} MB (batch.max_file_mb)", "file")
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise BatchApiError(400, "the file is not UTF-8 text (JSONL expected)",
                                "file") from None
        lines = [t for t in text.splitlines() if t.strip()]
        if not lines:
            raise BatchApiError(400, "the file has no lines (JSONL expected)", "file")
        try:
            first = json.loads(lines[0])
        except json.JSONDecodeError:
            first = None
        if not isinstance(first, dict):
            # one bad line later on is that line's error; a bad first line is not JSONL
            raise BatchApiError(400, "the file is not JSONL: its first line is not a JSON "
                                     "object", "file")
        return len(lines)

    async def file_get(self, file_id: str, request: Request) -> Response:
        try:
            row = await asyncio.to_thread(self._store().file, file_id, _key_id(request))
        except BatchApiError as exc:
            return _error(exc)
        return JSONResponse(file_object(row))

    async def file_content(self, file_id: str, request: Request) -> Response:
        try:
            row = await asyncio.to_thread(self._store().file, file_id, _key_id(request))
            with open(row["path"], "rb") as f:
                content = f.read()
        except BatchApiError as exc:
            return _error(exc)
        except FileNotFoundError:
            return openai_error(410, f"the contents of '{file_id}' are gone from "
                                     f"{self.batch_settings.files_dir or '$EMBER_HOME/batches'}")
        return Response(content, media_type="application/jsonl")

    # --- batches ----------------------------------------------------------------
    async def batches_create(self, request: Request) -> Response:
        try:
            body = await _json_body(request)
            row = await asyncio.to_thread(self._create_batch, body, _key_id(request),
                                          _owner(request))
        except BatchApiError as exc:
            return _error(exc)
        return JSONResponse(batch_object(row))

    def _create_batch(self, body: dict, key_id: int | None, owner: int | None) -> dict:
        store = self._store()
        endpoint = body.get("endpoint")
        if endpoint not in BATCH_URLS:
            raise BatchApiError(400, f"'endpoint' must be one of {', '.join(BATCH_URLS)}, got "
                                     f"{endpoint!r}", "endpoint")
        if body.get("completion_window", "24h") != "24h":
            raise BatchApiError(400, "'completion_window' must be '24h'", "completion_window")
        source = store.file(str(body.get("input_file_id")), key_id)
        if source["purpose"] != "batch":
            raise BatchApiError(400, f"file '{source['id']}' has purpose "
                                     f"'{source['purpose']}', not 'batch'", "input_file_id")
        if source["lines"] > self.batch_settings.max_lines:
            raise BatchApiError(400, f"the batch has {source['lines']} requests; the limit is "
                                     f"{self.batch_settings.max_lines} (batch.max_lines)",
                                "input_file_id")
        model = self._batch_model(source["path"])
        batch_id = f"batch_{uuid.uuid4().hex}"
        row = {"id": batch_id, "key_id": owner, "input_file_id": source["id"],
               "endpoint": endpoint, "model": model, "status": "validating",
               "total": source["lines"], "metadata": body.get("metadata"),
               "created_at": time.time()}
        store.add_batch(row)
        self._start_runner(store.batch(batch_id))
        return store.batch(batch_id)

    def _batch_model(self, path: str) -> str:
        """The one model a batch runs: the first line that names one (lines naming
        another get that line's error)."""
        with open(path) as f:
            for text in f:
                try:
                    model = json.loads(text).get("body", {}).get("model")
                except (json.JSONDecodeError, AttributeError):
                    continue
                if model:
                    if model not in self.batch_models:
                        raise BatchApiError(404, f"model '{model}' (first named in the file) "
                                                 f"is not served; served: "
                                                 f"{', '.join(self.batch_models)}", "model")
                    return model
        return next(iter(self.batch_models))

    def _start_runner(self, row: dict) -> None:
        """The batch's runner actor, unless one is alive (a replica may race another)."""
        import ray

        from ember.service_actors import service_actor_options

        store = self._store()
        model = self.batch_models[row["model"]]
        settings = self.batch_settings
        job = {"input": store.file(row["input_file_id"], None)["path"],
               "output": str(results_path(store, row["id"])), "model": model["source"],
               "name": row["model"], "engine": model["engine"],
               "batch_size": settings.batch_size, "num_cpus": settings.num_cpus,
               "num_gpus": settings.num_gpus, "kv_cache_gib": settings.kv_cache_gib,
               "nice": settings.nice,
               "max_lines": settings.max_lines}
        # a service actor: outside this replica's placement group (its engine's), so the
        # batch outlives the replica that started it and its job's tasks are not captured
        runner = ray.remote(BatchRunner).options(
            **service_actor_options(runner_name(row["id"]), max_restarts=0)).remote(
                row["id"], self._batch_db_url, str(store.files_dir), job, settings.max_running,
                settings.start_timeout_s, settings.stall_timeout_s)
        runner.run.remote()

    def _alive(self, batch_id: str) -> bool:
        import ray

        try:
            ray.get_actor(runner_name(batch_id), namespace="ember")
            return True
        except ValueError:
            return False

    def _looked_at(self, row: dict) -> dict:
        """An unfinished batch whose runner is gone (a restart) gets a new one: it resumes."""
        if row["status"] in ("validating", "in_progress") and not self._alive(row["id"]):
            self._start_runner(row)
        return row

    async def batch_get(self, batch_id: str, request: Request) -> Response:
        try:
            row = await asyncio.to_thread(
                lambda: self._looked_at(self._store().batch(batch_id, _key_id(request))))
        except BatchApiError as exc:
            return _error(exc)
        return JSONResponse(batch_object(row))

    async def batches_list(self, request: Request) -> Response:
        try:
            limit = min(max(int(request.query_params.get("limit", 20)), 1), 100)
        except ValueError:
            return openai_error(400, "'limit' must be an integer", "limit")
        try:
            rows = await asyncio.to_thread(self._store().batches, _key_id(request), limit)
        except BatchApiError as exc:
            return _error(exc)
        data = [batch_object(r) for r in rows]
        return JSONResponse({"object": "list", "data": data, "has_more": len(data) == limit,
                             "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None})

    async def batch_cancel(self, batch_id: str, request: Request) -> Response:
        try:
            row = await asyncio.to_thread(self._cancel, batch_id, _key_id(request))
        except BatchApiError as exc:
            return _error(exc)
        return JSONResponse(batch_object(row))

    def _cancel(self, batch_id: str, key_id: int | None) -> dict:
        import ray

        store = self._store()
        row = store.batch(batch_id, key_id)
        if row["status"] not in UNFINISHED:
            raise BatchApiError(409, f"batch '{batch_id}' is {row['status']}: only an "
                                     f"unfinished batch can be cancelled")
        store.update(batch_id, status="cancelling", cancelled_at=time.time())
        try:
            ray.kill(ray.get_actor(runner_name(batch_id), namespace="ember"))
        except ValueError:
            pass  # no runner: nothing to stop
        finalize(store, store.batch(batch_id), "cancelled")  # keeps what was written
        return store.batch(batch_id)

    # --- the synchronous batch --------------------------------------------------
    async def batch_sync(self, request: Request) -> Response:
        try:
            self._store()
            body = await _json_body(request)
            items = body.get("requests")
            if not isinstance(items, list) or not items:
                raise BatchApiError(400, "'requests' must be a non-empty list", "requests")
            limit = self.batch_settings.sync_max_requests
            if len(items) > limit:
                raise BatchApiError(413, f"{len(items)} requests; POST /v1/batch takes at most "
                                         f"{limit} (batch.sync_max_requests): use /v1/batches "
                                         f"for more", "requests")
        except BatchApiError as exc:
            return _error(exc)
        gate = asyncio.Semaphore(self.batch_settings.sync_concurrency)

        async def one(index: int, item) -> dict:
            async with gate:
                return await self._sync_one(index, item, request)

        results = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        return JSONResponse({"object": "list", "data": list(results)})

    async def _sync_one(self, index: int, item, request: Request) -> dict:
        from ember.ray_internals import ChatCompletionRequest, CompletionRequest

        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        custom_id = custom_id if isinstance(custom_id, str) else f"request-{index}"
        if not isinstance(item, dict):
            return _sync_result(custom_id, 400, _error_body("each request must be an object"))
        url = item.get("url", "/v1/chat/completions")
        body = item.get("body", {k: v for k, v in item.items() if k not in ("custom_id", "url")})
        if url not in BATCH_URLS or not isinstance(body, dict):
            return _sync_result(custom_id, 400, _error_body(
                f"'url' must be one of {', '.join(BATCH_URLS)} with an object 'body'"))
        if body.get("stream"):
            return _sync_result(custom_id, 400, _error_body("'stream' is not supported here"))
        try:
            parsed = (ChatCompletionRequest if url == BATCH_URLS[0] else CompletionRequest)(
                **body)
        except Exception as exc:  # noqa: BLE001 - pydantic names the field
            return _sync_result(custom_id, 400, _error_body(f"invalid request: {exc}"[:1000]))
        call = self.chat if url == BATCH_URLS[0] else self.completions
        response = await call(parsed, request)
        if not hasattr(response, "body"):
            return _sync_result(custom_id, 500, _error_body("the engine answered with a stream"))
        return _sync_result(custom_id, response.status_code, json.loads(bytes(response.body)))


async def _json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:  # not JSON, not UTF-8, or a number too long to parse (4300+ digits)
        raise BatchApiError(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BatchApiError(400, "the request body must be a JSON object")
    return body


def _error_body(message: str) -> dict:
    return error_body(message, "invalid_request_error")


def _sync_result(custom_id: str, status: int, body: dict) -> dict:
    return {"custom_id": custom_id, "response": {"status_code": status, "body": body},
            "error": None}
