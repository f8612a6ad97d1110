"""The engine stage: `ray.data.llm`'s vLLM processor, set up for Ember's batch lines.

Prompts arrive rendered (the driver applied the chat template and counted tokens),
so the processor's own chat-template and tokenizer stages are off and vLLM
tokenizes once. Sampling options travel as one JSON string per row: Arrow keeps a
column's type across rows, and options differ from line to line.

On CPU the engine replica is a one-bundle placement group of `num_cpus` CPUs (Ray
Data LLM asks for a GPU per replica otherwise) and vLLM's CPU KV cache is sized by
VLLM_CPU_KVCACHE_SPACE; its processes run at a lower OS priority (`nice`) than
the online service. A failed request becomes that row's error
(`should_continue_on_error`), not the job's.
"""

from __future__ import annotations

import json
import os

from ember.batch.requests import BatchLine
from ember.ray_internals import swap_vllm_engine_stage, vLLMEngineStageUDF

# vLLM's SamplingParams defaults (OpenAI's too) for the options a line may leave out.
# Every row carries every option: rows of one block become one Arrow struct column, where
# an option missing from some rows reads back as None, and a None that vLLM's engine core
# cannot decode (e.g. ignore_eos) kills its input thread and hangs the whole batch.
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "stop": [], "seed": None,
                     "presence_penalty": 0.0, "frequency_penalty": 0.0, "ignore_eos": False}


def engine_rows(entries: list[BatchLine]) -> list[dict]:
    return [{"line": e.line, "prompt": e.prompt, "sampling": json.dumps(sampling_of(e))}
            for e in entries]


def sampling_of(entry: BatchLine) -> dict:
    given = {k: v for k, v in entry.sampling.items() if v is not None}
    return {**SAMPLING_DEFAULTS, **given}


def _to_engine(row: dict) -> dict:
    return {"line": row["line"], "prompt": row["prompt"],
            "sampling_params": json.loads(row["sampling"])}


def _from_engine(row: dict) -> dict:
    return {"line": row["line"], "text": row.get("generated_text") or "",
            "tokens": int(row.get("num_generated_tokens") or 0),
            "error": row.get("__inference_error__") or ""}


def batch_processor(config, model_path: str):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    bundle = {"CPU": config.num_cpus}
    if config.num_gpus:
        bundle["GPU"] = config.num_gpus
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "EMBER_BATCH_NICE": str(config.nice)}
    if not config.num_gpus:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(config.kv_cache_gib)
    processor_config = vLLMEngineProcessorConfig(
        model_source=model_path,
        engine_kwargs=dict(config.engine),
        placement_group_config={"bundles": [bundle]},
        runtime_env={"env_vars": env},
        batch_size=config.batch_size,
        concurrency=config.concurrency,
        should_continue_on_error=True,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
    )
    processor = build_processor(processor_config, preprocess=_to_engine,
                                postprocess=_from_engine)
    swap_vllm_engine_stage(processor, NiceEngineUDF)
    return processor


class NiceEngineUDF(vLLMEngineStageUDF):
    """Ray Data LLM's engine stage, started at a lower OS priority (EMBER_BATCH_NICE
    levels below the Ray worker's: Ray starts workers at nice 15, so 19 by default).

    On cores shared with the online engine, online requests go first and the batch
    takes what they leave. vLLM's engine-core and worker processes are the actor's
    children and inherit the priority. A Ray worker setup hook would be the public
    way, but Ray applies those only job-wide; this subclass is Ember's one coupling to
    Ray Data LLM's internals (through `ember.ray_internals`).
    """

    def __init__(self, *args, **kwargs) -> None:
        os.nice(int(os.environ.get("EMBER_BATCH_NICE", "0")))
        super().__init__(*args, **kwargs)
