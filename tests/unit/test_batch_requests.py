"""Batch lines: each input line gets one result, bad lines an error naming what was wrong."""

import json

import pytest
from ember.batch.job import check_lines, read_done, write_ordered
from ember.batch.requests import error_result, is_ok, parse_line, success_result

MODEL = "m"


class CharTokenizer:
    """A tokenizer stand-in with the two calls `render` makes: one token per character."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def __call__(self, text, add_special_tokens):
        return {"input_ids": list(text)}


def chat(custom_id, content="hi", **body):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": MODEL,
                                "messages": [{"role": "user", "content": content}], **body}})


def test_a_good_chat_line_is_rendered_with_the_template():
    [entry] = check_lines([(1, chat("a", max_tokens=5))], MODEL, CharTokenizer(), 100, 16)
    assert entry.runnable and entry.prompt == "<user>hi<assistant>"
    assert entry.prompt_tokens == len("<user>hi<assistant>")
    assert entry.sampling["max_tokens"] == 5


def test_a_completion_line_and_default_max_tokens():
    line = json.dumps({"custom_id": "c", "method": "POST", "url": "/v1/completions",
                       "body": {"prompt": "Once upon", "temperature": 0}})
    [entry] = check_lines([(1, line)], MODEL, CharTokenizer(), 100, 16)
    assert entry.runnable and entry.prompt == "Once upon"
    assert entry.sampling["max_tokens"] == 16 and entry.sampling["temperature"] == 0


@pytest.mark.parametrize("text, status, words", [
    ("{not json", 400, "not JSON"),
    ('["a list"]', 400, "not a JSON object"),
    ('{"url": "/v1/chat/completions", "body": {}}', 400, "custom_id"),
    (chat("x").replace("/v1/chat/completions", "/v1/embeddings"), 400, "'url'"),
    (chat("x").replace('"model": "m"', '"model": "other"'), 404, "model 'other'"),
    (chat("x", n=2), 400, "'n'"),
    (chat("x", logit_bias={}), 400, "logit_bias"),
    (chat("x", max_tokens=0), 400, "max_tokens"),
    (chat("x", ignore_eos="yes"), 400, "ignore_eos"),
    (json.dumps({"custom_id": "x", "url": "/v1/chat/completions",
                 "body": {"messages": []}}), 400, "messages"),
    (chat("x", content="y" * 200, max_tokens=10), 400, "exceeds the model's context"),
])
def test_bad_lines_get_an_error_naming_the_problem(text, status, words):
    [entry] = check_lines([(7, text)], MODEL, CharTokenizer(), 100, 16)
    assert not entry.runnable
    assert entry.error.status_code == status and words in entry.error.message
    result = error_result(entry)
    assert not is_ok(result)
    if entry.custom_id is None:
        assert result["line"] == 7 and words in result["error"]["message"]
    else:
        assert result["response"]["status_code"] == status
        assert words in result["response"]["body"]["error"]["message"]


def test_a_repeated_custom_id_is_an_error_and_the_first_runs():
    first, second = check_lines([(1, chat("a")), (2, chat("a"))], MODEL, CharTokenizer(), 100, 16)
    assert first.runnable and not second.runnable
    assert "repeats custom_id 'a' of line 1" in second.error.message


def test_results_are_rewritten_in_input_order_one_per_line(tmp_path):
    entries = check_lines([(1, chat("a")), (2, "{bad"), (3, chat("b", max_tokens=2))],
                          MODEL, CharTokenizer(), 100, 16)
    results = {"b": success_result(entries[2], MODEL, "ok", 2),
               "a": success_result(entries[0], MODEL, "hello", 1)}
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(results["b"]) + "\n" + '{"custom_id": "a", "trunc')  # cut line
    assert set(read_done(out)) == {"b"}
    write_ordered(out, entries, results)
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in records] == ["a", None, "b"]
    body = records[2]["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "length"
    assert records[0]["response"]["body"]["choices"][0]["message"]["content"] == "hello"
    assert body["usage"]["completion_tokens"] == 2


def test_parse_line_keeps_the_custom_id_of_a_refused_request():
    entry = parse_line(3, chat("keep", stream=True), MODEL)
    assert entry.custom_id == "keep" and "stream" in entry.error.message


def test_every_engine_row_carries_every_sampling_option():
    """Rows of one Ray Data block share one Arrow struct: an option one line leaves out
    must not reach vLLM as None (a None ignore_eos hung the engine)."""
    import vllm
    from ember.batch.processor import engine_rows
    from ember.batch.requests import SAMPLING_KEYS

    lines = [(1, chat("a")), (2, chat("b", temperature=0, ignore_eos=True, stop="x")),
             (3, chat("c", seed=3, top_p=0.5))]
    entries = check_lines(lines, MODEL, CharTokenizer(), 1000, 16)
    options = [json.loads(row["sampling"]) for row in engine_rows(entries)]
    assert set(options[0]) == set(SAMPLING_KEYS) - {"max_completion_tokens"}
    assert all(set(o) == set(options[0]) for o in options)
    assert all(v is not None for o in options for k, v in o.items() if k != "seed")
    assert options[1]["ignore_eos"] is True and options[1]["stop"] == ["x"]
    for o in options:
        vllm.SamplingParams(**o)
