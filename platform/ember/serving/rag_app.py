"""Build the RAG application: LLM deployments + embeddings deployment + RAG ingress.

Ray's `build_openai_app` wires only its default routes, so this builder
repeats its few lines of wiring (LLM deployments, model cards, FastAPI
ingress) with Ember's extra routes added through `make_fastapi_ingress`'s
`endpoint_map`, the extension point Ray provides for it.
"""

from __future__ import annotations

from ember.serving.llm_app import build_llm_config, ingress_options
from ember.serving.rag_config import RAGAppConfig


def build_rag_app(config: RAGAppConfig):
    from ray import serve
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
    from ray.llm._internal.serve.core.ingress.ingress import (
        DEFAULT_ENDPOINTS,
        make_fastapi_ingress,
    )
    from ray.serve.llm import build_llm_deployment

    from ember.serving.embeddings import build_embedder_deployment
    from ember.serving.rag_ingress import RAG_ENDPOINTS, RAGIngress

    llm_configs = [build_llm_config(m) for m in config.models]
    answering = config.answering_model()
    answering_config = next(c for c in llm_configs if c.model_id == answering.name)
    ingress_cls = make_fastapi_ingress(RAGIngress,
                                       endpoint_map={**DEFAULT_ENDPOINTS, **RAG_ENDPOINTS})
    return serve.deployment(ingress_cls, name="RAGIngress",
                            **ingress_options(config.ingress)).bind(
        llm_deployments={c.model_id: build_llm_deployment(c) for c in llm_configs},
        model_cards={c.model_id: to_model_metadata(c.model_id, c) for c in llm_configs},
        lora_paths={},
        embedder=build_embedder_deployment(config.rag.embedder, config.rag.embedder_num_cpus),
        rag=config.rag.model_dump(),
        answering={"model": answering.name,
                   "tokenizer": answering_config.model_loading_config.model_source,
                   "max_model_len": answering.engine.max_model_len or 2048},
    )
