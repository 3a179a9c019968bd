"""`wickson-batch delete` as a subprocess against the real server under a tight per-key limit.

The key's limit is "3 per 4 seconds" rather than "a few requests a minute": the limiter's
mechanics are the same (a fixed window, 429 with Retry-After until it ends), but 1,000 ids in
ten batches under 3/minute would make one test take three minutes. (The README's example runs
the same under "5/minute".)
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.gunicorn import BIN, ROOT, Server, server

__all__ = ["server"]  # the fixture used below

LIMIT = "3 per 4 seconds"
WINDOW_SECONDS = 4.0


def prepare(server: Server, tmp_path: Path, count: int) -> tuple[str, list[str]]:
    """Create a rate-limited key and seed `count` media (2 hd + 1 ld vectors each)."""
    key = server.cli("keys", "create", "--owner", "acme", "--rate-limit", LIMIT)
    assert key.returncode == 0, key.stderr
    seeded = server.cli("seed", "--owner", "acme", "--count", str(count), "--hd-per-media", "2")
    assert seeded.returncode == 0, seeded.stderr
    server.log_path = tmp_path / "server.log"
    server.env["LOG_LEVEL"] = "INFO"
    return key.stdout.strip(), seeded.stdout.split()


def delete_command(server: Server, *args: str) -> list[str]:
    return [str(BIN / "wickson-batch"), "delete", "--url", server.url, *args]


def command_env(server: Server, secret: str) -> dict[str, str]:
    """The key goes through the environment, as a partner's script would pass it."""
    return {**server.env, "WICKSON_API_KEY": secret}


def report_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def outcomes(path: Path) -> list[dict[str, Any]]:
    return [line for line in report_lines(path) if "media_id" in line]


def unread_bytes(port: int) -> int:
    """Bytes sent to `port` over established connections that its server has not read."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()  # sl, local, remote, state, tx_queue:rx_queue, ...
            local_port, state = int(fields[1].rsplit(":", 1)[1], 16), fields[3]
            if local_port == port and state == "01":  # ESTABLISHED
                total += int(fields[4].split(":")[1], 16)
    return total


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def batch_statuses(log_path: Path) -> list[int]:
    """The status of every batch request in the server's JSON access log."""
    statuses = []
    text = log_path.read_text()
    for line in text[: text.rfind("\n") + 1].splitlines():  # complete lines only
        if not line.startswith("{"):
            continue  # gunicorn's own start and stop lines
        entry = json.loads(line)
        if entry.get("event") == "http.request" and entry.get("path") == "/v1/media/batch":
            statuses.append(int(entry["status"]))
    return statuses


