"""The access database's tables, as SQLAlchemy Core sees them.

Alembic's migrations (`migrations/versions/`) create and change them; a test
checks that the migrated database matches these definitions, so the two
cannot drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa

METADATA = sa.MetaData()

API_KEYS = sa.Table(
    "api_keys", METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # SHA-256 hex
    sa.Column("prefix", sa.String(16), nullable=False),  # shown in listings: "ek-AbCd…"
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.Integer, nullable=True),
    sa.Column("budget_usd", sa.Float, nullable=True),
    sa.Column("models", sa.JSON, nullable=True),  # allowed model patterns; null: all
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
)

USAGE = sa.Table(
    "usage", METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    # given by the replica that served the request: a row delivered twice (a retry
    # after a lost acknowledgement) is written once (NULL in rows from before 0003)
    sa.Column("row_id", sa.String(32), nullable=True, unique=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=True, index=True),
    sa.Column("model", sa.String(256), nullable=True),  # as the client named it (rag:docs)
    sa.Column("served_model", sa.String(256), nullable=True),  # the LLM that generated
    sa.Column("route", sa.String(128), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("latency_s", sa.Float, nullable=False),
    sa.Column("ttft_s", sa.Float, nullable=True),
)

# Replica cost over one sampling interval, split among the keys by their tokens in
# it; an interval with no tokens is one row with key_id NULL (idle cost).
SPEND = sa.Table(
    "spend", METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=True, index=True),
    sa.Column("replicas", sa.Float, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("usd", sa.Float, nullable=False),
)

# The OpenAI Batch API's files and batches (`/v1/files`, `/v1/batches`): the contents
# live on disk (`path`), these rows say whose they are and where each batch stands.
BATCH_FILES = sa.Table(
    "batch_files", METADATA,
    sa.Column("id", sa.String(64), primary_key=True),  # file-<hex>
    sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=True, index=True),
    sa.Column("filename", sa.String(256), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),  # batch, batch_output
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

BATCHES = sa.Table(
    "batches", METADATA,
    sa.Column("id", sa.String(64), primary_key=True),  # batch_<hex>
    sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=True, index=True),
    sa.Column("input_file_id", sa.String(64), sa.ForeignKey("batch_files.id"), nullable=False),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("output_file_id", sa.String(64), nullable=True),
    sa.Column("error_file_id", sa.String(64), nullable=True),
    sa.Column("total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("completed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.Text, nullable=True),  # why the batch itself failed
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("in_progress_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),  # completed, failed or cancelled
    sa.Column("cancelled_at", sa.Float, nullable=True),
)
