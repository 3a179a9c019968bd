"""WicksonClient's deletion jobs and `wickson-batch jobs` against a real gunicorn.

The runner is throttled (JOB_MAX_MEDIA_PER_SECOND) and chunked small, so that a job of a
few thousand media runs for a few seconds and its progress can be watched poll by poll.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.live_server import BIN, ROOT, Server
from wickson_batch.client import ApiError, DeletionJob, WicksonClient

pytestmark = pytest.mark.slow


def runner_env(server: Server, *, chunk: int, per_second: int) -> None:
    server.env.update(
        JOB_CHUNK_SIZE=str(chunk),
        JOB_MAX_MEDIA_PER_SECOND=str(per_second),
        JOB_POLL_INTERVAL_SECONDS="0.1",
    )


def prepare(server: Server, count: int, owner: str = "acme") -> tuple[str, list[str]]:
    """A key of `owner` (every scope) and `count` seeded media (2 hd + 1 ld vectors each)."""
    key = server.cli("keys", "create", "--owner", owner)
    assert key.returncode == 0, key.stderr
    ids: list[str] = []
    if count:
        seeded = server.cli("seed", "--owner", owner, "--count", str(count), "--hd-per-media", "2")
        assert seeded.returncode == 0, seeded.stderr
        ids = seeded.stdout.split()
    return key.stdout.strip(), ids


def media_status(server: Server, key: str, media_id: str) -> int:
    return server.request("GET", f"/v1/media/{media_id}", key=key)[0]


def check_counts(server: Server) -> str:
    """`wickson-batch check` on the stopped server's stores."""
    done = server.cli("check")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def consistent(job: DeletionJob) -> bool:
    p = job.progress
    if p.total is None:
        return p.remaining is None and p.deleted == p.failed == 0
    return p.deleted + p.failed + (p.remaining or 0) == p.total


def test_a_job_runs_to_done_with_exact_counts_at_every_poll(server: Server) -> None:
    runner_env(server, chunk=100, per_second=1000)
    key, ids = prepare(server, 2000)
    server.start()
    wanted = [*ids[:1500], "vec-never-existed"]

    with WicksonClient(server.url, key) as client:
        job = client.start_deletion_job(wanted, reason="campaign ended")
        assert (job.status, job.reason, job.progress.total) == ("queued", "campaign ended", None)
        polls: list[DeletionJob] = []
        final = client.wait_for_job(job.job_id, on_progress=polls.append, poll_interval=0.2)
        outcomes = list(client.job_items(job.job_id, page_size=100))
        failed = list(client.job_items(job.job_id, status="failed"))
        listed = [j.job_id for j in client.list_deletion_jobs()]

    assert final.status == "done"
    p = final.progress
    assert (p.total, p.deleted, p.failed, p.remaining) == (1501, 1500, 1, 0)
    assert (p.hd_vectors, p.ld_vectors) == (3000, 1500)
    assert final.finished_at is not None and final.finished_at >= final.created_at
    assert all(consistent(poll) for poll in polls), [poll.progress for poll in polls]
    done = [poll.progress.done for poll in polls]
    assert done == sorted(done)
    # Throttled to 1000 media/s, 1501 take 1.5 s at least: polls every 0.2 s see it midway.
    assert any(poll.status == "processing" and 0 < poll.progress.done < 1501 for poll in polls)
    assert sorted(o.media_id for o in outcomes) == sorted(wanted)
    assert [(o.media_id, o.status, o.reason) for o in failed] == [
        ("vec-never-existed", "failed", "NOT_FOUND")
    ]
    assert len({o.operation_id for o in outcomes}) == 16  # chunks of 100
    assert listed == [job.job_id]
    assert media_status(server, key, ids[0]) == 404
    assert media_status(server, key, ids[1999]) == 200
    server.stop()
    assert "live media: 500, pending media: 0" in check_counts(server)


