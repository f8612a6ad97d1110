"""Prepare embedded models: GGUF from a PyPI package -> HF safetensors folder.

Design choices:
- The conversion runs once; a manifest with a SHA-256 per file marks a folder
  as complete. A folder without a manifest, or whose files do not match it
  (a crash midway, a truncated copy), is rebuilt.
- The folder is written under a temporary name and renamed into place, and a
  file lock serialises concurrent preparations (two Serve replicas, say).
- transformers refuses to `save_pretrained` a model loaded from GGUF (it is
  marked quantized); a fresh model built from the same config, with the
  de-quantized state dict loaded, saves fine (docs/architecture.md, "The stack
  underneath").
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from ember.checksums import sha256_file
from ember.models.entries import CatalogueEntry

MANIFEST = "ember-manifest.json"
Progress = Callable[[str], None]

# SmolLM2's chat template (ChatML with a default system prompt), used when the
# GGUF metadata does not carry one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def is_prepared(entry: CatalogueEntry) -> bool:
    return verify_folder(entry.local_dir()) is None


def verify_folder(folder: Path) -> str | None:
    """None if `folder` matches its manifest, else the reason it does not."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (never prepared, or interrupted)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return "manifest is not valid JSON"
    for name, expected in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["size"]:
            return f"{name} has {file.stat().st_size} bytes, expected {expected['size']}"
        if sha256(file) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def ensure_prepared(entry: CatalogueEntry, progress: Progress = print, force: bool = False) -> Path:
    """Return the entry's prepared folder, building or rebuilding it if needed."""
    folder = entry.local_dir()
    with _lock(folder.parent / f".{entry.name}.lock"):
        problem = "rebuild requested" if force else verify_folder(folder)
        if problem is None:
            progress(f"{entry.name}: already prepared at {folder} (checksums verified), skipping")
            return folder
        if folder.exists():
            progress(f"{entry.name}: rebuilding {folder}: {problem}")
        _build(entry, folder, progress)
    return folder


def _build(entry: CatalogueEntry, folder: Path, progress: Progress) -> None:
    progress(f"{entry.name}: converting {entry.source_file} from the package {entry.package} "
             f"(once; about a minute)")
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    convert_gguf(entry.package_dir(), entry.source_file, staging, progress)
    _step(progress, "writing checksums", lambda: write_manifest(staging, entry))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    progress(f"{entry.name}: ready at {folder}")


def convert_gguf(src_dir: Path, gguf_file: str, out_dir: Path, progress: Progress) -> None:
    """Load a GGUF checkpoint with transformers and save it as bf16 safetensors.

    GGUF de-quantizes fastest to float32; the copy is cast to bf16 for saving.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # Ember's step lines show the progress; transformers' per-tensor bars are noise here.
    transformers_logging.disable_progress_bar()
    quantized = _step(
        progress,
        f"loading {gguf_file} (de-quantizing)",
        lambda: AutoModelForCausalLM.from_pretrained(
            src_dir, gguf_file=gguf_file, dtype=torch.float32
        ),
    )
    tokenizer = _step(
        progress,
        "loading tokenizer",
        lambda: AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_file),
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = _step(
        progress,
        "rebuilding as a plain bf16 model",
        lambda: _fresh_copy(quantized, config, torch.bfloat16),
    )
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    _step(
        progress,
        f"saving safetensors to {out_dir}",
        lambda: (
            model.save_pretrained(out_dir, safe_serialization=True),
            tokenizer.save_pretrained(out_dir),
        ),
    )


def _fresh_copy(quantized, config, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    return model


def write_manifest(folder: Path, entry: CatalogueEntry) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "model": entry.name,
        "source": f"{entry.package}:{entry.source_file}",
        "hf_id": entry.hf_id,
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


def sha256(path: Path) -> str:
    return sha256_file(path)


def _step(progress: Progress, what: str, fn):
    start = time.monotonic()
    progress(f"  {what} ...")
    result = fn()
    progress(f"  {what}: done in {time.monotonic() - start:.1f}s")
    return result


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
