"""Loading the model a job trains, as each method wants it, on one Ray Train worker.

- `full`: all weights train; FSDP2 `fully_shard` per decoder layer, then the root
  (always, also on one worker, so one code path runs everywhere). On GPU with
  float32 weights, a bf16 `MixedPrecisionPolicy` computes in bf16 and keeps fp32
  master weights.
- `lora`: peft LoRA on the configured modules; DDP over the adapter when there
  are several workers (the frozen base is replicated, which is what LoRA on
  models that fit one device wants).
- `qlora`: the base loaded 4-bit by bitsandbytes (NF4, double quantisation, bf16
  compute), `prepare_model_for_kbit_training`, then LoRA; one worker.
- `deepspeed`: plain weights handed to `deepspeed.initialize` (ZeRO-2 or 3) in
  `ember.training.strategies`.

Random-init models (`model.random_init`) are built from `source`'s config with
`config_overrides`, seeded identically on every rank so shards agree.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ember.training.config import SFTJobConfig


def resolve_dtype(config: SFTJobConfig):
    import torch

    name = config.model.dtype
    if name == "auto":
        name = "bfloat16" if config.scaling.use_gpu else "float32"
    return getattr(torch, name)


def model_path(config: SFTJobConfig) -> str:
    from ember.models.catalogue import resolve_model

    return resolve_model(config.model.source)


def load_tokenizer(config: SFTJobConfig):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_base_model(config: SFTJobConfig, device, dtype=None):
    """The model before any method-specific wrapping, on `device`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = dtype or resolve_dtype(config)
    path = model_path(config)
    remote = config.model.trust_remote_code
    if config.model.random_init:
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=remote)
        for key, value in config.model.config_overrides.items():
            setattr(hf_config, key, value)
        torch.manual_seed(config.train.seed)  # every rank builds identical weights
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype,
                                                     trust_remote_code=remote)
        return model
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=remote)
    return model.to(device)


def build_qlora_base(config: SFTJobConfig, device):
    """The base quantised to 4 bits by bitsandbytes while loading."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = config.method.quant
    compute = getattr(torch, quant.compute_dtype)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.quant_type,
                             bnb_4bit_use_double_quant=quant.double_quant,
                             bnb_4bit_compute_dtype=compute)
    with tempfile.TemporaryDirectory(prefix="ember-qlora-") as tmp:
        path = model_path(config)
        if config.model.random_init:
            # bitsandbytes quantises in from_pretrained; a random model goes through disk.
            build_base_model(config, "cpu", dtype=compute).save_pretrained(tmp)
            path = tmp
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=bnb, dtype=compute,
            device_map={"": str(device)},
            trust_remote_code=config.model.trust_remote_code)
    return model


def apply_lora(model, config: SFTJobConfig):
    from peft import LoraConfig, get_peft_model

    lora = config.method.lora
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, peft_config)


def shard_full(model, config: SFTJobConfig):
    """FSDP2: shard every decoder layer, then the rest, over all workers."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs = {}
    if config.scaling.use_gpu and resolve_dtype(config) == torch.float32:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                                   reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def decoder_layers(model) -> list:
    """The repeated transformer blocks (`model.model.layers` in Llama-like models)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no `model.layers` to shard; FSDP2 "
                         f"wrapping knows Llama-style decoder models")
    return list(layers)


def enable_gradient_checkpointing(model) -> None:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # LoRA: frozen embeddings still pass grads on


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, as seen on this rank."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_hf_folder(model, tokenizer, folder: Path, state_dict=None) -> None:
    """A folder vLLM and transformers load: config, safetensors weights, tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(folder)