def test_a_start_repeated_with_its_key_answers_the_same_job(server: Server) -> None:
    runner_env(server, chunk=100, per_second=1000)
    key, ids = prepare(server, 10)
    server.start()

    with WicksonClient(server.url, key) as client:
        first = client.start_deletion_job(ids, idempotency_key="cleanup-2026-03-09")
        again = client.start_deletion_job(ids, idempotency_key="cleanup-2026-03-09")
        with pytest.raises(ApiError) as reused:
            client.start_deletion_job(ids[:5], idempotency_key="cleanup-2026-03-09")
        final = client.wait_for_job(first.job_id, poll_interval=0.2)
        listed = list(client.list_deletion_jobs())

    assert again.job_id == first.job_id
    assert (first.replayed, again.replayed) == (False, True)
    assert (reused.value.status, reused.value.code) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert [j.job_id for j in listed] == [first.job_id]
    assert (final.progress.deleted, final.progress.failed) == (10, 0)


def test_a_dry_run_counts_and_stores_nothing(server: Server) -> None:
    key, ids = prepare(server, 30)
    server.start()

    with WicksonClient(server.url, key) as client:
        preview = client.start_deletion_job([*ids, "vec-never-existed"], dry_run=True)
        listed = list(client.list_deletion_jobs())

    assert (preview.total, preview.hd_vectors, preview.ld_vectors) == (30, 60, 30)
    assert len(preview.sample) == 20 and set(preview.sample) <= set(ids)
    assert listed == []
    assert media_status(server, key, ids[0]) == 200


def test_a_cancelled_job_keeps_what_it_deleted_and_leaves_the_rest_live(server: Server) -> None:
    runner_env(server, chunk=50, per_second=200)
    key, ids = prepare(server, 2000)
    server.start()

    with WicksonClient(server.url, key) as client:
        job = client.start_deletion_job(ids)
        deadline = time.monotonic() + 60
        while client.get_deletion_job(job.job_id).progress.done == 0:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        client.cancel_deletion_job(job.job_id)
        final = client.wait_for_job(job.job_id, poll_interval=0.2)
        deleted = {o.media_id for o in client.job_items(job.job_id, status="deleted")}
        with pytest.raises(ApiError) as again:
            client.cancel_deletion_job(job.job_id)

    p = final.progress
    assert final.status == "cancelled"
    assert p.total == 2000 and 0 < p.deleted < 2000 and p.failed == 0
    assert p.remaining == 2000 - p.deleted
    assert len(deleted) == p.deleted
    assert (again.value.status, again.value.code) == (409, "JOB_FINISHED")
    kept = [i for i in ids if i not in deleted]
    assert all(media_status(server, key, i) == 404 for i in sorted(deleted)[:20])
    assert all(media_status(server, key, i) == 200 for i in kept[:20] + kept[-20:])
    server.stop()
    assert f"live media: {len(kept)}, pending media: 0" in check_counts(server)


def test_another_owners_job_is_not_found(server: Server) -> None:
    key, ids = prepare(server, 3)
    other, _ = prepare(server, 0, owner="globex")
    server.start()

    with WicksonClient(server.url, key) as client:
        job = client.start_deletion_job(ids)
    with WicksonClient(server.url, other) as stranger:
        with pytest.raises(ApiError) as seen:
            stranger.get_deletion_job(job.job_id)
        with pytest.raises(ApiError) as cancelled:
            stranger.cancel_deletion_job(job.job_id)
        with pytest.raises(ApiError) as paged:
            list(stranger.job_items(job.job_id))
        assert list(stranger.list_deletion_jobs()) == []

    for raised in (seen, cancelled, paged):
        assert (raised.value.status, raised.value.code) == (404, "JOB_NOT_FOUND")


# --- the command --------------------------------------------------------------------------


def jobs_command(server: Server, *args: str) -> list[str]:
    """`wickson-batch jobs SUBCOMMAND --url URL ARGS...`."""
    return [str(BIN / "wickson-batch"), "jobs", *args[:1], "--url", server.url, *args[1:]]


