"""gunicorn settings, read from the same environment as the app."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# An embedded vector store belongs to one process: one worker with threads. With a Qdrant
# server and a server database, several workers share the load.
_shared_stores = bool(os.environ.get("QDRANT_URL")) and not os.environ.get(
    "DATABASE_URL", "sqlite"
).startswith("sqlite")
workers = int(os.environ.get("WEB_CONCURRENCY", "4")) if _shared_stores else 1
threads = int(os.environ.get("THREADS", "8"))
worker_class = "gthread"
timeout = 60
graceful_timeout = 30
# Two instances on one machine (as in tests) would unlink each other's control socket.
control_socket_disable = True
accesslog = None  # the app writes its own JSON access log
