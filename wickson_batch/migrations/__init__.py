"""Alembic's script directory: env.py, the revision template, and versions/ (one file each).

Nothing here runs on import; `wickson_batch.db` hands Alembic this folder and a connection.
"""
