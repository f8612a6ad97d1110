"""Fine-tuning through Ray Train, for real: LoRA and QLoRA on the embedded model, and
the LoRA adapter served back through the running service.

Every run goes through `run_sft`, Ray Train, MLflow (SQLite) and the checkpoint
storage; the tests read what those left behind. The LoRA run serves every claim it
can (training, export, merge, sample answers, serving). Full FSDP2 and DeepSpeed
are in test_training_full.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.conftest import COLLECTION, REPO
from tests.integration.training_support import (
    FAST,
    job,
    mlflow_client,
    run,
    tensors,
)

# --- LoRA and QLoRA on the embedded model ------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(ray_cluster, tmp_path_factory, mlflow_uri):
    config = job("sft-lora-cpu.yaml", tmp_path_factory.mktemp("lora"), mlflow_uri,
                 name="keeper-lora", scaling={"resources_per_worker": {"CPU": 2}},
                 train={"max_steps": 4, "batch_size": 4, "grad_accum": 1, "lr": 2e-3,
                        "warmup_steps": 1, "eval_every": 0, "checkpoint_every": 2, **FAST},
                 tracking={"register_as": "keeper-lora-test"})
    return config, run(config)


def test_lora_trains_adapters_only_exports_them_and_they_merge(lora_run, tmp_path):
    """The job exports the adapter alone (the default, served on the base's engines);
    merging it (`method.export: merged`) changes exactly the adapted weights."""
    import torch
    from ember.models.adapters import check_adapter_folder
    from ember.models.catalogue import resolve_model
    from ember.training.export import merge_adapter

    config, result = lora_run
    assert result.metrics["val_loss"] < result.metrics["base_val_loss"] - 0.05
    adapter = tensors(Path(result.checkpoint) / "adapter" / "adapter_model.safetensors")
    lora_b = {k: t for k, t in adapter.items() if "lora_B" in k}
    assert len(lora_b) == 30 * 4  # 30 layers x q/k/v/o
    assert all(t.abs().sum() > 0 for t in lora_b.values())  # lora_B starts at zero
    exported = Path(result.model_dir)
    assert check_adapter_folder(exported) == config.method.lora.r
    assert not (exported / "model.safetensors").exists()  # no full copy of the base
    assert tensors(exported / "adapter_model.safetensors").keys() == adapter.keys()
    merge_adapter(config, exported, tmp_path / "merged")
    base = tensors(Path(resolve_model(config.model.source)) / "model.safetensors")
    merged = tensors(tmp_path / "merged" / "model.safetensors")
    targets = tuple(config.method.lora.target_modules)
    for name, weight in base.items():
        changed = not torch.equal(merged[name], weight.to(merged[name].dtype))
        assert changed == name.removesuffix(".weight").endswith(targets), name


def test_lora_sample_answers_compare_base_and_tuned(lora_run):
    """The job answers a held-out question of its data with the base model and with the
    tuned one. Four LoRA steps already change the greedy answer (the data's voice), so
    the two differ: equal answers would mean one model answered twice."""
    config, result = lora_run
    [sample] = result.samples
    assert set(sample) == {"prompt", "base", "tuned", "reference"}
    lines = (REPO / config.data.path).read_text().splitlines()
    chats = {(m[i]["content"], m[i + 1]["content"])  # a question may have several replies
             for line in lines if line.strip() for m in [json.loads(line)["messages"]]
             for i in range(len(m) - 1)
             if (m[i]["role"], m[i + 1]["role"]) == ("user", "assistant")}
    assert (sample["prompt"], sample["reference"]) in chats  # the held-out chat's own reply
    assert sample["base"] and sample["tuned"]
    assert sample["tuned"] != sample["base"], sample


def test_the_registered_version_carries_its_model_card(lora_run, mlflow_uri, tmp_path):
    """The card (run artefact and the version's description) names the base, the data, the
    method and its evaluation: validation perplexity and the held-out answers' scores."""
    config, result = lora_run
    client = mlflow_client(mlflow_uri)
    card = Path(client.download_artifacts(result.run_id, "model_card.md", str(tmp_path)))
    text = card.read_text()
    name, version = result.registered.removeprefix("models:/").split("/")
    assert client.get_model_version(name, version).description == text
    base, tuned = (result.metrics["base_val_perplexity"], result.metrics["val_perplexity"])
    assert (f"| validation perplexity (lower is better) | {base:.2f} | {tuned:.2f} |"
            in text)
    assert "| token F1, 1 held-out answers |" in text
    assert f"Fine-tuned from **{config.model.source}**" in text
    assert "r=16, alpha=32" in text and config.data.path in text
    assert f"ember serve-model {result.registered} --name NAME" in text
    metrics = client.get_run(result.run_id).data.metrics
    assert {"eval_base_f1", "eval_tuned_f1", "eval_tuned_rouge_l"} <= set(metrics)


# what `ember train` printed before its output went to the run's log (issue 25): Ray
# Train's result dumps, Ray's worker prefixes, transformers' bars, bitsandbytes' warning
NOISE = ("TrainingReport", "Reporting training result", "pid=", "Loading weights",
         "bitsandbytes", "PreemptionWatcher", "core_worker")


def test_qlora_trains_on_a_4bit_base_and_the_terminal_shows_embers_lines(
        ray_cluster, tmp_path, mlflow_uri):
    """The QLoRA job as `ember train` runs it (`python -m train_jobs.sft`, its own driver
    on the cluster): it trains on a 4-bit base, and its terminal holds Ember's lines, the
    workers' included, while Ray's and the libraries' output goes to the run's log."""
    import os
    import subprocess
    import sys

    import yaml

    config = job("sft-qlora-cpu.yaml", tmp_path, mlflow_uri, name="keeper-qlora",
                 scaling={"resources_per_worker": {"CPU": 2}}, eval={"sample_prompts": 0},
                 tracking={"register_as": None},
                 train={"max_steps": 3, "batch_size": 4, "lr": 2e-3, "warmup_steps": 1,
                        "eval_every": 0, "checkpoint_every": 0, **FAST})
    config_file = tmp_path / "qlora.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
           "RAY_AUTH_MODE": "token"}
    done = subprocess.run([sys.executable, "-m", "train_jobs.sft", "--config", str(config_file)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    terminal = done.stdout + done.stderr
    assert not [n for n in NOISE if n in terminal], terminal
    lines = done.stdout.splitlines()
    assert any(x.startswith("[ember.train] step 3/3 | loss") for x in lines), terminal  # a worker's
    log = Path(lines[0].rsplit(": ", 1)[1])
    assert [n for n in NOISE if n in log.read_text()], "Ray's output is not in the run's log"
    printed = {key.strip(): value.strip() for key, value in (  # SFTResult.format()'s lines
        x.split(" : ", 1) for x in lines if " : " in x and not x.startswith("["))}
    client = mlflow_client(mlflow_uri)
    metrics = client.get_run(printed["mlflow run"]).data.metrics
    assert metrics["final_val_loss"] < metrics["final_base_val_loss"]
    params = client.get_run(printed["mlflow run"]).data.params
    assert params["method.quant.quant_type"] == "nf4"
    assert params["method.quant.double_quant"] == "True"
    # A 4-bit base has fewer parameter elements (packed) than the bf16 model's 134.5M.
    assert metrics["total_params"] < 100e6
    assert (Path(printed["model"]) / "model.safetensors").is_file()  # merged, full precision


# --- back to serving ---------------------------------------------------------------------


def served_rows(access_url: str, model: str) -> int:
    import sqlalchemy as sa
    from ember.access.store import engine_for

    engine = engine_for(access_url)
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM usage WHERE served_model = :m "
                                           "AND status = 200"), {"m": model}).scalar()
    engine.dispose()
    return count


def test_the_trained_adapter_is_served_on_the_running_base_without_a_restart(
        lora_run, base_url, dashboard_url, openai_client, mlflow_uri, access_url, capsys,
        tmp_path):
    """`ember serve-model models:/...` of the LoRA job's adapter: no engine starts and no
    replica restarts; the adapter answers within seconds, differently from its base (the
    job's own base-vs-tuned sample), RAG included, with usage rows in its name, while
    requests to the base keep answering."""
    from concurrent.futures import ThreadPoolExecutor

    import openai
    from ember.cli.main import main
    from ember.models.adapters import find_adapter, remove_adapter

    from tests.integration.test_serving_faults import engine_replicas

    _, result = lora_run
    if find_adapter("lantern-keeper"):  # left by an earlier run of the suite on this machine
        remove_adapter("lantern-keeper")
    replicas = sorted(a.pid for a in engine_replicas())

    def ask(model: str, prompt: str, max_tokens: int = 24) -> str:
        chat = openai_client.chat.completions.create(
            model=model, max_tokens=max_tokens, temperature=0,
            messages=[{"role": "user", "content": prompt}])
        assert chat.model == model
        return chat.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:  # the base is busy while the adapter is added
        busy = [pool.submit(ask, "smollm2-135m-instruct", f"Count to {n}.") for n in range(8)]
        started = time.monotonic()
        assert main(["serve-model", result.registered, "--name", "lantern-keeper",
                     "--address", dashboard_url, "--tracking-uri", mlflow_uri]) == 0
        first = ask("lantern-keeper", "Who looks after the lanterns?")
        first_answer_s = time.monotonic() - started
        assert all(f.result().strip() for f in busy)
    out = capsys.readouterr().out
    assert "registered on 'smollm2-135m-instruct'" in out and "nothing restarts" in out
    assert first.strip()
    print(f"\nserve-model of the adapter to its first answer: {first_answer_s:.1f}s")
    assert sorted(a.pid for a in engine_replicas()) == replicas  # no replica restarted
    listed = {m.id: m for m in openai_client.models.list().data}
    assert listed["lantern-keeper"].model_extra["metadata"]["parent"] == "smollm2-135m-instruct"
    [sample] = result.samples  # the job's own held-out question: the tuned answer differs
    max_tokens = 48
    assert ask("lantern-keeper", sample["prompt"], max_tokens) != ask(
        "smollm2-135m-instruct", sample["prompt"], max_tokens)
    rag = openai_client.chat.completions.create(
        model=f"rag:{COLLECTION}@lantern-keeper", max_tokens=24, temperature=0,
        messages=[{"role": "user", "content": "Who is the head pilot?"}])
    assert rag.choices[0].message.content.strip()
    assert rag.model_extra["sources"]
    deadline = time.monotonic() + 30
    while served_rows(access_url, "lantern-keeper") < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert served_rows(access_url, "lantern-keeper") == 3  # a chat, the sample, RAG

    # prompt log-probabilities kill vLLM's engine core with an adapter: refused, by name
    for extra in ({"prompt_logprobs": 0}, {"echo": True}):
        with pytest.raises(openai.BadRequestError, match="cannot give") as refused:
            openai_client.chat.completions.create(
                model="lantern-keeper", max_tokens=1, extra_body=extra,
                messages=[{"role": "user", "content": "hello"}])
        assert next(iter(extra)) in str(refused.value)
    # `ember eval model` on the job's own held-out split (val_fraction 0.1, seed 0): the
    # adapter's answers beside its base's, and (scored on Ray, see above) its perplexity on
    # the keeper's replies below its base's
    report = tmp_path / "eval.json"
    assert main(["eval", "model", "lantern-keeper", "--base", "smollm2-135m-instruct",
                 "--data", str(REPO / "samples" / "sft" / "lantern-keeper.jsonl"),
                 "--val-fraction", "0.1", "--max-examples", "8", "--max-tokens", "32",
                 "--json", str(report), "--url", base_url]) == 0
    figures = json.loads(report.read_text())
    assert figures["tuned"]["examples"] == figures["base"]["examples"] == 8
    assert 1 < figures["tuned"]["perplexity"] < figures["base"]["perplexity"], figures
    assert all(0 <= figures["tuned"][m] <= 1 for m in ("exact_match", "f1", "rouge_l"))
    assert ask("smollm2-135m-instruct", "Say hi.")  # every engine still answers

    assert main(["models", "remove", "lantern-keeper"]) == 0
    assert "lantern-keeper" not in [m.id for m in openai_client.models.list().data]
    deadline = time.monotonic() + 10  # each replica re-reads a name it routed within 2 s
    while True:
        try:
            ask("lantern-keeper", "hello", max_tokens=2)
        except openai.NotFoundError as exc:
            assert "'lantern-keeper' does not exist" in str(exc)
            break
        assert time.monotonic() < deadline, "a removed adapter still answers"
        time.sleep(0.5)


# --- the lifecycle: promotion gate, canary by key, automatic rollback ----------------


def _clean_rollout(name: str) -> None:
    """What an earlier run of the suite on this machine may have left in EMBER_HOME."""
    from ember.models import rollouts
    from ember.models.adapters import adapters_dir, remove_adapter

    rollouts.remove(name)
    for folder in sorted(adapters_dir().glob(f"{name}*")) if adapters_dir().is_dir() else []:
        remove_adapter(folder.name)


def _unloadable_version(client, experiment: str, tmp_path: Path) -> str:
    """A registered version whose adapter the engine cannot load (garbage weights) and
    whose run recorded no evaluation."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
         "base_model_name_or_path": "elsewhere"}))
    (folder / "adapter_model.safetensors").write_bytes(b"0" * 64)
    run = client.create_run(experiment).info.run_id
    client.log_artifacts(run, str(folder), "model")
    client.set_terminated(run)
    source = f"{client.get_run(run).info.artifact_uri}/model"
    return str(client.create_model_version("keeper-lora-test", source=source,
                                           run_id=run).version)


def test_versions_roll_out_by_key_and_a_failing_canary_rolls_back_on_its_own(
        lora_run, base_url, dashboard_url, access_url, mlflow_uri, capsys, tmp_path):
    """v1 serves `keeper-canary`; v2 (the same adapter, registered again) takes 10% of 50
    keys, each key on one version throughout, usage rows per version; v3 (an adapter the
    engine cannot load, no evaluation) is refused by the gate, forced, and rolled back by
    the watch on its errors within 30 s while no request to the stable version fails."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from ember.access.keys import create_key
    from ember.cli.main import main
    from ember.models import rollouts

    _, result = lora_run
    name, client = "keeper-canary", mlflow_client(mlflow_uri)
    _clean_rollout(name)
    v1 = client.get_model_version("keeper-lora-test", "1")
    v2 = str(client.create_model_version("keeper-lora-test", source=v1.source,
                                         run_id=v1.run_id).version)
    v3 = _unloadable_version(client, client.get_run(v1.run_id).info.experiment_id, tmp_path)
    common = ["--address", dashboard_url, "--tracking-uri", mlflow_uri]
    assert main(["serve-model", "models:/keeper-lora-test/1", "--name", name, *common]) == 0
    assert main(["models", "rollout", name, "--to", v2, "--steps", "10", "--interval", "0",
                 "--margin", "1", "--database-url", access_url, *common]) == 0
    assert f"{name}: v1 ({name}) (90%), canary v{v2} ({name}.v{v2}) (10%)" in \
        capsys.readouterr().out
    created = [create_key(access_url, f"canary-{i}") for i in range(50)]
    keys = [key for key, _ in created]
    http = httpx.Client(base_url=base_url, timeout=120)

    def ask(key: str) -> tuple[str, int, str | None]:
        response = http.post("/v1/chat/completions", headers={
            "Authorization": f"Bearer {key}"}, json={
            "model": name, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
        return key, response.status_code, response.json().get("model")

    time.sleep(rollouts.CHECK_S + 0.5)  # every replica sees the split
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, keys * 2))  # twice per key: the second sees the same
    assert {status for _, status, _ in answers} == {200}
    by_key = {}
    for key, _, model in answers:
        by_key.setdefault(key, set()).add(model)
    assert all(len(models) == 1 for models in by_key.values()), by_key  # sticky
    share = sum(1 for _, _, model in answers if model == f"{name}.v{v2}") / len(answers)
    print(f"\ncanary share at 10%: {share:.1%} of {len(answers)} requests from 50 keys")
    assert 0.07 <= share <= 0.13
    deadline = time.monotonic() + 30
    while served_rows(access_url, f"{name}.v{v2}") < share * len(answers) and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert served_rows(access_url, f"{name}.v{v2}") == round(share * len(answers))  # per version

    # the gate: v3 has no evaluation
    assert main(["models", "rollback", name, "--tracking-uri", mlflow_uri]) == 0
    assert main(["models", "promote", "keeper-lora-test", v3, *common]) == 2
    assert "no evaluation is recorded" in capsys.readouterr().out

    # forced, it goes out to half the keys and fails; the watch rolls it back
    at_half = rollouts.Rollout(name, rollouts.Track(name), canary=rollouts.Track("v3"),
                               weight=50)
    on_stable = {key for key, info in created[:20] if at_half.pick(info.id).adapter == name}
    assert 0 < len(on_stable) < 20
    stop, stable_failures = False, []

    def load() -> None:
        while not stop:
            for key in keys[:20]:
                _, status, _ = ask(key)
                if key in on_stable and status != 200:
                    stable_failures.append(status)

    with ThreadPoolExecutor(2) as pool:
        loaders = [pool.submit(load) for _ in range(2)]
        started = time.monotonic()
        code = main(["models", "rollout", name, "--to", v3, "--steps", "50,100",
                     "--interval", "60", "--poll", "1", "--min-requests", "5", "--force",
                     "--reason", "integration test", "--database-url", access_url, *common])
        rolled_back_s = time.monotonic() - started
        stop = True
        [f.result() for f in loaders]
    out = capsys.readouterr().out
    print(f"failing canary rolled back in {rolled_back_s:.1f}s")
    assert code == 1 and f"ROLLED BACK {name}.v{v3}: error rate" in out
    assert rolled_back_s < 30 and not stable_failures
    state = rollouts.load(name)
    assert state.canary is None and state.stable.adapter == name
    tags = client.get_model_version("keeper-lora-test", v3).tags
    assert "error rate" in tags["ember.rolled_back"] and tags["ember.gate"].startswith("failed")
    time.sleep(rollouts.CHECK_S + 0.5)
    assert {ask(key)[2] for key in keys[:10]} == {name}
    assert main(["models", "rollouts"]) == 0
    _clean_rollout(name)
