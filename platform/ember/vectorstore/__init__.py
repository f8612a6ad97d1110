"""Vector store: Milvus (Lite file by default, a server by URI), same code."""

from ember.vectorstore.milvus import CollectionNotFound, EmbedderMismatch, MilvusStore

__all__ = ["CollectionNotFound", "EmbedderMismatch", "MilvusStore"]
