"""Retrieval modes on the running service, the index following ingestion, and fallbacks."""

from __future__ import annotations

import time

import httpx
import pytest
from ember.ingest.config import IngestConfig
from ember.ingest.pipeline import run_ingest

from .conftest import COLLECTION
from .keys import AUTH
from .test_rag import QUESTIONS

pytestmark = pytest.mark.integration


def retrieve(base_url: str, **body) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/retrieve", headers=AUTH(), timeout=120,
                      json={"collection": COLLECTION, "top_k": 3, **body})


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_every_mode_ranks_the_right_source_first(base_url, mode):
    for question, source in QUESTIONS.items():
        response = retrieve(base_url, query=question, mode=mode)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["mode"], body["reranked"], body["notices"]) == (mode, False, [])
        assert body["hits"][0]["source"].endswith(source), (question, body["hits"])


def test_rerank_without_a_reranker_falls_back_and_says_so(base_url):
    """No cross-encoder ships in a PyPI package (rag.reranker is null by default)."""
    question, source = next(iter(QUESTIONS.items()))
    body = retrieve(base_url, query=question, mode="hybrid", rerank=True).json()
    assert body["reranked"] is False and "reranking is unavailable" in body["notices"][0]
    assert body["hits"][0]["source"].endswith(source)


def test_keyword_mode_finds_exact_names(base_url):
    body = retrieve(base_url, query="Okonkwo-Lisle", mode="keyword").json()
    assert body["mode"] == "keyword" and body["hits"][0]["source"].endswith("04-faq.jsonl#L2")
    assert retrieve(base_url, query="zzzqx unknownword", mode="keyword").json()["hits"] == []


def test_an_unknown_mode_is_a_400_naming_it(base_url):
    response = retrieve(base_url, query="fares", mode="semantic")
    assert response.status_code == 400 and "mode" in response.text
    assert retrieve(base_url, query="fares").status_code == 200


def test_the_service_follows_a_collection_as_it_is_ingested(base_url, milvus_uri, tmp_path):
    """Ingestion changes the collection's version; replicas reload within rag.refresh_s."""
    note = tmp_path / "notice.md"
    note.write_text("# Harbour notice\n\nThe night ferry to Quillmarsh leaves at 23:40 "
                    "from the zinc jetty.")

    def ingest():
        return run_ingest(IngestConfig(paths=[str(tmp_path)], collection="fresh_test",
                                       milvus_uri=milvus_uri))

    def first_hit(query: str, expect: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while True:  # the session runs two replicas: both must have reloaded
            texts = [retrieve(base_url, query=query, collection="fresh_test").json()
                     ["hits"][0]["text"] for _ in range(4)]
            if all(expect in t for t in texts) or time.monotonic() > deadline:
                return texts[-1]
            time.sleep(1)

    assert retrieve(base_url, query="night ferry", collection="fresh_test").status_code == 404
    assert ingest().chunks_written == 1
    assert "zinc jetty" in first_hit("When does the night ferry leave?", "zinc jetty")
    note.write_text("# Harbour notice\n\nThe night ferry to Quillmarsh leaves at 22:15 "
                    "from the copper jetty.")
    assert ingest().chunks_total == 1
    text = first_hit("When does the night ferry leave?", "copper jetty")
    assert "copper jetty" in text and "zinc" not in text


def test_fallbacks_to_dense_search_say_why(ray_cluster, milvus_uri, sample_ingest):
    """A reranker that cannot load, and a collection too big for the memory index."""
    import asyncio

    from ember.serving.rag.retrieval import Retriever, SearchSettings

    question, source = next(iter(QUESTIONS.items()))
    no_reranker = Retriever("all-minilm-l6-v2", milvus_uri, 50, None,
                            SearchSettings(reranker="no-such-reranker"))
    found = asyncio.run(no_reranker.retrieve(question, COLLECTION, 3, "hybrid", True))
    assert not found.reranked and "reranking is unavailable" in found.notices[0]
    assert found.sources[0].source.endswith(source)

    in_milvus = Retriever("all-minilm-l6-v2", milvus_uri, 50, None,
                          SearchSettings(memory_index_max_chunks=0))
    found = asyncio.run(in_milvus.retrieve(question, COLLECTION, 3, "hybrid", False))
    assert found.mode == "dense" and "memory_index_max_chunks" in found.notices[0]
    assert found.sources[0].source.endswith(source)
