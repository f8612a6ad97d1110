"""Wire models of Ember's own endpoints (the OpenAI ones come from Ray/vLLM)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrieveRequest(_Request):
    query: str
    collection: str | None = Field(None, description="default: the app's default collection")
    top_k: int | None = None
    mode: str | None = Field(None, description="dense | keyword | hybrid; default: rag.mode")
    rerank: bool | None = Field(None, description="cross-encoder rescoring; default: rag.rerank")


class GenerateRequest(_Request):
    prompt: str = Field(min_length=1)
    max_tokens: int = 256
    temperature: float = 0.0
    stream: bool = False
    model: str | None = None


class RagGenerateRequest(_Request):
    question: str
    collection: str | None = None
    top_k: int | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    stream: bool = False
