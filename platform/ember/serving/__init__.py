"""Serving: typed LLM app config -> ray.serve.llm configs, and Ember's ingress."""
