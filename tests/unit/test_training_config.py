"""SFT job configs: every shipped one parses, mistakes are named, pure helpers behave."""

from pathlib import Path

import pytest
import yaml
from ember.cluster.serve_models import deploy_config, with_extra_model
from ember.config.loading import ConfigError, deep_merge, parse_set_overrides
from ember.serving.rag.routes import _parse_rag_model
from ember.training.config import SFTJobConfig
from ember.training.job import load_job_config
from ember.training.loop import total_steps
from ember.training.strategies import deepspeed_config
from ember.training.tracking import artifact_root_for, flatten

JOBS = Path(__file__).resolve().parents[2] / "cluster" / "jobs"
SFT_CONFIGS = sorted(JOBS.glob("sft-*.yaml"))


def test_cpu_and_gpu_configs_are_shipped():
    names = {p.name for p in SFT_CONFIGS}
    assert {"sft-lora-cpu.yaml", "sft-qlora-cpu.yaml", "sft-full-fsdp2-cpu.yaml",
            "sft-deepspeed-cpu.yaml", "sft-qlora-8b-1gpu.yaml", "sft-full-fsdp2-8gpu.yaml",
            "sft-deepspeed-zero3-gpu.yaml"} <= names


@pytest.mark.parametrize("path", SFT_CONFIGS, ids=lambda p: p.name)
def test_sft_config_parses_and_opens_with_its_command(path):
    config = load_job_config(str(path))
    header = path.read_text().split("\n\n")[0]
    assert f"python -m train_jobs.sft --config cluster/jobs/{path.name}" in header
    assert config.name
    if "gpu" in path.name:
        assert config.scaling.use_gpu
    else:
        assert not config.scaling.use_gpu and config.data.path.startswith("samples/")


def test_gpu_configs_use_the_methods_they_are_named_for():
    assert load_job_config(str(JOBS / "sft-qlora-8b-1gpu.yaml")).method.name == "qlora"
    full = load_job_config(str(JOBS / "sft-full-fsdp2-8gpu.yaml"))
    assert (full.method.name, full.scaling.num_workers) == ("full", 8)
    zero3 = load_job_config(str(JOBS / "sft-deepspeed-zero3-gpu.yaml"))
    assert zero3.method.deepspeed.zero_stage == 3


def base(**changes) -> dict:
    data = yaml.safe_load((JOBS / "sft-lora-cpu.yaml").read_text())
    return deep_merge(data, changes)


@pytest.mark.parametrize("changes, message", [
    ({"train": {"learning_rate": 1}}, "unknown key 'train.learning_rate'"),
    ({"method": {"name": "dora"}}, "'method.name'"),
    ({"train": {"epochs": 1}}, "exactly one of train.max_steps and train.epochs"),
    ({"data": {"synthetic": {"samples": 4}}}, "exactly one of data.path and data.synthetic"),
    ({"method": {"name": "qlora"}, "scaling": {"num_workers": 2}}, "qlora' runs on one worker"),
    ({"method": {"deepspeed": {"offload_params": True}}}, "offload_params needs zero_stage 3"),
    ({"train": {"lr": 0}}, "'train.lr'"),
    ({"train": {"checkpoint_at_end": False}}, "register_as needs train.checkpoint_at_end"),
])
def test_bad_config_is_refused_naming_the_key(tmp_path, changes, message):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(base(**changes)))
    with pytest.raises(ConfigError, match=message):
        load_job_config(str(path))


def test_set_overrides_merge_into_sections(tmp_path):
    overrides = parse_set_overrides(["train.max_steps=3", "method.lora.r=4", "name=x"])
    config = load_job_config(str(JOBS / "sft-lora-cpu.yaml"), overrides)
    assert (config.train.max_steps, config.method.lora.r, config.name) == (3, 4, "x")
    assert config.train.lr == 1e-3  # untouched keys of the same section survive
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_overrides(["train.max_steps"])


def test_total_steps_from_epochs_counts_optimizer_steps():
    config = SFTJobConfig.model_validate(base(train={"max_steps": None, "epochs": 1.5,
                                                     "grad_accum": 2}))
    assert total_steps(config, batches_per_epoch=10) == 8  # ceil(1.5 * 10 / 2)


def test_deepspeed_config_for_zero3_with_offload():
    config = SFTJobConfig.model_validate(base(method={"name": "deepspeed", "deepspeed": {
        "zero_stage": 3, "offload_optimizer": True, "offload_params": True}}))
    ds = deepspeed_config(config)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert ds["gradient_accumulation_steps"] == config.train.grad_accum
    assert ds["bf16"]["enabled"] is False  # CPU: float32


def test_flatten_and_artifact_root():
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {
        "a.b": "1", "a.c.d": "[1]", "e": "{}"}
    assert artifact_root_for("sqlite:////tmp/x/mlflow.db") == "file:///tmp/x/artifacts"
    assert artifact_root_for("http://mlflow:5000") is None


APP = {"name": "ember", "import_path": "serve_apps.rag:build_app", "route_prefix": "/",
       "args": {"models": [{"name": "base", "source": "smollm2-135m-instruct",
                            "engine": {"dtype": "float32"}, "env": {"A": "1"}}]}}


def test_with_extra_model_inherits_the_first_models_engine():
    app = with_extra_model(APP, "tuned", "/models/tuned")
    assert [m["name"] for m in app["args"]["models"]] == ["base", "tuned"]
    tuned = app["args"]["models"][1]
    assert tuned == {"name": "tuned", "source": "/models/tuned",
                     "engine": {"dtype": "float32"}, "env": {"A": "1"}}
    assert len(APP["args"]["models"]) == 1  # the input is not modified
    with pytest.raises(Exception, match="already served"):
        with_extra_model(APP, "base", "/x")


def test_an_extra_model_starts_on_one_replica_and_scales_to_the_first_models_maximum():
    app = {**APP, "args": {"models": [{**APP["args"]["models"][0], "autoscaling": {
        "min_replicas": 2, "max_replicas": 4, "initial_replicas": 2}}]}}
    tuned = with_extra_model(app, "tuned", "/models/tuned")["args"]["models"][1]
    assert tuned["autoscaling"] == {"min_replicas": 1, "max_replicas": 4}
    assert app["args"]["models"][0]["autoscaling"]["min_replicas"] == 2


def test_deploy_config_keeps_other_apps_and_refuses_python_deployed_ones():
    details = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": 8000},
               "applications": {"ember": {"deployed_app_config": APP},
                                "other": {"deployed_app_config": {"name": "other"}}}}
    config = deploy_config(details, "ember", "tuned", Path("/m"))
    assert [a["name"] for a in config["applications"]] == ["ember", "other"]
    assert config["http_options"]["port"] == 8000
    details["applications"]["other"]["deployed_app_config"] = None
    with pytest.raises(Exception, match="deployed from Python"):
        deploy_config(details, "ember", "tuned", Path("/m"))
    with pytest.raises(Exception, match="no Serve application 'missing'"):
        deploy_config(details, "missing", "tuned", Path("/m"))


@pytest.mark.parametrize("model, parsed", [
    ("rag", (None, None)), ("rag:docs", ("docs", None)), ("rag@tuned", (None, "tuned")),
    ("rag:docs@tuned", ("docs", "tuned")),
])
def test_rag_model_names_pick_collection_and_answering_model(model, parsed):
    assert _parse_rag_model(model) == parsed
