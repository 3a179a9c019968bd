"""A malformed chunked body over a real gunicorn: 400 INVALID_REQUEST, no traceback logged.

Flask's test client cannot send one: this writes the bytes on a raw socket.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.live_server import Server, local_url, server_env

pytestmark = pytest.mark.slow

CUT_SHORT = "cut-short"


def exchange(port: int, head: bytes, body: bytes, cut_short: bool) -> tuple[int, dict[str, object]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        if cut_short:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"zz\r\n{}\r\n0\r\n\r\n", id="bad-chunk-size"),
        pytest.param(b'5\r\n{"a":1}\r\n0\r\n\r\n', id="missing-terminator"),
        pytest.param(b'40\r\n{"media_ids"', id=CUT_SHORT),
    ],
)
def test_a_malformed_chunked_body_is_400_and_logged_without_a_traceback(
    tmp_path: Path, chunks: bytes, request: pytest.FixtureRequest
) -> None:
    env = server_env(tmp_path, LOG_LEVEL="INFO")
    server = Server(local_url(env), env, log_path=tmp_path / "server.log")
    secret = server.cli("keys", "create", "--owner", "acme").stdout.strip()
    media_id = server.cli("seed", "--owner", "acme", "--count", "1").stdout.split()[0]
    server.start()
    try:
        head = (
            "DELETE /v1/media/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nX-Api-Key: {secret}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        cut_short = request.node.callspec.id == CUT_SHORT

        status, payload = exchange(int(env["PORT"]), head, chunks, cut_short)

        assert status == 400
        assert payload["success"] is False
        assert payload["message"] == (
            "Malformed body: the chunked encoding is invalid or cut short"
        )
        error = payload["error"]
        assert isinstance(error, dict) and error["code"] == "INVALID_REQUEST"
        assert server.request("GET", f"/v1/media/{media_id}", key=secret)[0] == 200
    finally:
        assert server.stop() == 0
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
    assert not [line for line in lines if "exception" in line or line["level"] == "error"]
    access = [line for line in lines if line["event"] == "http.request" and line["status"] == 400]
    assert len(access) == 1
