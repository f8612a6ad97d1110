"""What the training tests share: the shipped job configs with test overrides, a run,
and readers of what a run left behind (the `mlflow_uri` fixture is in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import REPO

JOBS = REPO / "cluster" / "jobs"
TINY_MODEL = {
    "source": "smollm2-135m-instruct", "random_init": True,
    "config_overrides": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16},
}
FAST = {"log_every": 1, "eval_batches": 3}


def job(config: str, tmp_path: Path, mlflow_uri: str, **overrides):
    from ember.config.loading import deep_merge
    from ember.training.job import load_job_config

    base = {"output": {"storage_path": str(tmp_path / "store")},
            "tracking": {"uri": mlflow_uri}, "eval": {"sample_prompts": 1, "max_new_tokens": 8}}
    return load_job_config(str(JOBS / config), deep_merge(base, overrides))


def run(config):
    from ember.training.job import run_sft

    return run_sft(config)


def mlflow_client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))