def run_jobs(server: Server, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `wickson-batch jobs ...` with the key in the environment, output captured."""
    return subprocess.run(
        jobs_command(server, *args),
        env={**server.env, "WICKSON_API_KEY": key},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal of 100 columns; return (status, stdout, screen)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    screen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command closed the terminal
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run(
            argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, timeout=120
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return done.returncode, done.stdout.decode(), b"".join(screen).decode()


def test_start_all_wait_draws_a_progress_bar_with_rate_and_eta(server: Server) -> None:
    runner_env(server, chunk=100, per_second=500)
    key, _ = prepare(server, 2000)
    server.start()
    env = {**server.env, "WICKSON_API_KEY": key}

    status, stdout, screen = run_on_a_terminal(
        jobs_command(server, "start", "--all", "--reason", "tenant left", "--wait",
                     "--poll-interval", "0.2"),
        env,
    )  # fmt: skip

    assert status == 0, screen
    frames = [f.strip() for f in screen.replace("\n", "\r").split("\r") if f.strip()]
    counting = [f for f in frames if f.startswith("processing: ") and "/2000 [" in f]
    assert counting, frames
    # Mid-way frames carry an ETA (elapsed<remaining) and a rate in media/s.
    assert any("<00:0" in f and " media/s" in f and "?" not in f for f in counting), counting
    assert any(f.startswith("done: 100%|") and "2000/2000" in f for f in frames), frames
    assert stdout.startswith("job job_")
    assert " done: deleted 2000, failed 0 of 2000; vectors hd 4000 ld 2000; " in stdout
    server.stop()
    assert "live media: 0, pending media: 0" in check_counts(server)


def create_media(server: Server, key: str, metadata: dict[str, object]) -> str:
    body = {"metadata": metadata, "hd_vectors": [[0.5] * 8], "ld_vectors": [[0.5] * 4]}
    status, answer, _ = server.request("POST", "/v1/media", body, key=key)
    assert status == 201, answer
    return str(answer["data"]["media_id"])


def test_start_by_filter_without_a_terminal_prints_the_summary_and_items(
    server: Server, tmp_path: Path
) -> None:
    runner_env(server, chunk=10, per_second=1000)
    # The fixture's grace of 0 lets the reconciler remove a media still being created.
    server.env["RECONCILE_GRACE_SECONDS"] = "60"
    key, others = prepare(server, 20)
    server.start()
    summer = [create_media(server, key, {"campaign": "summer", "year": 2025}) for _ in range(12)]
    winter = [create_media(server, key, {"campaign": "winter", "year": 2025}) for _ in range(5)]
    old_summer = create_media(server, key, {"campaign": "summer", "year": "2025"})  # a string
    exclude = tmp_path / "keep.txt"
    exclude.write_text("\n".join(summer[:3]) + "\n")

    done = run_jobs(
        server, key, "start", "--filter", "metadata.campaign=summer",
        "--filter", "metadata.year=2025", "--exclude-file", str(exclude),
        "--wait", "--poll-interval", "0.2",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert " done: deleted 9, failed 0 of 9; vectors hd 9 ld 9; " in done.stdout
    job_id = done.stdout.split()[1]
    assert f"started job {job_id}\n" in done.stderr
    items = run_jobs(server, key, "items", "--deleted", job_id)
    assert items.returncode == 0, items.stderr
    assert sorted(line.split('"')[3] for line in items.stdout.splitlines()) == sorted(summer[3:])
    kept = summer[:3] + winter + [old_summer] + others[:2]
    assert all(media_status(server, key, i) == 200 for i in kept)
    status = run_jobs(server, key, "status", job_id)
    assert (status.returncode, status.stdout) == (0, done.stdout)


def test_a_job_cancelled_from_the_command_exits_4_when_followed(server: Server) -> None:
    runner_env(server, chunk=50, per_second=200)
    key, _ = prepare(server, 2000)
    server.start()

    started = run_jobs(server, key, "start", "--all")
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    with WicksonClient(server.url, key) as client:
        deadline = time.monotonic() + 60
        while client.get_deletion_job(job_id).progress.done == 0:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
    cancelled = run_jobs(server, key, "cancel", job_id)
    followed = run_jobs(server, key, "status", "--wait", "--poll-interval", "0.2", job_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert followed.returncode == 4, followed.stderr
    assert f"job {job_id} cancelled: deleted " in followed.stdout
    assert " left live; " in followed.stdout
