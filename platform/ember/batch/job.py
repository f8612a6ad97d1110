"""Offline batch inference: an OpenAI batch file through vLLM on Ray Data LLM.

    ember batch run INPUT.jsonl --model smollm2-135m-instruct [--output OUT.jsonl]
    ray job submit --working-dir . -- python -m ember.batch.job INPUT.jsonl --model M

The lines are checked and rendered on the driver (chat template, token count), the
runnable ones go through `ray.data.llm`'s vLLM engine processor, and every result is
appended to the output file as soon as it arrives. A re-run of a killed job reads the
output first and runs only the lines it lacks. When all lines have a result the file
is rewritten in the input's order, one result per input line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ember.batch.requests import (
    BatchLine,
    LineError,
    error_result,
    is_ok,
    parse_line,
    render,
    success_result,
)
from ember.errors import EmberError

# The shipped CPU engine of cluster/serve/local.yaml; a GPU batch sets its own.
CPU_ENGINE = {"max_model_len": 2048, "dtype": "float32", "enforce_eager": True,
              "max_num_seqs": 64}


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str
    model: str = Field(description="catalogue name, model folder or MLflow model URI")
    output: str | None = Field(None, description="default: INPUT's name with .results.jsonl")
    name: str | None = Field(None, description="the model name lines may give and results "
                                               "carry; default: --model as given")
    engine: dict = Field(default_factory=lambda: dict(CPU_ENGINE))
    batch_size: int = Field(32, ge=1, description="requests per Ray Data batch to the engine")
    concurrency: int = Field(1, ge=1, description="engine replicas")
    num_cpus: float = Field(1, ge=0, description="logical CPUs per engine replica")
    num_gpus: float = Field(0, ge=0, description="GPUs per engine replica")
    default_max_tokens: int = Field(256, ge=1)
    max_lines: int = Field(100_000, ge=1)
    kv_cache_gib: int = Field(2, ge=1, description="vLLM CPU KV cache (VLLM_CPU_KVCACHE_SPACE)")
    nice: int = Field(10, ge=0, le=19, description="OS priority of the engine's processes: "
                                                   "above 0, online serving goes first")

    @property
    def output_path(self) -> Path:
        if self.output:
            return Path(self.output)
        source = Path(self.input)
        return source.with_name(source.name.removesuffix(".jsonl") + ".results.jsonl")

    @property
    def model_name(self) -> str:
        return self.name or self.model


@dataclass
class BatchReport:
    lines: int = 0
    already_done: int = 0
    ran: int = 0
    failed: int = 0
    output_tokens: int = 0
    engine_seconds: float = 0.0  # the engine part: start-up, then every request
    first_result_s: float = 0.0  # into the engine part, when the first result came
    seconds: float = 0.0
    output: str = ""

    def format(self) -> str:
        rate = self.ran / self.engine_seconds if self.engine_seconds else 0.0
        tokens = self.output_tokens / self.engine_seconds if self.engine_seconds else 0.0
        return (f"{self.lines} lines: {self.already_done} already in the output, {self.ran} "
                f"run ({rate:.2f} req/s, {tokens:.1f} output tok/s), {self.failed} with an "
                f"error; results in {self.output} ({self.seconds:.0f}s)")


def read_lines(config: BatchConfig) -> list[tuple[int, str]]:
    path = Path(config.input)
    if not path.is_file():
        raise EmberError(f"batch input {path} is not a file")
    lines = [(i, text) for i, text in enumerate(path.read_text().splitlines(), 1)
             if text.strip()]
    if not lines:
        raise EmberError(f"batch input {path} has no lines")
    if len(lines) > config.max_lines:
        raise EmberError(f"batch input {path} has {len(lines)} lines; the limit is "
                         f"{config.max_lines} (max_lines)")
    return lines


def check_lines(lines: list[tuple[int, str]], model_name: str, tokenizer, max_model_len: int,
                default_max_tokens: int) -> list[BatchLine]:
    entries, seen = [], {}
    for number, text in lines:
        entry = parse_line(number, text, model_name)
        if entry.custom_id is not None and entry.custom_id in seen:
            entry = BatchLine(number, None, error=LineError(
                400, f"line {number} repeats custom_id '{entry.custom_id}' of line "
                     f"{seen[entry.custom_id]}", "custom_id"))
        elif entry.custom_id is not None:
            seen[entry.custom_id] = number
        if entry.runnable:
            render(entry, tokenizer, max_model_len, default_max_tokens)
        entries.append(entry)
    return entries


def read_done(path: Path) -> dict[str, dict]:
    """Results already written by an earlier run, by custom_id (a cut last line is dropped)."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    for text in path.read_text().splitlines():
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
            done[record["custom_id"]] = record
    return done


