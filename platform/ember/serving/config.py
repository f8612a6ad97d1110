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
    dtype: str = Field("auto", description="bfloat16, float16, float32 or auto")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs (or CPU processes) per "
                                                           "replica")
    pipeline_parallel_size: int = Field(1, ge=1, description="pipeline stages per replica")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="on CPU: the share of NUMA node 0's memory for the engine"
    )
    max_num_seqs: int | None = Field(None, gt=0, description="concurrent sequences per "
                                                             "engine; null: vLLM's default")
    max_num_batched_tokens: int | None = Field(None, gt=0, description="tokens per engine "
                                                                       "step; null: vLLM's "
                                                                       "default")
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
    min_replicas: int = Field(1, ge=0, description="fewest replicas; not above max_replicas")
    max_replicas: int = Field(1, ge=1, description="most replicas")
    initial_replicas: int | None = Field(None, ge=0, description="replicas at deployment; "
                                                                "null: Serve's default")
    target_ongoing_requests: float = Field(16, gt=0, description="per replica, what "
                                                                 "autoscaling aims for")
    upscale_delay_s: float | None = Field(None, ge=0, description="how long load must stay "
                                                                  "high before a replica is "
                                                                  "added; null: Serve's default")
    downscale_delay_s: float | None = Field(None, ge=0, description="how long load must stay "
                                                                    "low before a replica is "
                                                                    "removed; null: Serve's "
                                                                    "default")

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

    bundles: list[dict[str, float]] | None = Field(
        None, description="Ray resources per engine worker, e.g. [{GPU: 1}, {GPU: 1}]; null: "
                          "[{CPU: 1}] per engine worker on CPU, Ray's GPU default with an "
                          "accelerator_type")
    strategy: Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK", description="how the bundles spread over nodes (STRICT_PACK: all on one node)")


class LoraServingConfig(_Strict):
    """LoRA adapters served on this model's engines (`ember serve-model` of an adapter)."""

    max_loras: int = Field(4, ge=1, description="adapters in one engine batch at once "
                                                "(vLLM's max_loras)")
    max_lora_rank: int = Field(16, ge=1, description="the largest rank an adapter may have")
    max_cpu_loras: int | None = Field(None, ge=1, description="adapters kept loaded in "
                                                              "memory, least recently used "
                                                              "evicted; null: max_loras")

    def to_engine_kwargs(self) -> dict[str, Any]:
        return {"enable_lora": True, **self.model_dump(exclude_none=True)}


class ToolCallingConfig(_Strict):
    """OpenAI tool calling (`tools`, `tool_choice`) on this model's engines: vLLM renders
    the tools into the prompt (chat template) and parses the model's calls back."""

    parser: str = Field(min_length=1, description="vLLM's tool-call parser for the model's "
                                                  "format (vLLM's --tool-call-parser: hermes, "
                                                  "llama3_json, mistral, xlam, ...)")
    chat_template: str | None = Field(
        None, description="a chat template that renders `tools`: a file, or the name of one "
                          "Ember ships (smollm2-tools); null: the model's own")

    def to_engine_kwargs(self) -> dict[str, Any]:
        from ember.models.catalogue import load_chat_template

        kwargs = {"enable_auto_tool_choice": True, "tool_call_parser": self.parser}
        if self.chat_template is not None:
            kwargs["chat_template"] = load_chat_template(self.chat_template)
        return kwargs


