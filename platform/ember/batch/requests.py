"""OpenAI batch-format lines in, OpenAI batch-format results out.

An input line is `{"custom_id", "method": "POST", "url", "body"}` with the body of a
chat completion or a completion request (OpenAI's Batch API input). A result line is
`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`.

Every input line gets exactly one result line. A line that cannot run (not JSON, no
custom_id, another model, an unsupported option, a prompt longer than the context) gets
an error result here, before any engine starts; the rest of the batch runs. A line with
no usable custom_id is reported by its line number (`custom_id` null, `line` set).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from ember.openai_errors import error_body

BATCH_URLS = ("/v1/chat/completions", "/v1/completions")  # what a batch line may POST to
# Sampling options the engine stage passes on; anything else in a body is refused by name
# rather than silently ignored.
SAMPLING_KEYS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
                 "presence_penalty", "frequency_penalty", "ignore_eos")
IGNORED_KEYS = ("model", "messages", "prompt", "n", "stream", "user", "metadata", "store")


@dataclass
class LineError:
    status_code: int
    message: str
    param: str | None = None
    code: str = "invalid_request_error"


@dataclass
class BatchLine:
    """One input line, checked: `prompt` is set when it can run, `error` when it cannot."""

    line: int  # 1-based
    custom_id: str | None
    url: str = ""
    prompt: str = ""
    prompt_tokens: int = 0
    sampling: dict = field(default_factory=dict)
    body: dict = field(default_factory=dict, repr=False)
    error: LineError | None = None

    @property
    def runnable(self) -> bool:
        return self.error is None


def parse_line(number: int, text: str, model: str) -> BatchLine:
    """The checks that need no tokenizer: JSON, custom_id, endpoint, model, options."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return BatchLine(number, None, error=LineError(400, f"line {number} is not JSON: {exc}",
                                                       code="invalid_json"))
    if not isinstance(data, dict):
        return BatchLine(number, None, error=LineError(400, f"line {number} is not a JSON object",
                                                       code="invalid_json"))
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BatchLine(number, None, error=LineError(
            400, f"line {number} has no 'custom_id' (a non-empty string)", "custom_id"))
    entry = BatchLine(number, custom_id, url=str(data.get("url", "")))
    entry.error = _check_request(data, model)
    if entry.error is None:
        entry.body, entry.sampling = data["body"], _sampling(data["body"])
    return entry


def _check_request(data: dict, model: str) -> LineError | None:
    if data.get("method", "POST") != "POST":
        return LineError(400, f"'method' must be POST, got {data.get('method')!r}", "method")
    if data.get("url") not in BATCH_URLS:
        return LineError(400, f"'url' must be one of {', '.join(BATCH_URLS)}, got "
                              f"{data.get('url')!r}", "url")
    body = data.get("body")
    if not isinstance(body, dict):
        return LineError(400, "'body' must be a JSON object", "body")
    if body.get("model", model) != model:
        return LineError(404, f"model '{body['model']}' is not the one this batch runs "
                              f"('{model}')", "model", code="model_not_found")
    if body.get("n", 1) != 1:
        return LineError(400, "'n' above 1 is not supported in batches", "n")
    if body.get("stream"):
        return LineError(400, "'stream' is not supported in batches", "stream")
    unknown = sorted(set(body) - set(SAMPLING_KEYS) - set(IGNORED_KEYS))
    if unknown:
        return LineError(400, f"unsupported option(s) in a batch: {', '.join(unknown)}",
                         unknown[0])
    if data["url"] == "/v1/chat/completions":
        return _check_messages(body.get("messages")) or _check_sampling(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        return LineError(400, "'prompt' must be a non-empty string", "prompt")
    return _check_sampling(body)


def _check_messages(messages) -> LineError | None:
    if not isinstance(messages, list) or not messages:
        return LineError(400, "'messages' must be a non-empty list", "messages")
    for i, message in enumerate(messages):
        if (not isinstance(message, dict) or message.get("role") not in
                ("system", "user", "assistant") or not isinstance(message.get("content"), str)):
            return LineError(400, f"messages[{i}] must have a role (system, user, assistant) "
                                  f"and string content", "messages")
    return None


def _check_sampling(body: dict) -> LineError | None:
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        return LineError(400, f"'max_tokens' must be a positive integer, got {limit!r}",
                         "max_tokens")
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int | float) or value < 0):
            return LineError(400, f"'{key}' must be a non-negative number", key)
    if not isinstance(body.get("ignore_eos", False), bool):  # vLLM's extension, as online
        return LineError(400, "'ignore_eos' must be true or false", "ignore_eos")
    return None


