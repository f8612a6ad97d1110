"""After training: a servable model folder, and base-versus-tuned sample answers.

Both run as Ray tasks with one worker's resources (a GPU when the job used
GPUs), not in the driver, which may be a laptop submitting to a cluster.

A LoRA adapter is merged into a full-precision copy of its base, also after
QLoRA: merging into the 4-bit weights would bake their quantisation error into
the result, and vLLM then loads a plain model folder, no adapter support needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ember.training.config import SFTJobConfig


def build_servable(config: SFTJobConfig, export_dir: Path, target: Path) -> Path:
    """Copy or merge the checkpoint's `export/` into `target`; returns `target`."""
    if target.exists():
        shutil.rmtree(target)
    if not config.method.uses_lora:
        shutil.copytree(export_dir, target)
        return target
    adapter = export_dir / "adapter"
    if config.method.export == "adapter":
        shutil.copytree(adapter, target)
        return target
    merge_adapter(config, adapter, target)
    return target


def merge_adapter(config: SFTJobConfig, adapter: Path, target: Path) -> None:
    import torch
    from peft import PeftModel

    from ember.training.modeling import build_base_model, load_tokenizer, save_hf_folder

    dtype = torch.bfloat16 if config.scaling.use_gpu else torch.float32
    base = build_base_model(config, "cpu", dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    save_hf_folder(merged, load_tokenizer(config), target)


def sample_answers(config: SFTJobConfig, tuned: Path, prompts: list[list[dict]]) -> list[dict]:
    """Greedy answers of the base model and of the tuned one to the same prompts."""
    from ember.training.modeling import build_base_model, load_tokenizer

    device = "cuda" if config.scaling.use_gpu else "cpu"
    tokenizer = load_tokenizer(config)
    base = build_base_model(config, device)
    rows = [{"prompt": p[-1]["content"], "base": _answer(base, tokenizer, p, config)}
            for p in prompts]
    del base
    tuned_model = _load_tuned(config, tuned, device)
    for row, prompt in zip(rows, prompts, strict=True):
        row["tuned"] = _answer(tuned_model, tokenizer, prompt, config)
    return rows


def _load_tuned(config: SFTJobConfig, folder: Path, device):
    from transformers import AutoModelForCausalLM

    from ember.training.modeling import build_base_model, resolve_dtype

    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        return PeftModel.from_pretrained(build_base_model(config, device), str(folder))
    return AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(config)).to(device)


def _answer(model, tokenizer, messages: list[dict], config: SFTJobConfig) -> str:
    import torch

    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    ids = {k: v.to(model.device) for k, v in ids.items()}
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=config.eval.max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def format_samples(rows: list[dict], width: int = 100) -> str:
    lines = []
    for i, row in enumerate(rows, 1):
        lines += [f"[{i}] prompt: {_clip(row['prompt'], width)}",
                  f"    base : {_clip(row['base'], width)}",
                  f"    tuned: {_clip(row['tuned'], width)}"]
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
