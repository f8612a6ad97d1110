"""The ids a client may send as `model`: each served name, case-insensitively, and its aliases.

A sentence-transformers user types `all-MiniLM-L6-v2` or
`sentence-transformers/all-MiniLM-L6-v2`; a Hugging Face user
`HuggingFaceTB/SmolLM2-135M-Instruct`. Each answers as the served model it names
(`ModelNames.canonical`), before the key's model patterns, the limits and the routing
look at it, so an alias grants nothing its model's name would not.

Aliases come from the config (`models[].aliases`, `rag.embedder_aliases`) and, for a
catalogue model, its Hugging Face id. LoRA adapters, rolled-out names and `rag:*`
names are matched as registered (exactly).
"""

from __future__ import annotations


class ModelNames:
    """Served model id -> its aliases, looked up case-insensitively."""

    def __init__(self, aliases: dict[str, list[str]]) -> None:
        self.aliases = {name: sorted(set(names) - {name}) for name, names in aliases.items()}
        self._by_lower: dict[str, str] = {}
        for name, names in aliases.items():
            for alias in (name, *names):
                self._by_lower.setdefault(alias.lower(), name)

    def canonical(self, model):
        """The served id `model` names, or `model` unchanged (unknown, or not a string)."""
        if not isinstance(model, str) or model in self.aliases:
            return model
        return self._by_lower.get(model.lower(), model)

    def listing(self, names: list[str]) -> str:
        """`names` for an error message, each with its aliases."""
        return ", ".join(f"{n} (also: {', '.join(self.aliases[n])})"
                         if self.aliases.get(n) else n for n in names) or "none"


def catalogue_aliases(source: str, declared: list[str] | None = None) -> list[str]:
    """A model's aliases: those `declared` in the config, and the Hugging Face id of a
    catalogue model (`source`)."""
    from ember.models.catalogue import CATALOGUE

    entry = CATALOGUE.get(source)
    return [*(declared or []), *([entry.hf_id] if entry is not None and entry.hf_id else [])]