def query(tmp_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(tmp_path / "var" / "wickson.db", timeout=10)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def assert_stores_empty(server: Server) -> None:
    check = server.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "live media: 0, pending media: 0" in check.stdout
    assert "points: hd 0, ld 0" in check.stdout


def test_delete_command_waits_out_the_rate_limit_and_counts_exactly(
    server: Server, tmp_path: Path
) -> None:
    secret, ids = prepare(server, tmp_path, 1000)
    unknown = ["vec-never-existed", "vec-also-missing"]
    ids_file = tmp_path / "ids.txt"
    # Blank lines and a repeated id, as exported files have them.
    ids_file.write_text("\n".join(ids[:500]) + "\n\n" + "\n".join(ids[500:] + unknown + ids[:3]))
    report = tmp_path / "report.jsonl"
    server.start()

    done = subprocess.run(
        [
            *delete_command(server),
            "--ids-file",
            str(ids_file),
            "--reason",
            "partner cleanup",
            "--report",
            str(report),
        ],
        env=command_env(server, secret),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1, done.stderr  # two ids failed
    summary = done.stdout.splitlines()
    assert summary[0] == "deleted 1000, failed 2, vectors hd 2000 ld 1000, skipped 0"
    # Retries may happen on a loaded machine (a timeout, say); they change no count.
    match = re.fullmatch(
        r"batches 11 \(replayed 0\), rate-limit waits (\d+), retries (\d+), waited [\d.]+ s",
        summary[1],
    )
    assert match, summary[1] + done.stderr
    waits = int(match.group(1))
    assert waits >= 1  # 11 requests at 3 per window cannot all pass
    assert "failed: NOT_FOUND 2" in done.stderr
    lines = outcomes(report)
    assert len(lines) == 1002
    assert Counter(line["media_id"] for line in lines).most_common(1)[0][1] == 1
    assert [line["media_id"] for line in lines if line["status"] == "deleted"] == ids
    assert [line for line in lines if line["status"] == "failed"] == [
        {"media_id": m, "status": "failed", "reason": "NOT_FOUND", "operation_id": op}
        for m, op in zip(unknown, [lines[-1]["operation_id"]] * 2, strict=True)
    ]
    assert server.stop() == 0

    assert server.log_path is not None
    statuses = batch_statuses(server.log_path)
    assert Counter(statuses)[429] == waits  # each 429 waited out, then the batch resent
    assert Counter(statuses)[200] >= 11  # more only if a retry got a replay
    assert query(tmp_path, "SELECT reason, count(*), sum(deleted) FROM operations") == [
        ("partner cleanup", 11, 1000)
    ]
    assert_stores_empty(server)


def test_an_interrupted_run_resumes_without_deleting_twice(server: Server, tmp_path: Path) -> None:
    """Kill the command while a batch is in flight; --resume replays that batch's answer.

    The server is paused (SIGSTOP) so that the command's next batch is surely on the wire
    when the command is killed; resumed, the server deletes those ids for a client that is
    gone. Resuming must report them deleted, by that operation, not NOT_FOUND.
    """
    secret, ids = prepare(server, tmp_path, 1000)
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(ids))
    report = tmp_path / "report.jsonl"
    # Resumed, gunicorn closes keep-alive connections idle past --keep-alive (2 s) before it
    # reads what a stopped worker left unread on them: the batch would be dropped unread.
    server.env["GUNICORN_CMD_ARGS"] = "--keep-alive 60"
    server.start()
    assert server.process is not None
    server_group = server.process.pid
    first = subprocess.Popen(
        [*delete_command(server), "--ids-file", str(ids_file), "--report", str(report)],
        env=command_env(server, secret),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    # Stop the server while the command sits out a 429: the batch's next send then lands in
    # the stopped server's socket. (Stopped at another moment, the server can hold a request
    # it has read, or a 429 it has not sent, and a killed client never gets it deleted.)
    assert server.log_path is not None
    log = server.log_path
    wait_for(
        lambda: (
            len(outcomes(report)) >= 200
            and batch_statuses(log)[-1:] == [429]
            and report_lines(report)[-1]["status"] == "sending"
        )
    )
    time.sleep(0.2)  # the 429 reaches the command, which waits its Retry-After (1 s or more)
    os.killpg(server_group, signal.SIGSTOP)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        wait_for(lambda: unread_bytes(port) > 0, timeout=WINDOW_SECONDS + 10)
        time.sleep(WINDOW_SECONDS + 0.5)  # the window that refused it is over on resuming
        first.kill()
        first.wait()
    finally:
        os.killpg(server_group, signal.SIGCONT)
    in_doubt = report_lines(report)[-1]["batch"]["media_ids"]
    done_before = len(outcomes(report))
    placeholders = ",".join("?" * len(in_doubt))
    # The server finishes the batch for the dead client: those ids are gone, unreported.
    wait_for(
        lambda: (
            query(tmp_path, f"SELECT count(*) FROM media WHERE id IN ({placeholders})", *in_doubt)
            == [(0,)]
        )
    )
    assert done_before < 1000
    assert not {line["media_id"] for line in outcomes(report)} & set(in_doubt)

    resumed = subprocess.run(
        [
            *delete_command(server),
            "--ids-file",
            str(ids_file),
            "--report",
            str(report),
            "--resume",
        ],
        env=command_env(server, secret),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resending 1 batch(es) the last run left in doubt" in resumed.stderr
    left = 1000 - done_before
    summary = resumed.stdout.splitlines()
    assert summary[0] == (
        f"deleted {left}, failed 0, vectors hd {2 * left} ld {left}, skipped {done_before}"
    )
    assert summary[1].startswith(f"batches {left // 100} (replayed 1),")
    lines = outcomes(report)
    assert sorted(line["media_id"] for line in lines) == sorted(ids)  # each id exactly once
    assert {line["status"] for line in lines} == {"deleted"}
    replayed_ops = {line["operation_id"] for line in lines if line["media_id"] in in_doubt}
    assert len(replayed_ops) == 1
    operations = {line["operation_id"] for line in lines}
    assert server.stop() == 0

    # One operation per batch, the replayed one included once: nothing was deleted twice.
    assert query(tmp_path, "SELECT count(*), sum(deleted) FROM operations") == [
        (len(operations), 1000)
    ]
    assert_stores_empty(server)
