"""Ember's OpenAI ingress: Ray's `OpenAiIngress` with clearer input errors.

Ray already validates most requests (vLLM names the limit for an over-long
prompt or an absurd `max_tokens`). This subclass adds what a client needs:
- every error as an OpenAI error object, message unwrapped (`errors.py`),
  unknown models as 404 listing the models that exist;
- an empty `messages` list refused up front, naming the field.
It extends Ray's class rather than re-implementing the protocol, so every
OpenAI route of Ray's ingress keeps working unchanged.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    OpenAIHTTPException,
)
from ray.llm._internal.serve.core.ingress.ingress import OpenAiIngress
from starlette.responses import Response

from ember.serving.errors import openai_error


class EmberIngress(OpenAiIngress):
    async def _get_model_id(self, model: str | None) -> str:
        try:
            return await super()._get_model_id(model)
        except HTTPException as exc:  # Ray raises FastAPI's; re-shaped as an OpenAI error
            available = ", ".join(sorted(self._model_cards))
            message = (
                f"The model '{model}' does not exist. Available models: {available}."
                if exc.status_code == 404
                else f"{exc.detail} Available: {available}."
            )
            raise OpenAIHTTPException(exc.status_code, message, type="invalid_model") from None

    async def _process_llm_request(
        self, body, call_method: str, raw_request: Request | None = None
    ) -> Response:
        try:
            return await super()._process_llm_request(body, call_method, raw_request)
        except OpenAIHTTPException as exc:
            return openai_error(exc.status_code, exc.message)

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        if not body.messages:
            return openai_error(
                400, "'messages' must contain at least one message.", param="messages"
            )
        return await super().chat(body, request)

    async def model_data(self, model: str):
        try:
            return await super().model_data(model)
        except OpenAIHTTPException as exc:
            return openai_error(
                exc.status_code, f"The model '{model}' does not exist.", param="model"
            )
