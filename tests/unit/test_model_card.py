"""The SFT job's model card, from the shipped LoRA job's config."""

from __future__ import annotations

from pathlib import Path

import pytest
from ember.training.job import load_job_config
from ember.training.model_card import render_model_card, score_samples

JOB = Path(__file__).resolve().parents[2] / "cluster" / "jobs" / "sft-lora-cpu.yaml"


def test_samples_are_scored_against_their_references_base_and_tuned():
    samples = [{"prompt": "q", "base": "no idea", "tuned": "the lanterns", "reference": "lanterns"},
               {"prompt": "r", "base": "x", "tuned": "y", "reference": None}]
    scores = score_samples(samples)
    assert scores["tuned"]["exact_match"] == 1.0 and scores["base"]["exact_match"] == 0.0
    assert scores["base"]["f1"] == 0.0
    assert score_samples([{"prompt": "q", "base": "a", "tuned": "b"}]) == {}


def test_the_card_holds_evaluation_data_method_time_and_how_to_serve():
    config = load_job_config(str(JOB))
    samples = [{"prompt": "q", "base": "no idea", "tuned": "lanterns", "reference": "lanterns"}]
    card = render_model_card(config, {"base_val_perplexity": 10.0, "val_perplexity": 7.5},
                             samples, "300 lines, 300 valid", 90.0, "models:/lantern-keeper/3")
    assert card.startswith("# lantern-keeper\n")
    assert "| validation perplexity (lower is better) | 10.00 | 7.50 | -25.0% |" in card
    assert "| exact match, 1 held-out answers | 0.000 | 1.000 | +1.000 |" in card
    assert "300 lines, 300 valid" in card and "samples/sft/lantern-keeper.jsonl" in card
    assert "r=16, alpha=32" in card and "lr 0.001" in card
    assert "1.5 min on 1 worker(s): 0.025 worker-hours" in card
    assert "ember serve-model models:/lantern-keeper/3 --name NAME" in card


@pytest.mark.parametrize("metrics", [{}, {"val_perplexity": 3.0}])
def test_a_card_without_validation_says_so(metrics):
    config = load_job_config(str(JOB))
    card = render_model_card(config, metrics, [], "", 60.0, None)
    assert "No evaluation ran (no validation split)." in card
    assert "ember serve-model models:/NAME/VERSION" in card
