"""RAG prompt assembly: numbered sources, citation rules, fitted to the context.

The sources go into the system message as [1], [2], ... in rank order. If
the conversation plus sources would not fit the model's context (prompt
tokens + the answer's `max_tokens`), the lowest-ranked sources are dropped
first; if the question alone does not fit, the request is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

INSTRUCTIONS = (
    "You answer questions using only the numbered sources below. Cite the sources you "
    "use as [n], for example [1]. If the sources do not contain the answer, say that the "
    "documents do not say, and do not guess.")


@dataclass
class Source:
    index: int
    text: str
    source: str
    title: str
    score: float

    def as_dict(self) -> dict:
        return {"index": self.index, "source": self.source, "title": self.title,
                "score": round(self.score, 4), "text": self.text}


class ContextTooLong(ValueError):
    pass


def format_sources(sources: Sequence[Source]) -> str:
    return "\n\n".join(f"[{s.index}] {s.title} ({s.source})\n{s.text}" for s in sources)


def rag_messages(conversation: list[dict], sources: Sequence[Source]) -> list[dict]:
    system = f"{INSTRUCTIONS}\n\nSources:\n\n{format_sources(sources) or '(no sources found)'}"
    turns = [m for m in conversation if m.get("role") != "system"]
    return [{"role": "system", "content": system}, *turns]


def fit_sources(conversation: list[dict], sources: list[Source],
                count_tokens: Callable[[list[dict]], int], budget: int
                ) -> tuple[list[dict], list[Source]]:
    """The messages and the sources kept so the prompt fits in `budget` tokens."""
    kept = list(sources)
    while True:
        messages = rag_messages(conversation, kept)
        if count_tokens(messages) <= budget:
            return messages, kept
        if not kept:
            raise ContextTooLong(
                f"the question alone takes {count_tokens(messages)} tokens, over the "
                f"{budget} tokens left for the prompt; shorten it or lower max_tokens")
        kept.pop()  # the lowest-ranked source goes first
