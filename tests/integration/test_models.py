"""Model preparation: the converted folder, its chat template, and rebuild on corruption."""

import shutil

import pytest
from ember.models.catalogue import CATALOGUE, DEFAULT_LLM
from ember.models.prepare import MANIFEST, ensure_prepared, verify_folder

pytestmark = pytest.mark.integration
EXPECTED_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "generation_config.json", MANIFEST}


@pytest.fixture(scope="module")
def prepared():
    return ensure_prepared(CATALOGUE[DEFAULT_LLM])


def test_prepared_folder_has_the_expected_files(prepared):
    names = {p.name for p in prepared.iterdir()}
    assert EXPECTED_FILES <= names
    assert verify_folder(prepared) is None
    assert (prepared / "model.safetensors").stat().st_size > 200_000_000  # bf16, 135M params


def test_chat_template_renders_chatml(prepared):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(prepared)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}],
                                         tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHello<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_second_prepare_skips(prepared):
    messages = []
    ensure_prepared(CATALOGUE[DEFAULT_LLM], progress=messages.append)
    assert any("already prepared" in m for m in messages)


def test_corrupt_folder_is_detected_and_rebuilt(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_HOME", str(tmp_path))
    entry = CATALOGUE[DEFAULT_LLM]
    shutil.copytree(prepared, entry.local_dir())
    weights = entry.local_dir() / "model.safetensors"
    with weights.open("r+b") as f:  # a partial copy: the weights cut short
        f.truncate(weights.stat().st_size // 2)
    assert "expected" in verify_folder(entry.local_dir())

    messages = []
    ensure_prepared(entry, progress=messages.append)
    assert any("rebuilding" in m for m in messages)
    assert verify_folder(entry.local_dir()) is None
