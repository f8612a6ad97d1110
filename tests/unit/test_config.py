"""Typed config: unknown keys and bad values are named; env overrides apply."""

import pytest
from ember.config.loading import ConfigError, apply_env_overrides, load_yaml, validate
from ember.serving.config import LLMAppConfig


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key 'models.0.engine.max_model_lenn'"):
        validate(LLMAppConfig, {"models": [{"engine": {"max_model_lenn": 10}}]})


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'models.0.autoscaling.max_replicas'.*got 0"):
        validate(LLMAppConfig, {"models": [{"autoscaling": {"max_replicas": 0}}]})


def test_min_replicas_above_max_is_refused():
    with pytest.raises(ConfigError, match=r"min_replicas \(3\) is greater than max_replicas"):
        validate(LLMAppConfig, {"models": [{"autoscaling": {"min_replicas": 3,
                                                            "max_replicas": 2}}]})


def test_duplicate_model_names_are_refused():
    with pytest.raises(ConfigError, match="repeated: \\['a'\\]"):
        validate(LLMAppConfig, {"models": [{"name": "a"}, {"name": "a"}]})


def test_env_overrides_nested_keys_parsed_as_yaml():
    data = apply_env_overrides({"serve": {"port": 8000}},
                               environ={"EMBER_SERVE__PORT": "9000", "EMBER_NEW__LIST": "[1, 2]",
                                        "OTHER__X": "1"})
    assert data == {"serve": {"port": 9000}, "new": {"list": [1, 2]}}


def test_engine_extra_kwargs_pass_through():
    config = validate(LLMAppConfig, {"models": [{"engine": {"extra": {"seed": 7}}}]})
    kwargs = config.models[0].engine.to_engine_kwargs()
    assert kwargs["seed"] == 7 and kwargs["max_model_len"] == 2048
    assert "gpu_memory_utilization" not in kwargs  # unset values are left to vLLM


def test_load_yaml_names_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_a_score_threshold_needs_dense_search():
    """Fused ranks and BM25 scores are not cosines: a threshold there would do nothing."""
    from ember.serving.rag.config import RAGAppConfig

    assert validate(RAGAppConfig, {}).rag.mode == "hybrid"  # docs/rag.md, "Retrieval"
    with pytest.raises(ConfigError, match=r"score_threshold \(0.3\) applies to dense .* "
                                          r"mode is 'hybrid': set mode: dense"):
        validate(RAGAppConfig, {"rag": {"score_threshold": 0.3}})
    dense = validate(RAGAppConfig, {"rag": {"score_threshold": 0.3, "mode": "dense"}})
    assert dense.rag.score_threshold == 0.3
