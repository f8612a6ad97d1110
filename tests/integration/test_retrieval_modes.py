"""Retrieval modes on the running service, the index following ingestion, and fallbacks."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from ember.ingest.config import IngestConfig
from ember.ingest.pipeline import run_ingest

from .conftest import COLLECTION, REPO
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


def test_eval_retrieval_reports_each_set_and_pools_them_as_one(base_url, tmp_path, capsys):
    """`ember eval retrieval` on the sample questions, once as one file and once cut in two:
    the halves are reported apart, their pool counts what the whole file does (a page's rank
    does not depend on the file its question is in), and each miss names its half."""
    from ember.cli.main import main

    whole = REPO / "samples" / "eval" / "docs-questions.jsonl"
    lines = whole.read_text().splitlines()
    halves = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]
    halves[0].write_text("\n".join(lines[:6]) + "\n")
    halves[1].write_text("\n".join(lines[6:]) + "\n")
    common = ["--collection", COLLECTION, "--modes", "dense,keyword", "--url", base_url]
    assert main(["eval", "retrieval", str(whole), *common,
                 "--json", str(tmp_path / "whole.json")]) == 0
    assert main(["eval", "retrieval", *map(str, halves), *common,
                 "--json", str(tmp_path / "split.json")]) == 0
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("whole", "split"))

    ranks = ("mode", "hit@1", "hit@3", "hit@5", "mrr@10")
    assert [[m[k] for k in ranks] for m in two["modes"]] == \
        [[m[k] for k in ranks] for m in one["modes"]]
    assert (one["questions"], two["questions"]) == (12, 12)
    assert [(s["name"], s["questions"]) for s in two["sets"]] == [("first", 6), ("second", 6)]
    for i, pooled in enumerate(two["modes"]):
        assert pooled["hit@1"] == sum(s["modes"][i]["hit@1"] for s in two["sets"])
        expected = [("first", m["line"]) if m["line"] <= 6 else ("second", m["line"] - 6)
                    for m in one["modes"][i]["misses"]]
        assert [(m["set"], m["line"]) for m in pooled["misses"]] == expected
    assert one["modes"][0]["hit@5"] >= 10, one["modes"][0]  # dense finds the sample's pages
    printed = capsys.readouterr().out
    assert "6 (first) + 6 (second) questions on collection" in printed
    assert "| first (6) | dense |" in printed and "| pooled (12) | keyword |" in printed


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
