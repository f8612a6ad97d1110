"""Ember's serving path vs a plain vLLM OpenAI server on one GPU, in one run (issue 11).

On the GPU test machine (docs/benchmarks.md, "The GPU test machine": vLLM 0.24 + Ray 2.58
there):

    bash ../shared/gpu/pack_serving.sh && bash tests/gpu/pack_assets.sh   # here
    # p0..p3 stored, then with carry [".gpu-serve/p4", ".gpu/tokenizer", ".gpu/extra"]:
    source .gpu-serve/p4/setup.sh && \
      python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/extra/*.whl && \
      python tests/gpu/bench_serve.py --out $OUT

Both servers serve the same random-weight 1.1B Llama (SmolLM2's tokenizer) with
the same engine settings on the same GPU, each with 40% of its memory; Ember is
deployed the way `serve_apps.llm:build_app` deploys it (access off: no keys
database there), on a Ray head started with Ember's node environment. Then
`ember bench serve`'s load runs against both, targets alternating per round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

MODEL = "llama-1b-random"
LLAMA_1B = {  # as bench_train.py, with SmolLM2's vocabulary (its tokenizer)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 64, "intermediate_size": 8192, "vocab_size": 49152,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
    "torch_dtype": "bfloat16",
}
ENGINE = {"dtype": "bfloat16", "max_model_len": 2048, "gpu_memory_utilization": 0.4}
VLLM_PORT, EMBER_PORT = 8100, 8000
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]  # no `ray` script on PATH there


def build_model(root: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = root / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(LLAMA_1B))
    for item in Path(".gpu/tokenizer").iterdir():
        shutil.copy(item, folder / item.name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder),
                                             dtype=torch.bfloat16)
    model.save_pretrained(folder)
    return folder


def start_vllm(folder: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
           "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(VLLM_PORT),
           "--dtype", ENGINE["dtype"], "--max-model-len", str(ENGINE["max_model_len"]),
           "--gpu-memory-utilization", str(ENGINE["gpu_memory_utilization"])]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def start_ember(folder: Path, log: Path) -> None:
    from ember.cluster.environment import NODE_ENV

    env = {**os.environ, **NODE_ENV}
    subprocess.run([*RAY_CLI, "start", "--head", "--num-cpus=8", "--disable-usage-stats"],
                   env=env, check=True, stdout=log.open("w"), stderr=subprocess.STDOUT)
    import ray
    from ember.serving.config import LLMAppConfig
    from ember.serving.llm_app import build_llm_app
    from ray import serve

    ray.init(address="auto", log_to_driver=False)
    accelerator = next(k.split(":", 1)[1] for k in ray.cluster_resources()
                       if k.startswith("accelerator_type:"))
    config = LLMAppConfig(models=[{"name": MODEL, "source": str(folder),
                                   "accelerator_type": accelerator, "engine": ENGINE}],
                          access={"auth": False})
    serve.start(http_options={"host": "127.0.0.1", "port": EMBER_PORT})
    serve.run(build_llm_app(config), name="ember", route_prefix="/", blocking=False)


def wait_ready(url: str, timeout_s: float = 600) -> float:
    start = time.time()
    while time.time() - start < timeout_s:
        try:
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return time.time() - start
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-results"))
    parser.add_argument("--levels", default="1,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from ember.bench.serve_bench import (
        MEDIAN_COLUMNS,
        Target,
        format_table,
        medians,
        run_bench,
    )

    started = time.time()
    folder = build_model(Path("/tmp/models"))
    print(f"[{time.time() - started:4.0f}s] random model saved", flush=True)
    # Both servers start at once (each takes 40% of the GPU): the run's 10 minutes go to load.
    vllm = start_vllm(folder, out / "vllm.log")
    try:
        start_ember(folder, out / "ray-start.log")
        for label, port in (("plain vLLM", VLLM_PORT), ("Ember", EMBER_PORT)):
            wait_ready(f"http://127.0.0.1:{port}")
            print(f"[{time.time() - started:4.0f}s] {label} ready", flush=True)
        targets = [Target("ember", f"http://127.0.0.1:{EMBER_PORT}", MODEL),
                   Target("vllm", f"http://127.0.0.1:{VLLM_PORT}", MODEL)]
        rows = []
        for level in (int(x) for x in args.levels.split(",")):  # 32 requests at c=1
            rows += asyncio.run(run_bench(targets, [level], max(32, 4 * level),
                                          args.max_tokens, repeat=args.rounds))
            summary = medians(rows, "vllm")  # written after each level: a cut run keeps them
            table = format_table(summary, MEDIAN_COLUMNS)
            print(f"[{time.time() - started:4.0f}s] c={level} done\n{table}", flush=True)
            (out / "serve-gpu.json").write_text(json.dumps({"runs": rows, "medians": summary},
                                                           indent=2))
            (out / "serve-gpu.md").write_text(table + "\n")
    finally:
        logs = Path("/tmp/ray/session_latest/logs/serve")
        if logs.is_dir():  # the replicas' and controller's logs, for a run that went wrong
            subprocess.run(["tar", "czf", str(out / "serve-logs.tgz"), "-C", str(logs), "."],
                           capture_output=True)
        vllm.terminate()
        subprocess.run([*RAY_CLI, "stop", "--force"], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
