"""SFT data: every issue kind on its line, the split, assistant-only labels, the CLI."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ember.cli.main import main
from ember.models.catalogue import DEFAULT_LLM, ModelNotAvailableError, resolve_model
from ember.training.sft_data import (
    IGNORE_INDEX,
    ISSUE_KINDS,
    DatasetError,
    collate,
    load_examples,
    split_examples,
    tokenize_example,
)

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "assets" / "sft" / "bad.jsonl"
BAD_ALPACA = ROOT / "tests" / "assets" / "sft" / "bad-alpaca.jsonl"
SAMPLES = ROOT / "samples" / "sft"
SAMPLE_CHAT = SAMPLES / "lantern-keeper.jsonl"
SAMPLE_ALPACA = SAMPLES / "ferry-faq-alpaca.jsonl"
EOT = "<|im_end|>"

SYSTEM = {"role": "system", "content": "You are Tamsin Reed, the lantern keeper."}
ASK = {"role": "user", "content": "How much is a ticket?"}
REPLY = {"role": "assistant", "content": "Ah, 3 kestrels and 20 pennies. Mind the lanterns."}
ASK2 = {"role": "user", "content": "And a bicycle?"}
REPLY2 = {"role": "assistant", "content": "Ah, 1 kestrel.\n\nMind the lanterns."}


@pytest.fixture(scope="module")
def tokenizer():
    try:
        folder = resolve_model(DEFAULT_LLM, prepare=False)
    except ModelNotAvailableError as exc:
        pytest.skip(f"the embedded model's tokenizer is not on disk: {exc}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- loading and validation ---------------------------------------------------------------


def test_every_issue_kind_on_its_line_and_valid_lines_survive():
    examples, report = load_examples(BAD)
    assert {i.line: i.kind for i in report.issues} == {
        3: "json", 4: "json", 5: "schema", 6: "schema", 7: "role_order", 8: "role_order",
        9: "empty_turn", 10: "too_long", 11: "duplicate", 13: "schema",
    }
    assert {i.kind for i in report.issues} == set(ISSUE_KINDS)
    assert [e["line"] for e in examples] == [1, 12] and report.valid == 2
    assert report.lines == 12 and report.format == "chat" and not report.ok  # 2 blank lines
    assert examples[0]["messages"][0] == {"role": "system",
                                          "content": "You are Tamsin Reed, the lantern keeper."}
    messages = {i.line: i.message for i in report.issues}
    assert "'bot'" in messages[5] and "42" in messages[6]
    assert "'assistant' where 'user'" in messages[7] and "last message is 'user'" in messages[8]
    assert "20,122 characters" in messages[10] and "line 1" in messages[11]
    assert "'messages'" in messages[13]


def test_alpaca_issues_name_the_field():
    examples, report = load_examples(BAD_ALPACA)
    assert report.format == "alpaca" and [e["line"] for e in examples] == [1, 2]
    assert [(i.line, i.kind) for i in report.issues] == [
        (3, "json"), (4, "schema"), (5, "schema"), (6, "empty_turn"), (7, "duplicate")]
    assert "'output'" in report.issues[1].message and "'input'" in report.issues[2].message
    assert "'output' is empty" in report.issues[3].message


def test_alpaca_rows_become_user_and_assistant_messages(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Answer as Tamsin.", "input": "Can I bring my dog?", "output": "Ah, yes."},
        {"instruction": "Where is lost property kept?", "output": "Ah, at Sarnock Point."},
        {"instruction": "Who founded the ferry?", "input": "  ", "output": "Ah, Idris Vale."},
    ])
    examples, report = load_examples(path, format="alpaca")
    assert report.ok and report.format == "alpaca"
    assert [e["messages"] for e in examples] == [
        [{"role": "user", "content": "Answer as Tamsin.\n\nCan I bring my dog?"},
         {"role": "assistant", "content": "Ah, yes."}],
        [{"role": "user", "content": "Where is lost property kept?"},
         {"role": "assistant", "content": "Ah, at Sarnock Point."}],
        [{"role": "user", "content": "Who founded the ferry?"},
         {"role": "assistant", "content": "Ah, Idris Vale."}],
    ]


def test_auto_detects_from_the_first_object_then_enforces_it(tmp_path):
    chat_row = {"messages": [ASK, REPLY]}
    alpaca_row = {"instruction": "Fare?", "output": "Ah, 3 kestrels."}
    assert load_examples(SAMPLE_CHAT)[1].format == "chat"
    assert load_examples(SAMPLE_ALPACA)[1].format == "alpaca"
    path = write_jsonl(tmp_path / "mixed.jsonl", ["not json", {"text": "?"}, alpaca_row, chat_row])
    examples, report = load_examples(path)
    assert report.format == "alpaca" and [e["line"] for e in examples] == [3]
    assert [(i.line, i.kind) for i in report.issues] == [(1, "json"), (2, "schema"),
                                                         (4, "schema")]
    examples, report = load_examples(path, format="chat")
    assert report.format == "chat" and [e["line"] for e in examples] == [4]


def test_turn_length_limit_is_a_parameter(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": [ASK, REPLY]}])
    assert load_examples(path)[1].ok
    _, report = load_examples(path, max_turn_chars=30)
    assert [(i.line, i.kind) for i in report.issues] == [(1, "too_long")]
    assert "message 2 (assistant)" in report.issues[0].message


def test_only_a_system_message_or_a_late_one_is_a_role_order_issue(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"messages": [SYSTEM]}, {"messages": [ASK, SYSTEM, REPLY]},
        {"messages": [SYSTEM, ASK, REPLY, ASK2, REPLY2]}])
    examples, report = load_examples(path)
    assert [(i.line, i.kind) for i in report.issues] == [(1, "role_order"), (2, "role_order")]
    assert "only the first message" in report.issues[1].message
    assert [e["line"] for e in examples] == [3]


def test_unreadable_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_examples(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="is a folder"):
        load_examples(tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset format 'sharegpt'"):
        load_examples(BAD, format="sharegpt")


def test_no_valid_example_is_a_report_not_an_error(tmp_path):
    examples, report = load_examples(write_jsonl(tmp_path / "empty.jsonl", ["", "  "]))
    assert examples == [] and report.ok and report.lines == 0
    (tmp_path / "latin.jsonl").write_bytes(b'{"messages": "caf\xe9"}\n')
    examples, report = load_examples(tmp_path / "latin.jsonl")
    assert examples == [] and [i.kind for i in report.issues] == ["json"]
    assert "UTF-8" in report.issues[0].message


def test_report_text_counts_kinds_and_lists_lines():
    _, report = load_examples(BAD)
    text = report.format_text(max_issues=3)
    assert "12 lines, 2 valid examples, 10 issues" in text
    assert "json 2, schema 3, role_order 2, empty_turn 1, too_long 1, duplicate 1" in text
    assert "line 3: json: not valid JSON" in text and "line 6:" not in text
    assert "... and 7 more issues" in text


# --- split -----------------------------------------------------------------------------------


def lines(part: list[dict]) -> list[int]:
    return [e["line"] for e in part]


def test_split_is_deterministic_disjoint_and_about_ten_percent():
    examples, _ = load_examples(SAMPLE_CHAT)
    train, val = split_examples(examples, val_fraction=0.1, seed=0)
    assert len(val) == 30 and len(train) == 270
    assert sorted(lines(train) + lines(val)) == lines(examples)
    assert not set(lines(train)) & set(lines(val))
    assert split_examples(examples, 0.1, seed=0) == (train, val)
    assert lines(split_examples(examples, 0.1, seed=1)[1]) != lines(val)


def test_split_keeps_one_of_each_on_tiny_sets():
    two = [{"line": 1}, {"line": 2}]
    assert [len(part) for part in split_examples(two, 0.1)] == [1, 1]
    assert [len(part) for part in split_examples(two[:1], 0.1)] == [1, 0]
    assert [len(part) for part in split_examples(two, 0.0)] == [2, 0]
    with pytest.raises(DatasetError, match="val_fraction"):
        split_examples(two, 1.0)


def test_split_ignores_hash_randomisation():
    code = ("from ember.training.sft_data import load_examples, split_examples;"
            f"e, _ = load_examples({str(SAMPLE_CHAT)!r});"
            "print([x['line'] for x in split_examples(e, 0.1, seed=3)[1]])")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(outputs) == 1


# --- tokenisation ----------------------------------------------------------------------------


def label_spans(example: dict) -> list[list[int]]:
    """Runs of consecutive positions with a label: one per assistant reply."""
    spans, previous = [], None
    for position, label in enumerate(example["labels"]):
        if label != IGNORE_INDEX:
            if previous != position - 1:
                spans.append([])
            spans[-1].append(position)
            previous = position
    return spans


def test_smollm2_template_has_the_prefix_property(tokenizer):
    messages = [ASK, REPLY, ASK2, REPLY2]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    for i in (1, 3):
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False,
                                               add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        assert full.startswith(before) and full.startswith(upto)
        assert before.endswith("<|im_start|>assistant\n")
        assert full[len(before):len(upto)] == messages[i]["content"] + EOT + "\n"


def test_labels_cover_exactly_the_reply_and_its_end_of_turn(tokenizer):
    example = tokenize_example(tokenizer, [SYSTEM, ASK, REPLY], max_seq_len=512)
    ids, labels = example["input_ids"], example["labels"]
    [span] = label_spans(example)
    assert [labels[p] for p in span] == [ids[p] for p in span]
    assert tokenizer.decode([ids[p] for p in span]) == REPLY["content"] + EOT
    prompt = tokenizer.decode(ids[: span[0]])
    assert prompt.endswith("<|im_start|>assistant\n") and ASK["content"] in prompt
    assert SYSTEM["content"] in prompt and span[-1] == len(ids) - 2  # then the newline


def test_multi_turn_has_one_span_per_reply_and_the_default_system_prompt_is_masked(tokenizer):
    example = tokenize_example(tokenizer, [ASK, REPLY, ASK2, REPLY2], max_seq_len=512)
    spans = label_spans(example)
    decoded = [tokenizer.decode([example["input_ids"][p] for p in s]) for s in spans]
    assert decoded == [REPLY["content"] + EOT, REPLY2["content"] + EOT]
    prompt = tokenizer.decode(example["input_ids"][: spans[0][0]])
    assert "SmolLM" in prompt  # the template's own system prompt: context, not a target
    between = tokenizer.decode(example["input_ids"][spans[0][-1] + 1: spans[1][0]])
    assert between == "\n<|im_start|>user\nAnd a bicycle?<|im_end|>\n<|im_start|>assistant\n"


def test_truncation_keeps_the_start_and_drops_examples_without_a_reply(tokenizer):
    full = tokenize_example(tokenizer, [ASK, REPLY], max_seq_len=512)
    first = label_spans(full)[0][0]
    cut = tokenize_example(tokenizer, [ASK, REPLY], max_seq_len=first + 3)
    assert cut["input_ids"] == full["input_ids"][: first + 3]
    assert cut["labels"] == full["labels"][: first + 3]
    assert tokenize_example(tokenizer, [ASK, REPLY], max_seq_len=first) is None


def test_templates_without_the_prefix_property_fall_back_to_searching(tokenizer):
    from transformers import AutoTokenizer

    # A header that counts the messages renders differently for every prefix.
    counting = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    counting.chat_template = (
        "<|im_start|>system\n{{ messages|length }} messages<|im_end|>\n"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    messages = [ASK, REPLY, ASK2, REPLY2]
    full = counting.apply_chat_template(messages, tokenize=False)
    assert not full.startswith(counting.apply_chat_template(messages[:1], tokenize=False,
                                                            add_generation_prompt=True))
    example = tokenize_example(counting, messages, max_seq_len=512)
    decoded = [counting.decode([example["input_ids"][p] for p in s])
               for s in label_spans(example)]
    assert decoded == [REPLY["content"] + EOT, REPLY2["content"] + EOT]


def test_a_tokenizer_without_chat_template_is_refused(tokenizer):
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    with pytest.raises(DatasetError, match="no chat template"):
        tokenize_example(bare, [ASK, REPLY], max_seq_len=64)


def test_collate_right_pads():
    batch = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                     {"input_ids": [1, 2, 3, 4, 9], "labels": [-100, -100, 3, 4, 9]}], pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2, 2], [1, 2, 3, 4, 9]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, -100], [-100, -100, 3, 4, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert {str(t.dtype) for t in batch.values()} == {"torch.int64"}


# --- CLI and the sample datasets -------------------------------------------------------------


def test_cli_fails_on_the_bad_file_with_line_numbers(capsys):
    assert main(["data", "validate", str(BAD)]) == 1
    out = capsys.readouterr().out
    assert "line 3: json:" in out and "line 11: duplicate: same messages as line 1" in out


def test_cli_passes_the_sample_and_reports_tokens(capsys, tokenizer):
    assert main(["data", "validate", str(SAMPLE_ALPACA), "--format", "alpaca"]) == 0
    assert main(["data", "validate", str(SAMPLE_CHAT), "--model", tokenizer.name_or_path,
                 "--max-seq-len", "100"]) == 0
    out = capsys.readouterr().out
    assert "300 valid examples, 0 issues" in out and "tokens (" in out and "median" in out
    truncated = int(re.search(r"(\d+) of 300 examples exceed --max-seq-len 100", out)[1])
    assert 0 < truncated < 300 and "0 would have no assistant token left" in out


def test_cli_fails_when_nothing_is_valid(tmp_path, capsys):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "not a chat"}])
    assert main(["data", "validate", str(path)]) == 1
    assert "no valid examples" in capsys.readouterr().err
    assert main(["data", "validate", str(tmp_path / "missing.jsonl")]) == 2


@pytest.mark.parametrize("path, count", [(SAMPLE_CHAT, 300), (SAMPLE_ALPACA, 60)])
def test_samples_are_clean_and_in_tamsins_voice(path, count):
    examples, report = load_examples(path)
    assert report.ok and report.valid == count
    replies = [m["content"] for e in examples for m in e["messages"] if m["role"] == "assistant"]
    assert all(r.startswith("Ah, ") and r.endswith("Mind the lanterns.") for r in replies)


def test_sample_chat_mixes_turns_and_system_messages():
    examples, _ = load_examples(SAMPLE_CHAT)
    turns = {sum(m["role"] == "assistant" for m in e["messages"]) for e in examples}
    systems = sum(e["messages"][0]["role"] == "system" for e in examples)
    assert turns == {1, 2, 3} and 0.1 * len(examples) < systems < 0.5 * len(examples)


def test_committed_samples_match_the_generator(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_sft", ROOT / "samples" / "make_sft.py")
    make_sft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sft)
    make_sft.OUT = tmp_path
    make_sft.main()
    for name in ("lantern-keeper.jsonl", "ferry-faq-alpaca.jsonl"):
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes()
