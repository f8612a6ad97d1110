"""docs/configuration.md is generated from the settings models' field descriptions."""

from __future__ import annotations

from pathlib import Path

from ember.cli.config_reference import REGENERATE, documented_models, reference_markdown, rows

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_the_generators_output():
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == reference_markdown(), f"regenerate: {REGENERATE}"


def test_every_field_of_every_documented_model_has_a_description():
    missing = [f"{section.model_path} {row.key}" for section, model in documented_models()
               for row in rows(model) if not row.description.strip()]
    assert not missing, f"add Field(..., description=...) to: {missing}"


def test_nested_sections_are_flattened_into_dotted_keys():
    keys = {section.title: {row.key for row in rows(model)}
            for section, model in documented_models()}
    assert {"models[].engine.max_model_len", "access.limits.max_n", "batch.nice",
            "rag.query_encoder"} <= keys["Serve application"]
    assert {"method.lora.r", "data.synthetic.samples"} <= keys["Fine-tuning job"]
    assert "search_space.<path>.low" in keys["Sweep"]
    assert "chunk_tokens" in keys["Ingestion"]


def test_the_generator_imports_the_settings_models_only_when_it_runs():
    """The CLI package stays light to import: the models load when the reference is built."""
    import subprocess
    import sys

    code = ("import sys, ember.cli.config_reference; "
            "print(sorted(m for m in sys.modules if m.startswith(('ember.serving', "
            "'ember.training', 'ember.tuning', 'ember.ingest'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
