"""The model card of a fine-tuned version: a Markdown page a reviewer reads before serving it.

Logged by the SFT job as the run's `model_card.md` and set as the registered version's
description, so MLflow's model page shows it. It holds what produced the version (base
model, data and its validation report, method and hyperparameters, training time and
worker-hours) and what it measured (validation perplexity base -> tuned, and the
held-out sample answers scored against their references, base and tuned).
"""

from __future__ import annotations

from ember.training.answer_metrics import METRICS, answer_scores
from ember.training.config import SFTJobConfig

METRIC_NAMES = {"exact_match": "exact match", "f1": "token F1", "rouge_l": "ROUGE-L F1"}


def score_samples(samples: list[dict]) -> dict[str, dict[str, float]]:
    """Mean answer scores of the base and the tuned model over samples that have a
    reference: {"base": {metric: mean}, "tuned": {...}}; empty without references."""
    scored = [s for s in samples if s.get("reference")]
    if not scored:
        return {}
    means = {}
    for who in ("base", "tuned"):
        rows = [answer_scores(s[who], s["reference"]) for s in scored]
        means[who] = {m: sum(r[m] for r in rows) / len(rows) for m in METRICS}
    return means


def _evaluation(metrics: dict, scores: dict, samples: int) -> list[str]:
    rows = ["| measure | base | tuned | change |", "|---|---|---|---|"]
    if "base_val_perplexity" in metrics and "val_perplexity" in metrics:
        base, tuned = metrics["base_val_perplexity"], metrics["val_perplexity"]
        rows.append(f"| validation perplexity (lower is better) | {base:.2f} | {tuned:.2f} "
                    f"| {tuned / base - 1:+.1%} |")
    for metric in METRICS if scores else ():
        base, tuned = scores["base"][metric], scores["tuned"][metric]
        rows.append(f"| {METRIC_NAMES[metric]}, {samples} held-out answers | {base:.3f} "
                    f"| {tuned:.3f} | {tuned - base:+.3f} |")
    return rows if len(rows) > 2 else ["No evaluation ran (no validation split)."]


def _method(config: SFTJobConfig) -> list[str]:
    method, train = config.method, config.train
    lines = [f"- method: **{method.name}**, export: {method.export}"]
    if method.name in ("lora", "qlora"):
        lora = method.lora
        lines.append(f"- LoRA: r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, "
                     f"modules: {', '.join(lora.target_modules)}")
    lines.append(f"- steps: {train.max_steps}, batch {train.batch_size} x grad_accum "
                 f"{train.grad_accum}, lr {train.lr} ({train.schedule}, warm-up "
                 f"{train.warmup_steps})")
    return lines


def render_model_card(config: SFTJobConfig, metrics: dict, samples: list[dict],
                      data_report: str, seconds: float, registered: str | None) -> str:
    scaling = config.scaling
    unit = "GPU" if scaling.use_gpu else "worker"
    hours = seconds / 3600 * scaling.num_workers
    scores = score_samples(samples)
    serve = registered or "models:/NAME/VERSION"
    lines = [
        f"# {config.tracking.register_as or config.name}", "",
        f"Fine-tuned from **{config.model.source}** by the Ember job `{config.name}`.", "",
        "## Evaluation", "", *_evaluation(metrics, scores, len(samples)), "",
        "## Data", "", f"- file: `{config.data.path}` (validation split "
        f"{config.data.val_fraction:.0%}, seed {config.data.seed})", "", "```",
        data_report.strip() or "(no report)", "```", "",
        "## Method", "", *_method(config), "",
        "## Training", "",
        f"- wall time {seconds / 60:.1f} min on {scaling.num_workers} {unit}(s): "
        f"{hours:.3f} {unit}-hours",
        "", "## Serving it", "", "```",
        f"ember serve-model {serve} --name NAME",
        f"ember eval model NAME --base {config.model.source} --data {config.data.path} "
        f"--val-fraction {config.data.val_fraction} --seed {config.data.seed}",
        "```", ""]
    return "\n".join(lines)
