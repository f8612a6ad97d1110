"""Mixed load over a base model and N LoRA adapters vs the base alone, on the running service.

    make up && .venv/bin/python scripts/bench_adapters.py [--adapters 8] [--concurrency 32]

Makes N random rank-16 adapters for the base (PEFT, q/k/v/o projections, seeded),
serves them with `ember serve-model` (nothing restarts), then runs `ember bench
serve` with two targets on the same service, alternating in each round: `base`
(every request to the base model) and `mixed` (requests rotate over the base and
the N adapters). Prints the medians and the mixed/base tok/s ratio, and the engine
replicas' resident memory before and after the adapters were loaded, beside what
N more engines of merged models would hold (the base's weights and KV cache each).
The adapters stay registered as `bench-lora-1..N` (`ember models remove` them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BASE = "smollm2-135m-instruct"


def make_adapters(count: int, rank: int, folder: Path) -> list[Path]:
    import torch
    from ember.models import resolve_model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    source = resolve_model(BASE)
    made = []
    for i in range(1, count + 1):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(source, torch_dtype=torch.float32)
        config = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        peft = get_peft_model(model, config)
        with torch.no_grad():  # small random updates: the answers change, not collapse
            for name, param in peft.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.01)
        target = folder / f"adapter-{i}"
        peft.save_pretrained(target)
        made.append(target)
        print(f"[bench] adapter {i}/{count}: rank {rank} -> {target}", flush=True)
    return made


def replica_rss_gib() -> float:
    """Resident memory of the engine replicas and their engine processes (children)."""
    import psutil

    total = 0
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "ServeReplica:ember:LLMServer" in cmd:
            family = [proc, *proc.children(recursive=True)]
            total += sum(p.memory_info().rss for p in family if p.is_running())
    return total / 2**30


def ember(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ember.cli.main", *args], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--concurrency", default="32")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--json", default="bench-results/adapters.json")
    args = parser.parse_args()

    from ember.models.adapters import find_adapter

    names = [f"bench-lora-{i}" for i in range(1, args.adapters + 1)]
    before = replica_rss_gib()
    with tempfile.TemporaryDirectory() as tmp:
        missing = [n for n in names if find_adapter(n) is None]
        if missing:
            folders = make_adapters(args.adapters, args.rank, Path(tmp))
            for name, folder in zip(names, folders, strict=True):
                if name in missing:
                    ember("serve-model", str(folder), "--name", name, "--base", BASE)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    mixed = "+".join([BASE, *names])
    ember("bench", "serve", "--target", f"base={args.url}@{BASE}",
          "--target", f"mixed={args.url}@{mixed}", "--concurrency", args.concurrency,
          "--max-tokens", str(args.max_tokens), "--repeat", str(args.repeat),
          "--baseline", "base", "--json", args.json)
    after = replica_rss_gib()
    print(f"[bench] engine replicas' resident memory: {before:.2f} GiB before the adapters "
          f"were loaded, {after:.2f} GiB after ({after - before:+.2f} GiB for "
          f"{args.adapters} adapters)")
    Path(args.json).with_suffix(".memory.json").write_text(json.dumps(
        {"rss_before_gib": before, "rss_after_gib": after, "adapters": args.adapters}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
