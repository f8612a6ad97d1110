"""SFT data: read and check a JSONL dataset, split it, tokenise it with assistant-only loss.

Design choices:
- A bad line never raises: it becomes a `DataIssue` (line number, kind, message)
  and is dropped, so one run of `ember data validate` lists every problem.
- Two formats, both turned into chat messages: chat (`{"messages": [...]}`) and
  Alpaca (`{"instruction", "input", "output"}`). `auto` looks at the first JSON
  object that says which it is; after that every line must match.
- The loss covers assistant replies only. Spans come from rendering the chat
  template on growing prefixes of the conversation, and labels from the
  character offsets of ONE tokenisation of the full text, so the token ids are
  exactly those of the whole conversation (tokenising pieces separately can
  merge differently at the seams).
- Where a template breaks the prefix property (it renders earlier turns
  differently once more follow), the reply is found by searching its text.
- The split is a seeded `random.Random` shuffle: the same on every machine and
  run, whatever PYTHONHASHSEED says.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ember.errors import EmberError

if TYPE_CHECKING:
    import torch

FORMATS = ("chat", "alpaca")
ROLES = ("system", "user", "assistant")
ISSUE_KINDS = ("json", "schema", "role_order", "empty_turn", "too_long", "duplicate")
IGNORE_INDEX = -100  # the label torch's cross-entropy skips


class DatasetError(EmberError):
    """A dataset file cannot be read at all (missing, a folder, unknown format)."""


@dataclass(frozen=True)
class DataIssue:
    line: int  # 1-based line number in the file
    kind: str  # one of ISSUE_KINDS
    message: str


@dataclass
class DatasetReport:
    path: str
    format: str  # "chat" or "alpaca"
    lines: int  # non-blank lines read
    valid: int  # examples kept
    issues: list[DataIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def format_text(self, max_issues: int = 50) -> str:
        """Counts per kind, then one `line N: kind: message` line per issue."""
        head = (f"{self.path} ({self.format} format): {self.lines} lines, "
                f"{self.valid} valid examples, {len(self.issues)} issues")
        if self.ok:
            return head
        counts = Counter(issue.kind for issue in self.issues)
        by_kind = ", ".join(f"{kind} {counts[kind]}" for kind in ISSUE_KINDS if counts[kind])
        out = [head, f"  by kind: {by_kind}"]
        out += [f"  line {i.line}: {i.kind}: {i.message}" for i in self.issues[:max_issues]]
        if len(self.issues) > max_issues:
            out.append(f"  ... and {len(self.issues) - max_issues} more issues")
        return "\n".join(out)


class _LineProblem(Exception):
    """Why a line cannot become messages at all (bad JSON or bad schema)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def load_examples(
    path: str | Path,
    format: str = "auto",  # noqa: A002 - named in the public API and the CLI flag
    max_turn_chars: int = 20000,
) -> tuple[list[dict], DatasetReport]:
    """Read a JSONL file; return the valid examples as {"messages": [...], "line": N} and
    the report of every dropped line."""
    path = _check_path(path, format)
    detected = None if format == "auto" else format
    examples, issues, first_seen, lines = [], [], {}, 0
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        lines += 1
        try:
            obj = _parse_object(raw, first=number == 1)
            detected = detected or _detect_format(obj)
            messages = _to_messages(obj, detected)
        except _LineProblem as problem:
            issues.append(DataIssue(number, problem.kind, problem.message))
            continue
        found = _check_messages(messages, max_turn_chars)
        key = json.dumps(messages, ensure_ascii=False)
        if not found and key in first_seen:
            found = [("duplicate", f"same messages as line {first_seen[key]}")]
        if found:
            issues += [DataIssue(number, kind, message) for kind, message in found]
            continue
        first_seen[key] = number
        examples.append({"messages": messages, "line": number})
    report = DatasetReport(str(path), detected or "chat", lines, len(examples), issues)
    return examples, report


def _check_path(path: str | Path, fmt: str) -> Path:
    if fmt not in ("auto", *FORMATS):
        raise DatasetError(f"unknown dataset format '{fmt}': use auto, chat or alpaca.")
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DatasetError(f"dataset {path} {what}: give the path of a JSONL file "
                           f"(one JSON object per line).")
    return path


