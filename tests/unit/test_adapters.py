"""The adapter registry's checks: what is served on a base, and what is refused by name."""

import json

import pytest
from ember.models.adapters import (
    AdapterError,
    find_adapter,
    list_adapters,
    register_adapter,
    remove_adapter,
)
from ember.serving.config import LoraServingConfig, ModelDeploymentConfig


@pytest.fixture(autouse=True)
def ember_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_HOME", str(tmp_path / "home"))


def adapter_folder(tmp_path, name="a", rank=8, peft_type="LORA", weights=b"w" * 16):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": peft_type, "r": rank, "base_model_name_or_path": "/models/base"}))
    if weights is not None:
        (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def test_a_registered_adapter_is_found_listed_and_removed(tmp_path):
    adapter = register_adapter(adapter_folder(tmp_path), "keeper-v1", "base-a")
    assert (adapter.name, adapter.base, adapter.rank) == ("keeper-v1", "base-a", 8)
    assert (adapter.path / "adapter_model.safetensors").is_file()
    assert find_adapter("keeper-v1") == adapter
    register_adapter(adapter_folder(tmp_path, "b"), "other", "base-b")
    assert [a.name for a in list_adapters({"base-a"})] == ["keeper-v1"]
    assert [a.name for a in list_adapters()] == ["keeper-v1", "other"]
    with pytest.raises(AdapterError, match="already served on 'base-a'"):
        register_adapter(adapter_folder(tmp_path, "c"), "keeper-v1", "base-a")
    remove_adapter("keeper-v1")
    assert find_adapter("keeper-v1") is None
    with pytest.raises(AdapterError, match="no adapter named 'keeper-v1'"):
        remove_adapter("keeper-v1")


@pytest.mark.parametrize("kwargs, message", [
    ({"peft_type": "IA3"}, "holds a 'IA3' adapter; only LoRA"),
    ({"rank": 0}, "'r' .* must be a positive integer"),
    ({"weights": None}, "has no adapter weights"),
    ({"weights": b""}, "has no adapter weights"),
])
def test_a_folder_that_is_no_loadable_lora_adapter_is_refused(tmp_path, kwargs, message):
    with pytest.raises(AdapterError, match=message):
        register_adapter(adapter_folder(tmp_path, **kwargs), "x", "base")
    assert list_adapters() == []


def test_a_folder_without_adapter_config_or_with_broken_json_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        register_adapter(tmp_path / "empty", "x", "base")
    broken = adapter_folder(tmp_path)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="cannot be read as JSON"):
        register_adapter(broken, "x", "base")


@pytest.mark.parametrize("name", ["../escape", "a/b", "base:adapter", "", ".hidden", "x" * 129])
def test_names_that_could_leave_the_folder_or_confuse_routing_are_refused(tmp_path, name):
    with pytest.raises(AdapterError, match="cannot name an adapter"):
        register_adapter(adapter_folder(tmp_path), name, "base")
    assert find_adapter(name) is None


def test_lora_settings_turn_on_vllm_lora_in_the_engine_kwargs():
    assert "enable_lora" not in ModelDeploymentConfig().engine_kwargs()
    model = ModelDeploymentConfig(lora=LoraServingConfig(max_loras=2))
    kwargs = model.engine_kwargs()
    assert kwargs["enable_lora"] is True and kwargs["max_loras"] == 2
    assert kwargs["max_lora_rank"] == 16 and "max_cpu_loras" not in kwargs
    assert kwargs["max_model_len"] == 2048  # the engine's own settings stay


def serve_details(*models):
    return {"applications": {"ember": {"deployed_app_config": {"args": {"models": list(models)}}}}}


def test_serve_model_registers_an_adapter_on_the_base_that_serves_adapters(tmp_path):
    from ember.cluster.serve_models import add_adapter

    details = serve_details({"name": "plain", "source": "/models/other"},
                            {"name": "with-lora", "source": "/models/base", "lora": {}})
    path = add_adapter(details, adapter_folder(tmp_path), "keeper", "ember", progress=str)
    assert find_adapter("keeper").base == "with-lora" and path == find_adapter("keeper").path


@pytest.mark.parametrize("models, kwargs, message", [
    ([{"name": "m", "source": "/models/base"}], {}, "no model of 'ember' serves LoRA adapters"),
    ([{"name": "m", "source": "/models/base", "lora": {"max_lora_rank": 4}}], {},
     "rank is 8, above 'm's lora.max_lora_rank \\(4\\)"),
    ([{"name": "m", "source": "/models/base", "lora": {}}], {"name": "m"},
     "'m' is a served model's name"),
    ([{"name": "m", "source": "/models/base", "lora": {}}], {"base": "other"},
     "--base 'other' is not a served model with `lora:` on"),
    ([{"name": "a", "source": "/models/a", "lora": {}},
      {"name": "b", "source": "/models/b", "lora": {}}], {},
     "trained on '/models/base', which no served model loads; name its base with --base"),
])
def test_serve_model_refuses_an_adapter_it_cannot_place(tmp_path, models, kwargs, message):
    from ember.cluster.serve_models import add_adapter
    from ember.errors import ClusterError

    args = {"name": "keeper", "base": None, **kwargs}
    with pytest.raises(ClusterError, match=message):
        add_adapter(serve_details(*models), adapter_folder(tmp_path), args["name"], "ember",
                    args["base"], progress=str)
    assert list_adapters() == []


def test_serve_model_names_a_broken_adapter_config_before_looking_for_its_base(tmp_path):
    from ember.cluster.serve_models import add_adapter

    folder = adapter_folder(tmp_path)
    (folder / "adapter_config.json").write_text("{not json")
    details = serve_details({"name": "a", "source": "/models/a", "lora": {}},
                            {"name": "b", "source": "/models/b", "lora": {}})
    with pytest.raises(AdapterError, match="cannot be read as JSON"):
        add_adapter(details, folder, "keeper", "ember", progress=str)


def test_a_load_failure_is_recorded_on_the_adapter_until_it_is_registered_again(tmp_path):
    from ember.models.adapters import record_load_error

    register_adapter(adapter_folder(tmp_path), "broken", "base-a")
    assert find_adapter("broken").load_error is None
    record_load_error("broken", "SafetensorError: header too large")
    assert find_adapter("broken").load_error == "SafetensorError: header too large"
    assert list_adapters()[0].load_error == "SafetensorError: header too large"
    record_load_error("never-registered", "x")  # another resolver's name: nothing written
    assert find_adapter("never-registered") is None
    remove_adapter("broken")
    register_adapter(adapter_folder(tmp_path, "fixed"), "broken", "base-a")
    assert find_adapter("broken").load_error is None
