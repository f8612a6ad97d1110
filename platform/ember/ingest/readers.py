"""Turn one file into text documents, or a reason it was skipped.

Design choices:
- Every failure a file can cause (empty, binary, undecodable, too big,
  unsupported, unparsable) becomes a `Skipped` with a reason, never an
  exception: one bad file must not sink the batch.
- Text is decoded as UTF-8; a few invalid bytes are replaced, a file that is
  mostly invalid is refused as not text.
- HTML keeps the page's main text: scripts, styles, navigation, headers,
  footers and forms are dropped, and <main>/<article> win when present.
- `.jsonl` yields one document per line, from a configured text field.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ember.checksums import sha256_file

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl")
MAX_INVALID_UTF8 = 0.01  # share of replaced characters above which a file is not text


@dataclass
class Document:
    source: str  # file path, with #L<n> for a jsonl line
    title: str
    text: str
    file_hash: str  # SHA-256 of the whole file: the unit of change detection


@dataclass
class Skipped:
    source: str
    reason: str


def file_hash(path: Path) -> str:
    return sha256_file(path)


def read_file(path: str | Path, jsonl_field: str = "text",
              max_file_mb: float = 20.0) -> list[Document] | Skipped:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        return Skipped(str(path), f"unsupported extension '{suffix or '(none)'}'; "
                                  f"supported: {', '.join(SUPPORTED)}")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_file_mb:
        return Skipped(str(path), f"{size_mb:.1f} MB is over max_file_mb={max_file_mb:g}")
    raw = path.read_bytes()
    if not raw.strip():
        return Skipped(str(path), "empty file")
    try:
        docs = _parse(path, suffix, raw, jsonl_field, file_hash(path))
    except NotText as exc:
        return Skipped(str(path), str(exc))
    except Exception as exc:  # noqa: BLE001 - a parser failure is this file's problem only
        return Skipped(str(path), f"could not parse {suffix}: {type(exc).__name__}: {exc}")
    docs = [d for d in docs if d.text]
    return docs or Skipped(str(path), "no text after extraction")


class NotText(ValueError):
    pass


def _parse(path: Path, suffix: str, raw: bytes, field: str, digest: str) -> list[Document]:
    if suffix == ".pdf":
        title, text = _pdf(raw, path)
        return [Document(str(path), title, normalize(text), digest)]
    text = decode_text(raw)
    if suffix == ".jsonl":
        return _jsonl(path, text, field, digest)
    if suffix in (".html", ".htm"):
        title, text = _html(text, path)
    else:
        title = _first_heading(text) or path.stem
    return [Document(str(path), title, normalize(text), digest)]


def decode_text(raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        raise NotText("binary file (NUL bytes): not text")
    text = raw.decode("utf-8", errors="replace")
    if text.count("\ufffd") > MAX_INVALID_UTF8 * max(len(text), 1):
        raise NotText("not valid UTF-8 text (too many undecodable bytes)")
    return text


def normalize(text: str) -> str:
    """NFKC, no control characters, tidy spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _first_heading(text: str) -> str | None:
    for line in text.splitlines()[:20]:
        if line.startswith("#"):
            return line.lstrip("#").strip() or None
    return None


_DROP_TAGS = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form",
              "iframe", "svg", "button")
_DROP_ROLES = ("navigation", "search", "banner", "contentinfo")
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def _html(text: str, path: Path) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else ""
    for tag in soup(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": list(_DROP_ROLES)}):  # Sphinx's sidebars
        tag.decompose()
    main = soup.find("main") or soup.find(attrs={"role": "main"}) or soup.find("article") \
        or soup.body or soup
    heading = main.find(["h1", "h2"])
    title = title or (_heading_text(heading) if heading else path.stem)
    for block in main.find_all(["p", "li", "pre", "tr", "dt", "dd"]):
        block.append("\n\n")  # keep paragraph boundaries for the chunker
    for h in main.find_all(HEADINGS):  # as Markdown: the chunker keeps sections together
        h.replace_with(f"\n\n{'#' * int(h.name[1])} {_heading_text(h)}\n\n")
    return title, main.get_text()


def _heading_text(tag) -> str:
    return " ".join(tag.get_text(" ", strip=True).replace("\u00b6", "").split())


def _pdf(raw: bytes, path: Path) -> tuple[str, str]:
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(raw))
    pages = [page.extract_text() or "" for page in reader.pages]
    title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") \
        or path.stem
    return title, "\n\n".join(pages)


def _jsonl(path: Path, text: str, field: str, digest: str) -> list[Document]:
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        value = record.get(field) if isinstance(record, dict) else None
        if isinstance(value, str) and value.strip():
            title = str(record.get("title") or f"{path.stem} line {number}")
            docs.append(Document(f"{path}#L{number}", title, normalize(value), digest))
    if not docs:
        raise NotText(f"no line has a non-empty string field '{field}'")
    return docs
