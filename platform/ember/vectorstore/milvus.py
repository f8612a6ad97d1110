"""One Milvus collection per corpus, plus a ledger of the files it holds.

Design choices:
- The URI is a Milvus Lite file (default, under Ember's data dir) or a
  server URI; pymilvus' `MilvusClient` takes either.
- The collection's properties record the embedder and dimension that made
  it; queries and ingestion with another embedder are refused.
- Chunk ids are derived from (source, file hash, position), so re-writing a
  file after a crash upserts the same rows instead of duplicating them.
- A ledger collection (`<name>__files`) records each file's hash once all its
  chunks are written: a file is "ingested" only then. Milvus needs a vector
  field in every collection, so the ledger carries a 2-dim placeholder.
- Search right after inserting is ~50x slower until flushed (docs/architecture.md):
  writers call `finish()` (flush + index + load) at the end.
- A server client retries its connection at least every second (`RECONNECT_OPTIONS`):
  gRPC's default backoff grows to 120 s, so a client whose server was down for 30 s
  went on failing for 16 s after the server was back (measured, pymilvus 3.0).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ember.config.paths import data_dir
from ember.errors import EmberError

TEXT_MAX, TITLE_MAX, SOURCE_MAX = 65535, 1024, 2048  # VARCHAR limits, in bytes
LEDGER_SUFFIX = "__files"
EMBEDDER_KEY, DIM_KEY = "ember.embedder", "ember.dim"
VERSION_KEY = "ember.version"  # changed by every ingestion that changes the chunks
RECONNECT_OPTIONS = {"grpc.initial_reconnect_backoff_ms": 250,
                     "grpc.min_reconnect_backoff_ms": 250,
                     "grpc.max_reconnect_backoff_ms": 1000}


class CollectionNotFound(EmberError):
    pass


class EmbedderMismatch(EmberError):
    pass


@dataclass
class Hit:
    text: str
    source: str
    title: str
    position: int
    score: float


def is_unreachable(exc: BaseException) -> bool:
    """pymilvus' "Fail connecting to server" (its code 2): the server is down or restarting."""
    from pymilvus.exceptions import MilvusException

    return isinstance(exc, MilvusException) and exc.code == 2


def default_uri() -> str:
    return str(data_dir() / "milvus.db")


def clip_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    return text.encode()[:max_bytes].decode(errors="ignore")


def chunk_id(source: str, file_hash: str, position: int) -> str:
    return hashlib.sha256(f"{source}\0{file_hash}\0{position}".encode()).hexdigest()[:32]


