"""Serving: what happens to a request, from the Serve proxy to the engine.

- `proxy_guard`: in Serve's proxy, a stream whose replica died ends with an error;
- `engine_replica`: the engine deployment that is the app's ingress: the access
  gate, then the hot path to vLLM's own server app, else Ember's routes;
- `openai_routes`, `batch_routes`, `rag/`: Ember's routes (OpenAI, Batch API, RAG);
- `config`, `llm_app`: the typed app config -> ray.serve.llm configs and deployments;
- `cpu_priority`: the CPU engine worker's niceness.
"""
