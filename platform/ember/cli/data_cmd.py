"""`ember data validate FILE`: check an SFT dataset the way a linter checks code.

Prints every bad line with its number and exits 1 if there is any (or no valid
example at all), 0 otherwise. With `--model`, it also tokenises the valid
examples with that model's chat template and says how many `--max-seq-len`
would truncate, and how many would lose every assistant token (and so be
dropped from training).
"""

from __future__ import annotations

import statistics
import sys


def register(commands) -> None:
    data = commands.add_parser("data", help="check fine-tuning datasets")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    validate = actions.add_parser("validate", help="check an SFT JSONL file, line by line")
    validate.add_argument("file", help="a JSONL file, chat or Alpaca format")
    validate.add_argument("--format", choices=["auto", "chat", "alpaca"], default="auto")
    validate.add_argument("--max-turn-chars", type=int, default=20000,
                          help="longest message accepted, in characters (default 20000)")
    validate.add_argument("--model", help="also tokenise with this model's chat template "
                          "(catalogue name, folder or Hugging Face id)")
    validate.add_argument("--max-seq-len", type=int, default=512,
                          help="training sequence length in tokens, with --model (default 512)")
    validate.add_argument("--max-issues", type=int, default=50, help="issues to print")
    validate.set_defaults(func=run_validate)


def run_validate(args) -> int:
    from ember.training.sft_data import load_examples

    examples, report = load_examples(args.file, format=args.format,
                                     max_turn_chars=args.max_turn_chars)
    print(report.format_text(max_issues=args.max_issues))
    if not examples:
        print("no valid examples: nothing to train on.", file=sys.stderr)
        return 1
    if args.model:
        print(token_summary(examples, args.model, args.max_seq_len))
    return 0 if report.ok else 1


def token_summary(examples: list[dict], model: str, max_seq_len: int) -> str:
    """Token counts of the valid examples under `model`'s chat template."""
    from transformers import AutoTokenizer

    from ember.models.catalogue import resolve_model
    from ember.training.sft_data import IGNORE_INDEX, tokenize_example

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    lengths, no_assistant = [], 0
    for example in examples:
        full = tokenize_example(tokenizer, example["messages"], max_seq_len=sys.maxsize)
        if full is None:  # the template dropped every reply: nothing to learn at any length
            no_assistant += 1
            continue
        lengths.append(len(full["input_ids"]))
        if all(label == IGNORE_INDEX for label in full["labels"][:max_seq_len]):
            no_assistant += 1
    too_long = sum(n > max_seq_len for n in lengths)
    stats = (f"min {min(lengths)}, median {statistics.median(lengths):g}, max {max(lengths)}"
             if lengths else "none")
    return (f"tokens ({model}): {stats}\n"
            f"  {too_long} of {len(examples)} examples exceed --max-seq-len {max_seq_len} "
            f"and would be truncated\n"
            f"  {no_assistant} would have no assistant token left (dropped from training)")
