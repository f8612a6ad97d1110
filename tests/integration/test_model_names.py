"""Model ids: any case, declared aliases, catalogue Hugging Face ids; 404s list the models
of the kind asked for (issue 26)."""

from __future__ import annotations

import httpx
import pytest

from .conftest import MODEL
from .keys import AUTH
from .test_bad_input import HI, assert_openai_error, post

pytestmark = pytest.mark.integration
EMBEDDER = "all-minilm-l6-v2"


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_the_embedder_answers_to_its_sentence_transformers_names(base_url, name):
    response = post(base_url, "/v1/embeddings", json={"model": name, "input": ["a fare"]})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == EMBEDDER
    assert len(response.json()["data"][0]["embedding"]) == 384


@pytest.mark.parametrize("name", ["SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
                                  "smollm2", "SMOLLM2"])
def test_the_llm_answers_to_its_aliases_on_both_routes(base_url, name, local_app_args):
    assert "smollm2" in local_app_args["models"][0]["aliases"]  # declared in local.yaml
    for path, body in (("/v1/chat/completions", {"messages": HI}),
                       ("/v1/completions", {"prompt": "Hi"})):
        response = post(base_url, path, json={"model": name, "max_tokens": 2, **body})
        assert response.status_code == 200, (path, response.text)
        assert response.json()["model"] == MODEL


def test_an_alias_grants_nothing_the_models_name_would_not(base_url, access_url):
    from ember.access.keys import create_key

    key, _ = create_key(access_url, "rag-only-names", models=["rag*"])
    response = post(base_url, "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                    json={"model": "SmolLM2", "messages": HI, "max_tokens": 2})
    assert response.status_code == 403, response.text
    assert MODEL in assert_openai_error(response)["message"]


def test_an_unknown_chat_model_lists_the_chat_models(base_url):
    response = post(base_url, "/v1/chat/completions",
                    json={"model": "all-MiniLM-L6-v3", "messages": HI})
    assert response.status_code == 404
    message = assert_openai_error(response)["message"]
    assert "'all-MiniLM-L6-v3' does not exist" in message and MODEL in message
    assert "rag" in message and EMBEDDER not in message


def test_an_unknown_embeddings_model_lists_the_embedders(base_url):
    response = post(base_url, "/v1/embeddings", json={"model": "all-MiniLM-L6-v3", "input": "a"})
    assert response.status_code == 404
    error = assert_openai_error(response)
    assert error["param"] == "model"
    assert EMBEDDER in error["message"] and "sentence-transformers/all-MiniLM-L6-v2" in \
        error["message"] and MODEL not in error["message"]
    llm = post(base_url, "/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert llm.status_code == 404 and EMBEDDER in assert_openai_error(llm)["message"]


def test_a_model_card_answers_to_an_alias(base_url):
    response = httpx.get(f"{base_url}/v1/models/SmolLM2-135M-Instruct", headers=AUTH(),
                         timeout=60)
    assert response.status_code == 200 and response.json()["id"] == MODEL
