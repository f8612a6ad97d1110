"""Split a document into chunks measured in the embedder's tokens.

Design choices:
- Units are sentences inside paragraphs; a chunk packs whole units up to
  `chunk_tokens`, so chunks end at sentence ends, not mid-word.
- A heading starts a new chunk once the current one is reasonably full
  (`min_fill`), so sections stay together; paragraph breaks are kept.
- Consecutive chunks share up to `overlap_tokens` of trailing units, so a
  fact on a boundary is whole in at least one chunk.
- A single unit longer than a chunk (a giant run-on line) is cut by tokens.
- Each chunk knows the headings it sits under (`section`: "Intro > Setup"),
  from Markdown headings (`#`..`######`, or underlined), which the HTML reader
  writes for <h1>..<h6>: a chunk from the middle of a section still carries
  what the section is about.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

CountTokens = Callable[[str], int]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_HEADING = re.compile(r"^(#{1,6} |[A-Z][^\n]{0,80}\n[=-]{3,}$)")


@dataclass
class Unit:
    text: str
    tokens: int
    starts_section: bool = False  # a heading
    starts_paragraph: bool = False
    level: int = 0  # the heading's level (1 for `#`), 0 for text
    section: str = ""  # the headings above this unit, outermost first, " > "-joined


@dataclass
class Chunk:
    text: str
    position: int
    tokens: int
    section: str = ""

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def split_units(text: str, count: CountTokens) -> list[Unit]:
    units: list[Unit] = []
    path: list[tuple[int, str]] = []  # (level, heading) of the sections we are in
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        heading = bool(_HEADING.match(paragraph))
        if heading:
            level, name = heading_of(paragraph)
            path = [(lv, h) for lv, h in path if lv < level] + [(level, name)]
        section = " > ".join(h for _, h in path)
        pieces = [paragraph] if heading else _SENTENCE_END.split(paragraph)
        for i, piece in enumerate(p.strip() for p in pieces):
            if piece:
                units.append(Unit(piece, count(piece), heading and i == 0, i == 0,
                                  level if heading else 0, section))
    return units


def heading_of(paragraph: str) -> tuple[int, str]:
    """(level, text) of a Markdown heading: `## Text`, or Text underlined with = / -."""
    if paragraph.startswith("#"):
        marks = len(paragraph) - len(paragraph.lstrip("#"))
        return marks, paragraph[marks:].strip()
    text, underline = paragraph.split("\n", 1)
    return (1 if underline.startswith("=") else 2), text.strip()


def chunk_text(text: str, count: CountTokens, chunk_tokens: int = 200,
               overlap_tokens: int = 40, min_fill: float = 0.5,
               split_long: Callable[[str, int], list[str]] | None = None) -> list[Chunk]:
    """Pack `text` into chunks of at most `chunk_tokens` (by `count`)."""
    if overlap_tokens >= chunk_tokens:
        raise ValueError(f"overlap_tokens ({overlap_tokens}) must be below chunk_tokens "
                         f"({chunk_tokens})")
    units = _cut_long_units(split_units(text, count), chunk_tokens, count, split_long)
    chunks: list[Chunk] = []
    current: list[Unit] = []
    for unit in units:
        size = sum(u.tokens for u in current)
        new_section = unit.starts_section and size >= min_fill * chunk_tokens
        if current and (size + unit.tokens > chunk_tokens or new_section):
            chunks.append(_make_chunk(current, len(chunks)))
            current = [] if new_section else _overlap(current, overlap_tokens, chunk_tokens
                                                      - unit.tokens)
        current.append(unit)
    if current:
        chunks.append(_make_chunk(current, len(chunks)))
    return chunks


def _overlap(units: list[Unit], overlap_tokens: int, room: int) -> list[Unit]:
    """The trailing units of the last chunk that fit in the overlap and the room left."""
    tail: list[Unit] = []
    budget = min(overlap_tokens, room)
    for unit in reversed(units):
        if unit.tokens > budget:
            break
        tail.insert(0, unit)
        budget -= unit.tokens
    return tail


def _make_chunk(units: list[Unit], position: int) -> Chunk:
    """The units' text; its section is that of its first unit of text (after any heading)."""
    body = next((u for u in units if not u.starts_section), units[-1])
    parts: list[str] = []
    for i, unit in enumerate(units):
        if i and unit.starts_paragraph:
            parts.append("\n\n")
        elif i:
            parts.append(" ")
        parts.append(unit.text)
    return Chunk("".join(parts), position, sum(u.tokens for u in units), body.section)


def _cut_long_units(units: list[Unit], limit: int, count: CountTokens,
                    split_long: Callable[[str, int], list[str]] | None) -> list[Unit]:
    out = []
    for unit in units:
        if unit.tokens <= limit:
            out.append(unit)
            continue
        pieces = split_long(unit.text, limit) if split_long else _split_words(unit.text, limit,
                                                                               count)
        for i, piece in enumerate(pieces):
            out.append(Unit(piece, count(piece), unit.starts_section and i == 0,
                            unit.starts_paragraph and i == 0, unit.level, unit.section))
    return out


def _split_words(text: str, limit: int, count: CountTokens) -> list[str]:
    """Fallback cut by words; `split_long` cuts by the tokenizer's own tokens."""
    words, pieces, current = text.split(), [], []
    for word in words:
        if current and count(" ".join([*current, word])) > limit:
            pieces.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces
