"""LoRA adapters served on their base model's engines (`ember serve-model` of an adapter).

An adapter is a PEFT folder (`adapter_config.json` + `adapter_model.safetensors`)
registered under its own name in `$EMBER_HOME/data/adapters/NAME/`, with
`ember-adapter.json` naming the served base model it runs on. Serving one starts
no engine and restarts nothing: every replica of the base finds it there on its
first request for NAME (`ember.serving.adapters`), and vLLM keeps the most
recently used ones loaded (`lora.max_loras` on the engine, `max_cpu_loras` in
memory). On a multi-node cluster EMBER_HOME must be on storage every node sees,
as for fetched models.

Names: an adapter answers as its own name (`lantern-keeper`), as a fine-tuned
model does on OpenAI's API; /v1/models lists it with its base as `parent`. Names
are checked here so that a folder name can never leave the adapters folder.

An adapter that fails to load in an engine (its weights unreadable or not matching the
base) gets `load-error.json` beside its files (`record_load_error`): its first request
answers vLLM's 400, later ones Ember's 400 naming the error, without another load, and
`ember models adapters` / `ember status` show it. Registering it again (a new folder)
clears the record.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ember.config.paths import data_dir
from ember.errors import EmberError

METADATA = "ember-adapter.json"
LOAD_ERROR = "load-error.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class AdapterError(EmberError):
    pass


@dataclass(frozen=True)
class Adapter:
    name: str
    base: str  # the served model it runs on
    rank: int
    path: Path
    load_error: str | None = None  # why an engine could not load it (then not retried)
    source: str | None = None  # where it came from (models:/NAME/VERSION, a folder)


def adapters_dir() -> Path:
    return data_dir() / "adapters"


def is_adapter_folder(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def check_adapter_folder(folder: Path) -> int:
    """The adapter's LoRA rank, after checking it is a LoRA folder vLLM can load."""
    config_file = folder / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise AdapterError(f"{folder} is not a LoRA adapter: it has no "
                           f"adapter_config.json") from None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{config_file} cannot be read as JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise AdapterError(f"{folder} holds a '{kind}' adapter; only LoRA adapters are served")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise AdapterError(f"{config_file}: 'r' (the LoRA rank) must be a positive integer, "
                           f"got {rank!r}")
    if not any((folder / w).is_file() and (folder / w).stat().st_size > 0 for w in WEIGHTS):
        raise AdapterError(f"{folder} has no adapter weights ({' or '.join(WEIGHTS)})")
    return rank


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise AdapterError(f"'{name}' cannot name an adapter: use letters, digits, '.', '_' "
                           f"and '-' (up to 128), starting with a letter or digit")


def register_adapter(folder: Path, name: str, base: str, source: str | None = None) -> Adapter:
    """Copy a checked adapter folder in under `name`; refuse a name already taken."""
    check_name(name)
    rank = check_adapter_folder(folder)
    target = adapters_dir() / name
    if target.exists():
        existing = find_adapter(name)
        on = f" on '{existing.base}'" if existing else ""
        raise AdapterError(f"an adapter named '{name}' is already served{on}; pick another "
                           f"--name, or remove it first (`ember models remove {name}`)")
    staging = adapters_dir() / f".{name}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(METADATA, LOAD_ERROR))
    (staging / METADATA).write_text(json.dumps({"name": name, "base": base, "rank": rank,
                                                "source": source}))
    staging.rename(target)  # replicas never see a half-copied adapter
    return Adapter(name, base, rank, target, source=source)


def remove_adapter(name: str) -> None:
    check_name(name)
    target = adapters_dir() / name
    if not target.exists():
        raise AdapterError(f"no adapter named '{name}' is served")
    shutil.rmtree(target)


def read_adapter(name: str) -> Adapter:
    folder = adapters_dir() / name
    meta = json.loads((folder / METADATA).read_text())
    return Adapter(name, meta["base"], int(meta["rank"]), folder, _load_error(folder),
                   meta.get("source"))


def _load_error(folder: Path) -> str | None:
    try:
        return json.loads((folder / LOAD_ERROR).read_text())["message"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return "an engine could not load it (its load-error.json is unreadable)"


def record_load_error(name: str, message: str) -> None:
    """Note that an engine failed to load the registered adapter `name`: later requests
    are refused with `message` instead of loading it again."""
    folder = adapters_dir() / name
    if not NAME.match(name) or not (folder / METADATA).is_file():
        return  # not one of ours (removed meanwhile, or another resolver's)
    staging = folder / f".{LOAD_ERROR}.{time.time_ns()}"
    staging.write_text(json.dumps({"message": message[:2000], "at": time.time()}))
    staging.replace(folder / LOAD_ERROR)


def find_adapter(name: str | None) -> Adapter | None:
    """The registered adapter called `name`, or None (also for names that cannot be one)."""
    if not name or not NAME.match(name) or not (adapters_dir() / name / METADATA).is_file():
        return None
    try:
        return read_adapter(name)
    except (OSError, ValueError, KeyError):
        return None


def list_adapters(bases: set[str] | None = None) -> list[Adapter]:
    """Registered adapters, by name; only those on `bases` when given."""
    if not adapters_dir().is_dir():
        return []
    found = (find_adapter(p.name) for p in sorted(adapters_dir().iterdir()))
    return [a for a in found if a is not None and (bases is None or a.base in bases)]