def _sampling(body: dict) -> dict:
    stop = body.get("stop")
    return {
        "max_tokens": body.get("max_completion_tokens", body.get("max_tokens")),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "stop": [stop] if isinstance(stop, str) else list(stop or []),
        "seed": body.get("seed"),
        "presence_penalty": body.get("presence_penalty"),
        "frequency_penalty": body.get("frequency_penalty"),
        "ignore_eos": body.get("ignore_eos"),
    }


def render(entry: BatchLine, tokenizer, max_model_len: int, default_max_tokens: int) -> None:
    """Set the text the engine completes (a chat rendered with the model's own template),
    its token count and max_tokens; a prompt that leaves no room to answer is an error."""
    body = entry.body
    if entry.url == "/v1/chat/completions":
        entry.prompt = tokenizer.apply_chat_template(body["messages"], tokenize=False,
                                                     add_generation_prompt=True)
    else:
        prompt = body["prompt"]
        entry.prompt = prompt[0] if isinstance(prompt, list) else prompt
    entry.body = {}  # no longer needed: 100k lines should not keep two copies
    entry.prompt_tokens = len(tokenizer(entry.prompt, add_special_tokens=False)["input_ids"])
    if entry.sampling["max_tokens"] is None:
        entry.sampling["max_tokens"] = max(1, min(default_max_tokens,
                                                  max_model_len - entry.prompt_tokens))
    if entry.prompt_tokens + entry.sampling["max_tokens"] > max_model_len:
        entry.error = LineError(
            400, f"the prompt is {entry.prompt_tokens} tokens; with max_tokens "
                 f"{entry.sampling['max_tokens']} it exceeds the model's context of "
                 f"{max_model_len} tokens", "messages" if "chat" in entry.url else "prompt",
            code="context_length_exceeded")


# --- results ----------------------------------------------------------------------------
def _ids() -> tuple[str, str]:
    return f"batch_req_{uuid.uuid4().hex}", f"req_{uuid.uuid4().hex}"


def error_result(entry: BatchLine) -> dict:
    record_id, request_id = _ids()
    error = entry.error
    if entry.custom_id is None:  # nothing to answer to: the line itself is broken
        return {"id": record_id, "custom_id": None, "line": entry.line, "response": None,
                "error": {"code": error.code, "message": error.message}}
    body = error_body(error.message, "invalid_request_error" if error.status_code < 500
                      else "server_error", error.param, error.code)
    return {"id": record_id, "custom_id": entry.custom_id,
            "response": {"status_code": error.status_code, "request_id": request_id,
                         "body": body}, "error": None}


def success_result(entry: BatchLine, model: str, text: str, completion_tokens: int) -> dict:
    record_id, request_id = _ids()
    limit = entry.sampling.get("max_tokens")
    finish = "length" if limit is not None and completion_tokens >= limit else "stop"
    usage = {"prompt_tokens": entry.prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": entry.prompt_tokens + completion_tokens}
    created = int(time.time())
    if entry.url == "/v1/chat/completions":
        body = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}], "usage": usage}
    else:
        body = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish}],
                "usage": usage}
    return {"id": record_id, "custom_id": entry.custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": body},
            "error": None}


def is_ok(result: dict) -> bool:
    response = result.get("response") or {}
    return result.get("error") is None and response.get("status_code") == 200
