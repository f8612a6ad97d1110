"""RAG end to end: retrieval over the ingested sample corpus, grounded answers, plain endpoints."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from ember import Client
from ember.client import RagStream

from .conftest import COLLECTION
from .keys import AUTH

pytestmark = pytest.mark.integration

# question -> the file (and line, for jsonl) that holds the answer
QUESTIONS = {
    "Who is the head pilot of the ferry?": "04-faq.jsonl#L2",
    "How much does an adult single ticket cost?": "02-timetable.txt",
    "What is the name of the brass bell sounded in fog?": "03-safety.html",
    "What name did the Winter Assembly approve for a fourth boat?": "06-winter-assembly.pdf",
    "Why is the rebuilt Brellin pier called Lantern Pier?": "05-history.md",
    "How many passengers does the Tallow Star carry?": "01-overview.md",
}


@pytest.mark.parametrize("question", QUESTIONS)
def test_retrieval_ranks_the_right_source_first(base_url, question):
    response = httpx.post(headers=AUTH(), url=f"{base_url}/v1/retrieve", timeout=120,
                          json={"query": question, "collection": COLLECTION, "top_k": 3})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits[0]["source"].endswith(QUESTIONS[question]), [h["source"] for h in hits]
    assert hits[0]["score"] >= hits[-1]["score"]


def test_rag_chat_through_openai_cites_the_source(openai_client):
    response = openai_client.chat.completions.create(
        model=f"rag:{COLLECTION}", max_tokens=48, temperature=0,
        messages=[{"role": "user", "content": "Who is the head pilot of the ferry?"}])
    sources = response.model_extra["sources"]
    assert sources[0]["source"].endswith("04-faq.jsonl#L2") and sources[0]["index"] == 1
    assert response.model == f"rag:{COLLECTION}"
    # A 135M model may not pick the right sentence, but an answer grounded in the
    # sources uses words only the corpus has (no model knows this fictional ferry).
    answer = response.choices[0].message.content
    corpus_only = ("Maren", "Okonkwo", "Glass Heron", "Moth Lantern", "Tallow Star", "Ovirre")
    assert any(word in answer for word in corpus_only), answer


def test_rag_chat_streaming_carries_sources_first(openai_client):
    stream = openai_client.chat.completions.create(
        model="rag", max_tokens=32, temperature=0, stream=True,
        messages=[{"role": "user",
                   "content": "What name did the Winter Assembly approve for a fourth boat?"}])
    chunks = list(stream)
    assert chunks[0].model_extra["sources"][0]["source"].endswith("06-winter-assembly.pdf")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()


def test_generate_plain_endpoint(base_url):
    response = httpx.post(headers=AUTH(), url=f"{base_url}/generate", timeout=120, json={
        "prompt": "What is the capital of France?", "max_tokens": 24})
    assert response.status_code == 200 and "Paris" in response.json()["text"]
    assert response.json()["usage"]["completion_tokens"] > 0


def test_rag_generate_plain_endpoint_and_stream(base_url):
    body = {"question": "How much does a bicycle cost on the ferry?", "top_k": 2,
            "max_tokens": 32}
    answer = httpx.post(f"{base_url}/rag-generate", headers=AUTH(), json=body,
                        timeout=120).json()
    assert answer["answer"].strip() and answer["sources"][0]["source"].endswith(
        "02-timetable.txt")
    with Client(base_url) as client:
        stream = RagStream()
        deltas = list(client.stream_rag(body["question"], top_k=2, max_tokens=32,
                                        stream=stream))
        assert len(deltas) > 1 and stream.sources[0].source.endswith("02-timetable.txt")
        assert stream.usage is not None and stream.usage.completion_tokens > 0


def test_sdk_retrieve_rag_and_embed(base_url):
    with Client(base_url) as client:
        hits = client.retrieve("brass bell in fog", top_k=2)
        assert hits[0].source.endswith("03-safety.html") and len(hits) == 2
        result = client.rag("Who founded the ferry?", max_tokens=32)
        assert result.sources and result.answer.strip()
        vectors = client.embed(["a ferry", "a boat"])
        assert len(vectors) == 2 and len(vectors[0]) == 384


def test_embeddings_are_normalised_and_batched_consistently(base_url):
    with Client(base_url) as client:
        one = client.embed("Lake Ovirre")[0]
        many = client.embed(["Lake Ovirre"] * 5)
    assert abs(sum(x * x for x in one) - 1.0) < 1e-3
    assert all(max(abs(a - b) for a, b in zip(one, v, strict=True)) < 1e-4 for v in many)


def test_both_replicas_embed_queries_with_onnx_runtime(base_url):
    """The fastest query encoder that matches sentence-transformers (docs/rag.md
    "Retrieval"), on each of the session's two replicas: /health names the replica that
    answered, and a replica names its encoder once it has embedded a query."""
    from concurrent.futures import ThreadPoolExecutor

    # HAProxy sends a request to the replica with the fewest open connections, so
    # requests one after another may all reach the same one: 8 clients at once reach both
    def ask() -> tuple[str, str | None]:
        httpx.post(headers=AUTH(), url=f"{base_url}/v1/retrieve", json={"query": "fares"},
                   timeout=60).raise_for_status()
        health = httpx.get(f"{base_url}/health", timeout=60).json()
        return health["replica"], health["query_encoder"]

    encoders: dict[str, str | None] = {}
    deadline = time.monotonic() + 120
    with ThreadPoolExecutor(8) as pool:
        while (len(encoders) < 2 or None in encoders.values()) and time.monotonic() < deadline:
            encoders.update(pool.map(lambda _: ask(), range(8)))
    assert len(encoders) == 2, f"answers from {len(encoders)} replica(s) in 120 s: {encoders}"
    assert set(encoders.values()) == {"onnx"}, encoders


def test_health_and_metrics(base_url):
    health = httpx.get(f"{base_url}/health", timeout=60).json()
    assert health["status"] == "ok" and COLLECTION in health["collections"]
    assert health["embedder"] == {"embedder": "all-minilm-l6-v2", "dim": 384}
    # Ember's metrics go through Ray's metrics agent only (test_monitoring reads them
    # through Prometheus): a retrieve answers, the RAG routes' counter and histogram are
    # Ray metrics, and there is no per-replica /metrics route any more.
    from ember.access.telemetry import rag_metrics
    from ray.util.metrics import Counter, Histogram

    response = httpx.post(headers=AUTH(), url=f"{base_url}/v1/retrieve",
                          json={"query": "fares"}, timeout=60)
    assert response.status_code == 200 and response.json()["hits"]
    metrics = rag_metrics()
    assert isinstance(metrics["requests"], Counter) and isinstance(metrics["retrieval"], Histogram)
    assert metrics["requests"].info["name"] == "ember_rag_requests"
    assert metrics["retrieval"].info["name"] == "ember_retrieval_seconds"
    assert httpx.get(headers=AUTH(), url=f"{base_url}/metrics", timeout=60).status_code == 404


@pytest.mark.parametrize("body, status, named", [
    ({"query": "fares", "collection": "no_such_collection"}, 404, "no_such_collection"),
    ({"query": "   "}, 400, "query"),
    ({"query": "fares", "top_k": 0}, 400, "top_k"),
    ({"query": "fares", "top_k": 1000}, 400, "top_k"),
    ({"collection": COLLECTION}, 400, "query"),
])
def test_retrieve_bad_input(base_url, body, status, named):
    response = httpx.post(headers=AUTH(), url=f"{base_url}/v1/retrieve", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert named in response.text
    ok = httpx.post(f"{base_url}/v1/retrieve", headers=AUTH(), json={"query": "fares"},
                    timeout=60)
    assert ok.status_code == 200


def test_rag_chat_on_unknown_collection_is_404(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError, match="no_such_collection"):
        openai_client.chat.completions.create(
            model="rag:no_such_collection", messages=[{"role": "user", "content": "hi"}])


def test_collection_made_with_another_embedder_is_refused(base_url, milvus_uri, ray_cluster):
    from ember.vectorstore.lite_server import shared_uri
    from ember.vectorstore.milvus import MilvusStore

    store = MilvusStore(shared_uri(milvus_uri))
    store.ensure_collection("made_elsewhere", "some-other-embedder", 384)
    store.close()
    response = httpx.post(headers=AUTH(), url=f"{base_url}/v1/retrieve", timeout=60,
                          json={"query": "fares", "collection": "made_elsewhere"})
    assert response.status_code == 409
    assert "some-other-embedder" in response.json()["error"]["message"]


def test_cli_ask_streams_an_answer_with_sources(base_url):
    out = subprocess.run(
        [sys.executable, "-m", "ember.cli.main", "ask", "Who is the head pilot of the ferry?",
         "--url", base_url, "--max-tokens", "32"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Sources:" in out.stdout and "04-faq.jsonl#L2" in out.stdout
