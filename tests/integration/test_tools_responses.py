"""Tool calling and the Responses API through the `openai` SDK, against the real service.

The 135M model calls tools poorly, so these assert what the protocol guarantees, not
the model's judgement: with `tool_choice` required or named, vLLM decodes under a
grammar, so the answer is a well-formed call of a given tool with JSON arguments that
match its schema; with `response_format` a JSON schema, the content matches it.
"""

from __future__ import annotations

import json

import openai
import pytest
from ember.access.keys import create_key

from .conftest import MODEL
from .test_access import wait_for_rows

pytestmark = pytest.mark.integration
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a timezone.",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                   "required": ["timezone"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris, and the time in Tokyo?"}]
REQUIRED_ARGUMENT = {"get_weather": "city", "get_time": "timezone"}


def assert_well_formed(name: str, arguments: str) -> None:
    """A call of one of the offered tools whose arguments hold its required string."""
    assert name in REQUIRED_ARGUMENT, name
    parsed = json.loads(arguments)
    assert isinstance(parsed, dict) and isinstance(parsed[REQUIRED_ARGUMENT[name]], str), parsed


def client_for(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=300)


def test_tool_choice_required_answers_well_formed_calls_with_usage(openai_client):
    response = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
        max_tokens=128, temperature=0)
    calls = response.choices[0].message.tool_calls
    assert calls, response  # one or more (parallel) calls, each well-formed
    for call in calls:
        assert call.type == "function" and call.id
        assert_well_formed(call.function.name, call.function.arguments)
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


def test_a_named_tool_streams_a_call_of_that_tool(openai_client):
    stream = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], max_tokens=64, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}}, stream=True)
    calls: dict[int, dict] = {}
    for chunk in stream:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert [c["name"] for c in calls.values()] == ["get_time"], calls
    assert_well_formed("get_time", calls[0]["arguments"])


def test_tool_choice_auto_answers_text_or_well_formed_calls(openai_client):
    message = openai_client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], max_tokens=96,
        temperature=0).choices[0].message
    assert message.tool_calls or message.content
    for call in message.tool_calls or []:
        assert_well_formed(call.function.name, call.function.arguments)


def test_response_format_json_schema_is_kept(openai_client):
    # bounded values: the grammar holds the shape, not the length, and the 135M model once
    # wrote a population of 1111... until max_tokens cut the JSON off
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "enum": ["Paris", "London", "Rome"]},
        "is_capital": {"type": "boolean"}},
        "required": ["city", "is_capital"], "additionalProperties": False}
    response = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "city", "schema": schema, "strict": True}},
        max_tokens=64, temperature=0)
    assert response.choices[0].finish_reason == "stop"
    answer = json.loads(response.choices[0].message.content)
    assert set(answer) == {"city", "is_capital"}
    assert answer["city"] in ("Paris", "London", "Rome")
    assert isinstance(answer["is_capital"], bool)


def test_responses_create_answers_plain_and_streamed(openai_client):
    response = openai_client.responses.create(
        model=MODEL, input="What is the capital of France?", max_output_tokens=32,
        temperature=0, store=False)
    assert response.status == "completed" and "Paris" in response.output_text
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 32
    events = list(openai_client.responses.create(
        model=MODEL, input="What is the capital of France?", max_output_tokens=32,
        temperature=0, store=False, stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas).strip() == response.output_text.strip()
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == response.usage.output_tokens


def test_responses_call_a_required_function_tool(openai_client):
    tool = {"type": "function", **WEATHER["function"]}  # the Responses API's flat shape
    response = openai_client.responses.create(
        model=MODEL, input=ASK[0]["content"], tools=[tool], tool_choice="required",
        max_output_tokens=64, temperature=0, store=False)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls, response.output
    for call in calls:
        assert_well_formed(call.name, call.arguments)


def test_responses_keep_no_state(openai_client):
    """vLLM's response store is off: nothing to continue from, nothing to run later."""
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.create(model=MODEL, input="And then?", max_output_tokens=4,
                                       previous_response_id="resp_0123456789abcdef")
    with pytest.raises(openai.BadRequestError, match="background"):
        openai_client.responses.create(model=MODEL, input="hi", background=True)


def test_responses_refuse_with_openai_errors_as_the_other_routes_do(base_url, access_url,
                                                                    openai_client):
    key, _ = create_key(access_url, "rag-only-responses", models=["rag*"])
    with pytest.raises(openai.PermissionDeniedError, match=f"may not use model '{MODEL}'"):
        client_for(base_url, key).responses.create(model=MODEL, input="hi")
    with pytest.raises(openai.PermissionDeniedError, match=f"may not use model '{MODEL}'"):
        client_for(base_url, key).chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required")
    with pytest.raises(openai.NotFoundError, match="'no-such-model' does not exist. "
                                                   f"Available models: .*{MODEL}"):
        openai_client.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError, match="'rag:docs' is a RAG model: ask it on "
                                                     "/v1/chat/completions"):
        openai_client.responses.create(model="rag:docs", input="hi")
    with pytest.raises(openai.BadRequestError, match="this service allows at most") as refused:
        openai_client.responses.create(model=MODEL, input="hi", max_output_tokens=100_000)
    assert refused.value.body["param"] == "max_output_tokens"


def test_tool_calls_and_responses_write_usage_rows_with_their_tokens(base_url, access_url):
    key, _ = create_key(access_url, "tools-and-responses")
    client = client_for(base_url, key)
    client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER],
                                   tool_choice="required", max_tokens=48, temperature=0)
    client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=8)
    list(client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=8,
                                 stream=True))
    rows = wait_for_rows(access_url, "tools-and-responses", 3)
    assert [(r["route"], r["status"]) for r in rows] == [
        ("/v1/chat/completions", 200), ("/v1/responses", 200), ("/v1/responses", 200)]
    for row in rows:
        assert row["model"] == MODEL and row["prompt_tokens"] > 0, row
        assert row["completion_tokens"] > 0, row
    assert all(r["completion_tokens"] <= 8 for r in rows[1:])


def test_langchain_bind_tools_round_trip(base_url, api_key):
    """LangChain's agent loop: a forced call, the tool's result sent back, an answer."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"Sunny and 21 C in {city}."

    llm = ChatOpenAI(model=MODEL, base_url=f"{base_url}/v1", api_key=api_key, temperature=0,
                     max_tokens=64, max_retries=0, timeout=300)
    messages = [HumanMessage("What is the weather in Paris?")]
    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(messages)
    (call,) = called.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    messages += [called, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    answer = llm.bind_tools([get_weather]).invoke(messages)  # the call replayed in the prompt
    assert answer.content or answer.tool_calls
    assert answer.usage_metadata["input_tokens"] > called.usage_metadata["input_tokens"]
