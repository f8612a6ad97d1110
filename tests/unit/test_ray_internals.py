"""Ray's private names behind one door (`ember.ray_internals`).

Every private name the door relies on must exist in the installed Ray, with the
members Ember overrides or reads, so a Ray upgrade that moves one fails here and
not in a replica. And no other module of `platform/` or `serve_apps/` may reach
Ray's private modules itself. Nothing here starts Ray.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ember import ray_internals

REPO = Path(__file__).resolve().parents[2]
DOOR = REPO / "platform" / "ember" / "ray_internals.py"
PRIVATE = ("ray.llm._internal", "ray._private", "ray.serve._private")
PRIVATE_TEXT = re.compile(r"ray\.llm\._internal|ray\._private|ray\.serve\._private")
# where Ray publishes names; a private name that appears here should be taken from here
PUBLIC_MODULES = ("ray.serve.llm", "ray.serve.llm.openai_api_models", "ray.serve.llm.ingress",
                  "ray.serve.llm.deployment", "ray.data.llm")
VLLM_ENGINE = "ray.llm._internal.serve.engines.vllm.vllm_engine"


def private_references(path: Path, root: Path = REPO) -> list[str]:
    """`path:line` of each import of, or mention of, a private Ray module."""
    source = path.read_text()
    lines = {n for n, line in enumerate(source.splitlines(), 1) if PRIVATE_TEXT.search(line)}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        if any(n == p or n.startswith(p + ".") for n in names for p in PRIVATE):
            lines.add(node.lineno)
    return [f"{path.relative_to(root)}:{n}" for n in sorted(lines)]


def test_only_the_door_reaches_rays_private_modules():
    files = [f for folder in ("platform", "serve_apps") for f in (REPO / folder).rglob("*.py")
             if f != DOOR]
    found = [ref for f in files for ref in private_references(f)]
    assert not found, (f"{', '.join(found)} reach Ray's private modules: "
                       f"go through ember.ray_internals (and its test) instead")


# Ray's private attributes Ember reads: only the door's functions may touch them
READ_THROUGH_DOOR = re.compile(
    r"\.(_model_cards|_llm_config|_engine_client|_run_request|_actor_id)\b")


def test_private_members_are_read_only_through_the_door():
    files = [f for folder in ("platform", "serve_apps") for f in (REPO / folder).rglob("*.py")
             if f != DOOR]
    found = [f"{f.relative_to(REPO)}:{n}" for f in files
             for n, line in enumerate(f.read_text().splitlines(), 1)
             if READ_THROUGH_DOOR.search(line)]
    assert not found, f"{', '.join(found)}: use ember.ray_internals' functions instead"


def test_the_walk_sees_a_planted_private_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import json\nfrom ray.llm import _internal\nimport ray._private.services\n"
                       "from ray.serve import _private\n")
    found = private_references(planted, tmp_path)
    assert found == ["planted.py:2", "planted.py:3", "planted.py:4"]


@pytest.mark.parametrize("name", sorted(ray_internals.REEXPORTS))
def test_every_reexported_name_exists_in_the_installed_ray(name):
    module, attribute = ray_internals.REEXPORTS[name]
    assert hasattr(importlib.import_module(module), attribute), f"{module}.{attribute}"
    assert getattr(ray_internals, name) is getattr(importlib.import_module(module), attribute)


@pytest.mark.parametrize("name", sorted(n for n, (module, _) in ray_internals.REEXPORTS.items()
                                        if module.startswith(PRIVATE)))
def test_private_names_have_no_public_equivalent_yet(name):
    public = [m for m in PUBLIC_MODULES if hasattr(importlib.import_module(m), name)]
    assert not public, f"Ray now publishes {name} in {public}: take it from there"


def test_importing_the_door_imports_no_ray():
    code = "import sys, ember.ray_internals; print(sorted(m for m in sys.modules if " \
           "m.split('.')[0] in ('ray', 'vllm')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def assigns(cls, attribute: str) -> bool:
    """Whether `cls` or a Ray base sets `self.<attribute>` (instance attributes are not on
    the class, and building one would start an engine)."""
    pattern = re.compile(rf"self\.{re.escape(attribute)}\s*(:[^=\n]*)?=[^=]")
    sources = (inspect.getsource(k) for k in cls.__mro__ if k.__module__.startswith("ray."))
    return any(pattern.search(source) for source in sources)


def has_member(cls, name: str) -> bool:
    return hasattr(cls, name) or assigns(cls, name)


@pytest.mark.parametrize(("base", "members"), [
    ("OpenAiIngress", ray_internals.OPENAI_INGRESS_PRIVATE_MEMBERS),
    ("LLMServer", ray_internals.LLM_SERVER_PRIVATE_MEMBERS),
    ("ActorHandle", ray_internals.ACTOR_HANDLE_PRIVATE_MEMBERS),
])
def test_private_members_ember_uses_exist_on_the_base_classes(base, members):
    import ray.actor

    cls = ray.actor.ActorHandle if base == "ActorHandle" else getattr(ray_internals, base)
    assert [m for m in members if not has_member(cls, m)] == []


def test_vllm_engine_members_ember_reads_exist():
    # the engine class LLMServer starts by default (`LLMServer._get_default_engine_class`)
    engine_cls = importlib.import_module(VLLM_ENGINE).VLLMEngine
    members = ray_internals.VLLM_ENGINE_PRIVATE_MEMBERS
    assert [m for m in members if not has_member(engine_cls, m)] == []
    assert "VLLMEngine" in inspect.getsource(ray_internals.LLMServer._get_default_engine_class)


def test_rays_engine_start_still_imports_the_stat_logger_by_name():
    """`engine_metrics.install()` works only while Ray's engine start imports vLLM's Ray
    stat logger from its module when it runs (so a replaced class is the one it uses)."""
    engine_cls = importlib.import_module(VLLM_ENGINE).VLLMEngine
    source = inspect.getsource(engine_cls._start_async_llm_engine)
    assert ray_internals.ENGINE_STAT_LOGGER_IMPORT in source
    assert "stat_loggers=custom_stat_loggers" in source


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(("ember", "base", "method"), [
    ("ember.serving.openai_routes:OpenAIRoutes", "OpenAiIngress", "_get_model_id"),
    ("ember.serving.openai_routes:OpenAIRoutes", "OpenAiIngress", "_process_llm_request"),
    ("ember.serving.engine_replica:EmberServer", "LLMServer", "__serve_build_asgi_app__"),
])
def test_ember_overrides_match_the_base_methods(ember, base, method):
    module, name = ember.split(":")
    ember_cls, base_cls = getattr(importlib.import_module(module), name), \
        getattr(ray_internals, base)
    assert method in vars(ember_cls), f"{name} no longer overrides {method}: update the door"
    assert parameters(getattr(ember_cls, method)) == parameters(getattr(base_cls, method))


def test_run_request_takes_the_keywords_ember_passes():
    keywords = {"engine_method", "batch_output_stream", "raw_request_info"}
    assert keywords <= set(parameters(ray_internals.LLMServer._run_request))


def test_openai_fastapi_app_builds():
    from fastapi import FastAPI

    assert isinstance(ray_internals.build_openai_fastapi_app(), FastAPI)


def test_model_cards_and_metadata():
    from ray.serve.llm import LLMConfig

    config = LLMConfig(model_loading_config={"model_id": "m", "model_source": "/none"})
    card = ray_internals.to_model_metadata("m", config)
    ingress = ray_internals.OpenAiIngress({"m": object()}, {"m": card})
    assert ray_internals.ingress_model_cards(ingress) == {"m": card} and card.id == "m"


def test_engine_stage_swap_keeps_the_stage_resources():
    from ray.llm._internal.batch.processor.base import Processor, ProcessorConfig
    from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMEngineStage

    class Nice(ray_internals.vLLMEngineStageUDF):
        pass

    stage = vLLMEngineStage(fn_constructor_kwargs={
        "model": "m", "engine_kwargs": {},
        "placement_group_config": {"bundles": [{"CPU": 1}]}}, map_batches_kwargs={})
    processor = Processor(ProcessorConfig(batch_size=4), [stage])
    resources = dict(stage.map_batches_kwargs)
    ray_internals.swap_vllm_engine_stage(processor, Nice)
    assert stage.fn is Nice and stage.map_batches_kwargs == resources
    assert "num_gpus" not in resources  # what a plain `stage.fn = ...` would add


def test_ray_private_services_and_worker_members_exist():
    services = importlib.import_module("ray._private.services")
    worker = importlib.import_module("ray._private.worker")
    node = importlib.import_module("ray._private.node")
    assert callable(services.find_gcs_addresses)
    assert all(isinstance(a, str) for a in ray_internals.local_gcs_addresses())
    assert hasattr(worker.global_worker, "node")
    assert hasattr(node.Node, "get_session_dir_path") and hasattr(node.Node, "address_info")


def test_classes_load_from_serve_args_without_ray():
    from ember.serving.engine_replica import HotPath, _load

    assert _load("ember.serving.engine_replica:HotPath") is HotPath
    assert _load("ember.serving.engine_replica.HotPath") is HotPath
    assert _load(HotPath) is HotPath
