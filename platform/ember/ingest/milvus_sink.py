"""A Ray Data datasink that upserts embedded chunks into a Milvus collection.

Each write task opens its own client, upserts in batches and returns what it
wrote per file plus the skip markers it saw; `on_write_complete` (on the
driver) merges those into `self.result` for the ingestion report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

CHUNK_FIELDS = ("source", "title", "position", "text", "content_hash", "file_hash")


class MilvusDatasink(Datasink):
    def __init__(self, uri: str, token: str | None, collection: str, batch_size: int,
                 progress=None) -> None:
        self.uri, self.token = uri, token
        self.progress = progress  # an IngestProgress actor, told of each upsert
        self.collection = collection
        self.batch_size = batch_size
        self.result: dict = {"written": {}, "skipped": {}}

    def get_name(self) -> str:
        return f"MilvusSink({self.collection})"

    def write(self, blocks: Iterable[Block], ctx) -> dict:
        from ember.vectorstore.milvus import MilvusStore

        store = MilvusStore(self.uri, self.token)
        written: Counter = Counter()
        skipped: dict[str, str] = {}
        pending: list[dict] = []
        try:
            for block in blocks:
                for row in BlockAccessor.for_block(block).iter_rows(public_row_format=False):
                    if row["skip_reason"]:
                        skipped[row["file"]] = row["skip_reason"]
                        continue
                    pending.append(milvus_row(row))
                    written[row["file"]] += 1
                    if len(pending) >= self.batch_size:
                        self._upsert(store, pending)
                        pending = []
            self._upsert(store, pending)
        finally:
            store.close()
        return {"written": dict(written), "skipped": skipped}

    def _upsert(self, store, rows: list[dict]) -> None:
        store.upsert_chunks(self.collection, rows)
        if self.progress is not None and rows:
            self.progress.written.remote(len(rows))

    def on_write_complete(self, write_result) -> None:
        written: Counter = Counter()
        for part in write_result.write_returns:
            written.update(part["written"])
            self.result["skipped"].update(part["skipped"])
        self.result["written"] = dict(written)


def milvus_row(row) -> dict:
    out = {field: row[field] for field in CHUNK_FIELDS}
    out["position"] = int(out["position"])
    out["vector"] = [float(x) for x in row["vector"]]
    return out
