"""API keys, request limits and usage records: who may use the service, and how much.

- `store`: the keys and usage database (SQLAlchemy; SQLite under $EMBER_HOME by
  default, any SQLAlchemy URL at scale), its schema kept by Alembic migrations.
- `keys`: key creation (shown once, only a SHA-256 hash stored), lookup, revocation.
- `config`: `AccessConfig`, the `access:` section of a Serve app's args.
"""
