"""RAG on the engine replica: `rag:*` models, /v1/retrieve, /generate, /rag-generate.

- `protocol`: the wire types of Ember's own RAG endpoints;
- `routes`: `RAGRoutes`, the OpenAI routes plus retrieval (`rag:*` chats, the embedder);
- `retrieval`, `search_index`: the query encoder, the in-memory index, rerank;
- `prompt`: numbered sources fitted to the model's context;
- `streams`: Ray's responses reshaped (sources added, plain `{text}` / `{delta}` events);
- `embeddings`: the `Embedder` deployment; `config`, `app`: the app's schema and builder.
"""
