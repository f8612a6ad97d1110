"""Bad requests get a clear OpenAI-style error, and the service keeps serving."""

from __future__ import annotations

import re

import httpx
import pytest

from .conftest import MODEL
from .keys import AUTH

pytestmark = pytest.mark.integration
HI = [{"role": "user", "content": "hi"}]


def post(base_url: str, path: str, **kwargs) -> httpx.Response:
    headers = {**AUTH(), **kwargs.pop("headers", {})}
    return httpx.post(f"{base_url}{path}", headers=headers, timeout=300, **kwargs)


CASES = {
    "unknown model": ({"json": {"model": "no-such-model", "messages": HI}}, 404,
                      "no-such-model"),
    "malformed JSON": ({"content": b'{"model": ', "headers": {"content-type":
                                                               "application/json"}}, 400,
                       "JSON"),
    "missing messages": ({"json": {"model": MODEL}}, 400, "messages"),
    "empty messages": ({"json": {"model": MODEL, "messages": []}}, 400, "messages"),
    "negative max_tokens": ({"json": {"model": MODEL, "messages": HI, "max_tokens": -5}}, 400,
                            "max_tokens"),
    "absurd max_tokens": ({"json": {"model": MODEL, "messages": HI, "max_tokens": 10**9}}, 400,
                          "max_tokens"),
    "prompt over the context": ({"json": {"model": MODEL, "max_tokens": 8, "messages": [
        {"role": "user", "content": "word " * 3000}]}}, 400, "2048"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_request_is_refused_clearly_and_service_still_answers(base_url, case):
    kwargs, status, named = CASES[case]
    response = post(base_url, "/v1/chat/completions", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert named in error["message"] + str(error.get("param")), error
    assert "Internal exception" not in error["message"]

    healthy = post(base_url, "/v1/chat/completions",
                   json={"model": MODEL, "messages": HI, "max_tokens": 4})
    assert healthy.status_code == 200, healthy.text


def test_streaming_request_with_bad_input_is_refused_before_streaming(base_url):
    response = post(base_url, "/v1/chat/completions",
                    json={"model": MODEL, "messages": HI, "max_tokens": -1, "stream": True})
    assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens"


def test_unknown_model_card_is_404(base_url):
    response = httpx.get(headers=AUTH(), url=f"{base_url}/v1/models/no-such-model", timeout=60)
    assert response.status_code == 404 and "no-such-model" in response.json()["error"]["message"]


def test_openai_client_raises_typed_errors(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        openai_client.chat.completions.create(model="no-such-model", messages=HI)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        openai_client.chat.completions.create(model=MODEL, messages=HI, max_tokens=-3)


# --- one error policy: every route, hostile bodies (issue 26) ---------------------------
DEEP = 100_000  # 200 KB of brackets: under the 1 MB body limit, far past the depth limit
HOSTILE = {
    "nested arrays": (b"[" * DEEP + b"]" * DEEP, "64"),
    "nested objects": (b'{"a":' * (DEEP // 3) + b"1" + b"}" * (DEEP // 3), "64"),
    "invalid UTF-8": (b'{"model": "\xff\xfe", "messages": "\xc3\x28"}', "UTF-8"),
    "malformed JSON": (b'{"model": ', None),
    "a JSON array": (b'[{"model": "x"}]', None),
    "a JSON string": (b'"hello"', None),
    "wrong field types": (b'{"model": ["x"], "messages": "hi", "input": 5, "query": {}, '
                          b'"prompt": 1, "question": [], "stream": true, '
                          b'"stream_options": "x"}', None),
    "a 5000-digit number": (b'{"model": "x", "max_tokens": ' + b"9" * 5000 + b"}", None),
    "an infinite number": (b'{"model": "x", "max_tokens": 1e400, "top_k": -1e400}', None),
}
ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/retrieve",
          "/generate", "/rag-generate", "/v1/batches", "/v1/batch"]
LEAKS = re.compile(r"Internal exception|Traceback|original exception|"
                   r"\b[a-z_]+\.[a-z_.]+\.[A-Z]\w+(Error|Exception)\b")


def assert_openai_error(response: httpx.Response) -> dict:
    """`response`'s body is an OpenAI error object written for the client."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and isinstance(error["type"], str), error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert not LEAKS.search(error["message"]), error["message"]
    return error


@pytest.mark.parametrize("route", ROUTES)
def test_hostile_bodies_get_openai_4xx_on_every_route(base_url, route):
    for case, (body, named) in HOSTILE.items():
        response = post(base_url, route, content=body,
                        headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
        error = assert_openai_error(response)
        if named is not None:
            assert response.status_code == 400 and named in error["message"], (case, error)
    assert post(base_url, "/v1/chat/completions",
                json={"model": MODEL, "messages": HI, "max_tokens": 4}).status_code == 200


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/retrieve", "/v1/batches"])
def test_a_body_that_is_not_json_by_content_type_gets_an_openai_4xx(base_url, route):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        response = post(base_url, route, content=b"model=x&messages=hi", headers=headers)
        assert 400 <= response.status_code < 500, (content_type, response.text)
        assert_openai_error(response)


def test_unknown_routes_and_methods_get_openai_errors(base_url):
    missing = httpx.get(f"{base_url}/v1/no-such-route", headers=AUTH(), timeout=60)
    assert missing.status_code == 404 and "/v1" in assert_openai_error(missing)["message"]
    wrong = httpx.get(f"{base_url}/v1/chat/completions", headers=AUTH(), timeout=60)
    assert wrong.status_code == 405
    assert_openai_error(wrong)


def test_json_nested_within_the_limit_still_answers(base_url):
    """A tool-like JSON schema 43 levels deep passes the depth check (vLLM answers it)."""
    deep = {"type": "string"}
    for _ in range(20):  # two levels each
        deep = {"type": "object", "properties": {"a": deep}}
    response = post(base_url, "/v1/chat/completions", json={
        "model": MODEL, "messages": HI, "max_tokens": 4,
        "metadata_unused": deep})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert "64" not in assert_openai_error(response)["message"]


def test_numbers_at_the_edges_reach_the_engine_and_get_openai_answers(base_url):
    """JSON numbers Python parses but an engine may not expect (inf, NaN, 30 digits), on the
    hot path (the base model): never a 5xx, and the engine answers afterwards."""
    for field, value in (("temperature", b"1e400"), ("top_p", b"NaN"), ("seed", b"1" * 30),
                         ("max_tokens", b"1" * 30), ("n", b"1" * 30), ("logprobs", b"true"),
                         ("top_logprobs", b"1" * 30), ("presence_penalty", b"-1e400")):
        body = (b'{"model": "' + MODEL.encode() + b'", "max_tokens": 2, '
                b'"messages": [{"role": "user", "content": "hi"}], "' + field.encode() +
                b'": ' + value + b"}")
        response = post(base_url, "/v1/chat/completions", content=body,
                        headers={"content-type": "application/json"})
        assert response.status_code < 500, (field, response.text)
        if response.status_code >= 400:
            assert_openai_error(response)
    assert post(base_url, "/v1/chat/completions",
                json={"model": MODEL, "messages": HI, "max_tokens": 4}).status_code == 200
