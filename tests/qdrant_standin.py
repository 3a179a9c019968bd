"""A stand-in Qdrant server for tests: Qdrant's REST API over qdrant-client's local mode.

No Qdrant server binary can be installed where the suite runs, so tests that need a server
shared by several processes (gunicorn workers) start this one instead:

    python -m tests.qdrant_standin [--port N]    # prints "listening on PORT", then serves

It answers the subset of the REST API that wickson_batch/vectors/server.py's qdrant-client
calls use (collections: list, exists, get, create, delete, payload index; points: upsert,
delete, count, query, scroll), with the same request and response bodies, by handing each
request to an in-memory `QdrantClient(":memory:")` under one lock. Only for tests: local mode
is slow above some 20k points and keeps nothing on disk.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel
from qdrant_client import QdrantClient, models

VERSION = "1.20.0"  # what GET / reports: the client checks it against its own


class NotFound(Exception):
    """Answered with 404."""


class Conflict(Exception):
    """Answered with 409."""


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


class StandIn:
    """The local-mode engine behind the HTTP routes; one request at a time."""

    def __init__(self) -> None:
        self.client = QdrantClient(location=":memory:")
        self.lock = threading.Lock()

    def _known(self, name: str) -> None:
        if not self.client.collection_exists(name):
            raise NotFound(f"Not found: Collection `{name}` doesn't exist!")

    def list_collections(self, _: str, body: Any) -> Any:
        return self.client.get_collections()

    def exists(self, name: str, body: Any) -> Any:
        return {"exists": self.client.collection_exists(name)}

    def get(self, name: str, body: Any) -> Any:
        self._known(name)
        return self.client.get_collection(name)

    def create(self, name: str, body: Any) -> Any:
        if self.client.collection_exists(name):
            raise Conflict(f"Wrong input: Collection `{name}` already exists!")
        request = models.CreateCollection.model_validate(body)
        return self.client.create_collection(name, vectors_config=request.vectors)

    def drop(self, name: str, body: Any) -> Any:
        return self.client.delete_collection(name)

    def index(self, name: str, body: Any) -> Any:
        self._known(name)
        request = models.CreateFieldIndex.model_validate(body)
        return self.client.create_payload_index(
            name, field_name=request.field_name, field_schema=request.field_schema
        )

    def upsert(self, name: str, body: Any) -> Any:
        self._known(name)
        request = models.PointsList.model_validate(body)
        return self.client.upsert(name, points=request.points, wait=True)

    def delete(self, name: str, body: Any) -> Any:
        self._known(name)
        selector: models.PointIdsList | models.FilterSelector
        if "points" in body:
            selector = models.PointIdsList.model_validate(body)
        else:
            selector = models.FilterSelector.model_validate(body)
        return self.client.delete(name, points_selector=selector, wait=True)

    def count(self, name: str, body: Any) -> Any:
        self._known(name)
        request = models.CountRequest.model_validate(body)
        exact = True if request.exact is None else request.exact
        return self.client.count(name, count_filter=request.filter, exact=exact)

    def query(self, name: str, body: Any) -> Any:
        self._known(name)
        request = models.QueryRequest.model_validate(body)
        return self.client.query_points(
            name,
            query=request.query,
            query_filter=request.filter,
            limit=request.limit or 10,
            offset=request.offset,
            with_payload=True if request.with_payload is None else request.with_payload,
            with_vectors=request.with_vector or False,
            score_threshold=request.score_threshold,
        )

    def scroll(self, name: str, body: Any) -> Any:
        self._known(name)
        request = models.ScrollRequest.model_validate(body)
        records, offset = self.client.scroll(
            name,
            scroll_filter=request.filter,
            limit=request.limit or 10,
            offset=request.offset,
            with_payload=True if request.with_payload is None else request.with_payload,
            with_vectors=request.with_vector or False,
        )
        return {"points": _dump(records), "next_page_offset": offset}


Route = Callable[[StandIn, str, Any], Any]
_C = r"/collections/(?P<name>[^/?]+)"
ROUTES: list[tuple[str, re.Pattern[str], Route]] = [
    ("GET", re.compile(r"/collections"), StandIn.list_collections),
    ("GET", re.compile(_C + r"/exists"), StandIn.exists),
    ("GET", re.compile(_C), StandIn.get),
    ("PUT", re.compile(_C), StandIn.create),
    ("DELETE", re.compile(_C), StandIn.drop),
    ("PUT", re.compile(_C + r"/index"), StandIn.index),
    ("PUT", re.compile(_C + r"/points"), StandIn.upsert),
    ("POST", re.compile(_C + r"/points/delete"), StandIn.delete),
    ("POST", re.compile(_C + r"/points/count"), StandIn.count),
    ("POST", re.compile(_C + r"/points/query"), StandIn.query),
    ("POST", re.compile(_C + r"/points/scroll"), StandIn.scroll),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as qdrant-client's HTTP pool expects
    engine: StandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read their own logs

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if self.command == "GET" and path == "/":
            self._send(200, {"title": "qdrant stand-in for tests", "version": VERSION})
            return
        for method, pattern, route in ROUTES:
            match = pattern.fullmatch(path)
            if method != self.command or match is None:
                continue
            try:
                body = json.loads(raw) if raw else {}
                with self.engine.lock:
                    result = route(self.engine, match.groupdict().get("name", ""), body)
            except NotFound as error:
                self._error(404, str(error), started)
            except Conflict as error:
                self._error(409, str(error), started)
            except Exception as error:  # bad bodies and engine errors alike
                self._error(400, f"Wrong input: {error}", started)
            else:
                elapsed = time.perf_counter() - started
                self._send(200, {"result": _dump(result), "status": "ok", "time": elapsed})
            return
        self._error(404, f"Not found: {self.command} {path}", started)

    def _error(self, status: int, message: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        self._send(status, {"status": {"error": message}, "time": elapsed})

    do_GET = do_PUT = do_POST = do_DELETE = _handle


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client went away: fine
            super().handle_error(request, client_address)


def serve(port: int = 0) -> ThreadingHTTPServer:
    """Return a server bound to 127.0.0.1:`port` (0: any free port), not yet serving."""
    handler = type("BoundHandler", (Handler,), {"engine": StandIn()})
    server = StandInServer(("127.0.0.1", port), handler)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # local mode warns that payload indexes have no effect
    server = serve(args.port)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
