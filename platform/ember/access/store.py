"""The access database: open it, migrate it, check it is fit to guard a service.

Design choices:
- SQLAlchemy Core over any URL; the default is a SQLite file under
  $EMBER_HOME (WAL mode, so engine replicas read while the CLI writes).
- Alembic owns the schema. `migrate(url)` brings a database to the newest
  revision (what `ember up` and `ember keys` do); `check_ready(url)` is what
  a service runs at start: a missing file, a database that is not Ember's, one
  at an older revision or one that cannot be read is an `AccessStoreError`
  with what to do, never a service that starts without its keys.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from ember.errors import EmberError

MIGRATIONS = Path(__file__).parent / "migrations"


class AccessStoreError(EmberError):
    """The keys database is missing, locked, corrupt or not migrated."""


def default_url() -> str:
    """EMBER_ACCESS_DATABASE_URL, else SQLite under $EMBER_HOME/access."""
    import os

    from ember.config.paths import ember_home

    return (os.environ.get("EMBER_ACCESS_DATABASE_URL")
            or f"sqlite:///{ember_home() / 'access' / 'ember.db'}")


def engine_for(url: str) -> sa.Engine:
    """An engine; SQLite files get WAL and a busy timeout (several processes share them)."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 10})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


@contextmanager
def opened(url: str):
    """An engine for a few statements, disposed after (CLI commands, reports)."""
    engine = engine_for(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


def migrate(url: str) -> None:
    """Create the database if needed and upgrade it to the newest schema."""
    from alembic import command

    _sqlite_file(url, create=True)
    engine = engine_for(url)
    try:
        with engine.begin() as connection:
            config = _alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except sa.exc.SQLAlchemyError as exc:
        raise AccessStoreError(f"could not migrate the keys database {_safe(url)}: "
                               f"{exc.__class__.__name__}: {exc}") from exc
    finally:
        engine.dispose()


def check_ready(url: str) -> None:
    """Raise AccessStoreError unless the database exists, reads, and is at the newest schema."""
    from alembic.runtime.migration import MigrationContext

    _sqlite_file(url, create=False)
    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
            connection.execute(sa.text("SELECT count(*) FROM api_keys")).scalar()
    except sa.exc.SQLAlchemyError as exc:
        raise AccessStoreError(
            f"the keys database {_safe(url)} cannot be read ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}). If it is corrupt, move it away and create keys "
            f"again (`ember keys create NAME`); if it is locked, stop what holds it.") from exc
    finally:
        engine.dispose()
    if current != head_revision():
        raise AccessStoreError(
            f"the keys database {_safe(url)} is at schema revision {current}, Ember needs "
            f"{head_revision()}: run `ember keys migrate`.")


def _sqlite_file(url: str, create: bool) -> None:
    """A SQLite URL's file must exist (or its folder is made, when creating)."""
    if not url.startswith("sqlite") or url.endswith(":memory:") or url == "sqlite://":
        return
    path = Path(sa.engine.make_url(url).database)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise AccessStoreError(
            f"the keys database {path} does not exist, and the service requires API keys "
            f"(access.auth: true). Create it with a key: `ember keys create admin --admin` "
            f"(`ember up` does this for you), or turn auth off in the Serve config "
            f"(access.auth: false) for a service nobody else can reach.")


def _safe(url: str) -> str:
    """The URL without its password."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)
