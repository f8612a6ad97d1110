"""Ember's typed serving config: what `args:` of a Serve YAML may hold.

This is the schema users write (cluster/serve/*.yaml). It is deliberately
smaller than Ray's `LLMConfig`: the common knobs are typed fields, validated
with the offending key named; `engine.extra` passes anything else straight to
vLLM for the rare setting Ember does not model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ember.access.config import AccessConfig
from ember.batch.config import BatchServiceConfig
from ember.models.catalogue import DEFAULT_LLM


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EngineConfig(_Strict):
    """vLLM engine settings."""

    max_model_len: int | None = Field(2048, gt=0, description="context window, in tokens")
    dtype: str = "auto"
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="on CPU: the share of NUMA node 0's memory for the engine"
    )
    max_num_seqs: int | None = Field(None, gt=0)
    max_num_batched_tokens: int | None = Field(None, gt=0)
    enforce_eager: bool = Field(
        False, description="skip torch.compile: faster start, slower decode"
    )
    enable_prefix_caching: bool | None = Field(
        None, description="reuse the KV cache of shared prompt prefixes (vLLM's default: on)")
    enable_chunked_prefill: bool | None = Field(
        None, description="split long prompts across steps beside decodes (vLLM's default: on)")
    extra: dict[str, Any] = Field(default_factory=dict, description="passed to vLLM unchanged")

    def to_engine_kwargs(self) -> dict[str, Any]:
        kwargs = self.model_dump(exclude={"extra"}, exclude_none=True)
        return {**kwargs, **self.extra}


class AutoscalingConfig(_Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(16, gt=0)
    upscale_delay_s: float | None = Field(None, ge=0)
    downscale_delay_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is greater than "
                f"max_replicas ({self.max_replicas})"
            )
        return self


class PlacementConfig(_Strict):
    """Resources of one replica: one bundle per engine worker (GPU, or CPU here)."""

    bundles: list[dict[str, float]] | None = None
    strategy: Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"


class ModelDeploymentConfig(_Strict):
    """One served model: a name in /v1/models and the deployment behind it."""

    name: str = Field(DEFAULT_LLM, min_length=1, description="the id clients send as `model`")
    source: str = Field(DEFAULT_LLM, description="catalogue name, local folder or HF id")
    engine: EngineConfig = Field(default_factory=EngineConfig)
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    accelerator_type: str | None = Field(None, description="e.g. H100; None on CPU")
    # Above the engine's batch: the engine's scheduler, not Serve's router, should queue
    # (README, "Serving hot path").
    max_ongoing_requests: int = Field(256, gt=0, description="per replica, before queueing")
    max_queued_requests: int | None = Field(
        None, gt=0, description="requests waiting for a replica (per proxy) beyond which new "
                                "ones get 503 with Retry-After; None: no limit")
    env: dict[str, str] = Field(default_factory=dict, description="env vars of the replicas")
    cpu_worker_niceness: int | None = Field(
        -10, ge=-20, le=19, description="CPU engines: niceness of the vLLM worker's threads, "
                                        "so the node's other processes yield its core "
                                        "(needs CAP_SYS_NICE; None: unchanged)")
    stream_batching_interval_ms: float | None = Field(
        None, ge=0, description="streams of this model to RAG answers served by another "
                                "model's replica are packed for this long (Ray's default 50)"
    )
    usd_per_hour: float | None = Field(
        None, ge=0, description="price of one replica per hour (cost accounting)"
    )


class LLMAppConfig(_Strict):
    """The whole OpenAI-compatible application: models plus the ingress."""

    models: list[ModelDeploymentConfig] = Field(
        default_factory=lambda: [ModelDeploymentConfig()], min_length=1
    )
    access: AccessConfig = Field(default_factory=AccessConfig)
    batch: BatchServiceConfig = Field(default_factory=BatchServiceConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> LLMAppConfig:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {duplicates}")
        return self
