"""The project store: one SQLite database per project (connection, schema and migrations, items,
annotations, pair votes, runs, settings, accounts and roles, the audit log, backup and restore)."""
