"""Chunking by tokens: sizes, overlap, headings, long runs."""

import pytest
from ember.ingest.chunking import Chunk, chunk_text


def words(text: str) -> int:  # a stand-in tokenizer: one token per word
    return len(text.split())


def test_chunks_stay_within_the_token_budget_and_keep_every_sentence():
    sentences = [f"Sentence number {i} says something short." for i in range(60)]
    text = "\n\n".join(" ".join(sentences[i:i + 5]) for i in range(0, 60, 5))
    chunks = chunk_text(text, words, chunk_tokens=40, overlap_tokens=10)
    assert all(c.tokens <= 40 for c in chunks)
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_consecutive_chunks_overlap():
    text = " ".join(f"Fact {i} is here." for i in range(40))
    chunks = chunk_text(text, words, chunk_tokens=20, overlap_tokens=8)
    for first, second in zip(chunks, chunks[1:], strict=False):
        assert first.text.split(". ")[-1].rstrip(".") in second.text


def test_heading_starts_a_new_chunk_when_the_current_one_is_full_enough():
    text = ("# Intro\n\n" + "Alpha beta gamma delta. " * 6 + "\n\n# Fares\n\nA ticket costs three.")
    chunks = chunk_text(text, words, chunk_tokens=60, overlap_tokens=5, min_fill=0.3)
    assert chunks[-1].text.startswith("# Fares")


def test_a_run_on_line_longer_than_a_chunk_is_cut():
    text = "word " * 500
    chunks = chunk_text(text, words, chunk_tokens=50, overlap_tokens=0)
    assert len(chunks) == 10 and all(c.tokens <= 50 for c in chunks)


def test_overlap_must_be_smaller_than_the_chunk():
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_text("x", words, chunk_tokens=10, overlap_tokens=10)


def test_content_hash_is_the_sha256_of_the_text_only():
    """What Milvus stores in its 64-character `content_hash` field: the SHA-256 of the
    chunk's UTF-8 text (pinned here), whatever its position, size or section."""
    chunk = chunk_text("Same text.", words)[0]
    assert chunk.content_hash == \
        "9181728b6117a4472e0459e1e01d5233f01921a0095195b8fdd3533147ad53f7"
    moved = Chunk("Same text.", position=7, tokens=99, section="Guide > Fares")
    assert moved.content_hash == chunk.content_hash
    assert Chunk("Same text!", position=0, tokens=2).content_hash != chunk.content_hash


def test_each_chunk_knows_the_headings_it_sits_under():
    text = ("# Guide\n\nIntro text here.\n\n## Install\n\n"
            + " ".join(f"Install step {i} is done." for i in range(30))
            + "\n\n### Linux\n\nUse the package manager.\n\n## Usage\n\nRun it.")
    chunks = chunk_text(text, words, chunk_tokens=40, overlap_tokens=0)
    sections = [c.section for c in chunks]
    assert sections[0] == "Guide"
    assert "Guide > Install" in sections  # a chunk from the middle of Install
    linux = next(c for c in chunks if "package manager" in c.text)
    assert linux.section == "Guide > Install > Linux"
    # a short last section joins the chunk before it, its heading kept with its text
    assert "## Usage\n\nRun it." in next(c for c in chunks if "Run it" in c.text).text


TOKENIZER_TEXTS = ["Hello, world!", "The ferry leaves the pier at nine.",
                   "naïve café — ÆØÅ: 東京 ✓", "functools.lru_cache(maxsize=128)",
                   "word " * 400]  # past the tokenizer file's own truncation (128)


def test_the_light_token_counter_counts_and_cuts_as_transformers_does():
    """Read tasks count with the `tokenizers` library on the model's tokenizer.json;
    the counts and cuts must be those of the transformers tokenizer they replace."""
    from ember.ingest.tokens import load_counter
    from ember.models.catalogue import DEFAULT_EMBEDDER, resolve_model
    from transformers import AutoTokenizer

    path = resolve_model(DEFAULT_EMBEDDER)
    light, reference = load_counter(path), AutoTokenizer.from_pretrained(path)
    for text in TOKENIZER_TEXTS:
        expected = reference(text, add_special_tokens=False, return_offsets_mapping=True)
        assert light.count(text) == len(expected["input_ids"])
        window = expected["offset_mapping"][:50]
        assert light.split(text, 50)[0] == text[window[0][0]:window[-1][1]].strip()
    assert light.count("word " * 400) == 400
