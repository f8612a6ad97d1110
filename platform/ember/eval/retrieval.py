"""`ember eval retrieval`: how often retrieval finds the page that answers a question.

Input: JSONL lines `{"question": ..., "source": ...}`, where `source` names the
document that answers it as ingestion records it, or its tail (a path relative
to the corpus root: `library/functools.html`, `04-faq.jsonl#L2`).

Each question goes to the running service's `/v1/retrieve` (the real query
path, so latency is what a RAG answer pays) once per mode. Hits are chunks;
they are folded into pages (first occurrence of each source) before ranking,
so "hit@1" means the right page came first. Reported per mode: hit@1/3/5,
MRR@10 (1/rank of the right page within the first 10, else 0), latency p50/p90,
and the questions whose page was not in the first 5.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ember.errors import EmberError

# What a mode name on the command line asks of /v1/retrieve.
MODES = {"dense": ("dense", False), "keyword": ("keyword", False), "hybrid": ("hybrid", False),
         "dense+rerank": ("dense", True), "hybrid+rerank": ("hybrid", True)}
CHUNKS_PER_QUESTION = 40  # chunks fetched to fill 10 distinct pages


@dataclass
class Question:
    line: int
    question: str
    source: str


@dataclass
class ModeResult:
    mode: str
    ranks: list[int | None] = field(default_factory=list)  # page rank from 1, None: not in 10
    seconds: list[float] = field(default_factory=list)
    misses: list[tuple[Question, list[str]]] = field(default_factory=list)
    notices: set[str] = field(default_factory=set)

    def hit_at(self, k: int) -> int:
        return sum(1 for r in self.ranks if r is not None and r <= k)

    @property
    def mrr(self) -> float:
        return sum(1 / r for r in self.ranks if r is not None) / max(len(self.ranks), 1)

    def latency(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def load_questions(path: str | Path) -> list[Question]:
    questions, problems = [], []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise EmberError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            questions.append(Question(number, str(row["question"]), str(row["source"])))
        except (ValueError, KeyError, TypeError):
            problems.append(number)
    if problems:
        raise EmberError(f"{path}: lines {problems[:10]} are not JSON objects with "
                         f"'question' and 'source'")
    if not questions:
        raise EmberError(f"{path} holds no questions")
    return questions


def matches(hit_source: str, expected: str) -> bool:
    return hit_source == expected or hit_source.endswith("/" + expected.lstrip("/"))


def page_rank(sources: list[str], expected: str, depth: int = 10) -> int | None:
    pages: list[str] = []
    for source in sources:
        if source not in pages:
            pages.append(source)
    for rank, page in enumerate(pages[:depth], 1):
        if matches(page, expected):
            return rank
    return None


def evaluate(client, questions: list[Question], collection: str, modes: list[str],
             progress=print) -> list[ModeResult]:
    results = []
    for mode in modes:
        search, rerank = MODES[mode]
        result = ModeResult(mode)
        client.retrieve(questions[0].question, collection, 1, search, rerank)  # warm-up
        for question in questions:
            start = time.perf_counter()
            payload = client.retrieve_raw(question.question, collection,
                                          CHUNKS_PER_QUESTION, search, rerank)
            result.seconds.append(time.perf_counter() - start)
            result.notices.update(payload.get("notices") or [])
            sources = [h["source"] for h in payload["hits"]]
            rank = page_rank(sources, question.source)
            result.ranks.append(rank)
            if rank is None or rank > 5:
                result.misses.append((question, _pages(sources)[:3]))
        progress(f"  {mode}: hit@1 {result.hit_at(1)}/{len(questions)}, "
                 f"MRR@10 {result.mrr:.3f}, p50 {result.latency(0.5) * 1000:.1f} ms")
        results.append(result)
    return results


def _pages(sources: list[str]) -> list[str]:
    return list(dict.fromkeys(sources))


def format_report(results: list[ModeResult], total: int, top: int = 10) -> str:
    lines = ["| mode | hit@1 | hit@3 | hit@5 | MRR@10 | p50 ms | p90 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.mode} | {r.hit_at(1)}/{total} | {r.hit_at(3)}/{total} | "
                     f"{r.hit_at(5)}/{total} | {r.mrr:.3f} | {r.latency(0.5) * 1000:.1f} | "
                     f"{r.latency(0.9) * 1000:.1f} |")
    for r in results:
        for notice in sorted(r.notices):
            lines.append(f"note ({r.mode}): {notice}")
        if r.misses:
            lines.append(f"\nnot in the first 5 ({r.mode}, {len(r.misses)}):")
            for question, got in r.misses[:top]:
                lines.append(f"  line {question.line}: {question.question!r} -> wanted "
                             f"{question.source}, got {', '.join(_short(g) for g in got)}")
            if len(r.misses) > top:
                lines.append(f"  ... and {len(r.misses) - top} more (--json has them all)")
    return "\n".join(lines)


def _short(source: str, keep: int = 2) -> str:
    return "/".join(source.split("/")[-keep:])


def as_json(results: list[ModeResult], total: int) -> dict:
    return {"questions": total, "modes": [{
        "mode": r.mode, "hit@1": r.hit_at(1), "hit@3": r.hit_at(3), "hit@5": r.hit_at(5),
        "mrr@10": round(r.mrr, 4), "p50_ms": round(r.latency(0.5) * 1000, 2),
        "p90_ms": round(r.latency(0.9) * 1000, 2), "notices": sorted(r.notices),
        "misses": [{"line": q.line, "question": q.question, "source": q.source, "got": got}
                   for q, got in r.misses]} for r in results]}
