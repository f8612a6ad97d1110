"""Each engine replica finds the LoRA adapters registered for its model (`ember.models.adapters`).

vLLM asks its registered LoRA resolvers for a model name it does not know when
runtime LoRA updating is on (`VLLM_ALLOW_RUNTIME_LORA_UPDATING`, set by
`llm_app` for a model with `lora:`). This resolver answers with the registered
adapter of that name if it was registered for this replica's model; vLLM then
loads it into the engine once and keeps the most recently used ones (`lora`
settings). Chosen over Ray Serve LLM's `lora_config`: Ember's hot path hands a
request to vLLM's own server code, which is where the resolver runs, so the hot
path, Ember's routes and the other models' replicas all load adapters the same way.
"""

from __future__ import annotations

import logging

from ember.models.adapters import find_adapter, record_load_error

logger = logging.getLogger("ember.adapters")
RESOLVER_NAME = "ember-adapters"


def install_resolver(model_id: str) -> None:
    """Register the resolver for `model_id` (before the engine's server code is built)."""
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

    class AdapterResolver(LoRAResolver):
        async def resolve_lora(self, base_model_name: str, lora_name: str):
            adapter = find_adapter(lora_name)
            if adapter is None or adapter.base != model_id:
                return None
            logger.info("loading adapter '%s' (rank %d) from %s", lora_name, adapter.rank,
                        adapter.path)
            return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(adapter.path))

    if RESOLVER_NAME not in LoRAResolverRegistry.get_supported_resolvers():
        LoRAResolverRegistry.register_resolver(RESOLVER_NAME, AdapterResolver())


def record_load_failures(engine_client) -> None:
    """Record an adapter the engine fails to load (`record_load_error`), so Ember's routes
    refuse its later requests with the reason instead of vLLM loading it again each time."""
    from vllm.v1.engine.exceptions import EngineDeadError

    add_lora = engine_client.add_lora

    async def add_lora_or_record(lora_request):
        try:
            return await add_lora(lora_request)
        except EngineDeadError:
            raise  # the engine's failure, not the adapter's
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            logger.error("adapter '%s' failed to load: %s", lora_request.lora_name, message)
            record_load_error(lora_request.lora_name, message)
            raise

    engine_client.add_lora = add_lora_or_record  # vLLM's serving code calls it at request time
