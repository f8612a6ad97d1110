"""API keys: created once and shown once; only their SHA-256 is stored.

Keys are 32 random bytes (URL-safe base64) after an `ek-` prefix, so a plain
SHA-256 is as good as a slow hash here: there is nothing to brute-force (the
same choice as LiteLLM's virtual keys and GitHub's tokens). Lookups are by hash.
"""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from ember.access.schema import API_KEYS
from ember.access.store import AccessStoreError, engine_for, migrate, opened

KEY_PREFIX = "ek-"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    models: tuple[str, ...] | None = None  # fnmatch patterns; None: every model
    admin: bool = False

    def allows(self, model: str) -> bool:
        return self.models is None or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    @classmethod
    def from_row(cls, row) -> ApiKey:
        data = dict(row._mapping)
        data.pop("key_hash", None)
        data["models"] = tuple(data["models"]) if data["models"] is not None else None
        return cls(**data)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(url: str, name: str, *, rpm: int | None = None, tpm: int | None = None,
               budget_usd: float | None = None, models: list[str] | None = None,
               admin: bool = False) -> tuple[str, ApiKey]:
    """A new key (the only time its text exists) and its record."""
    _check_limits(name, rpm, tpm, budget_usd, models)
    migrate(url)
    key = new_key()
    row = {"name": name, "key_hash": hash_key(key), "prefix": key[:10],
           "created_at": time.time(), "rpm": rpm, "tpm": tpm, "budget_usd": budget_usd,
           "models": list(models) if models else None, "admin": admin}
    with opened(url) as engine:
        with engine.begin() as connection:
            if connection.execute(sa.select(API_KEYS.c.id).where(API_KEYS.c.name == name)).first():
                raise AccessStoreError(f"a key named '{name}' already exists; revoke it "
                                       f"(`ember keys revoke {name}`) or choose another name")
            key_id = connection.execute(API_KEYS.insert().values(**row)).inserted_primary_key[0]
    return key, lookup_id(url, key_id)


def _check_limits(name, rpm, tpm, budget_usd, models) -> None:
    if not name or len(name) > 128:
        raise AccessStoreError(f"a key's name must be 1-128 characters, got {name!r}")
    for label, value in (("--rpm", rpm), ("--tpm", tpm), ("--budget-usd", budget_usd)):
        if value is not None and value <= 0:
            raise AccessStoreError(f"{label} must be positive, got {value}")
    if models is not None and not all(m.strip() for m in models):
        raise AccessStoreError(f"--models must name models, got {models!r}")


UNCHANGED = object()  # `update_key`'s default: leave that field as it is
_UPDATABLE = ("rpm", "tpm", "budget_usd", "models")


def update_key(url: str, name: str, *, new_name: str | None = None, **changes) -> ApiKey:
    """Change a key's limits (`rpm`, `tpm`, `budget_usd`, `models`; None removes one) or
    its name, keeping its text, id and usage. Running replicas see it within their key
    cache time (`access.key_cache_s`)."""
    unknown = set(changes) - set(_UPDATABLE)
    if unknown:
        raise AccessStoreError(f"cannot update {sorted(unknown)}; updatable: {_UPDATABLE}")
    values = {k: v for k, v in changes.items() if v is not UNCHANGED}
    if not values and new_name is None:
        raise AccessStoreError("nothing to update: give --rpm, --tpm, --budget-usd, "
                               "--models or --name")
    _check_limits(new_name or name, values.get("rpm"), values.get("tpm"),
                  values.get("budget_usd"), values.get("models"))
    if "models" in values:
        values["models"] = list(values["models"]) if values["models"] else None
    if new_name is not None:
        values["name"] = new_name
    with opened(url) as engine:
        with engine.begin() as connection:
            row = connection.execute(sa.select(API_KEYS).where(API_KEYS.c.name == name)).first()
            if row is None:
                raise AccessStoreError(f"no key named '{name}' (`ember keys list` shows them)")
            if new_name not in (None, name) and connection.execute(
                    sa.select(API_KEYS.c.id).where(API_KEYS.c.name == new_name)).first():
                raise AccessStoreError(f"a key named '{new_name}' already exists; choose "
                                       f"another --name")
            connection.execute(API_KEYS.update().where(API_KEYS.c.id == row.id).values(**values))
    return lookup_id(url, row.id)


def lookup_id(url: str, key_id: int) -> ApiKey:
    with opened(url) as engine:
        with engine.connect() as connection:
            row = connection.execute(sa.select(API_KEYS).where(API_KEYS.c.id == key_id)).one()
    return ApiKey.from_row(row)


def list_keys(url: str) -> list[ApiKey]:
    with opened(url) as engine:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(API_KEYS).order_by(API_KEYS.c.id)).all()
    return [ApiKey.from_row(row) for row in rows]


def revoke(url: str, name: str) -> ApiKey:
    with opened(url) as engine:
        with engine.begin() as connection:
            row = connection.execute(sa.select(API_KEYS).where(API_KEYS.c.name == name)).first()
            if row is None:
                raise AccessStoreError(f"no key named '{name}' (`ember keys list` shows them)")
            if row.revoked_at is None:
                connection.execute(API_KEYS.update().where(API_KEYS.c.id == row.id)
                                   .values(revoked_at=time.time()))
    return lookup_id(url, row.id)


class KeyLookup:
    """Key text -> live ApiKey, for a serving replica: one engine, a short cache.

    Positive and negative answers are cached for `cache_s` seconds, so a
    request costs a dict lookup, and a revocation takes effect within that time.
    """

    def __init__(self, url: str, cache_s: float = 2.0) -> None:
        self.engine = engine_for(url)
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    def find(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit and now - hit[0] < self.cache_s:
            return hit[1]
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(API_KEYS).where(
                API_KEYS.c.key_hash == digest, API_KEYS.c.revoked_at.is_(None))).first()
        found = ApiKey.from_row(row) if row else None
        if len(self._cache) > 10_000:  # bounded: random wrong keys must not grow it forever
            self._cache.clear()
        self._cache[digest] = (now, found)
        return found
