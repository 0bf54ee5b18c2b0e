"""The PostgreSQL store (scaleout.md): psycopg 3 and psycopg-pool, the Store interface.

Import PostgresStore from `.store`: this package imports nothing, so `.url` (no driver) stays
cheap for a shell that only needs to tell a URL from a data directory.
"""
