"""Pure logic of the SDK: SSE parsing, error shapes, request bodies."""

import pytest
from ember.client import types as t


def test_sse_events_stop_at_done_and_skip_noise():
    lines = [": keep-alive", "", 'data: {"choices": [{"delta": {"content": "Hi"}}]}',
             "data: [DONE]", 'data: {"choices": []}']
    assert list(t.sse_events(lines)) == [{"choices": [{"delta": {"content": "Hi"}}]}]


def test_a_stream_cut_before_done_raises():
    lines = ['data: {"choices": [{"delta": {"content": "Hi"}}]}']
    events = t.sse_events(lines)
    assert next(events) == {"choices": [{"delta": {"content": "Hi"}}]}
    with pytest.raises(t.EmberAPIError, match="incomplete") as info:
        next(events)
    assert info.value.status_code == 502


def test_chat_stream_collects_text_usage_and_finish_reason():
    stream = t.ChatStream()
    assert stream.consume({"model": "m", "choices": [{"delta": {"content": "Pa"}}]}) == "Pa"
    assert stream.consume({"choices": [{"delta": {"content": "ris"},
                                        "finish_reason": "stop"}]}) == "ris"
    stream.consume({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                             "total_tokens": 5}})
    assert (stream.text, stream.finish_reason, stream.model) == ("Paris", "stop", "m")
    assert stream.usage.total_tokens == 5


def test_error_in_stream_raises_api_error():
    line = 'data: {"error": {"message": "boom", "type": "x", "code": 400}}'
    with pytest.raises(t.EmberAPIError, match="boom") as info:
        list(t.sse_events([line]))
    assert info.value.status_code == 400


@pytest.mark.parametrize("body, message", [
    ('{"error": {"message": "no such model", "code": 404, "param": "model"}}', "no such model"),
    ('{"detail": "Not Found"}', "Not Found"),
    ("plain text", "plain text"),
])
def test_raise_for_error_reads_every_error_shape(body, message):
    with pytest.raises(t.EmberAPIError, match=message) as info:
        t.raise_for_error(404, body)
    assert info.value.status_code == 404


def test_base_url_accepts_v1_suffix():
    assert t.normalize_base_url("http://h:8000/v1/") == "http://h:8000"


def test_chat_body_wraps_a_string_and_asks_for_usage_when_streaming():
    body = t.chat_body("hello", "m", stream=True, sampling={"max_tokens": 4})
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 4
