"""Ember's SFT job on GPUs through Ray Train, small and quick (the figures: bench_train.py).

    source .gpu/setup.sh && python -m pytest tests/gpu -q     # on the GPU machine

Skipped where there is no CUDA (CI, the dev machine). A 4-layer Llama built from
a config with random weights; each method runs a few steps and exports.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = {"num_hidden_layers": 4, "hidden_size": 512, "intermediate_size": 1024,
         "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from tests.gpu.bench_train import model_folder

    return model_folder(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_method_trains_on_gpu_and_exports(folder, tmp_path, method):
    from ember.training.config import SFTJobConfig
    from ember.training.job import run_sft

    from tests.gpu.bench_train import ember_config

    workers = torch.cuda.device_count() if method == "full" else 1
    config = ember_config(folder, method, workers, 6, tmp_path, batch=4, seq=256,
                          overrides=SMALL)
    config["train"]["checkpoint_at_end"] = True
    result = run_sft(SFTJobConfig.model_validate(config))
    assert math.isfinite(result.metrics["loss"])
    assert result.metrics["peak_mem_gb"] > 0
    exported = Path(result.checkpoint) / "export"
    expected = "adapter/adapter_model.safetensors" if method != "full" else "model.safetensors"
    assert (exported / expected).is_file()
    assert (Path(result.model_dir) / "model.safetensors").is_file()  # merged for LoRA/QLoRA
