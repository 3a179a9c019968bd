"""Redis (the rate limits' storage) hung, then stopped, under load: limits from memory, no 500.

The test runs its own redis-server on a free port of 127.0.0.1, so that it can freeze it
(SIGSTOP: it accepts connections and never answers), stop it and start it again while
threads send batches and reads to a real gunicorn.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests import servers
from tests.live_server import Server, free_port, local_url, server_env

pytestmark = pytest.mark.slow

BATCH = 20
SLOWEST_SECONDS = 2.0  # the storage timeout is 0.5 s: one wait, plus a margin
TINY_LIMIT = "3/minute"


class RedisProcess:
    """A redis-server of the test's own, without persistence."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def freeze(self, frozen: bool) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if binary is None:
        reason = "redis-server not installed (scripts/test-servers install)"
        if servers.in_ci():
            pytest.fail(f"{reason} (CI=true: a missing server is a failure)", pytrace=False)
        pytest.skip(reason)
    running = RedisProcess(binary, tmp_path)
    running.start()
    yield running
    if running.process is not None:
        running.freeze(False)
        running.stop()


@dataclass
class Answers:
    """Every answer the clients got, by phase."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    phase: str = "up"
    seen: list[tuple[str, str, int, float]] = field(default_factory=list)  # kind, phase, ...
    acknowledged: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    readiness: list[tuple[str, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.seen.append((kind, self.phase, status, seconds))


def timed(
    server: Server, method: str, path: str, payload: object = None, key: str | None = None
) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    status, answer, _ = server.request(method, path, payload, key)
    return status, answer, time.monotonic() - started


def send_batches(server: Server, key: str, ids: list[str], answers: Answers) -> None:
    for start in range(0, len(ids), BATCH):
        if answers.stop.is_set():
            return
        batch = ids[start : start + BATCH]
        status, answer, seconds = timed(
            server, "POST", "/v1/media/batch/delete", {"media_ids": batch}, key
        )
        answers.record("batch", status, seconds)
        with answers.lock:
            if status == 200:
                data = answer["data"]
                assert isinstance(data, dict)
                answers.acknowledged.update(data["deleted"]["media_ids"])
            else:
                answers.refused.update(batch)
        time.sleep(0.05)


def send_reads(server: Server, key: str, ids: list[str], answers: Answers) -> None:
    n = 0
    while not answers.stop.is_set():
        status, _, seconds = timed(server, "GET", f"/v1/media/{ids[n % len(ids)]}", key=key)
        answers.record("read", status, seconds)
        n += 1
        time.sleep(0.02)


def poll_readiness(server: Server, answers: Answers) -> None:
    while not answers.stop.is_set():
        status, answer, seconds = timed(server, "GET", "/readyz")
        answers.record("readyz", status, seconds)
        data = answer.get("data") or answer.get("error", {})
        assert isinstance(data, dict)
        checks = data.get("checks") or data.get("details", {}).get("checks", {})
        with answers.lock:
            answers.readiness.append((answers.phase, status, checks.get("rate_limits", "")))
        time.sleep(0.1)


def test_redis_hung_then_stopped_limits_from_memory_and_returns(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    env = server_env(
        tmp_path,
        RATELIMIT_STORAGE_URI=own_redis.url,
        RATE_LIMIT_DEFAULT="100000/minute",
        WEB_CONCURRENCY="2",
        RECONCILER_ENABLED="false",
    )
    server = Server(local_url(env), env, log_path=tmp_path / "server.log")
    key = server.cli("keys", "create", "--owner", "acme").stdout.strip()
    tiny = server.cli("keys", "create", "--owner", "acme", "--rate-limit", TINY_LIMIT)
    tiny_key = tiny.stdout.strip()
    ids = server.cli("seed", "--owner", "acme", "--count", "1200").stdout.split()
    assert len(ids) == 1200
    server.start()
    try:
        answers = Answers()
        threads = [
            threading.Thread(target=send_batches, args=(server, key, ids[n::3], answers))
            for n in range(3)
        ]
        threads += [
            threading.Thread(target=send_reads, args=(server, key, ids, answers)),
            threading.Thread(target=poll_readiness, args=(server, answers)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.0)

        with answers.lock:
            answers.phase = "hung"
        own_redis.freeze(True)  # accepts connections, answers nothing
        time.sleep(2.5)
        tiny_during_hang = [server.request("GET", f"/v1/media/{ids[0]}", key=tiny_key)[0]]
        with answers.lock:
            answers.phase = "stopped"
        own_redis.freeze(False)
        own_redis.stop()
        # Per worker in memory: 3 a minute each, so 12 requests cannot all pass.
        tiny_during_stop = []
        for _ in range(12):
            status, _, seconds = timed(server, "GET", f"/v1/media/{ids[1]}", key=tiny_key)
            answers.record("tiny", status, seconds)
            tiny_during_stop.append(status)
        time.sleep(2.0)

        own_redis.start()  # empty: no persistence
        with answers.lock:
            answers.phase = "back"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with answers.lock:
                recent = [state for phase, _, state in answers.readiness[-10:] if phase == "back"]
            if len(recent) == 10 and set(recent) == {"ok"}:
                break
            time.sleep(0.2)
        # Back on Redis: the tiny key's count shows up there again.
        for _ in range(4):
            server.request("GET", f"/v1/media/{ids[2]}", key=tiny_key)
        answers.stop.set()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as scraped:
            metrics_text = scraped.read().decode()
    finally:
        server.stop()

    statuses = {(kind, status) for kind, _, status, _ in answers.seen}
    assert all(status != 500 for _, status in statuses), sorted(statuses)
    assert {status for kind, _, status, _ in answers.seen if kind != "tiny"} <= {200, 404}
    slowest = max(answers.seen, key=lambda answer: answer[3])
    assert slowest[3] < SLOWEST_SECONDS, slowest
    # Limits held from memory meanwhile.
    passed = [status for status in tiny_during_stop if status != 429]  # 404: deleted by then
    assert 429 in tiny_during_stop and passed and set(passed) <= {200, 404}, tiny_during_stop
    assert tiny_during_hang[0] in (200, 404, 429)
    # Every acknowledged deletion is gone, every refused batch intact (checked after a restart).
    server.start()
    try:
        for media_id in sorted(answers.acknowledged)[:200]:
            assert server.request("GET", f"/v1/media/{media_id}", key=key)[0] == 404
        for media_id in sorted(answers.refused - answers.acknowledged)[:50]:
            assert server.request("GET", f"/v1/media/{media_id}", key=key)[0] == 200
    finally:
        server.stop()
    assert answers.acknowledged
    # Readiness: 200 throughout; degraded while Redis was away, ok once it was back.
    assert {status for _, status, _ in answers.readiness} == {200}
    states = {(phase, state) for phase, _, state in answers.readiness}
    assert ("up", "ok") in states and ("back", "ok") in states
    assert ("stopped", "degraded") in states or ("hung", "degraded") in states
    assert answers.readiness[-1][2] == "ok"
    # Redis used again: the tiny key's bucket is in the restarted (empty) Redis.
    with own_redis.client() as client:
        assert any(b"key:" in k for k in client.keys("*"))
    # Logged at most once a minute per worker (the test is shorter than a minute), counted.
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    unavailable = [line for line in lines if line.get("event") == "ratelimit.storage_unavailable"]
    per_worker = [line["pid"] for line in unavailable]
    assert unavailable and all(per_worker.count(pid) == 1 for pid in per_worker), unavailable
    assert not [line for line in lines if line.get("level") == "error"]
    errors_total = [
        float(line.split()[-1])
        for line in metrics_text.splitlines()
        if line.startswith("wickson_ratelimit_storage_errors_total")
    ]
    assert errors_total and errors_total[0] >= len(unavailable), metrics_text