def write_ordered(path: Path, entries: list[BatchLine], results: dict[str, dict]) -> None:
    """One result per input line, in the input's order; replaces the file atomically."""
    scratch = path.with_name(path.name + ".tmp")
    with scratch.open("w") as out:
        for entry in entries:
            record = (results[entry.custom_id] if entry.custom_id is not None
                      else error_result(entry))
            out.write(json.dumps(record) + "\n")
    os.replace(scratch, path)


def resolve_batch_model(ref: str) -> str:
    if ref.startswith(("models:/", "runs:/")):
        from ember.models.fetch import fetch_model

        safe = "".join(c if c.isalnum() else "-" for c in ref)[-60:]
        return str(fetch_model(ref, f"batch-{safe}"))
    from ember.models.catalogue import resolve_model

    return resolve_model(ref)


def run_batch(config: BatchConfig, progress=print, on_result=None,
              on_engine_result=None) -> BatchReport:
    """Run the lines the output lacks; `on_result(completed, failed)` after each result,
    `on_engine_result()` after each the engine gave (not the lines refused before it)
    (counts over the whole batch so far)."""
    from transformers import AutoTokenizer

    start = time.monotonic()
    report = BatchReport(output=str(config.output_path))
    lines = read_lines(config)
    model_path = resolve_batch_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    max_model_len = int(config.engine.get("max_model_len") or tokenizer.model_max_length)
    entries = check_lines(lines, config.model_name, tokenizer, max_model_len,
                          config.default_max_tokens)
    report.lines = len(entries)
    results = read_done(config.output_path)
    report.already_done = sum(1 for e in entries if e.custom_id in results)
    pending = [e for e in entries if e.custom_id is not None and e.custom_id not in results]
    config.output_path.parent.mkdir(parents=True, exist_ok=True)
    with config.output_path.open("a") as file:
        out = _Output(file, results, on_result, on_engine_result)
        for entry in pending:
            if not entry.runnable:  # checked on the driver: no engine needed
                out.add(entry.custom_id, error_result(entry))
        to_run = [e for e in pending if e.runnable]
        progress(f"{report.lines} lines: {report.already_done} already in "
                 f"{config.output_path}, {len(to_run)} to run, "
                 f"{sum(not e.runnable for e in entries)} refused before the engine")
        if to_run:
            engine_start = time.monotonic()
            ran, tokens, first = _run_engine(config, model_path, to_run, out, progress)
            report.engine_seconds = time.monotonic() - engine_start
            report.ran, report.output_tokens = ran, tokens
            report.first_result_s = first - engine_start
    write_ordered(config.output_path, entries, results)
    report.failed = sum(1 for e in entries
                        if e.custom_id is None or not is_ok(results[e.custom_id]))
    report.seconds = time.monotonic() - start
    return report


