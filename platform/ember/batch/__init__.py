"""Batch inference: OpenAI batch files through vLLM on Ray Data LLM."""
