"""The project store: one SQLite database per project (connection, schema and migrations, items,
annotations, runs, settings)."""
