"""Bad SFT input is refused before it costs anything: a data file with invalid lines
stops the job before any Ray Train worker starts; an unknown config key is named
before Ray is touched. (The training runs themselves: test_training.py and
test_training_full.py.)"""

from __future__ import annotations

import pytest

from tests.integration.conftest import REPO
from tests.integration.training_support import job, run


def test_invalid_lines_stop_the_job_before_any_worker(ray_cluster, tmp_path, mlflow_uri):
    from ember.training.prepared_data import DatasetRejected

    bad = REPO / "tests" / "assets" / "sft" / "bad.jsonl"
    config = job("sft-lora-cpu.yaml", tmp_path, mlflow_uri, name="refused",
                 data={"path": str(bad), "on_invalid": "stop"})
    with pytest.raises(DatasetRejected, match=r"line \d+"):
        run(config)
    assert not (tmp_path / "store").exists()


def test_unknown_config_key_is_named_before_ray(tmp_path):
    from ember.config.loading import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'train.learning_rate'"):
        job("sft-lora-cpu.yaml", tmp_path, "sqlite:///unused.db",
            train={"learning_rate": 1e-4})
