"""`ember eval model` against the running service: answers and perplexity as served.

The base model's own greedy answers, used as references, must score exact match 1
and a low perplexity; unrelated references a far higher one. The session's engines
serve LoRA adapters, so perplexity is scored on Ray there (the service refuses prompt
log-probabilities). (The adapter's evaluation is in test_training.py.)
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
QUESTIONS = ["What colour is the sky on a clear day?", "Name a fruit that is yellow.",
             "What is two plus two?"]


def write_chats(path, pairs) -> str:
    path.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in pairs))
    return str(path)


def test_the_base_scores_its_own_answers_perfectly_and_nonsense_badly(
        base_url, openai_client, tmp_path, capsys):
    from ember.cli.main import main

    own = [openai_client.chat.completions.create(
        model=MODEL, max_tokens=24, temperature=0,
        messages=[{"role": "user", "content": q}]).choices[0].message.content
        for q in QUESTIONS]
    nonsense = ["Marmalade quantum zebra seventeen oblong."] * len(QUESTIONS)
    figures = {}
    for name, answers in (("own", own), ("nonsense", nonsense)):
        data = write_chats(tmp_path / f"{name}.jsonl", zip(QUESTIONS, answers, strict=True))
        out = tmp_path / f"{name}.json"
        assert main(["eval", "model", MODEL, "--data", data, "--max-tokens", "24",
                     "--concurrency", "1", "--json", str(out), "--url", base_url]) == 0
        figures[name] = json.loads(out.read_text())["tuned"]
    printed = capsys.readouterr().out
    assert f"[eval] {MODEL}: 3/3 examples" in printed and "| perplexity" in printed
    assert "both perplexities are scored on Ray" in printed  # LoRA on: see the last test
    own, nonsense = figures["own"], figures["nonsense"]
    assert own["examples"] == 3
    assert (own["exact_match"], own["f1"], own["rouge_l"]) == (1.0, 1.0, 1.0)
    assert (nonsense["exact_match"], nonsense["f1"]) == (0.0, 0.0)
    # greedy tokens are each the most likely: far likelier than nonsense
    assert 1.0 <= own["perplexity"] < nonsense["perplexity"] / 10, (own, nonsense)


def test_an_unknown_model_is_a_clear_error(base_url, tmp_path, capsys):
    from ember.cli.main import main

    data = write_chats(tmp_path / "d.jsonl", [("hi", "hello")])
    assert main(["eval", "model", "no-such-model", "--data", data, "--url", base_url]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_prompt_log_probabilities_are_refused_where_adapters_are_served(base_url, auth):
    """The session's engines serve LoRA adapters (`lora:`), where vLLM's engine core dies
    on prompt log-probabilities once an adapter is loaded: the hot path refuses them by
    name, and the engine answers on. (`ember eval model` then scores perplexity on Ray.)"""
    import httpx

    chat = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    for extra in ({"prompt_logprobs": 0}, {"echo": True}):
        refused = httpx.post(f"{base_url}/v1/chat/completions", headers=auth, timeout=60,
                             json={**chat, **extra})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == next(iter(extra)) and "vllm-project/vllm#16668" in error["message"]
    completion = httpx.post(f"{base_url}/v1/completions", headers=auth, timeout=60, json={
        "model": MODEL, "prompt": "hi", "max_tokens": 1, "echo": True, "logprobs": 1})
    assert completion.status_code == 400 and "echo" in completion.text
    answered = httpx.post(f"{base_url}/v1/chat/completions", headers=auth, timeout=60, json=chat)
    assert answered.status_code == 200, answered.text
