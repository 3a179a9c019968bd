"""structlog setup: JSON lines (or console), request-id binding, the access log."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from flask import Flask, Response, g, request

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's request id is echoed only when it is short and plain; anything else is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = structlog.get_logger("wickson_batch")


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time, so a later redirect is honoured."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _add_pid(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    # Several gunicorn workers write to one stream: the pid tells which one served a request.
    event["pid"] = os.getpid()
    return event


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog and the stdlib root logger; safe to call more than once."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_pid,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (PrintLogger writes the newline separately, so another thread's
        # stdlib log line could land in between): lines from threads and workers stay whole.
        logger_factory=structlog.WriteLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    # qdrant-client's HTTP library logs every call to a Qdrant server at INFO.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))


def new_request_id() -> str:
    """Make a request id for a request that did not bring a usable one."""
    return f"req_{uuid.uuid4().hex}"


def current_request_id() -> str:
    """Return the id of the request being served."""
    return str(g.get("request_id") or new_request_id())


def _begin_request() -> None:
    structlog.contextvars.clear_contextvars()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else new_request_id()
    g.started = time.perf_counter()
    structlog.contextvars.bind_contextvars(request_id=g.request_id)


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = current_request_id()
    started = g.get("started")
    duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
    principal = g.get("principal")
    log.info(
        "http.request",
        method=request.method,
        path=request.path,
        route=request.url_rule.rule if request.url_rule else None,
        status=response.status_code,
        duration_ms=duration_ms,
        key_id=principal.key_id if principal else None,
    )
    return response


def init_app(app: Flask) -> None:
    """Bind a request id to every request and write one access-log line per response."""
    app.before_request(_begin_request)
    app.after_request(_finish_request)
