"""Alembic environment: migrations always run on a connection chatledger hands over.

`chatledger.store.migrate` opens the connection (and its transaction and lock); there is
no alembic.ini and no URL here, so the only way to migrate is the one the app uses.
"""

from alembic import context

from chatledger.store.schema import autogenerate_filters, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    **autogenerate_filters(connection.dialect.name),
)
with context.begin_transaction():
    context.run_migrations()
