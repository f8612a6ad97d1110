"""How close an answer is to its reference: exact match, token F1 (SQuAD's definitions)
and ROUGE-L F1 (Google's `rouge-score`). Used by `ember eval model` and by the SFT job's
own base-vs-tuned comparison (here, in the lower layer, for both)."""

from __future__ import annotations

import re
import string
from collections import Counter

METRICS = ("exact_match", "f1", "rouge_l")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, articles or extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


_ROUGE = None


def rouge_l(prediction: str, reference: str) -> float:
    global _ROUGE
    if _ROUGE is None:
        from rouge_score.rouge_scorer import RougeScorer

        _ROUGE = RougeScorer(["rougeL"], use_stemmer=False)
    return _ROUGE.score(reference, prediction)["rougeL"].fmeasure


def answer_scores(answer: str, reference: str) -> dict[str, float]:
    return {"exact_match": exact_match(answer, reference), "f1": token_f1(answer, reference),
            "rouge_l": rouge_l(answer, reference)}
