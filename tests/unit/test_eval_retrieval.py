"""`ember eval retrieval`'s arithmetic: pages, ranks, hit@k, MRR, the question files, and
several sets reported apart and pooled."""

from __future__ import annotations

import pytest
from ember.errors import EmberError
from ember.eval.retrieval import (
    ModeResult,
    Question,
    as_json,
    format_report,
    load_question_sets,
    load_questions,
    matches,
    page_rank,
    pool,
    pooled_results,
)


def test_sources_match_by_their_tail():
    assert matches("/usr/share/doc/python3.11/html/library/functools.html",
                   "library/functools.html")
    assert matches("/x/samples/corpus/04-faq.jsonl#L2", "04-faq.jsonl#L2")
    assert not matches("/x/library/functools.html", "tools.html")
    assert not matches("/x/04-faq.jsonl#L12", "04-faq.jsonl#L2")


def test_page_rank_folds_chunks_into_pages():
    hits = ["/d/a.html", "/d/a.html", "/d/b.html", "/d/a.html", "/d/c.html"]
    assert page_rank(hits, "c.html") == 3
    assert page_rank(hits, "a.html") == 1
    assert page_rank(hits, "z.html") is None
    assert page_rank([f"/d/{i}.html" for i in range(12)], "11.html") is None  # beyond 10


def test_hits_and_mrr():
    result = ModeResult("dense", ranks=[1, 2, None, 5], seconds=[0.01, 0.02, 0.03, 0.04])
    assert (result.hit_at(1), result.hit_at(3), result.hit_at(5)) == (1, 2, 3)
    assert result.mrr == pytest.approx((1 + 0.5 + 0.2) / 4)
    assert result.latency(0.5) in (0.02, 0.03)
    assert "| dense | 1/4 | 2/4 | 3/4 | 0.425 |" in format_report({"q": [result]})


def test_question_file_errors_name_the_lines(tmp_path):
    good = tmp_path / "q.jsonl"
    good.write_text('{"question": "q?", "source": "a.html"}\n\n')
    assert load_questions(good)[0].source == "a.html"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?", "source": "a.html"}\nnot json\n{"question": "x"}\n')
    with pytest.raises(EmberError, match=r"lines \[2, 3\]"):
        load_questions(bad)
    with pytest.raises(EmberError, match="cannot read"):
        load_questions(tmp_path / "missing.jsonl")


def two_sets() -> dict[str, list[ModeResult]]:
    """Set a (4 questions) and set b (2), each in dense and hybrid."""
    miss_a = Question(3, "where is x?", "x.html", "a")
    miss_b = Question(2, "y?", "y.html", "b")
    return {
        "a": [ModeResult("dense", [1, 2, None, 5], [0.01, 0.02, 0.03, 0.04],
                         [(miss_a, ["/d/z.html"])]),
              ModeResult("hybrid", [1, 1, 1, 2], [0.02] * 4, [], {"a notice"})],
        "b": [ModeResult("dense", [1, None], [0.05, 0.06], [(miss_b, ["/d/w.html"])]),
              ModeResult("hybrid", [4, 1], [0.03] * 2)],
    }


def test_pooling_counts_every_question_once():
    dense, hybrid = pooled_results(two_sets())
    assert (dense.mode, len(dense.ranks)) == ("dense", 6)
    assert (dense.hit_at(1), dense.hit_at(3), dense.hit_at(5)) == (1 + 1, 2 + 1, 3 + 1)
    # MRR over the 6 questions, not the mean of the sets' MRRs (0.425 and 0.5)
    assert dense.mrr == pytest.approx((1 + 0.5 + 0.2 + 1) / 6)
    assert hybrid.mrr == pytest.approx((1 + 1 + 1 + 0.5 + 0.25 + 1) / 6)
    assert [q.set_name for q, _ in dense.misses] == ["a", "b"]
    assert hybrid.notices == {"a notice"}
    assert dense.latency(0.9) == 0.05  # over all six latencies


def test_pooling_one_set_changes_nothing():
    only = two_sets()["a"][0]
    pooled = pool("dense", [only])
    assert (pooled.ranks, pooled.seconds, pooled.misses) == (only.ranks, only.seconds,
                                                             only.misses)


def test_the_report_gives_each_set_then_the_pool_and_labels_misses():
    text = format_report(two_sets())
    assert "| set | mode | hit@1 | hit@3 | hit@5 | MRR@10 | p50 ms | p90 ms |" in text
    assert "|---|---|---|---|---|---|---|---|" in text
    assert "| a (4) | dense | 1/4 | 2/4 | 3/4 | 0.425 |" in text
    assert "| b (2) | hybrid | 1/2 | 1/2 | 2/2 | 0.625 |" in text
    assert "| pooled (6) | dense | 2/6 | 3/6 | 4/6 | 0.450 |" in text
    assert text.index("| a (4)") < text.index("| b (2)") < text.index("| pooled (6)")
    assert "a line 3: 'where is x?' -> wanted x.html, got d/z.html" in text
    assert "b line 2: 'y?' -> wanted y.html" in text
    assert "note (hybrid): a notice" in text


def test_one_set_reads_as_before():
    text = format_report({"pydocs": two_sets()["a"]})
    assert text.splitlines()[:2] == ["| mode | hit@1 | hit@3 | hit@5 | MRR@10 | p50 ms | p90 ms |",
                                     "|---|---|---|---|---|---|---|"]
    assert "pooled" not in text and "| a (" not in text
    assert "  line 3: 'where is x?'" in text


def test_json_holds_the_pool_with_every_miss_and_each_sets_figures():
    figures = as_json(two_sets())
    assert figures["questions"] == 6
    dense = figures["modes"][0]
    assert (dense["mode"], dense["hit@1"], dense["mrr@10"]) == ("dense", 2, 0.45)
    assert [(m["set"], m["line"]) for m in dense["misses"]] == [("a", 3), ("b", 2)]
    assert [(s["name"], s["questions"]) for s in figures["sets"]] == [("a", 4), ("b", 2)]
    assert figures["sets"][1]["modes"][1] == {"mode": "hybrid", "hit@1": 1, "hit@3": 1,
                                              "hit@5": 2, "mrr@10": 0.625, "p50_ms": 30.0,
                                              "p90_ms": 30.0}


def test_sets_are_named_by_their_files(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "q.jsonl").write_text('{"question": "q?", "source": "a.html"}\n')
    (tmp_path / "more.jsonl").write_text('{"question": "r?", "source": "b.html"}\n')
    sets = load_question_sets([str(tmp_path / "more.jsonl"), str(tmp_path / "one" / "q.jsonl")])
    assert [s.name for s in sets] == ["more", "q"]
    assert sets[1].questions[0].set_name == "q"
    twins = [str(tmp_path / "one" / "q.jsonl"), str(tmp_path / "two" / "q.jsonl")]
    assert [s.name for s in load_question_sets(twins)] == twins
    with pytest.raises(EmberError, match="given twice"):
        load_question_sets([str(tmp_path / "more.jsonl")] * 2)
