"""The state database: one layer over SQLite (the default) or PostgreSQL, its migrations and repositories."""
