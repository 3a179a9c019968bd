"""structlog setup: JSON lines (or console), request-id binding, the access log."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from flask import Flask, Response, g, request

from .protocol import REQUEST_ID_HEADER

# A caller's request id is echoed only when it is short and plain; anything else is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = structlog.get_logger("wickson_batch")


class _CurrentStderr:
    """Writes whole lines to whatever sys.stderr is at the time (a later redirect is honoured).

    Each thread's text is held until it ends a line, and a line goes out in one write under
    one lock: lines from threads writing at once (structlog's `print` writes a message and
    its newline separately) never cut into each other.
    """

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._pending = threading.local()

    def write(self, text: str) -> int:
        held: str = getattr(self._pending, "text", "") + text
        complete, newline, rest = held.rpartition("\n")
        self._pending.text = rest
        if newline:
            with self._lock:
                sys.stderr.write(complete + newline)
                sys.stderr.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            sys.stderr.flush()


_STDERR = _CurrentStderr()


def _renderer(fmt: str) -> structlog.typing.Processor:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return structlog.processors.JSONRenderer()


class StructuredFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders a stdlib log record (gunicorn's, a library's) like the app's own lines:
    `{"event": <message>, "level", "timestamp", "logger"}` in JSON, or the console format."""

    def __init__(self, fmt: str = "json") -> None:
        super().__init__(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(fmt)],
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,  # the request id, while serving one
                structlog.processors.add_log_level,
                _add_pid,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.add_logger_name,
                structlog.processors.format_exc_info,
            ],
        )


class StructuredHandler(logging.Handler):
    """A handler writing `StructuredFormatter` lines to the current sys.stderr."""

    def __init__(self, fmt: str = "json") -> None:
        super().__init__()
        self.setFormatter(StructuredFormatter(fmt))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _STDERR.write(self.format(record) + "\n")
        except Exception:  # a log line must never break the caller
            self.handleError(record)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Python warnings (a library's UserWarning, say) as log records, not raw stderr text."""
    logging.getLogger("py.warnings").warning(
        "%s: %s (%s:%s)", category.__name__, message, filename, lineno
    )


def _add_pid(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    # Several gunicorn workers write to one stream: the pid tells which one served a request.
    event["pid"] = os.getpid()
    return event


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog and the stdlib root logger; safe to call more than once."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer = _renderer(fmt)
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
        logger_factory=structlog.PrintLoggerFactory(_STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Libraries' stdlib logs (and gunicorn's, which gunicorn.conf.py routes the same way)
    # come out in the same format: one structured handler on the root logger, replacing a
    # previous one (of an earlier call, or of gunicorn's logconfig_dict), never anyone else's.
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StructuredHandler):
            root.removeHandler(handler)
    root.addHandler(StructuredHandler(fmt))
    root.setLevel(numeric)
    warnings.showwarning = _log_warning
    # qdrant-client's HTTP library logs every call to a Qdrant server at INFO.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))
    # flask-limiter warns at each switch to its in-memory fallback and logs each refused
    # request at INFO: the app logs the switch itself (ratelimit.storage_unavailable, at
    # most once a minute, api/ratelimits.py) and every answer in http.request.
    logging.getLogger("flask-limiter").setLevel(max(numeric, logging.ERROR))


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
        route=route_template(request.url_rule.rule) if request.url_rule else None,
        status=response.status_code,
        duration_ms=duration_ms,
        key_id=principal.key_id if principal else None,
    )
    return response


def _end_request(_error: BaseException | None) -> None:
    # A worker thread's later lines (between requests) must not carry this request's id.
    structlog.contextvars.clear_contextvars()


def init_app(app: Flask) -> None:
    """Bind a request id to every request and write one access-log line per response."""
    app.before_request(_begin_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)


_CONVERTER = re.compile(r"<[^<>:]+:([^<>]+)>")


def route_template(rule: str) -> str:
    """A route as logs and metrics label it: `/v1/media/<media_id>`, without converter names."""
    return _CONVERTER.sub(r"<\1>", rule)
