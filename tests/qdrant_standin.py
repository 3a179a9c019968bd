"""A stand-in Qdrant server for tests: Qdrant's REST API over qdrant-client's local mode.

No Qdrant server binary can be installed where the suite runs, so tests that need a server
shared by several processes (gunicorn workers) start this one instead:

    python -m tests.qdrant_standin [--port N]    # prints "listening on PORT", then serves

It answers the subset of the REST API that wickson_batch/vectors/server.py's qdrant-client
calls use (collections: list, exists, get, create, delete, payload index; points: upsert,
delete, count, query, scroll), with the same request and response bodies, by handing each
request to an in-memory `QdrantClient(":memory:")` under one lock. Only for tests: local mode
is slow above some 20k points and keeps nothing on disk.

What only the stand-in has, for tests that run it in their own process (`running()`): the
log of every request it received (`engine.requests`: method, path, query, body), a delay
before each answer (`engine.delay_seconds`), and an update status to answer in place of
`completed` (`engine.update_status`). It keeps and reports a collection's shard number,
replication and write consistency factors (1 each unless given, as a single Qdrant node
does) but acts on none of them, nor on `ordering`: it has one replica of one shard. It
serves no gRPC.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel
from qdrant_client import QdrantClient, models

VERSION = "1.20.0"  # what GET / reports: the client checks it against its own
# Collection parameters a single Qdrant node reports when the creator gave none.
CLUSTER_DEFAULTS = {"shard_number": 1, "replication_factor": 1, "write_consistency_factor": 1}


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


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


class StandIn:
    """The local-mode engine behind the HTTP routes; one request at a time."""

    def __init__(self) -> None:
        self.client = QdrantClient(location=":memory:")
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.delay_seconds = 0.0
        self.update_status: str | None = None
        self.cluster: dict[str, dict[str, int]] = {}

    def received(self, method: str, path: str | None = None) -> list[Received]:
        """Return the requests received with this method (and path), oldest first."""
        with self.lock:
            return [r for r in self.requests if r.method == method and path in (None, r.path)]

    def _update(self, result: models.UpdateResult) -> models.UpdateResult:
        if self.update_status is None:
            return result
        return result.model_copy(update={"status": models.UpdateStatus(self.update_status)})

    def _known(self, name: str) -> None:
        if not self.client.collection_exists(name):
            raise NotFound(f"Not found: Collection `{name}` doesn't exist!")

    def list_collections(self, _: str, body: Any) -> Any:
        return self.client.get_collections()

    def exists(self, name: str, body: Any) -> Any:
        return {"exists": self.client.collection_exists(name)}

    def get(self, name: str, body: Any) -> Any:
        self._known(name)
        info = self.client.get_collection(name)
        params = info.config.params.model_copy(update=self.cluster.get(name, CLUSTER_DEFAULTS))
        return info.model_copy(update={"config": info.config.model_copy(update={"params": params})})

    def create(self, name: str, body: Any) -> Any:
        if self.client.collection_exists(name):
            raise Conflict(f"Wrong input: Collection `{name}` already exists!")
        request = models.CreateCollection.model_validate(body)
        given = {key: getattr(request, key) for key in CLUSTER_DEFAULTS}
        self.cluster[name] = {
            key: default if given[key] is None else given[key]
            for key, default in CLUSTER_DEFAULTS.items()
        }
        return self.client.create_collection(name, vectors_config=request.vectors)

    def drop(self, name: str, body: Any) -> Any:
        self.cluster.pop(name, None)
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
        return self._update(self.client.upsert(name, points=request.points, wait=True))

    def delete(self, name: str, body: Any) -> Any:
        self._known(name)
        selector: models.PointIdsList | models.FilterSelector
        if "points" in body:
            selector = models.PointIdsList.model_validate(body)
        else:
            selector = models.FilterSelector.model_validate(body)
        return self._update(self.client.delete(name, points_selector=selector, wait=True))

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
        url = urlsplit(self.path)
        path = url.path
        try:
            recorded: Any = json.loads(raw) if raw else None
        except ValueError:
            recorded = raw.decode(errors="replace")
        with self.engine.lock:
            self.engine.requests.append(
                Received(self.command, path, dict(parse_qsl(url.query)), recorded)
            )
        if self.command == "GET" and path == "/":
            self._send(200, {"title": "qdrant stand-in for tests", "version": VERSION})
            return
        if self.engine.delay_seconds:
            time.sleep(self.engine.delay_seconds)
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
    engine: StandIn

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client went away: fine
            super().handle_error(request, client_address)


def serve(port: int = 0) -> StandInServer:
    """Return a server bound to 127.0.0.1:`port` (0: any free port), not yet serving."""
    engine = StandIn()
    handler = type("BoundHandler", (Handler,), {"engine": engine})
    server = StandInServer(("127.0.0.1", port), handler)
    server.engine = engine
    return server


@contextmanager
def running() -> Iterator[StandInServer]:
    """Serve on a free port of 127.0.0.1 from a thread of this process while the block runs."""
    server = serve()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


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
