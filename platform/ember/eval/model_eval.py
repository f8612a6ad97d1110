"""`ember eval model`: what a served model answers on held-out chats, beside its base.

Input: an SFT dataset (chat or Alpaca JSONL, read by the training data reader, so bad
lines are reported the same way). Each example's last assistant turn is the reference;
the turns before it are the prompt. `val_fraction`/`seed` pick the held-out split
exactly as `ember train` makes it from the same file.

Everything is measured through the running service, so it is what users get:
- **answers**: greedy (`temperature: 0`) replies scored against the reference with
  exact match and token F1 (SQuAD's normalisation: lower case, no punctuation or
  articles) and ROUGE-L F1 (Google's `rouge-score`);
- **perplexity**: the service scores the reference itself. One request sends the
  conversation with the reference as the final assistant turn, `add_generation_prompt:
  false`, `prompt_logprobs: 0` and `return_token_ids` (vLLM's extensions of the chat
  route); the reference's tokens are those after the generation prompt, whose length
  the answer request's `usage.prompt_tokens` gives. Perplexity is exp of the mean
  negative log-likelihood over all reference tokens (the reply and the chat template's
  end-of-turn marker), as training's validation perplexity is over assistant tokens.
  Not on engines that serve LoRA adapters: vLLM fails on prompt log-probabilities
  there (vllm-project/vllm#16668), so Ember refuses them. When the service refuses
  them for either model compared, both perplexities are scored on Ray instead
  (`offline_perplexity`: the same tokens, transformers in float32), measured alike.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ember.errors import EmberError
from ember.training.answer_metrics import exact_match, rouge_l, token_f1

CHANGED_F1 = 0.1  # an example "changed" when its F1 moved by more than this (or its EM)


@dataclass(frozen=True)
class EvalExample:
    line: int  # line of the data file
    prompt: list[dict]  # the conversation up to the reference
    reference: str  # the last assistant turn


@dataclass
class ExampleResult:
    line: int
    answer: str
    exact_match: float
    f1: float
    rouge_l: float
    reference_nll: float | None  # summed over the reference's tokens (None: not measured)
    reference_tokens: int


@dataclass
class ModelScores:
    model: str
    results: list[ExampleResult] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        return sum(getattr(r, metric) for r in self.results) / max(len(self.results), 1)

    @property
    def perplexity(self) -> float | None:
        """exp(mean NLL per reference token); None where it was not measured (adapters)."""
        tokens = sum(r.reference_tokens for r in self.results)
        if not tokens or any(r.reference_nll is None for r in self.results):
            return None
        nll = sum(r.reference_nll for r in self.results)
        return math.exp(min(nll / tokens, 50))

    def summary(self) -> dict:
        return {"model": self.model, "examples": len(self.results),
                "perplexity": self.perplexity, "exact_match": self.mean("exact_match"),
                "f1": self.mean("f1"), "rouge_l": self.mean("rouge_l")}


def load_eval_examples(path: str | Path, format: str = "auto",  # noqa: A002 - CLI flag name
                       val_fraction: float = 0.0, seed: int = 0,
                       max_examples: int | None = None):
    """(examples, the data report): the file's valid chats that end in an assistant turn,
    or only its held-out split when `val_fraction` > 0."""
    from ember.training.sft_data import load_examples, split_examples

    chats, report = load_examples(path, format)
    if val_fraction > 0:
        _, chats = split_examples(chats, val_fraction, seed)
    examples = [EvalExample(c["line"], c["messages"][:-1], c["messages"][-1]["content"])
                for c in chats if c["messages"][-1]["role"] == "assistant"]
    if not examples:
        raise EmberError(f"{path}: no example ends in an assistant reply to compare against"
                         f" ({report.valid} valid of {report.lines} lines)")
    return examples[:max_examples] if max_examples else examples, report


# --- through the service -------------------------------------------------------------

def reference_logprobs(payload: dict, prompt_tokens: int) -> list[float]:
    """Log-probabilities of the prompt tokens from `prompt_tokens` on (the reference), from
    a chat response made with `prompt_logprobs: 0` and `return_token_ids: true`."""
    token_ids, logprobs = payload.get("prompt_token_ids"), payload.get("prompt_logprobs")
    if not token_ids or logprobs is None:
        raise EmberError("the service returned no prompt log-probabilities: perplexity needs "
                         "a vLLM-backed model (prompt_logprobs, return_token_ids)")
    return [logprobs[i][str(token_ids[i])]["logprob"]
            for i in range(prompt_tokens, len(token_ids))]


def score_example(client, model: str, example: EvalExample, max_tokens: int,
                  perplexity: bool = True) -> ExampleResult:
    answered = client.chat_json({"model": model, "messages": example.prompt,
                                 "max_tokens": max_tokens, "temperature": 0})
    answer = answered["choices"][0]["message"].get("content") or ""
    scores = (exact_match(answer, example.reference), token_f1(answer, example.reference),
              rouge_l(answer, example.reference))
    if not perplexity:
        return ExampleResult(example.line, answer, *scores, None, 0)
    scored = client.chat_json({
        "model": model, "max_tokens": 1, "temperature": 0,
        "messages": [*example.prompt, {"role": "assistant", "content": example.reference}],
        "add_generation_prompt": False, "prompt_logprobs": 0, "return_token_ids": True})
    logprobs = reference_logprobs(scored, answered["usage"]["prompt_tokens"])
    return ExampleResult(example.line, answer, *scores, -sum(logprobs), len(logprobs))


def service_scores_prompts(client, model: str, example: EvalExample) -> bool:
    """Whether the service gives `model`'s prompt log-probabilities: Ember refuses them
    (400) on engines that serve LoRA adapters, where vLLM fails on them."""
    from ember.client.types import EmberAPIError

    try:
        client.chat_json({"model": model, "messages": example.prompt, "max_tokens": 1,
                          "prompt_logprobs": 0, "return_token_ids": True})
    except EmberAPIError as exc:
        if exc.status_code == 400 and "prompt log-probabilities" in str(exc):
            return False
        raise
    return True


def evaluate_model(client, model: str, examples: list[EvalExample], max_tokens: int = 128,
                   concurrency: int = 8, progress=print, perplexity: bool = True) -> ModelScores:
    """Every example through the service, `concurrency` at a time, in file order; the
    references' perplexity too if `perplexity`."""
    scores = ModelScores(model)
    step = max(len(examples) // 5, 1)
    with ThreadPoolExecutor(concurrency) as pool:
        jobs = pool.map(lambda e: score_example(client, model, e, max_tokens, perplexity),
                        examples)
        for done, result in enumerate(jobs, 1):
            scores.results.append(result)
            if done % step == 0 or done == len(examples):
                progress(f"[eval] {model}: {done}/{len(examples)} examples")
    return scores


def offline_target(model: str, base_source: str | None) -> tuple[str, str | None]:
    """(the weights' folder, the adapter's folder or None) to score `model` on Ray."""
    from ember.eval.offline_perplexity import model_files
    from ember.models.adapters import find_adapter

    adapter = find_adapter(model)
    if adapter is not None:
        return model_files(adapter.base, base_source), str(adapter.path)
    return model_files(model, base_source), None


def add_offline_perplexity(scores: ModelScores, examples: list[EvalExample],
                           base_source: str | None = None, progress=print) -> None:
    """Fill in the references' NLL of `scores` from a Ray task (transformers)."""
    from ember.eval.offline_perplexity import score_on_ray

    progress(f"[eval] {scores.model}: scoring the references' perplexity on Ray")
    model_dir, adapter_dir = offline_target(scores.model, base_source)
    nll = score_on_ray(model_dir, adapter_dir, [(e.prompt, e.reference) for e in examples])
    for result, (value, tokens) in zip(scores.results, nll, strict=True):
        result.reference_nll, result.reference_tokens = value, tokens


# --- reports -------------------------------------------------------------------------

METRICS = (("perplexity", "perplexity", "lower is better"), ("exact_match", "exact match", ""),
           ("f1", "token F1", ""), ("rouge_l", "ROUGE-L F1", ""))


def changed_examples(tuned: ModelScores,
                     base: ModelScores) -> list[tuple[ExampleResult, ExampleResult]]:
    return [(t, b) for t, b in zip(tuned.results, base.results, strict=True)
            if t.exact_match != b.exact_match or abs(t.f1 - b.f1) > CHANGED_F1]


def perplexity_change(tuned: ModelScores, base: ModelScores) -> float | None:
    """Relative change of perplexity, tuned against base: -0.25 is 25% lower."""
    if tuned.perplexity is None or base.perplexity is None:
        return None
    return tuned.perplexity / base.perplexity - 1


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(tuned: ModelScores, base: ModelScores | None) -> str:
    rows = ["| metric | " + (f"{base.model} (base) | " if base else "") + f"{tuned.model} |"
            + (" change |" if base else ""),
            "|---|---|" + ("---|---|" if base else "")]
    for key, label, note in METRICS:
        value = tuned.summary()[key]
        row = f"| {label}{f' ({note})' if note else ''} | "
        if base:
            before = base.summary()[key]
            if key == "perplexity":
                change = perplexity_change(tuned, base)
                change = "n/a" if change is None else f"{change:+.1%}"
            else:
                change = f"{value - before:+.3f}"
            row += f"{_figure(before)} | {_figure(value)} | {change} |"
        else:
            row += f"{_figure(value)} |"
        rows.append(row)
    return "\n".join(rows)


def markdown_report(tuned: ModelScores, base: ModelScores | None,
                    examples: list[EvalExample], data: str) -> str:
    lines = [f"# Evaluation of {tuned.model}", "",
             f"{len(examples)} held-out examples from `{data}`, greedy answers through the "
             "service.", "", format_table(tuned, base)]
    if base:
        by_line = {e.line: e for e in examples}
        changed = changed_examples(tuned, base)
        lines += ["", f"## Examples whose answer changed ({len(changed)})"]
        for t, b in changed:
            prompt = by_line[t.line].prompt[-1]["content"]
            lines += ["", f"**line {t.line}**: {prompt}", "",
                      f"- reference: {by_line[t.line].reference}",
                      f"- {base.model} (F1 {b.f1:.2f}): {b.answer}",
                      f"- {tuned.model} (F1 {t.f1:.2f}): {t.answer}"]
    return "\n".join(lines) + "\n"


def as_json(tuned: ModelScores, base: ModelScores | None, data: str) -> dict:
    report = {"data": data, "tuned": tuned.summary(),
              "examples": [asdict(r) for r in tuned.results]}
    if base:
        report["base"] = base.summary()
        report["base_examples"] = [asdict(r) for r in base.results]
        report["perplexity_change"] = perplexity_change(tuned, base)
    return report
