"""Tool calling on the embedded model: Ember's chat template and vLLM's parser agree.

SmolLM2's own chat template renders no tools, so Ember ships one that renders them
in SmolLM2's function-calling format (`smollm2-tools`); vLLM's `xlam` parser must
read back exactly what the template writes for a call, or a conversation that
replays the model's calls would not parse as the calls it made.
"""

from __future__ import annotations

import json

import pytest
from ember.models.catalogue import (
    CATALOGUE,
    DEFAULT_LLM,
    load_chat_template,
    resolve_model,
)
from ember.models.entries import ModelNotAvailableError
from ember.serving.config import ModelDeploymentConfig

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
CALLS = [{"id": "c1", "type": "function",
          "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
         {"id": "c2", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]


@pytest.fixture(scope="module")
def tokenizer():
    try:
        folder = resolve_model(DEFAULT_LLM, prepare=False)
    except ModelNotAvailableError as exc:
        pytest.skip(f"the embedded model's tokenizer is not on disk: {exc}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def render(tokenizer, messages, **kwargs) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=load_chat_template("smollm2-tools"), tokenize=False,
        add_generation_prompt=True, **kwargs)


def test_without_tools_the_template_renders_what_the_models_own_does(tokenizer):
    for messages in ([{"role": "user", "content": "Hi"}],
                     [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                      {"role": "user", "content": "And?"}]):
        own = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert render(tokenizer, messages) == own


def test_tools_and_the_system_message_are_in_the_system_turn(tokenizer):
    prompt = render(tokenizer, [{"role": "system", "content": "Answer in French."},
                                {"role": "user", "content": "Weather in Paris?"}],
                    tools=[WEATHER])
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\n")
    tools = system.split("<tools>")[1].split("</tools>")[0]
    assert json.loads(tools) == [WEATHER["function"]]
    assert system.endswith("Answer in French.") and prompt.count("<|im_start|>system") == 1


def test_xlam_parser_reads_back_the_calls_the_template_writes(tokenizer):
    from vllm.tool_parsers.xlam_tool_parser import xLAMToolParser

    messages = [{"role": "user", "content": "Weather in Paris and Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": CALLS},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    prompt = render(tokenizer, messages, tools=[WEATHER])
    written = prompt.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parsed = xLAMToolParser(tokenizer).extract_tool_calls(written, request=None)
    assert parsed.tools_called
    assert [(c.function.name, json.loads(c.function.arguments)) for c in parsed.tool_calls] \
        == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    assert "<tool_response>\nsunny\n</tool_response>" in prompt


def test_tool_calling_is_on_for_the_embedded_model_and_off_for_others():
    kwargs = ModelDeploymentConfig().engine_kwargs()
    assert kwargs["enable_auto_tool_choice"] is True
    assert kwargs["tool_call_parser"] == CATALOGUE[DEFAULT_LLM].tool_parser == "xlam"
    assert kwargs["chat_template"] == load_chat_template("smollm2-tools")
    other = ModelDeploymentConfig(name="x", source="/models/x").engine_kwargs()
    assert "tool_call_parser" not in other and "enable_auto_tool_choice" not in other
    assert "tool_call_parser" not in ModelDeploymentConfig(tool_calling=None).engine_kwargs()


def test_another_model_names_its_parser_and_template(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    config = ModelDeploymentConfig(name="x", source="/models/x", tool_calling={
        "parser": "hermes", "chat_template": str(template)})
    kwargs = config.engine_kwargs()
    assert (kwargs["tool_call_parser"], kwargs["chat_template"]) == ("hermes", "{{ messages }}")
    missing = ModelDeploymentConfig(tool_calling={"parser": "hermes", "chat_template": "nope"})
    with pytest.raises(ModelNotAvailableError, match="'nope' is neither a file nor one Ember "
                                                     r"ships \(smollm2-tools\)"):
        missing.engine_kwargs()