class _Output:
    """The results file being appended to, and the counts it holds."""

    def __init__(self, file, results: dict[str, dict], on_result=None,
                 on_engine_result=None) -> None:
        self.file, self.results, self.on_result = file, results, on_result
        self.on_engine_result = on_engine_result
        self.completed = sum(1 for r in results.values() if is_ok(r))
        self.failed = len(results) - self.completed

    def add(self, custom_id: str, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()  # a killed job keeps every result it wrote
        self.results[custom_id] = record
        if is_ok(record):
            self.completed += 1
        else:
            self.failed += 1
        if self.on_result is not None:
            self.on_result(self.completed, self.failed)


def _run_engine(config: BatchConfig, model_path: str, to_run: list[BatchLine], out: _Output,
                progress) -> tuple[int, int, float]:
    from ember.config.paths import new_run_log_folder
    from ember.ray_session import connect_ray, quiet_ray_data, ray_logs_to

    by_line = {e.line: e for e in to_run}
    log = new_run_log_folder("batch") / "ray.log"  # ray_logs_to creates the folder
    progress(f"Ray's logs for this run: {log}")
    with ray_logs_to(log):
        import ray

        from ember.batch.processor import batch_processor, engine_rows  # vLLM logs on import

        connect_ray(log_to_driver=False)
        quiet_ray_data()

        # about one block per engine batch, in input order: Ray Data hands results back
        # a task (a bundle of >= batch_size rows) at a time, so small blocks stream results
        # (progress, resume) instead of returning the whole batch at the end; blocks of
        # at least batch_size rows, or Ray Data bundles two into one task
        blocks = max(1, len(to_run) // config.batch_size)
        dataset = ray.data.from_items(engine_rows(to_run), override_num_blocks=blocks)
        processor = batch_processor(config, model_path)
        ticker = _Ticker(len(to_run), progress)
        done = tokens = 0
        for row in processor(dataset).iter_rows():
            entry = by_line[int(row["line"])]
            if row["error"]:
                entry.error = LineError(500, f"the engine failed on this request: "
                                             f"{row['error'][:500]}", code="engine_error")
                record = error_result(entry)
            else:
                record = success_result(entry, config.model_name, row["text"],
                                        int(row["tokens"]))
                tokens += int(row["tokens"])
            out.add(entry.custom_id, record)
            if out.on_engine_result is not None:
                out.on_engine_result()
            done += 1
            ticker.tick(done, tokens)
    return done, tokens, ticker.first or time.monotonic()


class _Ticker:
    """A progress line every few seconds: done, rates, ETA."""

    def __init__(self, total: int, progress, every_s: float = 5.0) -> None:
        self.total, self.progress, self.every_s = total, progress, every_s
        self.start = self.last = time.monotonic()
        self.first: float | None = None
        progress(f"  0/{total} requests (starting the engine)")

    def tick(self, done: int, tokens: int) -> None:
        now = time.monotonic()
        self.first = self.first or now
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        # rates since the first result: the engine's start-up is not throughput
        elapsed = now - self.first
        if elapsed < 1.0:  # results arrive in batches: no rate from one burst
            self.progress(f"  {done}/{self.total} requests")
            return
        rate = (done - 1) / elapsed
        eta = f"ETA {(self.total - done) / rate:.0f}s" if rate else "first result"
        self.progress(f"  {done}/{self.total} requests, {rate:.2f} req/s, "
                      f"{tokens / elapsed:.1f} output tok/s, {eta}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ember.batch.job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    report = run_batch(config_from_args(args))
    print(report.format())
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="OpenAI batch-format JSONL")
    parser.add_argument("--model", required=True,
                        help="catalogue name, model folder or MLflow model URI")
    parser.add_argument("--output", help="results JSONL (default INPUT.results.jsonl); "
                                         "a re-run skips the lines it already holds")
    parser.add_argument("--name", help="model name the lines give (default: --model)")
    parser.add_argument("--engine", action="append", default=[], metavar="KEY=JSON",
                        help="a vLLM engine setting over the CPU defaults, e.g. "
                             "max_num_seqs=128 or dtype='\"bfloat16\"'")
    parser.add_argument("--batch-size", type=int,
                        default=BatchConfig.model_fields["batch_size"].default,
                        help="requests per Ray Data batch (32 measured best on CPU)")
    parser.add_argument("--concurrency", type=int, default=1, help="engine replicas")
    parser.add_argument("--num-gpus", type=float, default=0, help="per engine replica")
    parser.add_argument("--max-tokens", type=int, default=256,
                        help="for lines that set none")


def config_from_args(args) -> BatchConfig:
    from pydantic import ValidationError

    engine = dict(CPU_ENGINE)
    if args.num_gpus:
        engine.pop("dtype")  # the model's own dtype on GPUs
    for setting in args.engine:
        key, sep, value = setting.partition("=")
        if not sep:
            raise EmberError(f"--engine '{setting}': expected KEY=VALUE")
        try:
            engine[key] = json.loads(value)
        except json.JSONDecodeError:
            engine[key] = value
    try:
        return BatchConfig(input=args.input, model=args.model, output=args.output,
                           name=args.name, engine=engine, batch_size=args.batch_size,
                           concurrency=args.concurrency, num_gpus=args.num_gpus,
                           default_max_tokens=args.max_tokens)
    except ValidationError as exc:
        raise EmberError(f"batch options: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
