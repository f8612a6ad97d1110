"""Adapters the base cannot serve: refused at registration (rank above the engine's
limit), or failing in the engine (unreadable weights) and then refused with the recorded
reason, never loaded again; the base answers throughout. On the session's running
service; the adapter a LoRA job trained is served in test_training.py."""

from __future__ import annotations

import json
import time

import pytest


def test_an_adapter_the_base_cannot_load_is_never_registered(
        base_url, dashboard_url, openai_client, tmp_path, capsys):
    from ember.cli.main import main

    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 64, "base_model_name_or_path": "x"}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"0" * 64)
    assert main(["serve-model", str(tmp_path), "--name", "too-wide",
                 "--address", dashboard_url]) != 0
    assert "rank is 64, above 'smollm2-135m-instruct's lora.max_lora_rank (16)" in \
        capsys.readouterr().err
    assert "too-wide" not in [m.id for m in openai_client.models.list().data]
    assert openai_client.chat.completions.create(  # the base answers on
        model="smollm2-135m-instruct", max_tokens=4,
        messages=[{"role": "user", "content": "hello"}]).choices[0].message.content


def test_an_adapter_that_fails_to_load_is_refused_with_its_reason_not_reloaded(
        base_url, dashboard_url, openai_client, tmp_path, capsys):
    """Registration checks the config, not the weights: garbage weights fail in the
    engine. The first request gets vLLM's 400; then Ember's, naming the recorded reason,
    without loading it again; `ember models adapters` shows it; the base answers on."""
    import openai
    from ember.cli.main import main
    from ember.models.adapters import find_adapter, remove_adapter

    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
         "base_model_name_or_path": "elsewhere"}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"0" * 64)
    if find_adapter("unloadable"):  # left by an earlier run of the suite on this machine
        remove_adapter("unloadable")
    assert main(["serve-model", str(tmp_path), "--name", "unloadable",
                 "--base", "smollm2-135m-instruct", "--address", dashboard_url]) == 0

    def ask(model: str) -> str:
        return openai_client.chat.completions.create(
            model=model, max_tokens=2,
            messages=[{"role": "user", "content": "hello"}]).choices[0].message.content

    try:
        with pytest.raises(openai.BadRequestError, match="could not be loaded"):
            ask("unloadable")
        deadline = time.monotonic() + 15  # replicas re-read the registry every 2 s
        while True:
            with pytest.raises(openai.BadRequestError) as refused:
                ask("unloadable")
            if "It is not retried" in str(refused.value):
                break
            assert time.monotonic() < deadline, str(refused.value)
            time.sleep(0.5)
        assert "could not be loaded on 'smollm2-135m-instruct'" in str(refused.value)
        assert find_adapter("unloadable").load_error in str(refused.value)
        capsys.readouterr()
        assert main(["models", "adapters"]) == 0
        assert "LOAD FAILED (not retried)" in capsys.readouterr().out
        assert ask("smollm2-135m-instruct")
    finally:
        remove_adapter("unloadable")
