"""Model references: catalogue names, folders, HF ids, and their error messages."""

import json

import pytest
from ember.models.catalogue import CATALOGUE, ModelNotAvailableError, resolve_model
from ember.models.prepare import sha256, verify_folder


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_without_hub_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotAvailableError) as info:
        resolve_model("some-org/some-model")
    message = str(info.value)
    assert "some-org/some-model" in message and "HF_HUB_OFFLINE=1" in message
    assert "set the model to that path" in message


def test_unknown_bare_name_lists_the_catalogue():
    with pytest.raises(ModelNotAvailableError, match="smollm2-135m-instruct"):
        resolve_model("gpt-9")


def test_catalogue_has_the_embedded_defaults():
    assert {e.kind for e in CATALOGUE.values()} == {"llm", "embedder"}


def _folder_with_manifest(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    manifest = {"files": {"a.txt": {"size": 5, "sha256": sha256(tmp_path / "a.txt")}}}
    (tmp_path / "ember-manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_manifest_detects_changed_truncated_and_missing_files(tmp_path):
    folder = _folder_with_manifest(tmp_path)
    assert verify_folder(folder) is None
    (folder / "a.txt").write_text("hellO")
    assert "checksum" in verify_folder(folder)
    (folder / "a.txt").write_text("hel")
    assert "expected 5" in verify_folder(folder)
    (folder / "a.txt").unlink()
    assert "missing" in verify_folder(folder)
    (folder / "ember-manifest.json").unlink()
    assert "no manifest" in verify_folder(folder)

