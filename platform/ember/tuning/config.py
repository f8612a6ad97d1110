"""`SweepConfig`: a Ray Tune sweep over an SFT job, checked before any trial starts.

A sweep names a base SFT job config, overrides applied to every trial (fewer
steps, say), and a search space whose keys are dotted paths into the SFT job
(`train.lr`, `method.lora.r`). A path the SFT schema does not have, an empty
choice list or an inverted range fails validation, naming the parameter.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ember.training.config import SFTJobConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Param(_Strict):
    """One dimension: `{type: loguniform, low: 1e-5, high: 1e-2}` or `{type: choice, values: [..]}`.
    """

    type: Literal["loguniform", "uniform", "randint", "choice"] = Field(
        description="the distribution the values are drawn from")
    low: float | None = Field(None, description="lower bound (not for choice; > 0 for "
                                                "loguniform)")
    high: float | None = Field(None, description="upper bound, above low (not for choice; "
                                                 "excluded for randint)")
    values: list[Any] | None = Field(None, description="the options of a choice")

    @model_validator(mode="after")
    def _well_formed(self) -> Param:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty `values` list")
            if self.low is not None or self.high is not None:
                raise ValueError("a choice takes `values`, not low/high")
            return self
        if self.low is None or self.high is None or self.values is not None:
            raise ValueError(f"{self.type} needs `low` and `high` (and no `values`)")
        if self.low >= self.high:
            raise ValueError(f"inverted or empty range: low {self.low} >= high {self.high}")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        return self


class SearchSection(_Strict):
    seed: int = Field(0, description="seed of Optuna's TPE sampler")
    num_samples: int = Field(8, ge=1, description="trials")
    # None: as many trials at once as the cluster's CPUs (or GPUs) fit, each trial
    # asking for scaling.num_workers x resources_per_worker.
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="trials at once; null: what the cluster's free CPUs (or GPUs) "
                                "fit when the sweep starts")
    metric: str = Field("val_loss", description="the job's validation metric the sweep "
                                                "optimises, and ASHA stops on")
    mode: Literal["min", "max"] = Field("min", description="minimise or maximise metric")
    # Configs to try first (Optuna's enqueued trials), as {dotted.path: value}.
    points_to_evaluate: list[dict[str, Any]] = Field(
        default_factory=list, description="configs to try first, {dotted.path: value}")


class AshaSection(_Strict):
    """ASHA over evaluations: `grace_period: 1` lets a trial be stopped after one."""

    enabled: bool = Field(True, description="stop the worst trials early")
    grace_period: int = Field(1, ge=1, description="evaluations before a trial can be stopped")
    reduction_factor: float = Field(2, gt=1, description="1 / the share of trials kept at each "
                                                         "rung")
    max_t: int | None = Field(None, ge=1, description="evaluations; default: the job's")


class SweepTracking(_Strict):
    enabled: bool = Field(True, description="log the sweep to MLflow")
    uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite in "
                                              "Ember's home")
    experiment: str = Field("ember-sweeps", description="MLflow experiment")


class SweepConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$",
                      description="the sweep's folder under storage_path and its MLflow run")
    base_job: str = Field(description="the SFT job config every trial starts from")
    overrides: dict[str, Any] = Field(default_factory=dict, description="applied to the "
                                      "base job for every trial and the best config "
                                      "(nested keys)")
    search_space: dict[str, Param] = Field(
        min_length=1, description="the parameters searched, keyed by dotted paths into the "
                                  "SFT job (`train.lr`, `method.lora.r`)")
    search: SearchSection = Field(default_factory=SearchSection,
                                  description="Optuna's search")
    asha: AshaSection = Field(default_factory=AshaSection,
                              description="ASHA early stopping, in evaluations")
    time_budget_s: float | None = Field(None, gt=0, description="the sweep stops after this "
                                                                "long; null: no limit")
    storage_path: str | None = Field(None, description="default $EMBER_HOME/tune")
    best_config_out: str | None = Field(None, description="where the best trial's SFT config "
                                        "is written; default <storage>/<name>/best-job.yaml")
    tracking: SweepTracking = Field(default_factory=SweepTracking, description="MLflow: a "
                                    "parent run for the sweep, a child run per trial")

    @model_validator(mode="after")
    def _paths_exist_in_the_job_schema(self) -> SweepConfig:
        for path in self.search_space:
            check_job_path(path)
        for point in self.search.points_to_evaluate:
            unknown = set(point) - set(self.search_space)
            if unknown:
                raise ValueError(f"points_to_evaluate names parameters outside "
                                 f"search_space: {sorted(unknown)}")
        return self


def check_job_path(path: str) -> None:
    """Raise naming `path` unless it is a leaf field of `SFTJobConfig`."""
    model: type[BaseModel] = SFTJobConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            where = ".".join(parts[:i]) or "the job"
            raise ValueError(f"search_space parameter '{path}': '{part}' is not a key of "
                             f"{where} (keys: {sorted(model.model_fields)})")
        annotation = field.annotation
        last = i == len(parts) - 1
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if last and nested:
            raise ValueError(f"search_space parameter '{path}' is a section, not a value")
        if not last:
            if not nested:
                raise ValueError(f"search_space parameter '{path}': '{part}' holds a value, "
                                 f"not a section")
            model = annotation
