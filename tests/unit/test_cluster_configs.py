"""Every YAML in cluster/ is validated against Ray's own schemas and Ember's."""

from pathlib import Path

import pytest
import yaml
from ember.cluster.serve_yaml import APP_ARG_SCHEMAS, cpus_needed, load_serve_config
from ember.config.loading import ConfigError, validate
from ember.serving.rag.config import RAGAppConfig

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
SERVE_CONFIGS = sorted((CLUSTER / "serve").glob("*.yaml"))


def test_every_yaml_in_cluster_is_covered():
    covered = set(SERVE_CONFIGS) | {CLUSTER / "ray-cluster.yaml"}
    covered |= set((CLUSTER / "jobs").glob("*.yaml"))
    covered |= set((CLUSTER / "k8s").glob("*.yaml"))  # test_k8s_manifests
    assert set(CLUSTER.rglob("*.yaml")) <= covered


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_is_valid_for_ray_and_ember(path):
    from ember.serving.llm_app import build_serving_args
    from ray.serve.llm import LLMServingArgs

    config = load_serve_config(path)  # Ray's ServeDeploySchema + Ember's app schemas
    for app in config["applications"]:
        args = validate(APP_ARG_SCHEMAS[app["import_path"]], app["args"])
        LLMServingArgs.model_validate(build_serving_args(args, resolve=False))


def test_multi_gpu_config_is_tensor_parallel_and_autoscaled():
    app = load_serve_config(CLUSTER / "serve" / "multi-gpu.yaml")["applications"][0]
    args = validate(RAGAppConfig, app["args"])
    assert app["import_path"] == "serve_apps.rag:build_app"
    assert args.rag.milvus_uri.startswith("http://")  # a Milvus server, not Lite
    model = args.models[0]
    assert model.engine.tensor_parallel_size == 2 and model.accelerator_type
    assert (model.autoscaling.min_replicas, model.autoscaling.max_replicas) == (1, 4)
    assert all(b.get("GPU") == 1 for b in model.placement.bundles)


def test_local_config_fits_the_cluster_ember_up_starts():
    config = load_serve_config(CLUSTER / "serve" / "local.yaml")
    assert 2 <= cpus_needed(config) <= 8


def test_launcher_config_matches_rays_schema():
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    config["cluster_synced_files"] = []  # filled in by `ray up` itself
    validate_config(config)


def test_serve_config_typo_is_named(tmp_path):
    bad = yaml.safe_load((CLUSTER / "serve" / "local.yaml").read_text())
    bad["applications"][0]["args"]["models"][0]["engine"]["max_model_length"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="unknown key 'models.0.engine.max_model_length'"):
        load_serve_config(tmp_path / "bad.yaml")


def test_serve_config_invalid_for_ray_is_refused(tmp_path):
    (tmp_path / "bad.yaml").write_text("applications:\n  - name: x\n    import_pathh: a:b\n")
    with pytest.raises(ConfigError, match="not a valid Serve config"):
        load_serve_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("path", sorted((CLUSTER / "jobs").glob("ingest*.yaml")),
                         ids=lambda p: p.name)
def test_ingest_job_configs_are_valid(path):
    from ember.ingest.job import load_ingest_config

    config = load_ingest_config(str(path))
    assert config.paths and config.collection
    assert path.read_text().startswith("# "), "a job config opens with the command that runs it"
    assert "ray job submit" in path.read_text().split("\n\n")[0]


def test_ingest_config_typo_is_named(tmp_path):
    from ember.ingest.job import load_ingest_config

    (tmp_path / "bad.yaml").write_text("paths: [x]\ncollection: c\nchunk_size: 10\n")
    with pytest.raises(ConfigError, match="unknown key 'chunk_size'"):
        load_ingest_config(str(tmp_path / "bad.yaml"))


def test_ember_up_finds_the_checkouts_cluster_files(monkeypatch):
    from ember.cluster.serve_yaml import default_serve_config

    monkeypatch.delenv("EMBER_CLUSTER_DIR", raising=False)
    assert default_serve_config() == CLUSTER / "serve" / "local.yaml"


def test_ember_cluster_dir_names_the_cluster_files(monkeypatch, tmp_path):
    from ember.cluster.serve_yaml import default_serve_config

    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "local.yaml").write_text("applications: []\n")
    monkeypatch.setenv("EMBER_CLUSTER_DIR", str(tmp_path))
    assert default_serve_config() == tmp_path / "serve" / "local.yaml"
    monkeypatch.setenv("EMBER_CLUSTER_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="EMBER_CLUSTER_DIR=.*nowhere: no serve/local.yaml"):
        default_serve_config()


def test_an_installed_ember_without_cluster_files_says_what_to_do(monkeypatch, tmp_path):
    from ember.cluster import serve_yaml

    monkeypatch.delenv("EMBER_CLUSTER_DIR", raising=False)
    monkeypatch.setattr(serve_yaml, "checkout_cluster_dir", lambda: tmp_path / "cluster")
    with pytest.raises(ConfigError, match="--config FILE`, or set EMBER_CLUSTER_DIR"):
        serve_yaml.default_serve_config()


def test_cluster_files_start_ray_with_embers_ingress_settings():
    """`ray up` and KubeRay nodes get what `ember up` gives its head: Serve's HAProxy
    ingress with its settings (the connection ceiling aside: each machine's own)."""
    from ember.cluster.environment import ingress_settings

    wanted = {name: value for name, value in ingress_settings().items()
              if name.startswith("RAY_SERVE_")}
    launcher = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    starts = launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
    for command in [c for c in starts if "ray start" in c]:
        given = dict(word.split("=", 1) for word in command.split() if "=" in word
                     and word.split("=", 1)[0].isupper())
        assert {n: given.get(n) for n in wanted} == wanted, command
    service = yaml.safe_load((CLUSTER / "k8s" / "rayservice.yaml").read_text())
    spec = service["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        env = {e["name"]: e.get("value") for e in
               group["template"]["spec"]["containers"][0].get("env", [])}
        assert {n: env.get(n) for n in wanted} == wanted, group.get("groupName", "head")


@pytest.mark.parametrize(("hard", "maxconn"), [
    (20_000, 4_096), (1_048_576, 4_096), (8_192, 2_867), (1_024, 256)])
def test_haproxys_connection_ceiling_fits_the_descriptor_limit(monkeypatch, hard, maxconn):
    """HAProxy wants about 2.5 descriptors a connection and will not start under a lower
    hard limit (Ray 2.58's 20,000 connections wanted 50,036 where the limit was 20,000)."""
    import resource

    from ember.cluster.environment import haproxy_maxconn, node_env

    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1_024, hard))
    assert haproxy_maxconn() == maxconn
    assert int(node_env("haproxy")["RAY_SERVE_HAPROXY_MAXCONN"]) * 5 // 2 <= max(hard, 2_560)
    assert "RAY_SERVE_HAPROXY_MAXCONN" not in node_env("proxy")
