"""`ember eval model`'s parts that need no service: data, metrics, log-probabilities, report."""

from __future__ import annotations

import json
import math

import pytest
from ember.errors import EmberError
from ember.eval import model_eval as ev
from ember.training import answer_metrics as am


def chat(user: str, assistant: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user},
                                    {"role": "assistant", "content": assistant}]})


def test_examples_split_like_training_and_bad_lines_are_reported(tmp_path):
    from ember.training.sft_data import load_examples, split_examples

    lines = [chat(f"q{i}", f"a{i}") for i in range(20)]
    lines.insert(3, "{broken")
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n")
    examples, report = ev.load_eval_examples(data, val_fraction=0.2, seed=7)
    assert [i.line for i in report.issues] == [4]
    _, held_out = split_examples(load_examples(data)[0], 0.2, 7)
    assert [e.line for e in examples] == [c["line"] for c in held_out] and len(examples) == 4
    assert examples[0].prompt[-1]["role"] == "user"
    assert examples[0].reference == held_out[0]["messages"][-1]["content"]
    assert len(ev.load_eval_examples(data, max_examples=5)[0]) == 5


def test_data_without_a_reference_is_refused(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(EmberError, match="no example ends in an assistant reply"):
        ev.load_eval_examples(data)


def test_exact_match_and_f1_normalise_like_squad():
    assert am.exact_match("The Lantern!", "lantern") == 1.0
    assert am.exact_match("a lantern keeper", "the lantern") == 0.0
    assert am.token_f1("Mira Okafor pilots", "Mira Okafor") == pytest.approx(0.8)
    assert am.token_f1("nothing alike", "Mira Okafor") == 0.0
    assert am.token_f1("", "") == 1.0 and am.token_f1("x", "") == 0.0


def test_rouge_l_is_the_longest_common_subsequence_f1():
    assert am.rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS "the cat the mat" (4 of 6 and 4 of 5 tokens)
    assert am.rouge_l("the cat lay on a rug the mat", "the cat the mat") == pytest.approx(
        2 * (4 / 8) * 1.0 / (4 / 8 + 1.0))
    assert am.rouge_l("alpha", "omega") == 0.0


def test_reference_logprobs_are_the_tokens_after_the_generation_prompt():
    payload = {"prompt_token_ids": [5, 9, 7, 3],
               "prompt_logprobs": [None, {"9": {"logprob": -0.5, "rank": 1}},
                                   {"7": {"logprob": -1.0, "rank": 2},
                                    "8": {"logprob": -0.2, "rank": 1}},
                                   {"3": {"logprob": -2.0, "rank": 4}}]}
    assert ev.reference_logprobs(payload, prompt_tokens=2) == [-1.0, -2.0]
    with pytest.raises(EmberError, match="no prompt log-probabilities"):
        ev.reference_logprobs({"choices": []}, 2)


def result(line: int, em: float, f1: float, nll: float, tokens: int) -> ev.ExampleResult:
    return ev.ExampleResult(line, f"answer {line}", em, f1, f1, nll, tokens)


def test_perplexity_is_token_weighted_and_the_report_names_changed_answers():
    examples = [ev.EvalExample(1, [{"role": "user", "content": "first?"}], "one"),
                ev.EvalExample(2, [{"role": "user", "content": "second?"}], "two")]
    base = ev.ModelScores("base", [result(1, 0, 0.2, 6.0, 2), result(2, 1, 1.0, 2.0, 2)])
    tuned = ev.ModelScores("tuned", [result(1, 1, 1.0, 3.0, 2), result(2, 1, 1.0, 1.0, 2)])
    assert base.perplexity == pytest.approx(math.exp(8 / 4))
    assert ev.perplexity_change(tuned, base) == pytest.approx(math.exp(1) / math.exp(2) - 1)
    assert [t.line for t, _ in ev.changed_examples(tuned, base)] == [1]
    table = ev.format_table(tuned, base)
    assert "| perplexity (lower is better) | 7.389 | 2.718 | -63.2% |" in table
    assert "| exact match | 0.500 | 1.000 | +0.500 |" in table
    report = ev.markdown_report(tuned, base, examples, "held.jsonl")
    assert "## Examples whose answer changed (1)" in report and "first?" in report
    assert "second?" not in report
    figures = ev.as_json(tuned, base, "held.jsonl")
    assert figures["perplexity_change"] == pytest.approx(-0.632, abs=1e-3)
    assert len(figures["base_examples"]) == 2


def test_an_unmeasured_perplexity_reads_n_a_beside_a_measured_one():
    base = ev.ModelScores("base", [result(1, 0, 0.5, 4.0, 2)])
    adapter = ev.ModelScores("keeper", [ev.ExampleResult(1, "a", 1, 1.0, 1.0, None, 0)])
    assert adapter.perplexity is None and ev.perplexity_change(adapter, base) is None
    assert "| perplexity (lower is better) | 7.389 | n/a | n/a |" in ev.format_table(adapter, base)
    assert ev.as_json(adapter, base, "d.jsonl")["tuned"]["perplexity"] is None
