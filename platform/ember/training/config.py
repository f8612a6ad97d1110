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
    random_init: bool = Field(False, description="random weights from `source`'s config (tests, "
                                                  "benchmarks); tokenizer and chat template still "
                                                  "come from `source`")
    config_overrides: dict[str, Any] = Field(
        default_factory=dict, description="fields of `source`'s config to change with "
                                          "random_init, e.g. {num_hidden_layers: 2}")
    # "auto": float32 on CPU (bf16 matmuls are slow there), bfloat16 on GPU.
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="weights' dtype; auto: float32 on CPU, bfloat16 on GPU")
    trust_remote_code: bool = Field(False, description="let transformers run code that ships "
                                                       "with the model")


class SyntheticData(_Strict):
    """Random token sequences of exactly `max_seq_len`: throughput benchmarks only."""

    samples: int = Field(256, ge=2, description="how many random sequences")


class DataSection(_Strict):
    path: str | None = Field(None, description="chat or Alpaca JSONL; set exactly one of path "
                                               "and synthetic")
    format: Literal["auto", "chat", "alpaca"] = Field(
        "auto", description="the file's format; auto: detected from its lines")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share held out for validation "
                                                             "(a seeded shuffle)")
    max_seq_len: int = Field(512, ge=8, description="tokens per example; longer ones are "
                                                    "truncated")
    max_turn_chars: int = Field(20000, ge=1, description="characters per turn; a longer turn "
                                                         "is an issue (`too_long`)")
    on_invalid: Literal["skip", "stop"] = Field(
        "skip", description="skip bad lines (reported) or stop before training")
    seed: int = Field(0, description="seed of the validation split and the data order")
    synthetic: SyntheticData | None = Field(
        None, description="random token sequences of exactly max_seq_len instead of a file "
                          "(throughput benchmarks)")

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if (self.path is None) == (self.synthetic is None):
            raise ValueError("set exactly one of data.path and data.synthetic")
        return self


class LoraSection(_Strict):
    r: int = Field(16, ge=1, description="the adapters' rank")
    alpha: int = Field(32, ge=1, description="the adapters' scale is alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1,
        description="the modules that get adapters")


class QuantSection(_Strict):
    """bitsandbytes 4-bit settings for `qlora`."""

    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="the 4-bit data type")
    double_quant: bool = Field(True, description="quantise the quantisation constants too")
    compute_dtype: Literal["bfloat16", "float32"] = Field(
        "bfloat16", description="dtype of the matmuls over the 4-bit weights")


class DeepSpeedSection(_Strict):
    zero_stage: Literal[2, 3] = Field(2, description="ZeRO-2 shards gradients and optimizer "
                                                     "state; ZeRO-3 the weights too")
    offload_optimizer: bool = Field(False, description="optimizer state in CPU memory")
    offload_params: bool = Field(False, description="weights in CPU memory (ZeRO-3 only)")

    @model_validator(mode="after")
    def _offload_params_needs_stage3(self) -> DeepSpeedSection:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        return self


class MethodSection(_Strict):
    name: Method = Field("lora", description="full (FSDP2), lora, qlora (one worker) or "
                                             "deepspeed")
    lora: LoraSection = Field(default_factory=LoraSection,
                              description="LoRA adapters (lora, qlora)")
    quant: QuantSection = Field(default_factory=QuantSection,
                                description="bitsandbytes 4-bit base (qlora)")
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection,
                                        description="DeepSpeed ZeRO (deepspeed)")
    # For lora/qlora: the adapter alone (served on its base's engines by `ember
    # serve-model`, no engine of its own), or merged into its base (a plain model
    # folder any vLLM loads, one engine per model).
    export: Literal["adapter", "merged"] = Field(
        "adapter", description="lora/qlora: the adapter alone (served on its base's engines), "
                               "or merged into its base (a full model folder)")

    @property
    def uses_lora(self) -> bool:
        return self.name in ("lora", "qlora")


class TrainSection(_Strict):
    batch_size: int = Field(4, ge=1, description="sequences per worker per micro-step")
    grad_accum: int = Field(1, ge=1, description="micro-steps per optimizer step")
    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's weight decay")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="learning-rate schedule after the warm-up")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of warm-up")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; set exactly one "
                                                          "of max_steps and epochs")
    epochs: float | None = Field(None, gt=0, description="passes over the training split; set "
                                                         "exactly one of max_steps and epochs")
    max_grad_norm: float = Field(1.0, gt=0, description="gradients are clipped to this norm")
    eval_every: int = Field(0, ge=0, description="optimizer steps; 0: only at the end (and "
                                                 "before training)")
    eval_batches: int | None = Field(None, ge=1, description="cap on validation batches")
    checkpoint_every: int = Field(0, ge=0, description="optimizer steps; 0: only at the end")
    # Off only for throughput benchmarks: no final checkpoint means no exported model.
    checkpoint_at_end: bool = Field(True, description="write the final checkpoint (and the "
                                                      "exported model)")
    log_every: int = Field(1, ge=1, description="optimizer steps between progress lines")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory")
    seed: int = Field(0, description="seed of the weights' random init and each worker's "
                                     "torch generator")

    @model_validator(mode="after")
    def _one_length(self) -> TrainSection:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of train.max_steps and train.epochs")
        return self


class ScalingSection(_Strict):
    num_workers: int = Field(1, ge=1, description="Ray Train workers")
    use_gpu: bool = Field(False, description="one GPU per worker")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="Ray resources per worker, e.g. {CPU: 2} (a "
                                          "worker gets one torch thread per CPU)")


class FailureSection(_Strict):
    max_failures: int = Field(1, ge=-1, description="worker-group restarts from the "
                                                    "last checkpoint; -1: unlimited")


class TrackingSection(_Strict):
    enabled: bool = Field(True, description="log the job to MLflow")
    uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite in "
                                              "Ember's home")
    experiment: str = Field("ember-sft", description="MLflow experiment")
    register_as: str | None = Field(None, description="registered model name; null: skip")


class OutputSection(_Strict):
    storage_path: str | None = Field(None, description="Ray Train storage; default "
                                                       "$EMBER_HOME/train")


class EvalSection(_Strict):
    sample_prompts: int = Field(3, ge=0, description="validation prompts answered by "
                                                      "base and tuned model, side by side")
    max_new_tokens: int = Field(48, ge=1, description="tokens per sample answer")


class SFTJobConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$",
                      description="the Ray Train run and MLflow run name")
    model: ModelSection = Field(default_factory=ModelSection, description="the base model")
    data: DataSection = Field(description="the training data")
    method: MethodSection = Field(default_factory=MethodSection,
                                  description="what trains, and how it is distributed")
    train: TrainSection = Field(description="the optimisation loop")
    scaling: ScalingSection = Field(default_factory=ScalingSection,
                                    description="Ray Train's workers")
    failure: FailureSection = Field(default_factory=FailureSection,
                                    description="failure handling")
    tracking: TrackingSection = Field(default_factory=TrackingSection,
                                      description="MLflow tracking")
    output: OutputSection = Field(default_factory=OutputSection,
                                  description="where checkpoints are written")
    eval: EvalSection = Field(default_factory=EvalSection,
                              description="evaluation at the end of the job")

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
