"""`ember eval model` against the running service: answers and perplexity as served.

The base model's own greedy answers, used as references, must score exact match 1
and a low perplexity; unrelated references a far higher one; and the perplexity the
service gives (prompt_logprobs) must match what the Ray task that scores adapters
computes from the same files. (The adapter's evaluation is in test_training.py.)
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


def test_the_service_and_the_ray_task_agree_on_perplexity(base_url, tmp_path):
    """Adapters are scored on Ray (vLLM cannot score prompts with one): the two ways must
    measure the same thing on the base, or base-vs-adapter comparisons would mislead."""
    from ember.client import Client
    from ember.eval import model_eval as ev

    data = write_chats(tmp_path / "d.jsonl", [
        ("Who keeps the lanterns lit?", "The keeper does, every evening at dusk."),
        ("What is the capital of France?", "Paris is the capital of France.")])
    examples, _ = ev.load_eval_examples(data)
    with Client(base_url) as client:
        served = ev.evaluate_model(client, MODEL, examples, max_tokens=4)
    on_ray = ev.ModelScores(MODEL, [ev.ExampleResult(**vars(r)) for r in served.results])
    ev.add_offline_perplexity(on_ray, examples)
    assert [r.reference_tokens for r in on_ray.results] == [
        r.reference_tokens for r in served.results]  # the same tokens, template and all
    assert on_ray.perplexity == pytest.approx(served.perplexity, rel=0.02)
