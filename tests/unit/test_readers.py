"""Readers: each format, and every bad file skipped with a reason."""

import json
from pathlib import Path

import pytest
from ember.ingest.files import expand_paths
from ember.ingest.readers import Skipped, read_file

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "corpus"


def test_markdown_title_from_heading():
    [doc] = read_file(SAMPLES / "01-overview.md")
    assert doc.title == "The Quillmarsh Lantern Ferry: an overview"
    assert "Lake Ovirre" in doc.text and len(doc.file_hash) == 64


def test_html_keeps_main_text_only():
    [doc] = read_file(SAMPLES / "03-safety.html")
    assert doc.title == "Safety on the Lantern Ferry"
    assert "Old Marrow" in doc.text
    for dropped in ("trackingId", "font-family", "Home", "Cookie settings", "website"):
        assert dropped not in doc.text


def test_pdf_text_and_title():
    [doc] = read_file(SAMPLES / "06-winter-assembly.pdf")
    assert "Ember Wren" in doc.text and doc.title == "Winter Assembly minutes 2025"


def test_jsonl_one_document_per_line_from_the_field(tmp_path):
    docs = read_file(SAMPLES / "04-faq.jsonl")
    assert len(docs) == 3 and docs[1].source.endswith("04-faq.jsonl#L2")
    assert "Maren Okonkwo-Lisle" in docs[1].text
    (tmp_path / "other.jsonl").write_text(json.dumps({"body": "hello"}) + "\n")
    skipped = read_file(tmp_path / "other.jsonl", jsonl_field="text")
    assert isinstance(skipped, Skipped) and "'text'" in skipped.reason
    assert read_file(tmp_path / "other.jsonl", jsonl_field="body")[0].text == "hello"


@pytest.mark.parametrize("name, content, reason", [
    ("empty.txt", b"", "empty"),
    ("blank.md", b"  \n\n ", "empty"),
    ("binary.txt", bytes(range(256)) * 4, "binary"),
    ("latin.txt", "caf\xe9 ".encode("latin-1") * 200, "UTF-8"),
    ("table.xlsx", b"PK\x03\x04", "unsupported extension"),
    ("broken.pdf", b"%PDF-1.4 not really", "could not parse"),
    ("broken.jsonl", b'{"text": "ok"}\n{not json\n', "could not parse"),
])
def test_bad_files_are_skipped_with_a_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    result = read_file(tmp_path / name)
    assert isinstance(result, Skipped) and reason in result.reason, result


def test_a_few_invalid_bytes_are_replaced_not_fatal(tmp_path):
    (tmp_path / "mostly.txt").write_bytes(b"Good text. " * 100 + b"\xff")
    [doc] = read_file(tmp_path / "mostly.txt")
    assert doc.text.startswith("Good text.")


def test_files_over_the_size_limit_are_skipped(tmp_path):
    (tmp_path / "big.txt").write_bytes(b"a" * (2 * 2**20))
    result = read_file(tmp_path / "big.txt", max_file_mb=1)
    assert isinstance(result, Skipped) and "max_file_mb=1" in result.reason


def test_expand_paths_folders_globs_and_missing(tmp_path):
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / ".hidden").write_text("h")
    files, missing = expand_paths([str(tmp_path), str(tmp_path / "*.md"), "/no/such/path"])
    assert [f.name for f in files] == ["a.md", "b.txt"]
    assert missing[0].source == "/no/such/path"


def test_html_headings_become_sections_and_sphinx_sidebars_are_dropped(tmp_path):
    page = tmp_path / "functools.html"
    page.write_text(
        "<html><head><title>functools — Higher-order functions</title></head><body>"
        "<div role='navigation'>Previous topic | Next topic</div>"
        "<div role='main'><h1>functools — Higher-order functions<a>\u00b6</a></h1>"
        "<p>The module is for higher-order functions.</p>"
        "<h2>Caching</h2><dl><dt>lru_cache(maxsize)</dt><dd>Memoize a function.</dd></dl>"
        "</div><div class='sphinxsidebar' role='search'>Quick search</div></body></html>")
    [doc] = read_file(page)
    assert doc.title == "functools — Higher-order functions"
    assert "# functools — Higher-order functions\n" in doc.text and "\u00b6" not in doc.text
    assert "## Caching" in doc.text and "Memoize a function." in doc.text
    for dropped in ("Previous topic", "Quick search"):
        assert dropped not in doc.text