class ModelDeploymentConfig(_Strict):
    """One served model: a name in /v1/models and the deployment behind it."""

    name: str = Field(DEFAULT_LLM, min_length=1, description="the id clients send as `model` "
                      "(matched case-insensitively)")
    aliases: list[str] = Field(
        default_factory=list, description="other ids clients may send as `model` for this "
                                          "model (case-insensitive); a catalogue model also "
                                          "answers to its Hugging Face id")
    source: str = Field(DEFAULT_LLM, description="catalogue name, local folder or HF id")
    engine: EngineConfig = Field(default_factory=EngineConfig,
                                 description="vLLM engine settings")
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig,
                                           description="Serve's replica autoscaling")
    placement: PlacementConfig = Field(default_factory=PlacementConfig,
                                       description="resources of one replica")
    accelerator_type: str | None = Field(None, description="e.g. H100, A10G; null: CPU")
    # Above the engine's batch: the engine's scheduler, not Serve's router, should queue
    # (docs/benchmarks.md, "Serving hot path").
    max_ongoing_requests: int = Field(256, gt=0, description="per replica (above the engine's "
                                      "batch), beyond which requests queue")
    max_queued_requests: int | None = Field(
        None, gt=0, description="requests waiting for a replica (per proxy) beyond which new "
                                "ones get 503 with Retry-After; null: no limit")
    env: dict[str, str] = Field(default_factory=dict, description="env vars of the replicas")
    cpu_worker_niceness: int | None = Field(
        -10, ge=-20, le=19, description="CPU engines: niceness of the vLLM worker's threads, "
                                        "so the node's other processes yield its core "
                                        "(needs CAP_SYS_NICE; null: unchanged)")
    stream_batching_interval_ms: float | None = Field(
        None, ge=0, description="streams of this model to RAG answers served by another "
                                "model's replica are packed for this long (Ray's default 50)"
    )
    usd_per_hour: float | None = Field(
        None, ge=0, description="price of one replica per hour (cost accounting)"
    )
    lora: LoraServingConfig | None = Field(
        None, description="serve LoRA adapters on this model's engines (on CPU this costs "
                           "up to a third of the base's throughput); null: none")

    tool_calling: ToolCallingConfig | Literal["auto"] | None = Field(
        "auto", description="`tools`/`tool_choice` on this model; auto: what the catalogue "
                            "knows of `source` (on for smollm2-135m-instruct, off for "
                            "other models); null: off (a request with `tools` gets 400 "
                            "unless tool_choice is none)")

    def engine_kwargs(self) -> dict[str, Any]:
        lora = self.lora.to_engine_kwargs() if self.lora is not None else {}
        tools = self.tool_settings()
        tools = tools.to_engine_kwargs() if tools is not None else {}
        return {**self.engine.to_engine_kwargs(), **lora, **tools}

    def tool_settings(self) -> ToolCallingConfig | None:
        """`tool_calling` with "auto" resolved through the catalogue."""
        if self.tool_calling != "auto":
            return self.tool_calling
        from ember.models.catalogue import CATALOGUE

        entry = CATALOGUE.get(self.source)
        if entry is None or entry.tool_parser is None:
            return None
        return ToolCallingConfig(parser=entry.tool_parser,
                                 chat_template=entry.tool_chat_template)


class LLMAppConfig(_Strict):
    """The whole OpenAI-compatible application: models plus Ember's routes and gate."""

    models: list[ModelDeploymentConfig] = Field(
        default_factory=lambda: [ModelDeploymentConfig()], min_length=1,
        description="the served models, one or more; `name` must be unique"
    )
    access: AccessConfig = Field(default_factory=AccessConfig,
                                 description="API keys and per-request limits")
    batch: BatchServiceConfig = Field(default_factory=BatchServiceConfig,
                                      description="the Batch API")

    @model_validator(mode="after")
    def _unique_names(self) -> LLMAppConfig:
        # names and aliases are matched case-insensitively, so they must differ that way
        names = [n.lower() for m in self.models for n in {m.name, *m.aliases}]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names and aliases must be unique (ignoring case); "
                             f"repeated: {duplicates}")
        return self

    def model_aliases(self) -> dict[str, list[str]]:
        """Each model's name -> its aliases (declared, and a catalogue model's HF id)."""
        from ember.serving.model_names import catalogue_aliases

        return {m.name: catalogue_aliases(m.source, m.aliases) for m in self.models}
