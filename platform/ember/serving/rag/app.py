"""Build the RAG application: LLM deployments + the Embedder deployment + RAG routes.

The LLM deployments and the gate come from `build_ingress_app`; the engine
replica serves `RAGRoutes` (the OpenAI routes plus retrieval) on the route map
`ROUTES`, in the form of Ray's `make_fastapi_ingress` `endpoint_map`.
"""

from __future__ import annotations

from ember.serving.llm_app import build_ingress_app
from ember.serving.rag.config import RAGAppConfig


def build_rag_app(config: RAGAppConfig):
    from ember.models.catalogue import resolve_model
    from ember.serving.model_names import catalogue_aliases
    from ember.serving.rag.embeddings import build_embedder_deployment

    answering = config.answering_model()
    return build_ingress_app(
        config, "ember.serving.rag.routes:RAGRoutes", "ember.serving.rag.routes:ROUTES",
        embedder=build_embedder_deployment(config.rag.embedder, config.rag.embedder_num_cpus),
        rag=config.rag.model_dump(),
        embedder_aliases=catalogue_aliases(config.rag.embedder, config.rag.embedder_aliases),
        answering={"model": answering.name, "tokenizer": resolve_model(answering.source),
                   "max_model_len": answering.engine.max_model_len or 2048},
    )