def _parse_object(raw: bytes, first: bool) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _LineProblem("json", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if first:
        text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _LineProblem("json", f"not valid JSON ({exc.msg} at column {exc.colno}): "
                                   f"{_brief(text)}") from None
    if not isinstance(obj, dict):
        raise _LineProblem("json", f"a JSON {type(obj).__name__}, not an object: {_brief(obj)}")
    return obj


def _detect_format(obj: dict) -> str | None:
    if "messages" in obj:
        return "chat"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    return None


def _to_messages(obj: dict, fmt: str | None) -> list[dict]:
    if fmt == "chat":
        return _chat_messages(obj)
    if fmt == "alpaca":
        return _alpaca_messages(obj)
    raise _LineProblem("schema", f"neither chat ('messages') nor Alpaca ('instruction' and "
                                 f"'output'); keys: {_brief(sorted(obj))}")


def _chat_messages(obj: dict) -> list[dict]:
    if "messages" not in obj:
        raise _LineProblem("schema", f"no 'messages' key (chat format); keys: "
                                     f"{_brief(sorted(obj))}")
    raw = obj["messages"]
    if not isinstance(raw, list) or not raw:
        raise _LineProblem("schema", f"'messages' must be a non-empty list, got {_brief(raw)}")
    messages = []
    for n, message in enumerate(raw, start=1):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise _LineProblem("schema", f"message {n} is not an object with 'role' and "
                                         f"'content': {_brief(message)}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise _LineProblem("schema", f"message {n} has unknown role {_brief(role)} "
                                         f"(expected system, user or assistant)")
        if not isinstance(content, str):
            raise _LineProblem("schema", f"message {n} content is not a string: "
                                         f"{_brief(content)}")
        messages.append({"role": role, "content": content})
    return messages


def _alpaca_messages(obj: dict) -> list[dict]:
    if "instruction" not in obj or "output" not in obj:
        raise _LineProblem("schema", f"Alpaca format needs 'instruction' and 'output'; keys: "
                                     f"{_brief(sorted(obj))}")
    fields = {"instruction": obj["instruction"], "input": obj.get("input") or "",
              "output": obj["output"]}
    for name, value in fields.items():
        if not isinstance(value, str):
            raise _LineProblem("schema", f"'{name}' is not a string: {_brief(value)}")
    for name in ("instruction", "output"):  # named here: the messages would hide which field
        if not fields[name].strip():
            raise _LineProblem("empty_turn", f"'{name}' is empty: {_brief(fields[name])}")
    user = fields["instruction"]
    if fields["input"].strip():
        user += "\n\n" + fields["input"]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": fields["output"]}]


def _check_messages(messages: list[dict], max_turn_chars: int) -> list[tuple[str, str]]:
    """Problems with valid-schema messages: at most one per kind, first occurrence."""
    found = []
    order = _role_order_problem([m["role"] for m in messages])
    if order:
        found.append(("role_order", order))
    for n, message in enumerate(messages, start=1):
        if not message["content"].strip():
            found.append(("empty_turn", f"message {n} ({message['role']}) is empty: "
                                        f"{_brief(message['content'])}"))
            break
    for n, message in enumerate(messages, start=1):
        if len(message["content"]) > max_turn_chars:
            found.append(("too_long", f"message {n} ({message['role']}) has "
                                      f"{len(message['content']):,} characters, over the "
                                      f"limit of {max_turn_chars:,}: "
                                      f"{_brief(message['content'])}"))
            break
    return found


def _role_order_problem(roles: list[str]) -> str | None:
    """An optional system message, then user/assistant alternating, ending on assistant."""
    offset = 1 if roles[0] == "system" else 0
    for n, role in enumerate(roles[offset:], start=offset):
        expected = "user" if (n - offset) % 2 == 0 else "assistant"
        if role == "system":
            return f"message {n + 1} is 'system': only the first message may be a system one"
        if role != expected:
            return (f"message {n + 1} is '{role}' where '{expected}' was expected (turns "
                    f"alternate user/assistant, starting with user)")
    if roles[-1] != "assistant":
        return f"the last message is '{roles[-1]}': a conversation must end with an assistant reply"
    return None


def _brief(value, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = repr(text) if isinstance(value, str) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_examples(
    examples: list[dict], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Split into (train, validation), each in file order, by a seeded shuffle.

    At least one validation example when there are two or more examples and
    `val_fraction > 0`, and always at least one training example.
    """
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = round(len(examples) * val_fraction)
    if val_fraction > 0 and len(examples) >= 2:
        n_val = min(max(n_val, 1), len(examples) - 1)
    val_ids = set(order[:n_val])
    train = [e for i, e in enumerate(examples) if i not in val_ids]
    val = [e for i, e in enumerate(examples) if i in val_ids]
    return train, val


def tokenize_example(tokenizer, messages: list[dict], max_seq_len: int) -> dict | None:
    """Token ids and labels for one conversation, labels -100 outside assistant replies.

    Truncated to `max_seq_len` tokens; None when no assistant token survives.
    """
    text = _render(tokenizer, messages)
    spans = _assistant_spans(tokenizer, messages, text)
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = list(encoded["input_ids"])[:max_seq_len]
    labels = [token if _inside(offsets, spans) else IGNORE_INDEX
              for token, offsets in zip(ids, encoded["offset_mapping"], strict=False)]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise DatasetError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')} has no chat "
                           f"template: SFT needs an instruct/chat model's tokenizer.")
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def _assistant_spans(tokenizer, messages: list[dict], text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of each assistant reply in the rendered `text`."""
    spans, cursor = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            # Step over it, so that a reply quoted in the question is not mistaken
            # for the reply by the search fallback.
            found = text.find(message["content"], cursor)
            cursor = found + len(message["content"]) if found >= 0 else cursor
            continue
        span = (_prefix_span(tokenizer, messages, i, text, cursor)
                or _search_span(tokenizer, message["content"], text, cursor))
        if span:
            spans.append(span)
            cursor = span[1]
    return spans


def _prefix_span(tokenizer, messages, i: int, text: str, cursor: int) -> tuple[int, int] | None:
    """The reply is what rendering message i adds after the generation prompt."""
    before = _render(tokenizer, messages[:i], add_generation_prompt=True)
    upto = _render(tokenizer, messages[: i + 1])
    if not (text.startswith(before) and text.startswith(upto) and
            cursor <= len(before) < len(upto)):
        return None
    # The span ends "<|im_end|>\n" for ChatML: the end-of-turn token is learnt
    # (so the model stops), the newline between turns is template markup.
    return len(before), len(before) + len(text[len(before):len(upto)].rstrip())


def _search_span(tokenizer, content: str, text: str, cursor: int) -> tuple[int, int] | None:
    """Fallback: the reply's own text, plus the end-of-turn token right after it."""
    start = text.find(content, cursor)
    if start < 0:  # the template rewrote the reply: no loss on it rather than a wrong one
        return None
    end = start + len(content)
    eos = getattr(tokenizer, "eos_token", None)
    if eos and text.startswith(eos, end):
        end += len(eos)
    return start, end


def _inside(offsets: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    start, end = offsets
    return start < end and any(s <= start and end <= e for s, e in spans)


def collate(batch: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids with pad_id, labels with -100.

    Rows may hold lists or 1-D tensors; tensors make this a few vector ops, which
    matters on a GPU where a step of a 1B model takes ~0.15 s.
    """
    import torch
    from torch.nn.utils.rnn import pad_sequence

    ids = [torch.as_tensor(example["input_ids"], dtype=torch.long) for example in batch]
    labels = [torch.as_tensor(example["labels"], dtype=torch.long) for example in batch]
    lengths = torch.tensor([len(x) for x in ids])
    input_ids = pad_sequence(ids, batch_first=True, padding_value=pad_id)
    mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    return {"input_ids": input_ids,
            "labels": pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX),
            "attention_mask": mask}
