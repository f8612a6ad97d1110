"""cluster/k8s/: every manifest against the schema Kubernetes would check it with.

Schemas, vendored gzipped under tests/assets:
- kuberay-v1.7.0/: KubeRay v1.7.0's CRDs (ray-operator/config/crd/bases/ray.io_*.yaml at
  the tag v1.7.0 of github.com/ray-project/kuberay): RayService, RayJob, RayCluster.
- kubernetes-v1.33.0-local-strict/: Kubernetes 1.33's JSON schemas (strict: unknown
  fields are errors), from the PyPI package kubernetes-validate 1.37.0, for the core kinds.
A CRD's openAPIV3Schema is made strict the way `kubectl apply --validate=strict` treats
it: an object with `properties` and no `additionalProperties` or
`x-kubernetes-preserve-unknown-fields` accepts no other field.
"""

from __future__ import annotations

import copy
import gzip
import json
import shlex
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "cluster" / "k8s"
ASSETS = REPO / "tests" / "assets"
MANIFESTS = sorted(K8S.glob("*.yaml"))
CRD_FILES = {"RayService": "ray.io_rayservices", "RayJob": "ray.io_rayjobs",
             "RayCluster": "ray.io_rayclusters"}
CORE_FILES = {"Deployment": "deployment-apps-v1", "Service": "service-v1",
              "PersistentVolumeClaim": "persistentvolumeclaim-v1", "Secret": "secret-v1"}


def strict(schema: dict) -> dict:
    schema = dict(schema)
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    for key in ("properties",):
        if key in schema:
            schema[key] = {name: strict(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict(schema[key])
    return schema


@cache
def crd_validator(kind: str):
    path = ASSETS / "kuberay-v1.7.0" / f"{CRD_FILES[kind]}.yaml.gz"
    crd = yaml.safe_load(gzip.decompress(path.read_bytes()))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


@cache
def core_validator(kind: str):
    folder = ASSETS / "kubernetes-v1.33.0-local-strict"

    def load(name: str) -> dict:
        return json.loads(gzip.decompress((folder / f"{name}.json.gz").read_bytes()))

    definitions = Resource.from_contents(load("_definitions"),
                                         default_specification=DRAFT202012)
    registry = Registry().with_resource("/api/_definitions.json", definitions)
    return jsonschema.Draft202012Validator(load(CORE_FILES[kind]), registry=registry)


def errors_of(document: dict) -> list[str]:
    kind = document.get("kind")
    if kind in CRD_FILES:
        validator = crd_validator(kind)
    elif kind in CORE_FILES:
        validator = core_validator(kind)
    else:
        return [f"no schema for kind {kind!r}"]
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)]


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_matches_its_schema(path):
    docs = documents(path)
    assert docs
    for doc in docs:
        assert errors_of(doc) == [], path.name


def test_a_wrong_field_fails_validation():
    service = documents(K8S / "rayservice.yaml")[0]
    broken = copy.deepcopy(service)
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParms"] = {}  # typo
    assert any("rayStartParms" in e for e in errors_of(broken))
    broken = copy.deepcopy(service)
    group = broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    group["template"]["spec"]["containers"][0]["resource"] = {}  # not `resources`
    assert any("resource" in e for e in errors_of(broken))
    broken = copy.deepcopy(service)
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplicas"] = "one"
    assert errors_of(broken)
    deployment = next(d for d in documents(K8S / "mlflow.yaml") if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = 1
    assert any("replica" in e for e in errors_of(broken))


def test_the_rayservice_serves_exactly_the_multi_gpu_serve_config():
    service = documents(K8S / "rayservice.yaml")[0]
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((REPO / "cluster" / "serve" / "multi-gpu.yaml").read_text())


def test_the_embedded_serve_config_passes_embers_schemas(tmp_path):
    from ember.cluster.serve_yaml import load_serve_config

    service = documents(K8S / "rayservice.yaml")[0]
    path = tmp_path / "serve.yaml"
    path.write_text(service["spec"]["serveConfigV2"])
    config = load_serve_config(path)  # Ray's ServeDeploySchema + Ember's RAGAppConfig
    model = config["applications"][0]["args"]["models"][0]
    groups = {g["groupName"]: g for g in
              service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpus = groups["gpu-tp2"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    # one pod holds one TP-2 replica; as many pods as the model's replicas
    assert int(gpus["nvidia.com/gpu"]) == model["engine"]["tensor_parallel_size"]
    assert groups["gpu-tp2"]["maxReplicas"] == model["autoscaling"]["max_replicas"]
    assert service["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


@pytest.mark.parametrize("name", ["rayjob-ingest.yaml", "rayjob-sft.yaml", "rayjob-sweep.yaml"])
def test_rayjob_entrypoints_name_real_modules_and_configs(name):
    job = documents(K8S / name)[0]
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["python", "-m"] and find_spec(words[2]) is not None
    config = REPO / words[words.index("--config") + 1]
    assert config.is_file(), config


def test_secrets_and_storage_the_pods_use_are_defined():
    defined = {(d["kind"], d["metadata"]["name"]) for p in MANIFESTS for d in documents(p)}
    text = "\n".join(p.read_text() for p in MANIFESTS)
    assert ("Secret", "ember-secrets") in defined and "name: ember-secrets" in text
    assert ("PersistentVolumeClaim", "ember-shared") in defined
    assert "claimName: ember-shared" in text
