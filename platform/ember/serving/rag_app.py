"""Build the RAG application: LLM deployments + embeddings deployment + RAG ingress.

The LLM deployments and the gated ingress come from `build_ingress_app`;
Ember's extra routes are added through `make_fastapi_ingress`'s
`endpoint_map`, the extension point Ray provides for it.
"""

from __future__ import annotations

from ember.serving.llm_app import build_ingress_app
from ember.serving.rag_config import RAGAppConfig


def build_rag_app(config: RAGAppConfig):
    from ember.models.catalogue import resolve_model
    from ember.serving.embeddings import build_embedder_deployment

    answering = config.answering_model()
    return build_ingress_app(
        config, "ember.serving.rag_ingress:RAGIngress", "ember.serving.rag_ingress:ENDPOINTS",
        embedder=build_embedder_deployment(config.rag.embedder, config.rag.embedder_num_cpus),
        rag=config.rag.model_dump(),
        answering={"model": answering.name, "tokenizer": resolve_model(answering.source),
                   "max_model_len": answering.engine.max_model_len or 2048},
    )
