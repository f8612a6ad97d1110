"""The embeddings service: a Serve deployment of the embedder with request batching.

Concurrent requests are gathered by `@serve.batch` into one `encode` call, so
many small queries (the RAG path sends one per question) share a forward pass.
"""

from __future__ import annotations

import asyncio

from ray import serve

from ember.models.catalogue import DEFAULT_EMBEDDER


class EmbedderServer:
    def __init__(self, embedder: str = DEFAULT_EMBEDDER, device: str = "cpu") -> None:
        from ember.models.embedder import embedder_dim, load_embedder

        self.name = embedder
        self.model = load_embedder(embedder, device)
        self.dim = embedder_dim(self.model)

    def info(self) -> dict:
        return {"embedder": self.name, "dim": self.dim}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return list(await asyncio.gather(*(self._embed_one(t) for t in texts)))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _embed_one(self, texts: list[str]) -> list[list[float]]:
        from ember.models.embedder import embed

        # Off the event loop: Serve runs this replica's code on its own loop
        # (RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0), health checks included.
        vectors = await asyncio.to_thread(embed, self.model, texts)
        return [v.tolist() for v in vectors]


def build_embedder_deployment(embedder: str, num_cpus: float, num_replicas: int = 1):
    return serve.deployment(EmbedderServer, name="Embedder", num_replicas=num_replicas,
                            ray_actor_options={"num_cpus": num_cpus},
                            max_ongoing_requests=256).bind(embedder)
