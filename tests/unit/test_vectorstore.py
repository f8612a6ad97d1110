"""Pure helpers of the vector store and the RAG prompt."""

import pytest
from ember.serving.rag.prompt import INSTRUCTIONS, ContextTooLong, Source, fit_sources
from ember.vectorstore.milvus import chunk_id, clip_utf8


def test_clip_utf8_never_splits_a_character():
    assert clip_utf8("ééé", 5) == "éé" and clip_utf8("abc", 10) == "abc"


def test_chunk_ids_are_stable_and_distinct():
    assert chunk_id("a.md", "h1", 0) == chunk_id("a.md", "h1", 0)
    assert len({chunk_id("a.md", "h1", 0), chunk_id("a.md", "h2", 0),
                chunk_id("a.md", "h1", 1), chunk_id("b.md", "h1", 0)}) == 4


def sources(n):
    return [Source(i, f"text of source {i} " * 10, f"s{i}.md", f"Title {i}", 1 - i / 10)
            for i in range(1, n + 1)]


def chars(messages):  # a stand-in token counter: characters / 4
    return sum(len(m["content"]) for m in messages) // 4


def test_prompt_numbers_sources_and_asks_for_citations():
    messages, kept = fit_sources([{"role": "user", "content": "Q?"}], sources(2), chars, 10_000)
    system = messages[0]["content"]
    assert system.startswith(INSTRUCTIONS) and "[1] Title 1 (s1.md)" in system
    assert "[2] Title 2" in system and messages[-1] == {"role": "user", "content": "Q?"}
    assert len(kept) == 2


def test_lowest_ranked_sources_are_dropped_first_to_fit():
    full, _ = fit_sources([{"role": "user", "content": "Q?"}], sources(4), chars, 10_000)
    budget = chars(full) - 20
    messages, kept = fit_sources([{"role": "user", "content": "Q?"}], sources(4), chars, budget)
    assert [s.index for s in kept] == [1, 2, 3] and chars(messages) <= budget


def test_a_question_too_long_for_the_context_is_refused():
    with pytest.raises(ContextTooLong, match="question alone"):
        fit_sources([{"role": "user", "content": "x" * 4000}], sources(2), chars, 100)
