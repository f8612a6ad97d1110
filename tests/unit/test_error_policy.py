"""The body check, the error reshaping and the model names (issue 26), as pure logic."""

from __future__ import annotations

import asyncio
import json

import pytest
from ember.serving.error_shape import ErrorShape, clean_error_body, validation_message
from ember.serving.model_names import ModelNames, catalogue_aliases
from ember.serving.request_body import MAX_JSON_DEPTH, BodyCheck, body_problem, json_depth


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_depth_counts_arrays_and_objects_but_not_brackets_in_strings():
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{", "b": "x\\"[[[["}') == 1
    assert json_depth(nested(1000), stop_above=64) == 65


@pytest.mark.parametrize("body", [nested(MAX_JSON_DEPTH + 1), nested(100_000),
                                  b'{"a":' * 70_000 + b"1" + b"}" * 70_000])
def test_a_body_nested_past_the_limit_is_refused_naming_it(body):
    assert f"at most {MAX_JSON_DEPTH}" in body_problem(body)


def test_bodies_within_the_limit_pass_including_brackets_in_text():
    chat = {"messages": [{"role": "user", "content": "[[[{{{" * 50}] * 100,
            "schema": json.loads(nested(MAX_JSON_DEPTH - 1))}
    assert body_problem(json.dumps(chat).encode()) is None
    assert body_problem(json.dumps({"content": "déjà vu"}, ensure_ascii=False).encode()) is None


def test_invalid_utf8_is_named_with_its_offset():
    assert body_problem(b'{"model": "\xff"}') == (
        "The request body is not valid UTF-8 (byte 0xff at offset 11). Send JSON encoded as "
        "UTF-8.")


def run_asgi(app, body: bytes, headers=((b"content-type", b"application/json"),)) -> list:
    sent, received = [], [{"type": "http.request", "body": body, "more_body": False}]
    scope = {"type": "http", "method": "POST", "path": "/v1/x", "headers": list(headers)}

    async def receive():
        return received.pop(0) if received else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


async def echo(scope, receive, send):
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_the_body_check_answers_400_or_hands_the_body_on_unchanged():
    refused = run_asgi(BodyCheck(echo), nested(200))
    assert refused[0]["status"] == 400
    assert json.loads(refused[1]["body"])["error"]["type"] == "invalid_request_error"
    assert run_asgi(BodyCheck(echo), b'{"a": 1}')[1]["body"] == b'{"a": 1}'
    multipart = ((b"content-type", b"multipart/form-data; boundary=x"),)
    assert run_asgi(BodyCheck(echo), nested(200), multipart)[1]["body"] == nested(200)


@pytest.mark.parametrize("status, body, message", [
    (400, b'{"detail": "There was an error parsing the body"}',
     "There was an error parsing the body"),
    (404, b'{"error": {"message": "Message: The model \'x\' does not exist. (Request ID: 1), '
          b'Internal exception: ray.llm._internal.X: y", "type": "OpenAIHTTPException", '
          b'"param": null, "code": 404}}', "The model 'x' does not exist."),
    (500, b"Internal Server Error", "The service failed while answering"),
    (400, b'{"error": {"message": "vllm.exceptions.VLLMValidationError: Give a prompt.", '
          b'"type": "BadRequestError", "param": "prompt", "code": 400}}', "Give a prompt."),
    (422, b'{"detail": [{"loc": ["body", "messages", 0], "msg": "Field required"}]}',
     "Invalid 'messages.0': Field required."),
])
def test_non_openai_error_bodies_are_rewritten_for_the_client(status, body, message):
    error = json.loads(clean_error_body(status, body))["error"]
    assert message in error["message"] and "Internal exception" not in error["message"]
    assert error["code"] == status and error["type"] in ("invalid_request_error",
                                                         "not_found_error", "server_error")


def test_clean_openai_errors_pass_unchanged_and_2xx_bodies_are_not_held():
    clean = {"error": {"message": "m", "type": "invalid_request_error", "param": "n",
                       "code": 400}}
    assert clean_error_body(400, json.dumps(clean).encode()) is None
    assert [m.get("body") for m in run_asgi(ErrorShape(echo), b"x")] == [None, b"x"]


def test_validation_errors_name_the_field_without_echoing_the_input():
    message, param = validation_message([{"loc": ("body", "max_tokens"), "msg": "bad",
                                          "input": "x" * 10_000}, {"loc": ("body", "n")}])
    assert (message, param) == ("Invalid 'max_tokens': bad. (1 more problem)", "max_tokens")


def test_model_names_match_any_case_and_aliases_and_leave_others_alone():
    names = ModelNames({"all-minilm-l6-v2": catalogue_aliases("all-minilm-l6-v2"),
                        "smollm2-135m-instruct": ["smollm2"]})
    for sent in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert names.canonical(sent) == "all-minilm-l6-v2"
    assert names.canonical("SMOLLM2") == "smollm2-135m-instruct"
    assert names.canonical("rag:docs") == "rag:docs" and names.canonical(["x"]) == ["x"]
    assert names.listing(["smollm2-135m-instruct", "rag"]) == \
        "smollm2-135m-instruct (also: smollm2), rag"


def test_names_and_aliases_must_differ_ignoring_case():
    from ember.serving.config import LLMAppConfig

    with pytest.raises(ValueError, match="repeated: \\['a'\\]"):
        LLMAppConfig(models=[{"name": "a"}, {"name": "b", "aliases": ["A"]}])
