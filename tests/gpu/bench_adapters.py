"""Mixed load over a base model and N LoRA adapters vs the base alone, on one GPU (issue 25).

On the GPU test machine, set up as for bench_serve.py (same packs and carry), then:

    python tests/gpu/bench_adapters.py --out $OUT --adapters 8,32 --levels 32,128 --rounds 3

Ember serves the random 1.1B Llama of bench_serve.py with `lora:` on (max_loras = the
largest N, rank 16) through the HAProxy ingress, as `serve_apps.llm:build_app` deploys
it. N random rank-16 adapters (q/k/v/o projections, PEFT's file layout, written
directly: no model load) are registered in Ember's adapter registry before the app
starts, so each replica loads them on first use. Targets, alternating in each round:
`base` (every request to the base model) and `mixed-N` (requests rotate over the base
and N adapters), medians and ratios to `base`. Every adapter answers once before the
rounds (its load is not measured). Beside each row: GPU utilisation; adapter bytes
against what N merged copies of the model would hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

import bench_serve as bs

PROJECTIONS = {"q_proj": (2048, 2048), "k_proj": (2048, 512), "v_proj": (2048, 512),
               "o_proj": (2048, 2048)}  # (in, out) of the 1.1B Llama's attention
LAYERS, RANK = 16, 16


def write_adapter(folder: Path, seed: int, base: Path) -> int:
    """A random rank-16 LoRA in PEFT's layout; its size in bytes."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(LAYERS):
        for name, (fan_in, fan_out) in PROJECTIONS.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            tensors[f"{prefix}.lora_A.weight"] = (
                torch.randn(RANK, fan_in, generator=generator) / fan_in ** 0.5
            ).to(torch.bfloat16)
            tensors[f"{prefix}.lora_B.weight"] = (
                torch.randn(fan_out, RANK, generator=generator) * 0.01
            ).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": 2 * RANK,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "target_modules": list(PROJECTIONS), "base_model_name_or_path": str(base),
        "modules_to_save": None}))
    return (folder / "adapter_model.safetensors").stat().st_size


def start_vllm_with_adapters(folder: Path, scratch: Path, names: list[str], max_loras: int):
    """Plain vLLM's OpenAI server with the same engine and LoRA settings, the adapters
    named as in Ember (`--lora-modules NAME=PATH`)."""
    import subprocess

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
           "--served-model-name", bs.MODEL, "--host", "127.0.0.1", "--port", str(bs.VLLM_PORT),
           "--dtype", bs.ENGINE["dtype"], "--max-model-len", str(bs.ENGINE["max_model_len"]),
           "--gpu-memory-utilization", str(bs.ENGINE["gpu_memory_utilization"]),
           "--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(RANK),
           "--lora-modules", *[f"{n}={scratch / n.replace('lora-', 'adapter-')}"
                               for n in names]]
    log = (scratch / "vllm.log").open("w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def warm(url: str, models: list[str]) -> None:
    import httpx

    for model in models:
        response = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
        if response.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {response.status_code} {response.text[:500]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-results"))
    parser.add_argument("--adapters", default="8,32")
    parser.add_argument("--levels", default="32,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--deadline-s", type=float, default=520)
    parser.add_argument("--vllm", action="store_true",
                        help="also plain vLLM with the same LoRA settings and adapters "
                             "(`--lora-modules`), same targets, alternating")
    args = parser.parse_args()
    out, scratch = Path(args.out), Path("/tmp/bench-scratch")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    counts = [int(x) for x in args.adapters.split(",")]
    os.environ["EMBER_HOME"] = str(scratch / "ember-home")  # the replicas inherit it
    os.environ["BENCH_LORA_MAX"] = str(max(counts))  # bench_serve.deploy turns `lora:` on

    from ember.bench.serve_bench import MEDIAN_COLUMNS, Target, format_table, medians, run_bench
    from ember.models.adapters import register_adapter

    folder = bs.build_model(Path("/tmp/models"))
    names, adapter_bytes = [], 0
    for i in range(1, max(counts) + 1):
        adapter_bytes = write_adapter(scratch / f"adapter-{i}", i, folder)
        register_adapter(scratch / f"adapter-{i}", f"lora-{i}", bs.MODEL)
        names.append(f"lora-{i}")
    bs.say(f"{len(names)} adapters registered ({adapter_bytes / 2**20:.1f} MiB each)")
    vllm = start_vllm_with_adapters(folder, scratch, names, max(counts)) if args.vllm else None
    bs.start_ember(folder, "haproxy", scratch / "ray.log")
    url = f"http://127.0.0.1:{bs.EMBER_PORT}"
    servers = [("", url)]
    if vllm is not None:
        servers.append(("vllm-", f"http://127.0.0.1:{bs.VLLM_PORT}"))
    for _, server in servers:
        bs.wait_ready(server)
        warm(server, names)
    bs.say("ready, every adapter answered once")
    targets = [Target(f"{prefix}{label}", server, models)
               for prefix, server in servers
               for label, models in [("base", bs.MODEL)] + [
                   (f"mixed-{n}", "+".join([bs.MODEL, *names[:n]])) for n in counts]]
    rows = []
    try:
        for level in (int(x) for x in args.levels.split(",")):
            for round_ in range(1, args.rounds + 1):
                if time.time() - bs.STARTED > args.deadline_s:
                    break
                for target in targets:
                    [row] = asyncio.run(run_bench([target], [level], max(16, 4 * level),
                                                  args.max_tokens, progress=lambda _m: None))
                    rows.append({**row, "round": round_})
                    bs.say(f"c={level} r{round_} {target.label}: {row['output_tok_s']:.0f} "
                           f"tok/s, ttft p50 {row['ttft_p50'] * 1000:.0f} ms, errors "
                           f"{row['errors']}, gpu {row.get('gpu_util_pct')}%")
            summary = medians(rows, "base")
            table = format_table(summary, MEDIAN_COLUMNS)
            bs.say(f"c={level} done\n{table}")
            merged = (folder / "model.safetensors").stat().st_size
            (out / "adapters-gpu.json").write_text(json.dumps({
                "runs": rows, "medians": summary, "adapter_bytes": adapter_bytes,
                "merged_model_bytes": merged}, indent=2))
            (out / "adapters-gpu.md").write_text(
                f"{table}\n\nadapter {adapter_bytes / 2**20:.1f} MiB; a merged copy of the "
                f"model {merged / 2**30:.2f} GiB\n")
    finally:
        bs.collect_logs(scratch, "haproxy")
        bs.stop_ember()
        if vllm is not None:
            vllm.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
