"""Ingestion on Ray Data: read documents, chunk, embed, write to Milvus."""
