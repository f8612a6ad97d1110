"""Alembic environment for Ember's access database (keys, usage).

Run by `ember.access.store.migrate(url)`; the URL comes from Ember's config,
not from an alembic.ini, so there is nothing to set up by hand.
"""

from alembic import context
from ember.access.schema import METADATA
from sqlalchemy import create_engine

url = context.config.get_main_option("sqlalchemy.url")
connectable = context.config.attributes.get("connection")


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=METADATA,
                      render_as_batch=True)  # SQLite alters tables by copying them
    with context.begin_transaction():
        context.run_migrations()


if connectable is not None:
    run(connectable)
else:
    engine = create_engine(url)
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
