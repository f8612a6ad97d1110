"""`SFTJobConfig`: everything one fine-tuning job reads, validated before any worker starts.

Sections mirror the job's stages: which model, which data, which method
(full / lora / qlora / deepspeed), the optimisation loop, how many Ray Train
workers, failure handling, MLflow tracking, output and evaluation. Unknown keys
are errors, so a typo in a YAML fails at submission with the key's name rather
than an hour later on a GPU.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ember.models.catalogue import DEFAULT_LLM

Method = Literal["full", "lora", "qlora", "deepspeed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    source: str = Field(DEFAULT_LLM, description="catalogue name, model folder or HF id")
    # Random weights from `source`'s config with these fields changed: a small
    # model for CPU tests, or a fixed shape for GPU benchmarks. Tokenizer and
    # chat template still come from `source`.
    random_init: bool = False
    config_overrides: dict[str, Any] = Field(default_factory=dict)
    # "auto": float32 on CPU (bf16 matmuls are slow there), bfloat16 on GPU.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    trust_remote_code: bool = False


class SyntheticData(_Strict):
    """Random token sequences of exactly `max_seq_len`: throughput benchmarks only."""

    samples: int = Field(256, ge=2)


class DataSection(_Strict):
    path: str | None = Field(None, description="chat or Alpaca JSONL")
    format: Literal["auto", "chat", "alpaca"] = "auto"
    val_fraction: float = Field(0.1, ge=0, lt=1)
    max_seq_len: int = Field(512, ge=8)
    max_turn_chars: int = Field(20000, ge=1)
    on_invalid: Literal["skip", "stop"] = Field(
        "skip", description="skip bad lines (reported) or stop before training")
    seed: int = 0
    synthetic: SyntheticData | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if (self.path is None) == (self.synthetic is None):
            raise ValueError("set exactly one of data.path and data.synthetic")
        return self


class LoraSection(_Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)


class QuantSection(_Strict):
    """bitsandbytes 4-bit settings for `qlora`."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float32"] = "bfloat16"


class DeepSpeedSection(_Strict):
    zero_stage: Literal[2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False  # ZeRO-3 only

    @model_validator(mode="after")
    def _offload_params_needs_stage3(self) -> DeepSpeedSection:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        return self


class MethodSection(_Strict):
    name: Method = "lora"
    lora: LoraSection = Field(default_factory=LoraSection)
    quant: QuantSection = Field(default_factory=QuantSection)
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection)
    # For lora/qlora: serve the adapter merged into its base (a plain model folder
    # any vLLM can load) or export the adapter alone.
    export: Literal["merged", "adapter"] = "merged"

    @property
    def uses_lora(self) -> bool:
        return self.name in ("lora", "qlora")


class TrainSection(_Strict):
    batch_size: int = Field(4, ge=1, description="sequences per worker per micro-step")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    max_steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    eval_every: int = Field(0, ge=0, description="optimizer steps; 0: only at the end")
    eval_batches: int | None = Field(None, ge=1, description="cap on validation batches")
    checkpoint_every: int = Field(0, ge=0, description="optimizer steps; 0: only at the end")
    # Off only for throughput benchmarks: no final checkpoint means no exported model.
    checkpoint_at_end: bool = True
    log_every: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _one_length(self) -> TrainSection:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of train.max_steps and train.epochs")
        return self


class ScalingSection(_Strict):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(default_factory=dict)


class FailureSection(_Strict):
    max_failures: int = Field(1, ge=-1, description="worker-group restarts; -1: unlimited")


class TrackingSection(_Strict):
    enabled: bool = True
    uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite in "
                                              "Ember's home")
    experiment: str = "ember-sft"
    register_as: str | None = Field(None, description="registered model name; None: skip")


class OutputSection(_Strict):
    storage_path: str | None = Field(None, description="Ray Train storage; default "
                                                       "$EMBER_HOME/train")


class EvalSection(_Strict):
    sample_prompts: int = Field(3, ge=0, description="validation prompts answered by "
                                                      "base and tuned model, side by side")
    max_new_tokens: int = Field(48, ge=1)


class SFTJobConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    method: MethodSection = Field(default_factory=MethodSection)
    train: TrainSection
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    failure: FailureSection = Field(default_factory=FailureSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    output: OutputSection = Field(default_factory=OutputSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @model_validator(mode="after")
    def _method_fits_scaling(self) -> SFTJobConfig:
        if self.method.name == "qlora" and self.scaling.num_workers > 1:
            # bitsandbytes 4-bit weights cannot be sharded by FSDP2 and DDP over
            # them gains nothing for one-GPU-sized models; keep QLoRA single-worker.
            raise ValueError("method.name 'qlora' runs on one worker (scaling.num_workers: 1)")
        if not self.train.checkpoint_at_end and self.tracking.register_as:
            raise ValueError("tracking.register_as needs train.checkpoint_at_end: the model "
                             "is exported in the final checkpoint")
        if self.data.synthetic is not None and self.tracking.register_as:
            raise ValueError("tracking.register_as with data.synthetic would register a "
                             "model trained on random tokens")
        return self
