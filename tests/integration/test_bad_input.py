"""Bad requests get a clear OpenAI-style error, and the service keeps serving."""

from __future__ import annotations

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
