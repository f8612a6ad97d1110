"""Training strategies: one interface over the four methods (forward, backward, step,
save, load, export).

The loop in `ember.training.loop` is written once against `Strategy`; what differs
between FSDP2, DDP-over-LoRA and DeepSpeed lives here:

| method    | wrapper        | resumable state written per checkpoint        | export            |
|-----------|----------------|-----------------------------------------------|-------------------|
| full      | FSDP2          | `dcp/`: torch.distributed.checkpoint shards   | `export/` model   |
| lora      | DDP (>1 worker)| `adapter/` + `optimizer.pt` (rank 0)          | `export/adapter/` |
| qlora     | none           | `adapter/` + `optimizer.pt`                   | `export/adapter/` |
| deepspeed | DeepSpeed ZeRO | `deepspeed/`: DeepSpeed's own files per rank  | `export/` model   |

Every rank writes into its own local folder and reports it; Ray Train merges the
folders of all ranks into one checkpoint directory in storage, which is why the
sharded formats need no shared file system while saving.
"""

from __future__ import annotations

from pathlib import Path

from ember.training.config import SFTJobConfig
from ember.training.modeling import (
    apply_lora,
    build_base_model,
    build_qlora_base,
    enable_gradient_checkpointing,
    resolve_dtype,
    save_hf_folder,
    shard_full,
)


def build_strategy(config: SFTJobConfig, device, total_steps: int, rank: int, world: int):
    if config.method.name == "deepspeed":
        return DeepSpeedStrategy(config, device, total_steps, rank)
    return TorchStrategy(config, device, total_steps, rank, world)


def build_scheduler(optimizer, config: SFTJobConfig, total_steps: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(config.train.schedule,
                                                    config.train.schedule)
    return get_scheduler(name, optimizer, num_warmup_steps=config.train.warmup_steps,
                         num_training_steps=total_steps)


def build_optimizer(params, config: SFTJobConfig):
    import torch

    return torch.optim.AdamW(params, lr=config.train.lr,
                             weight_decay=config.train.weight_decay)


class Strategy:
    """What the loop needs of every method; subclasses set model, scheduler, inner."""

    model = scheduler = inner = None

    def loss(self, batch):
        return self.model(**batch).loss

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)


class TorchStrategy(Strategy):
    """full (FSDP2), lora (DDP when >1 worker) and qlora, with a torch AdamW."""

    def __init__(self, config: SFTJobConfig, device, total_steps: int, rank: int, world: int):
        self.config, self.rank, self.world = config, rank, world
        self.method = config.method.name
        if self.method == "qlora":
            model = build_qlora_base(config, device)
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=config.train.gradient_checkpointing)
        else:
            model = build_base_model(config, device)
            if config.train.gradient_checkpointing:
                enable_gradient_checkpointing(model)
        if config.method.uses_lora:
            model = apply_lora(model, config)
        self.inner = model  # unwrapped, for saving
        if self.method == "full":
            model = shard_full(model, config)
        elif world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model, device_ids=None if str(device) == "cpu"
                                            else [device])
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, config)
        self.scheduler = build_scheduler(self.optimizer, config, total_steps)

    def backward(self, loss) -> None:
        (loss / self.config.train.grad_accum).backward()

    def micro_step(self) -> None:
        """Nothing between micro-batches: gradients accumulate in `.grad`."""

    def step(self) -> float:
        import torch

        norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.train.max_grad_norm)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor over the shards
            norm = norm.full_tensor()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def save_state(self, folder: Path) -> None:
        import torch

        if self.method == "full":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(folder / "dcp"))
        elif self.rank == 0:
            self.inner.save_pretrained(folder / "adapter")
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        if self.rank == 0:
            torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")

    def load_state(self, folder: Path) -> None:
        import torch

        if self.method == "full":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
            state = {"model": model_sd, "optim": optim_sd}
            dcp.load(state, checkpoint_id=str(folder / "dcp"))
            set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optim"])
        else:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            weights = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.inner, weights)
            self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt",
                                                      weights_only=False))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))

    def export(self, folder: Path, tokenizer) -> None:
        """The trained result, for serving: a model folder or a LoRA adapter."""
        if self.method == "full":
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            state = get_model_state_dict(self.model, options=options)  # collective
            if self.rank == 0:
                save_hf_folder(self.inner, tokenizer, folder, state_dict=state)
        elif self.rank == 0:
            self.inner.save_pretrained(folder / "adapter")
            tokenizer.save_pretrained(folder / "adapter")


class DeepSpeedStrategy(Strategy):
    """DeepSpeed ZeRO-2/3 over Ray Train's process group; DeepSpeed owns accumulation."""

    def __init__(self, config: SFTJobConfig, device, total_steps: int, rank: int):
        import deepspeed

        self.config, self.rank = config, rank
        model = build_base_model(config, device)
        if config.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.inner = model
        optimizer = build_optimizer(model.parameters(), config)
        scheduler = build_scheduler(optimizer, config, total_steps)
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler,
            config=deepspeed_config(config))

    def backward(self, loss) -> None:
        self.model.backward(loss)  # DeepSpeed scales by its accumulation steps

    def step(self) -> float:
        # One optimizer step = grad_accum micro-steps; DeepSpeed steps the
        # optimizer only at the accumulation boundary, so the loop calls
        # `micro_step` after each backward and `step` once per boundary.
        norm = self.model.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def micro_step(self) -> None:
        self.model.step()

    def save_state(self, folder: Path) -> None:
        self.model.save_checkpoint(str(folder / "deepspeed"), tag="state")

    def load_state(self, folder: Path) -> None:
        self.model.load_checkpoint(str(folder / "deepspeed"), tag="state")

    def export(self, folder: Path, tokenizer) -> None:
        if self.config.method.deepspeed.zero_stage == 3:
            state = self.model._zero3_consolidated_16bit_state_dict()  # collective
        else:
            state = self.model.module.state_dict()
        if self.rank == 0:
            save_hf_folder(self.inner, tokenizer, folder, state_dict=state)


def deepspeed_config(config: SFTJobConfig) -> dict:
    import torch

    ds = config.method.deepspeed
    zero: dict = {"stage": ds.zero_stage, "overlap_comm": config.scaling.use_gpu,
                  "contiguous_gradients": True}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": config.scaling.use_gpu}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": config.scaling.use_gpu}
    if ds.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": config.train.batch_size,
        "gradient_accumulation_steps": config.train.grad_accum,
        "gradient_clipping": config.train.max_grad_norm,
        "bf16": {"enabled": resolve_dtype(config) == torch.bfloat16},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # Ember reports progress itself
        "wall_clock_breakdown": False,
    }
