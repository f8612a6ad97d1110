"""The promotion gate: a registered version serves only if its evaluation says it is
not worse than its base.

What a version is judged on is what its training run recorded in MLflow (the SFT
job logs it when its data has a validation split; `ember eval model --record`
adds the figures of an evaluation through the service):
- validation perplexity, base and tuned (`final_base_val_perplexity`,
  `final_val_perplexity`; lower is better): the tuned one may exceed the base's
  by at most `margin` (a fraction: 0.02 is 2%);
- answer scores on held-out chats, base and tuned (`eval_{base,tuned}_{exact_match,f1,
  rouge_l}`, and `service_eval_...` from `ember eval model --record`; higher is
  better, 0 to 1): the tuned one may fall below the base's by at most `margin` points.
A version with none of these has no evaluation and is refused too. `--force`
serves it anyway and says so on the version (tags `ember.gate`, `ember.gate_forced_by`).

Aliases are MLflow's: `champion` serves to everyone, `challenger` to a rollout's
canary share (`ember.models.rollouts`); `previous` keeps the champion a completed
rollout replaced, for `ember models rollback`.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass

from ember.config.paths import default_tracking_uri
from ember.errors import EmberError

DEFAULT_MARGIN = 0.02
SCORES = {"exact_match": "exact match", "f1": "token F1", "rouge_l": "ROUGE-L F1"}
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


class PromotionError(EmberError):
    pass


@dataclass(frozen=True)
class Comparison:
    measure: str
    base: float
    tuned: float
    lower_is_better: bool

    def worse_by(self) -> float:
        """How much worse tuned is than base: a fraction for perplexity, points for scores."""
        if self.lower_is_better:
            return self.tuned / self.base - 1 if self.base > 0 else 0.0
        return self.base - self.tuned

    def line(self, margin: float) -> str:
        change = (f"{self.tuned / self.base - 1:+.1%}" if self.lower_is_better and self.base
                  else f"{self.tuned - self.base:+.3f}")
        verdict = "WORSE than allowed" if self.worse_by() > margin else "ok"
        return f"  {self.measure:<42} base {self.base:8.3f}  tuned {self.tuned:8.3f}  " \
               f"{change:>8}  {verdict}"


def comparisons(metrics: dict[str, float]) -> list[Comparison]:
    """Base-vs-tuned pairs found among a run's metrics (see the module doc)."""
    found = []
    if "final_base_val_perplexity" in metrics and "final_val_perplexity" in metrics:
        found.append(Comparison("validation perplexity (lower is better)",
                                metrics["final_base_val_perplexity"],
                                metrics["final_val_perplexity"], True))
    for prefix, where in (("eval", "job's held-out answers"),
                          ("service_eval", "served answers")):
        for metric, label in SCORES.items():
            base, tuned = f"{prefix}_base_{metric}", f"{prefix}_tuned_{metric}"
            if base in metrics and tuned in metrics:
                found.append(Comparison(f"{label}, {where}", metrics[base], metrics[tuned],
                                        False))
    if "service_eval_base_perplexity" in metrics and "service_eval_tuned_perplexity" in metrics:
        found.append(Comparison("held-out perplexity, evaluated (lower is better)",
                                metrics["service_eval_base_perplexity"],
                                metrics["service_eval_tuned_perplexity"], True))
    return found


def judge(metrics: dict[str, float], margin: float) -> tuple[bool, list[str]]:
    """(passed, the lines that say why) for a version's run metrics."""
    found = comparisons(metrics)
    if not found:
        return False, ["  no evaluation is recorded (train with a validation split, or run "
                       "`ember eval model ... --record models:/NAME/VERSION`)"]
    lines = [c.line(margin) for c in found]
    return all(c.worse_by() <= margin for c in found), lines


class Registry:
    """The MLflow model registry, as the gate and rollouts use it."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        self.uri = tracking_uri or default_tracking_uri()
        self.client = MlflowClient(self.uri, registry_uri=self.uri)

    def version(self, name: str, version: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise PromotionError(f"models:/{name}/{version} is not in the MLflow registry at "
                                 f"{self.uri}: {exc.message}") from None

    def metrics(self, name: str, version: str) -> dict[str, float]:
        found = self.version(name, version)
        if not found.run_id:
            return {}
        return dict(self.client.get_run(found.run_id).data.metrics)

    def alias(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def drop_alias(self, name: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(name, alias)
        except MlflowException:
            pass  # not set: nothing to drop

    def tag(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, value)


def check_gate(registry: Registry, name: str, version: str, margin: float = DEFAULT_MARGIN,
               force: bool = False, reason: str | None = None, progress=print) -> None:
    """Refuse (PromotionError, with the numbers) a version that fails the gate, unless
    `force`; record the decision on the version either way."""
    passed, lines = judge(registry.metrics(name, version), margin)
    verdict = "passed" if passed else "failed"
    progress(f"promotion gate for models:/{name}/{version} (margin {margin:g}): {verdict}")
    for line in lines:
        progress(line)
    if not passed and not force:
        raise PromotionError(f"models:/{name}/{version} is not promoted: its evaluation is "
                             f"missing or worse than its base by more than the margin "
                             f"({margin:g}). Use --force (recorded on the version) to serve "
                             f"it anyway.")
    tags = {"ember.gate": f"{verdict} (margin {margin:g})",
            "ember.gate_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not passed:
        tags["ember.gate_forced_by"] = _user()
        tags["ember.gate_forced_reason"] = reason or "(no reason given)"
        progress(f"  forced by {tags['ember.gate_forced_by']}: recorded on the version")
    registry.tag(name, version, tags)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
