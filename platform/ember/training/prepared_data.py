"""From a job's `data` section to tokenised train/validation lists.

Real data is read, validated, split and tokenised once, by the driver, before
any worker starts (bad lines are reported with their numbers; `on_invalid:
stop` ends the job there). Workers receive the token lists through Ray's object
store and shard them with a `DistributedSampler`, which gives every rank the
same number of batches: uneven shards would leave FSDP/DDP collectives waiting
on a rank that has run out of data.

Synthetic data (random tokens, every sequence exactly `max_seq_len`) is made on
the workers from a seed, for throughput benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ember.training.config import SFTJobConfig
from ember.training.sft_data import DatasetError


class DatasetRejected(DatasetError):
    """The dataset cannot be trained on as configured."""


@dataclass
class PreparedData:
    train: list[dict]
    val: list[dict]
    report_text: str
    val_examples: list[dict]  # untokenised, for sample answers after training
    dropped_by_length: int = 0


def prepare_data(config: SFTJobConfig, tokenizer) -> PreparedData:
    from ember.training.sft_data import load_examples, split_examples, tokenize_example

    data = config.data
    examples, report = load_examples(data.path, format=data.format,
                                     max_turn_chars=data.max_turn_chars)
    if report.issues and data.on_invalid == "stop":
        raise DatasetRejected(f"{data.path}: {len(report.issues)} invalid line(s) and "
                              f"data.on_invalid is 'stop'; nothing was trained.\n"
                              + report.format_text())
    train_ex, val_ex = split_examples(examples, data.val_fraction, data.seed)

    def tokenize(rows: list[dict]) -> tuple[list[dict], int]:
        out = [tokenize_example(tokenizer, row["messages"], data.max_seq_len) for row in rows]
        return [t for t in out if t is not None], sum(t is None for t in out)

    train, dropped_train = tokenize(train_ex)
    val, dropped_val = tokenize(val_ex)
    if not train:
        raise DatasetRejected(f"{data.path}: no trainable example (valid: {report.valid}, "
                              f"no assistant token within max_seq_len "
                              f"{data.max_seq_len}: {dropped_train})\n" + report.format_text())
    return PreparedData(train, val, report.format_text(), val_ex or train_ex,
                        dropped_train + dropped_val)


def synthetic_data(config: SFTJobConfig, vocab_size: int) -> tuple[list[dict], list[dict]]:
    import torch

    synth, seq = config.data.synthetic, config.data.max_seq_len
    generator = torch.Generator().manual_seed(config.data.seed)
    tokens = torch.randint(0, vocab_size, (synth.samples, seq), generator=generator)
    rows = [{"input_ids": row, "labels": row} for row in tokens]
    n_val = max(1, int(len(rows) * config.data.val_fraction)) if config.data.val_fraction else 0
    return rows[n_val:], rows[:n_val]
