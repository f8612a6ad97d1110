"""`RAGAppConfig`: the LLM app plus retrieval settings (args of serve_apps.rag)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ember.models.catalogue import DEFAULT_EMBEDDER, DEFAULT_RERANKER
from ember.serving.config import LLMAppConfig, _Strict

RAG_MODEL = "rag"  # `rag` uses the default collection; `rag:<collection>` names one


class RetrievalConfig(_Strict):
    embedder: str = Field(DEFAULT_EMBEDDER, description="must match the collections' embedder; "
                                                        "/v1/embeddings answers to it")
    embedder_aliases: list[str] = Field(
        default_factory=list, description="other ids /v1/embeddings answers for the embedder "
                                          "(case-insensitive); a catalogue embedder also "
                                          "answers to its Hugging Face id "
                                          "(sentence-transformers/all-MiniLM-L6-v2)")
    embedder_num_cpus: float = Field(0.5, ge=0, description="logical CPUs of the embedder "
                                                            "deployment (/v1/embeddings)")
    milvus_uri: str | None = Field(None, description="Lite file or server URI; default: "
                                                     "Ember's data dir")
    default_collection: str = Field("default", description="what the model `rag` searches")
    top_k: int = Field(4, ge=1, description="chunks retrieved when a request sets none")
    max_top_k: int = Field(50, ge=1, description="requests asking for more get a 400")
    score_threshold: float | None = Field(
        None, ge=-1, le=1, description="drop hits below this cosine similarity (dense scores "
                                       "only: needs mode dense); null: keep them")
    llm: str | None = Field(None, description="model that answers; default: the first model")
    default_max_tokens: int = Field(256, gt=0, description="for RAG requests that set none")
    # hybrid by measurement on two differently written sets (docs/rag.md, "Retrieval"):
    # pooled, it ranked the right page first 79/110 times, dense 77/110 (MRR@10 0.807 vs
    # 0.798); dense led on samples/eval/pydocs-questions.jsonl (44 vs 41 of 60), hybrid on
    # pydocs-questions-2.jsonl (38 vs 33 of 50) and by more than dense ever led
    mode: Literal["dense", "keyword", "hybrid"] = Field(
        "hybrid", description="dense vectors, BM25 keywords, or both fused by rank (RRF)")
    rerank: bool = Field(False, description="rescore the best candidates with a cross-encoder")
    rerank_candidates: int = Field(20, ge=1, le=200, description="how many of the best hits "
                                                                 "the reranker rescores")
    reranker: str | None = Field(DEFAULT_RERANKER, description="catalogue name or folder")
    refresh_s: float = Field(5.0, ge=0, description="how often a replica checks a collection "
                                                    "for a new version (then reloads it)")
    memory_index_max_chunks: int = Field(
        500_000, ge=0, description="larger collections are searched in Milvus (dense only)")
    query_threads: int = Field(1, ge=1, description="threads embedding a query in the "
                                                    "replica (the engine shares the cores)")
    query_encoder: Literal["auto", "onnx", "torchscript", "encode"] = Field(
        "auto", description="how the replica embeds a query: auto takes the fastest that "
                            "matches sentence-transformers (ONNX Runtime, TorchScript, encode)")

    def search_settings(self):
        from ember.serving.rag.retrieval import SearchSettings

        return SearchSettings(mode=self.mode, rerank=self.rerank,
                              rerank_candidates=self.rerank_candidates, reranker=self.reranker,
                              refresh_s=self.refresh_s,
                              memory_index_max_chunks=self.memory_index_max_chunks,
                              query_threads=self.query_threads,
                              query_encoder=self.query_encoder)

    @model_validator(mode="after")
    def _top_k_in_range(self) -> RetrievalConfig:
        if self.top_k > self.max_top_k:
            raise ValueError(f"top_k ({self.top_k}) is above max_top_k ({self.max_top_k})")
        return self

    @model_validator(mode="after")
    def _threshold_needs_dense(self) -> RetrievalConfig:
        # fused ranks and BM25 scores are not cosines: the threshold would be ignored
        if self.score_threshold is not None and self.mode != "dense":
            raise ValueError(f"score_threshold ({self.score_threshold}) applies to dense "
                             f"cosine scores only, and mode is '{self.mode}': set mode: dense, "
                             f"or leave score_threshold null")
        return self


class RAGAppConfig(LLMAppConfig):
    rag: RetrievalConfig = Field(default_factory=RetrievalConfig,
                                 description="retrieval and answering (serve_apps.rag only)")

    @model_validator(mode="after")
    def _llm_is_served(self) -> RAGAppConfig:
        names = [m.name for m in self.models]
        if self.rag.llm is not None and self.rag.llm not in names:
            raise ValueError(f"rag.llm '{self.rag.llm}' is not one of the models: {names}")
        return self

    def answering_model(self):
        name = self.rag.llm or self.models[0].name
        return next(m for m in self.models if m.name == name)
