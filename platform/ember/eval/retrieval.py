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

Several question files: each is a set, reported on its own and pooled (every
question of every set counted once, so a larger set weighs more). A default
chosen on one set written by one person fits that person's phrasing: a second,
differently written set is the check (docs/rag.md, "Retrieval").
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
    set_name: str = ""  # the question file it came from, to label misses


@dataclass
class QuestionSet:
    name: str
    questions: list[Question]


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


def load_questions(path: str | Path, set_name: str = "") -> list[Question]:
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
            questions.append(Question(number, str(row["question"]), str(row["source"]),
                                      set_name))
        except (ValueError, KeyError, TypeError):
            problems.append(number)
    if problems:
        raise EmberError(f"{path}: lines {problems[:10]} are not JSON objects with "
                         f"'question' and 'source'")
    if not questions:
        raise EmberError(f"{path} holds no questions")
    return questions


def load_question_sets(paths: list[str]) -> list[QuestionSet]:
    """One set per file, named by the file's stem (its path where two stems are alike)."""
    if len(set(paths)) < len(paths):
        raise EmberError(f"a question file is given twice in {paths}: each set counts once")
    stems = [Path(p).stem for p in paths]
    names = [stem if stems.count(stem) == 1 else str(p) for stem, p in zip(stems, paths,
                                                                             strict=True)]
    return [QuestionSet(name, load_questions(path, name))
            for name, path in zip(names, paths, strict=True)]


def pool(name: str, parts: list[ModeResult]) -> ModeResult:
    """One mode's results over several sets, as if their questions were one set."""
    pooled = ModeResult(name)
    for part in parts:
        pooled.ranks += part.ranks
        pooled.seconds += part.seconds
        pooled.misses += part.misses
        pooled.notices |= part.notices
    return pooled


def pooled_results(per_set: dict[str, list[ModeResult]]) -> list[ModeResult]:
    """Per mode, every set's results pooled (`per_set`: a set's name -> one result per mode,
    the modes in the same order for every set)."""
    by_mode = zip(*per_set.values(), strict=True)
    return [pool(parts[0].mode, list(parts)) for parts in by_mode]


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


def evaluate(client, sets: list[QuestionSet], collection: str, modes: list[str],
             progress=print) -> dict[str, list[ModeResult]]:
    """Each set's results, one per mode (in `modes`' order), by the set's name."""
    per_set: dict[str, list[ModeResult]] = {s.name: [] for s in sets}
    for mode in modes:
        search, rerank = MODES[mode]
        client.retrieve(sets[0].questions[0].question, collection, 1, search, rerank)  # warm-up
        for question_set in sets:
            result = _ask(client, question_set.questions, collection, mode)
            per_set[question_set.name].append(result)
            label = f"{mode} on {question_set.name}" if len(sets) > 1 else mode
            progress(f"  {label}: hit@1 {result.hit_at(1)}/{len(result.ranks)}, "
                     f"MRR@10 {result.mrr:.3f}, p50 {result.latency(0.5) * 1000:.1f} ms")
    return per_set


def _ask(client, questions: list[Question], collection: str, mode: str) -> ModeResult:
    search, rerank = MODES[mode]
    result = ModeResult(mode)
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
    return result


def _pages(sources: list[str]) -> list[str]:
    return list(dict.fromkeys(sources))


def format_report(per_set: dict[str, list[ModeResult]], top: int = 10) -> str:
    """One set: its table, as before. Several: a row per set and mode, then the pooled
    rows; misses (pooled) name their set."""
    several = len(per_set) > 1
    head = "| set | mode |" if several else "| mode |"
    lines = [f"{head} hit@1 | hit@3 | hit@5 | MRR@10 | p50 ms | p90 ms |",
             "|---" * (head.count("|") - 1 + 6) + "|"]
    rows = dict(per_set)
    if several:
        rows["pooled"] = pooled_results(per_set)
    for name, results in rows.items():
        for r in results:
            total = len(r.ranks)
            where = f"| {name} ({total}) | {r.mode} |" if several else f"| {r.mode} |"
            lines.append(f"{where} {r.hit_at(1)}/{total} | {r.hit_at(3)}/{total} | "
                         f"{r.hit_at(5)}/{total} | {r.mrr:.3f} | "
                         f"{r.latency(0.5) * 1000:.1f} | {r.latency(0.9) * 1000:.1f} |")
    for r in pooled_results(per_set):
        lines += _notes_and_misses(r, several, top)
    return "\n".join(lines)


def _notes_and_misses(r: ModeResult, several: bool, top: int) -> list[str]:
    lines = [f"note ({r.mode}): {notice}" for notice in sorted(r.notices)]
    if r.misses:
        lines.append(f"\nnot in the first 5 ({r.mode}, {len(r.misses)}):")
        for question, got in r.misses[:top]:
            where = f"{question.set_name} line" if several else "line"
            lines.append(f"  {where} {question.line}: {question.question!r} -> wanted "
                         f"{question.source}, got {', '.join(_short(g) for g in got)}")
        if len(r.misses) > top:
            lines.append(f"  ... and {len(r.misses) - top} more (--json has them all)")
    return lines


def _short(source: str, keep: int = 2) -> str:
    return "/".join(source.split("/")[-keep:])


def _figures(r: ModeResult) -> dict:
    return {"mode": r.mode, "hit@1": r.hit_at(1), "hit@3": r.hit_at(3), "hit@5": r.hit_at(5),
            "mrr@10": round(r.mrr, 4), "p50_ms": round(r.latency(0.5) * 1000, 2),
            "p90_ms": round(r.latency(0.9) * 1000, 2)}


def as_json(per_set: dict[str, list[ModeResult]]) -> dict:
    """`questions` and `modes`: every set pooled (with every miss, naming its set);
    `sets`: each set's own figures."""
    pooled = pooled_results(per_set)
    return {
        "questions": len(pooled[0].ranks),
        "modes": [{**_figures(r), "notices": sorted(r.notices), "misses": [
            {"set": q.set_name, "line": q.line, "question": q.question, "source": q.source,
             "got": got} for q, got in r.misses]} for r in pooled],
        "sets": [{"name": name, "questions": len(results[0].ranks),
                  "modes": [_figures(r) for r in results]} for name, results in per_set.items()],
    }
