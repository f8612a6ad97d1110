"""GPU training throughput: Ember's SFT job through Ray Train beside plain torch, one run.

    bash ../shared/gpu/pack.sh && bash tests/gpu/pack_assets.sh      # here
    source .gpu/setup.sh && python -m tests.gpu.bench_train --out $OUT # on the GPU machine

The model is the 1.1B-parameter Llama of docs/benchmarks.md built from a config with
random weights (hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192,
vocab 32000), trained on random tokens, 8 sequences x 1024 tokens per GPU per
step, bf16 weights, AdamW. Each case runs twice, plain torch first, then
`ember.training.job.run_sft` (Ray Train `TorchTrainer`, Ember's loop); the
figure is the median step time after two warm-up steps, as tokens/s per GPU,
and the peak GPU memory of rank 0. Cases: LoRA r16 on q/k/v/o and QLoRA (NF4,
double quantisation, bf16 compute, gradient checkpointing) on one GPU; full
fine-tuning with FSDP2 on every visible GPU (two on nvidia-h200-x2).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

LLAMA_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 64, "intermediate_size": 8192, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
}
BATCH, SEQ = 8, 1024
ASSETS = Path(".gpu/tokenizer")  # SmolLM2's tokenizer files, carried by pack_assets.sh


def model_folder(root: Path, config: dict | None = None) -> Path:
    """A model folder with a config and a tokenizer, no weights: `random_init` builds them."""
    folder = root / "llama-1b-random"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or LLAMA_1B))
    for item in ASSETS.iterdir():
        shutil.copy(item, folder / item.name)
    return folder


# --- plain torch --------------------------------------------------------------------------


def raw_model(folder: Path, method: str, device: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        tmp = folder.parent / "qlora-base"
        if not (tmp / "config.json").exists():
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(tmp)
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                 bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=bnb,
                                                     dtype=torch.bfloat16,
                                                     device_map={"": device})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    return model


def raw_loop(model, device: str, steps: int) -> dict:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    tokens = torch.randint(0, LLAMA_1B["vocab_size"], (BATCH, SEQ), device=device)
    mask = torch.ones_like(tokens)
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model(input_ids=tokens, attention_mask=mask, labels=tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times[2:])
    return {"median_step_s": median, "tok_s_per_gpu": BATCH * SEQ / median,
            "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30}


def raw_single(folder: Path, method: str, steps: int) -> dict:
    import torch

    model = raw_model(folder, method, "cuda:0")
    if method == "qlora":
        model.train()
    result = raw_loop(model, "cuda:0", steps)
    del model
    torch.cuda.empty_cache()
    return result


def _fsdp_worker(rank: int, world: int, folder: str, steps: int, queue) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    model = raw_model(Path(folder), "full", f"cuda:{rank}")
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    result = raw_loop(model, f"cuda:{rank}", steps)
    if rank == 0:
        queue.put(result)
    dist.destroy_process_group()


def raw_fsdp2(folder: Path, world: int, steps: int) -> dict:
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.Queue()
    mp.start_processes(_fsdp_worker, args=(world, str(folder), steps, queue), nprocs=world,
                       start_method="spawn")
    return queue.get()


# --- Ember through Ray Train ----------------------------------------------------------------


def ember_config(folder: Path, method: str, workers: int, steps: int, storage: Path,
                 batch: int = BATCH, seq: int = SEQ, overrides: dict | None = None) -> dict:
    return {
        "name": f"bench-{method}-{workers}gpu",
        "model": {"source": str(folder), "random_init": True,
                  "config_overrides": overrides or {}, "dtype": "bfloat16"},
        "data": {"synthetic": {"samples": batch * workers * (steps + 1)}, "max_seq_len": seq,
                 "val_fraction": 0},
        "method": {"name": method,
                   "quant": {"compute_dtype": "bfloat16"},
                   "lora": {"r": 16, "alpha": 32, "dropout": 0.05}},
        "train": {"batch_size": batch, "lr": 1e-4, "max_steps": steps, "log_every": steps,
                  "schedule": "constant", "checkpoint_at_end": False,
                  "gradient_checkpointing": method == "qlora"},
        "scaling": {"num_workers": workers, "use_gpu": True},
        "failure": {"max_failures": 0},
        "tracking": {"enabled": False},
        "output": {"storage_path": str(storage)},
        "eval": {"sample_prompts": 0},
    }


def ember_run(config: dict) -> dict:
    from ember.training.config import SFTJobConfig
    from ember.training.job import run_sft

    start = time.perf_counter()
    result = run_sft(SFTJobConfig.model_validate(config))
    median = result.metrics["median_step_time_s"]
    return {"median_step_s": median, "tok_s_per_gpu": BATCH * SEQ / median,
            "peak_gb": result.metrics.get("peak_mem_gb"), "wall_s": time.perf_counter() - start,
            "final_loss": result.metrics["loss"]}


# --- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/bench-out"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cases", default="lora,qlora,full")
    args = parser.parse_args()
    import torch

    out, work = Path(args.out), Path("/tmp/ember-gpu-bench")
    out.mkdir(parents=True, exist_ok=True)
    folder = model_folder(work)
    gpus = torch.cuda.device_count()
    rows = []
    for case in args.cases.split(","):
        workers = gpus if case == "full" else 1
        raw = (raw_fsdp2(folder, workers, args.steps) if case == "full"
               else raw_single(folder, case, args.steps))
        print(f"raw {case}: {raw}", flush=True)
        ember = ember_run(ember_config(folder, case, workers, args.steps, work / "store"))
        print(f"ember {case}: {ember}", flush=True)
        rows.append({"case": case, "gpus": workers, "raw": raw, "ember": ember,
                     "ratio": ember["tok_s_per_gpu"] / raw["tok_s_per_gpu"]})
        (out / "bench_train.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name(0), "gpus": gpus, "rows": rows}, indent=1))
    print(table(rows, torch.cuda.get_device_name(0)))


def table(rows: list[dict], device: str) -> str:
    lines = [f"device: {device}; 1.1B random Llama, {BATCH} x {SEQ} tokens per GPU per step",
             "| case | GPUs | plain torch tok/s/GPU | Ember (Ray Train) tok/s/GPU | Ember/torch "
             "| peak GiB torch | peak GiB Ember |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['gpus']} | {r['raw']['tok_s_per_gpu']:,.0f} | "
                     f"{r['ember']['tok_s_per_gpu']:,.0f} | {r['ratio']:.3f} | "
                     f"{r['raw']['peak_gb']:.1f} | {r['ember']['peak_gb'] or 0:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
