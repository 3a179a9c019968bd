"""gunicorn settings, read from the same environment as the app."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from typing import Any

from wickson_batch.config import ConfigError, env_overlay, load_settings

try:
    settings = load_settings()
except ConfigError as error:
    sys.exit(f"wickson-batch: {error}")

bind = f"{settings.host}:{settings.port}"
# An embedded vector store belongs to one process: one worker with threads. With a Qdrant
# server and a server database, several workers share the load. (qdrant-client's local mode,
# `:memory:` or `file:///dir`, is in-process like the embedded engine.)
_qdrant_url = settings.qdrant_url or ""
_shared_stores = (
    bool(_qdrant_url)
    and _qdrant_url != ":memory:"
    and not _qdrant_url.startswith("file://")
    and not settings.database_url.startswith("sqlite")
)
workers = settings.web_concurrency if _shared_stores else 1
threads = settings.threads
worker_class = "gthread"
timeout = 60
graceful_timeout = 30
# On a reload (SIGHUP) the new worker starts while the old one finishes its requests, still
# holding the embedded vector store: the new one waits for it rather than failing to boot
# (which stops gunicorn). Shorter than `timeout`, within which a booting worker must start.
# Handed to the workers through their environment, unless the operator set it.
if "STORE_LOCK_WAIT_SECONDS" not in env_overlay():
    os.environ["STORE_LOCK_WAIT_SECONDS"] = str(graceful_timeout + 15)
# Two instances on one machine (as in tests) would unlink each other's control socket.
control_socket_disable = True
accesslog = None  # the app writes its own JSON access log

# gunicorn's own lines ("Booting worker", "Listening at", ...) in the app's format: JSON
# lines on stderr with event, level, timestamp and logger (LOG_FORMAT=console for a person).
_log_format = settings.log_format
loglevel = settings.log_level.lower()
if loglevel not in {"debug", "info", "warning", "error", "critical"}:
    loglevel = "info"  # as the app does with a level it does not know
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {},
    "handlers": {"structured": {"()": "wickson_batch.logs.StructuredHandler", "fmt": _log_format}},
    "root": {"level": loglevel.upper(), "handlers": ["structured"]},
    "loggers": {
        "gunicorn.error": {
            "level": loglevel.upper(),
            "handlers": ["structured"],
            "propagate": False,
        },
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
}

# Prometheus multiprocess mode: every worker writes its samples to files in one folder and a
# scrape of any worker adds them all up (a worker restarted by gunicorn keeps its counts).
# The variable must be set before a worker imports prometheus_client, so it is set here in
# the master, before the fork. A folder we make is ours to remove at exit; a given one is
# emptied of the previous run's files (stale samples would be added to this run's).
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWNED_ENV = "WICKSON_OWN_METRICS_DIR"  # remembers across a config reload (SIGHUP)
# A folder we make is named after the master's pid: one left by a master that was killed
# (no on_exit) is removed by the next start, and never one whose master still runs.
_OWN_FOLDER = re.compile(r"wickson-metrics-(\d+)-\w+")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_folders_of_dead_masters() -> None:
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        match = _OWN_FOLDER.fullmatch(name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


if not os.environ.get(_MULTIPROC_ENV):
    _remove_folders_of_dead_masters()
    os.environ[_MULTIPROC_ENV] = os.environ[_OWNED_ENV] = tempfile.mkdtemp(
        prefix=f"wickson-metrics-{os.getpid()}-"
    )


# prometheus-client's sample files, `<type>_<pid>.db`: only these are removed from the folder.
_SAMPLE_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


def on_starting(server: Any) -> None:
    """Before any worker exists: start from a metrics folder without old samples."""
    folder = os.environ[_MULTIPROC_ENV]
    os.makedirs(folder, exist_ok=True)
    names = os.listdir(folder)
    others = sorted(
        name for name in names if name.endswith(".db") and not _SAMPLE_FILE.fullmatch(name)
    )
    if others:  # every *.db there is read at each scrape: never delete or read another's file
        server.log.error(
            "%s=%s holds other files (%s): give it a folder of its own",
            _MULTIPROC_ENV,
            folder,
            ", ".join(others),
        )
        sys.exit(1)
    for name in names:
        if _SAMPLE_FILE.fullmatch(name):
            os.remove(os.path.join(folder, name))


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: drop its live gauges (its counters stay in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """The master stops: remove the metrics folder if we made it."""
    folder = os.environ[_MULTIPROC_ENV]
    if os.environ.get(_OWNED_ENV) == folder:
        shutil.rmtree(folder, ignore_errors=True)
