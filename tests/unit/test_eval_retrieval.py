"""`ember eval retrieval`'s arithmetic: pages, ranks, hit@k, MRR, the question file."""

from __future__ import annotations

import pytest
from ember.errors import EmberError
from ember.eval.retrieval import ModeResult, format_report, load_questions, matches, page_rank


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
    assert "| dense | 1/4 | 2/4 | 3/4 | 0.425 |" in format_report([result], 4)


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