class MilvusStore:
    def __init__(self, uri: str | None = None, token: str | None = None) -> None:
        from pymilvus import MilvusClient

        self.uri = uri or default_uri()
        if "://" not in self.uri:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        options = {"grpc_options": RECONNECT_OPTIONS} if "://" in self.uri else {}
        self.client = MilvusClient(uri=self.uri, token=token or "", **options)

    def close(self) -> None:
        self.client.close()

    # --- collections -------------------------------------------------------
    def collections(self) -> list[str]:
        return sorted(c for c in self.client.list_collections() if not c.endswith(LEDGER_SUFFIX))

    def exists(self, name: str) -> bool:
        return self.client.has_collection(name)

    def embedder_of(self, name: str) -> dict:
        if not self.exists(name):
            raise CollectionNotFound(f"collection '{name}' does not exist; existing: "
                                     f"{', '.join(self.collections()) or '(none)'}")
        properties = self.client.describe_collection(name).get("properties") or {}
        if EMBEDDER_KEY not in properties:
            return {}
        return {"embedder": properties[EMBEDDER_KEY], "dim": int(properties[DIM_KEY])}

    def check_embedder(self, name: str, embedder: str, dim: int, adopt: bool = False) -> None:
        """Refuse a collection made with another embedder.

        `adopt` (ingestion only): a collection whose creating run died before
        recording its embedder is claimed by this one instead of refused.
        """
        made_with = self.embedder_of(name)
        if not made_with and adopt:
            self._record_embedder(name, embedder, dim)
            return
        if not made_with:
            raise EmbedderMismatch(
                f"collection '{name}' records no embedder (the ingestion that created it "
                f"stopped early); re-run `ember ingest` into it to complete it.")
        if (made_with.get("embedder"), made_with.get("dim")) != (embedder, dim):
            raise EmbedderMismatch(
                f"collection '{name}' was made with embedder '{made_with.get('embedder')}' "
                f"({made_with.get('dim')} dims), not '{embedder}' ({dim} dims): its vectors "
                f"cannot be compared. Use the same embedder, or ingest into a new collection.")

    def ensure_collection(self, name: str, embedder: str, dim: int) -> None:
        if self.exists(name):
            self.check_embedder(name, embedder, dim, adopt=True)
            return
        self._create_chunks(name, dim)
        self._create_ledger(name + LEDGER_SUFFIX)
        self._record_embedder(name, embedder, dim)

    def _record_embedder(self, name: str, embedder: str, dim: int) -> None:
        self.client.alter_collection_properties(
            name, properties={EMBEDDER_KEY: embedder, DIM_KEY: str(dim)})

    def _create_chunks(self, name: str, dim: int) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX)
        schema.add_field("source", DataType.VARCHAR, max_length=SOURCE_MAX)
        schema.add_field("title", DataType.VARCHAR, max_length=TITLE_MAX)
        schema.add_field("position", DataType.INT64)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("file_hash", DataType.VARCHAR, max_length=64)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
        self.client.create_collection(name, schema=schema, index_params=index)

    def _create_ledger(self, name: str) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False)
        schema.add_field("source", DataType.VARCHAR, is_primary=True, max_length=SOURCE_MAX)
        schema.add_field("file_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("chunks", DataType.INT64)
        schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
        index = self.client.prepare_index_params()
        index.add_index("placeholder", index_type="FLAT", metric_type="L2")
        self.client.create_collection(name, schema=schema, index_params=index)

    # --- the ledger -------------------------------------------------------
    def ingested_files(self, name: str) -> dict[str, str]:
        """{source file: file hash} of the files completely written."""
        if not self.exists(name):
            return {}
        self.client.load_collection(name + LEDGER_SUFFIX)  # reopened Lite files start released
        rows = self._query_all(name + LEDGER_SUFFIX, "source != ''", ["source", "file_hash"])
        return {r["source"]: r["file_hash"] for r in rows}

    def mark_ingested(self, name: str, files: dict[str, tuple[str, int]]) -> None:
        rows = [{"source": s, "file_hash": h, "chunks": n, "placeholder": [0.0, 0.0]}
                for s, (h, n) in files.items()]
        if rows:
            self.client.upsert(name + LEDGER_SUFFIX, rows)

    # --- chunks ------------------------------------------------------------
    def upsert_chunks(self, name: str, rows: list[dict]) -> int:
        for row in rows:
            row["id"] = chunk_id(row["source"], row["file_hash"], row["position"])
            row["text"] = clip_utf8(row["text"], TEXT_MAX)
            row["title"] = clip_utf8(row["title"], TITLE_MAX)
        if rows:
            self.client.upsert(name, rows)
        return len(rows)

    def delete_stale(self, name: str, files: dict[str, str], batch: int = 200) -> None:
        """Drop chunks of earlier versions of `files` ({file: current hash}).

        One filtered delete per `batch` files: Milvus (Lite especially) scans the
        collection for each delete, so per-file deletes cost O(files x chunks).
        """
        items = sorted(files.items())
        for start in range(0, len(items), batch):
            part = dict(items[start:start + batch])
            self.client.delete(name, filter=f"({_files_filter(part)}) and file_hash not in "
                                            f"{json.dumps(sorted(set(part.values())))}")

    def count(self, name: str) -> int:
        self.client.load_collection(name)
        result = self.client.query(name, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def finish(self, name: str) -> None:
        """Flush, so searches hit the index, and load for searching."""
        for collection in (name, name + LEDGER_SUFFIX):
            self.client.flush(collection)
            self.client.load_collection(collection)

    def mark_changed(self, name: str) -> str:
        """Give the collection a new version, so serving replicas reload their index."""
        import uuid

        version = uuid.uuid4().hex
        self.client.alter_collection_properties(name, properties={VERSION_KEY: version})
        return version

    def version(self, name: str) -> str:
        """The collection's version (older collections: their row count)."""
        if not self.exists(name):
            raise CollectionNotFound(f"collection '{name}' does not exist; existing: "
                                     f"{', '.join(self.collections()) or '(none)'}")
        properties = self.client.describe_collection(name).get("properties") or {}
        return properties.get(VERSION_KEY) or f"rows:{self.count(name)}"

    def read_all(self, name: str, batch: int = 2000) -> list[dict]:
        """Every chunk with its vector (for the serving replicas' in-memory index)."""
        self.client.load_collection(name)
        return self._query_all(name, "position >= 0",
                               ["text", "source", "title", "position", "vector"], batch)

    def search(self, name: str, vector: list[float], top_k: int) -> list[Hit]:
        if not self.exists(name):
            raise CollectionNotFound(f"collection '{name}' does not exist; existing: "
                                     f"{', '.join(self.collections()) or '(none)'}")
        self.client.load_collection(name)  # reopened Lite collections start released
        results = self.client.search(name, data=[vector], limit=top_k, anns_field="vector",
                                     output_fields=["text", "source", "title", "position"],
                                     search_params={"metric_type": "COSINE"})
        return [Hit(h["entity"]["text"], h["entity"]["source"], h["entity"]["title"],
                    h["entity"]["position"], float(h["distance"])) for h in results[0]]

    def _query_all(self, name: str, expr: str, fields: list[str],
                   batch: int = 1000) -> list[dict]:
        iterator = self.client.query_iterator(name, filter=expr, output_fields=fields,
                                              batch_size=batch)
        rows = []
        while batch := iterator.next():
            rows.extend(batch)
        iterator.close()
        return rows


def _files_filter(files: dict[str, str]) -> str:
    """Chunks of these files: their own source, or their lines (`path#L<n>`) for jsonl."""
    plain = [f for f in files if not f.endswith(".jsonl")]
    clauses = [f"source in {json.dumps(plain)}"] if plain else []
    clauses += [f"source like {json.dumps(f.replace('%', '') + '#L%')}"
                for f in files if f.endswith(".jsonl")]
    return " or ".join(clauses)
