"""The PostgreSQL store (scaleout.md): psycopg 3 and psycopg-pool, the SQLite store's API.

Import PostgresStore from `.store`; `.url` needs no driver, so choosing a store stays cheap.
"""
