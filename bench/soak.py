"""Soak a live server on the embedded default under the mixed load of issue 18.

Usage: .venv/bin/python bench/soak.py [--minutes M] [--seed N] [--small] [--out F]
       (`make soak`, `SOAK_MINUTES=5 make soak`)

It seeds a temporary DATA_DIR (`wickson-batch seed`), serves it with gunicorn as `make run`
does, and drives it from 8 client threads (creates, 100-id deletions, searches, reads, dry
runs) for a bounded time. Every report interval (a minute) it prints the requests by
status, p50/p99 per route, the worker's resident memory split into anonymous and
file-backed (`/proc/<pid>/smaps_rollup`), its file descriptors and threads, and the bytes
on disk of each store. At the end it compares its own counts with `/metrics`, stops the
server, runs `wickson-batch check`, and exits 1 unless there was no 5xx, the counts match,
the stores are consistent and (from three reports on) the anonymous memory at the end is
within 1.5x of its value at the first report.

From the server's log it also takes the vacuum steps (`vacuum.step`) and reports a 100-id
deletion's p99 while a step ran against its p50 while none did.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OWNER = "soak"
BATCH = 100
ANON_GROWTH_MAX = 1.5
MiB = 1024 * 1024

# The mix, by weight: per hundred requests about one 100-id deletion, as in the soak
# (67,096 media deleted in 72,522 requests) with creates a quarter of the load.
ACTIONS: dict[str, int] = {"create": 24, "delete": 1, "search": 25, "read": 36, "dry_run": 14}
# Each action's route as /metrics labels it (method, route template).
ROUTES: dict[str, tuple[str, str]] = {
    "create": ("POST", "/v1/media"),
    "delete": ("DELETE", "/v1/media/batch"),
    "search": ("POST", "/v1/media/search"),
    "read": ("GET", "/v1/media/<media_id>"),
    "dry_run": ("POST", "/v1/media/batch/delete"),
}


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-quantile (0..1) of `values` by nearest rank (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------- the process


def worker_pid(master: int) -> int | None:
    """Return the pid of the gunicorn worker (the master's child), if there is one."""
    for task in Path(f"/proc/{master}/task").iterdir():
        children = (task / "children").read_text().split()
        if children:
            return int(children[0])
    return None


def memory(pid: int) -> dict[str, int]:
    """Return resident bytes of `pid`: total, anonymous and file-backed (smaps_rollup)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name.strip()] = int(parts[0]) * 1024
    rss = fields.get("Rss", 0)
    anon = fields.get("Anonymous", 0)
    return {"rss": rss, "anon": anon, "file": rss - anon - fields.get("Shmem", 0)}


def process_counts(pid: int) -> dict[str, int]:
    """Return the open file descriptors and threads of `pid`."""
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


def tree_bytes(path: Path, pattern: str | None = None, allocated: bool = True) -> int:
    """Return the bytes of the files under `path` (only paths containing `pattern`, if given).

    Allocated on disk by default (the engine's files are sparse), else their apparent size.
    """
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            full = os.path.join(folder, name)
            if pattern and pattern not in full:
                continue
            try:
                stat = os.stat(full)
            except OSError:  # a segment removed by a vacuum while we walk
                continue
            total += stat.st_blocks * 512 if allocated else stat.st_size
    return total


def store_bytes(data_dir: Path) -> dict[str, int]:
    """Return the bytes on disk of the vector store and SQLite, and the vector files' size."""
    db = data_dir / "wickson.db"
    wal = data_dir / "wickson.db-wal"
    return {
        "vectors": tree_bytes(data_dir / "vectors"),
        "vector_storage": tree_bytes(data_dir / "vectors", "vector_storage", allocated=False),
        "sqlite": db.stat().st_blocks * 512 if db.exists() else 0,
        "sqlite_wal": wal.stat().st_blocks * 512 if wal.exists() else 0,
    }


# ---------------------------------------------------------------------------- the load


@dataclass
class Sample:
    """One answered request."""

    action: str
    status: int
    started: float
    seconds: float


@dataclass
class Load:
    """The shared state of the client threads: live ids, samples, totals."""

    url: str
    key: str
    dims: tuple[int, int]
    live: list[str]
    rng: random.Random = field(default_factory=lambda: random.Random(18))
    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: list[Sample] = field(default_factory=list)
    media_deleted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def take(self, count: int) -> list[str]:
        """Remove and return up to `count` random live ids (about to be deleted)."""
        with self.lock:
            taken = []
            for _ in range(min(count, len(self.live))):
                index = self.rng.randrange(len(self.live))
                self.live[index], self.live[-1] = self.live[-1], self.live[index]
                taken.append(self.live.pop())
            return taken

    def pick(self, count: int) -> list[str]:
        """Return up to `count` random live ids, left in place."""
        with self.lock:
            return self.rng.sample(self.live, min(count, len(self.live)))

    def vector(self, space: str) -> list[float]:
        """Return a random vector of the space's size."""
        size = self.dims[0] if space == "hd" else self.dims[1]
        return [random.random() for _ in range(size)]


def _request(
    conn: http.client.HTTPConnection, key: str, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    headers = {"X-Api-Key": key}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    return response.status, json.loads(raw) if raw else {}


def _act(load: Load, conn: http.client.HTTPConnection, action: str) -> int | None:
    """Send one request of `action`; return its status, or None when there was nothing to do."""
    key = load.key
    if action == "create":
        body = {"hd_vectors": [load.vector("hd")], "ld_vectors": [load.vector("ld")]}
        status, answer = _request(conn, key, "POST", "/v1/media", body)
        if status == 201:
            with load.lock:
                load.live.append(answer["data"]["media_id"])
        return status
    if action == "delete":
        ids = load.take(BATCH)
        if not ids:
            return None
        status, answer = _request(conn, key, "DELETE", "/v1/media/batch", {"media_ids": ids})
        if status == 200:
            with load.lock:
                load.media_deleted += answer["data"]["deleted"]["count"]
        return status
    if action == "dry_run":
        ids = load.pick(BATCH)
        if not ids:
            return None
        path = "/v1/media/batch/delete?dry_run=true"
        return _request(conn, key, "POST", path, {"media_ids": ids})[0]
    if action == "search":
        query = {"vector": load.vector("hd"), "space": "hd", "limit": 10}
        return _request(conn, key, "POST", "/v1/media/search", query)[0]
    ids = load.pick(1)
    if not ids:
        return None
    return _request(conn, key, "GET", f"/v1/media/{ids[0]}")[0]


def client(load: Load, seed: int) -> None:
    """Send requests of the mix over one keep-alive connection until told to stop."""
    rng = random.Random(seed)
    actions, weights = list(ACTIONS), list(ACTIONS.values())
    host, port = load.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    while not load.stop.is_set():
        action = rng.choices(actions, weights)[0]
        started = time.time()
        clock = time.perf_counter()
        try:
            status = _act(load, conn, action)
        except (OSError, http.client.HTTPException, ValueError) as error:
            load.errors[f"{action}: {type(error).__name__}"] += 1
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            continue
        if status is None:
            continue
        with load.lock:
            load.samples.append(Sample(action, status, started, time.perf_counter() - clock))
    conn.close()


# ---------------------------------------------------------------------------- the server


@dataclass
class Soak:
    """A seeded store, its server and the options of the run."""

    data_dir: Path
    source: Path
    dims: tuple[int, int]
    extra_env: dict[str, str]
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DATA_DIR": str(self.data_dir),
            "DATABASE_URL": "",
            "QDRANT_URL": "",
            "HOST": "127.0.0.1",
            "PORT": str(self.port or 8000),
            "HD_DIM": str(self.dims[0]),
            "LD_DIM": str(self.dims[1]),
            "RATE_LIMIT_DEFAULT": "100000000/minute",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            **self.extra_env,
        }
        if self.source != ROOT:  # the code of another checkout (a "before" run)
            env["PYTHONPATH"] = str(self.source)
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / "wickson-batch"), *args],
            env=self.env,
            cwd=self.source,
            capture_output=True,
            text=True,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"wickson-batch {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done

    def start(self) -> float:
        """Start gunicorn; return the seconds until /readyz answered 200."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
                env=self.env,
                cwd=self.source,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        while time.perf_counter() - started < 120:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if self.get("/readyz")[0] == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
            self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def worker(self) -> int:
        assert self.process is not None
        pid = worker_pid(self.process.pid)
        if pid is None:
            raise RuntimeError("the gunicorn worker is gone")
        return pid


_SAMPLE = re.compile(r"^(\w+)\{(.*)\} ([0-9.e+-]+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Return the labelled samples of metric `name` in a Prometheus text scrape."""
    found = []
    for match in _SAMPLE.finditer(text):
        if match.group(1) == name:
            found.append((dict(_LABEL.findall(match.group(2))), float(match.group(3))))
    unlabelled = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    if unlabelled:
        found.append(({}, float(unlabelled.group(1))))
    return found


# ---------------------------------------------------------------------------- the report


def fmt_mib(value: int) -> str:
    return f"{value / MiB:,.1f} MiB"


def minute_report(
    index: int,
    window: list[Sample],
    total: Counter[int],
    proc: dict[str, int],
    disk: dict[str, int],
    live: int,
) -> str:
    """Return the lines printed at each report: the window's figures and the totals so far."""
    by_status = Counter(s.status for s in window)
    statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(by_status.items()))
    lines = [
        f"[report {index}] {len(window):,} requests ({statuses}); total {sum(total.values()):,}"
    ]
    per_route = []
    for action in ACTIONS:
        times = [s.seconds * 1000 for s in window if s.action == action]
        if times:
            p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
            per_route.append(f"{action} {p50:.0f}/{p99:.0f}")
    lines.append("  p50/p99 ms: " + ", ".join(per_route))
    lines.append(
        f"  rss {fmt_mib(proc['rss'])} (anonymous {fmt_mib(proc['anon'])}, file-backed "
        f"{fmt_mib(proc['file'])}); fds {proc['fds']}, threads {proc['threads']}"
    )
    lines.append(
        f"  on disk: vectors {fmt_mib(disk['vectors'])} (vector_storage files "
        f"{fmt_mib(disk['vector_storage'])} apparent), "
        f"sqlite {fmt_mib(disk['sqlite'])} + wal {fmt_mib(disk['sqlite_wal'])}; live media {live:,}"
    )
    return "\n".join(lines)


def vacuum_steps(log_path: Path) -> list[dict[str, Any]]:
    """Return the `vacuum.step` events of the server's log."""
    steps = []
    for line in log_path.read_text().splitlines():
        if '"vacuum.step"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "vacuum.step":
            steps.append(event)
    return steps


def latency_during_vacuum(samples: list[Sample], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Return 100-id deletions' p50 when no vacuum step ran, and p99 while one did."""
    windows = [(float(s["started"]), float(s["started"]) + float(s["seconds"])) for s in steps]
    idle: list[float] = []
    during: list[float] = []
    for sample in samples:
        if sample.action != "delete" or sample.status != 200:
            continue
        end = sample.started + sample.seconds
        overlaps = any(start < end and sample.started < stop for start, stop in windows)
        (during if overlaps else idle).append(sample.seconds * 1000)
    figures: dict[str, Any] = {
        "steps": len(steps),
        "step_seconds_max": round(max((float(s["seconds"]) for s in steps), default=0.0), 3),
        "idle_n": len(idle),
        "idle_p50_ms": round(percentile(idle, 0.5), 1),
        "during_n": len(during),
        "during_p99_ms": round(percentile(during, 0.99), 1),
    }
    if idle and during:
        figures["ratio"] = round(figures["during_p99_ms"] / figures["idle_p50_ms"], 2)
    return figures


def compare_with_metrics(load: Load, scrape: str) -> list[str]:
    """Return the differences between the client's counts and the server's /metrics."""
    problems = []
    requests = metric_samples(scrape, "wickson_http_requests_total")
    for action, (method, route) in ROUTES.items():
        mine = Counter(s.status for s in load.samples if s.action == action)
        theirs: Counter[int] = Counter()
        for labels, value in requests:
            if labels.get("method") == method and labels.get("route") == route:
                theirs[int(labels["status"])] += int(value)
        if mine != theirs:
            problems.append(f"{action}: client counted {dict(mine)}, /metrics {dict(theirs)}")
    deleted = metric_samples(scrape, "wickson_media_deleted_total")
    theirs_deleted = int(sum(value for _, value in deleted))
    if theirs_deleted != load.media_deleted:
        problems.append(
            f"media deleted: client counted {load.media_deleted}, /metrics {theirs_deleted}"
        )
    return problems


# ---------------------------------------------------------------------------- the run


@dataclass
class Options:
    minutes: float
    seed: int
    small: bool
    threads: int
    report_seconds: float
    source: Path
    server_env: dict[str, str]
    out: Path | None
    keep: bool


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_minutes = float(os.environ.get("SOAK_MINUTES") or 15)
    parser.add_argument("--minutes", type=float, default=default_minutes)
    parser.add_argument("--seed", type=int, default=None, help="media seeded (50,000; small 2,000)")
    parser.add_argument("--small", action="store_true", help="8 and 4 dimensions")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--report-seconds", type=float, default=60.0)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose server to run")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else (2_000 if args.small else 50_000)
    extra = dict(item.split("=", 1) for item in args.server_env)
    return Options(
        args.minutes,
        seed,
        args.small,
        args.threads,
        args.report_seconds,
        args.source.resolve(),
        extra,
        args.out,
        args.keep,
    )


def run(options: Options) -> int:
    """Seed, serve, load, report; return the exit status."""
    data_dir = Path(tempfile.mkdtemp(prefix="wickson-soak-"))
    dims = (8, 4) if options.small else (1024, 128)
    soak = Soak(data_dir, options.source, dims, options.server_env)
    print(
        f"soak: {options.minutes:g} min, {options.threads} threads, {options.seed:,} media seeded "
        f"({dims[0]}/{dims[1]} dims), data in {data_dir}",
        flush=True,
    )
    clock = time.perf_counter()
    live = soak.cli("seed", "--owner", OWNER, "--count", str(options.seed)).stdout.split()
    key = soak.cli("keys", "create", "--owner", OWNER).stdout.strip()
    print(f"seeded in {time.perf_counter() - clock:.1f} s", flush=True)
    figures: dict[str, Any] = {
        "options": {**vars(options), "source": str(options.source), "out": str(options.out)},
        "reports": [],
    }
    problems: list[str] = []
    try:
        figures["start_seconds"] = round(soak.start(), 2)
        load = Load(soak.url, key, dims, live)
        problems += drive(soak, load, options, figures)
        status, scrape = soak.get("/metrics")
        problems += compare_with_metrics(load, scrape) if status == 200 else ["no /metrics"]
        figures["vacuum_metrics"] = {
            name: metric_samples(scrape, name)
            for name in ("wickson_vacuum_runs_total", "wickson_vacuum_points_pending")
        }
    finally:
        soak.stop()
    figures["vacuum"] = latency_during_vacuum(load.samples, vacuum_steps(soak.log_path))
    check = soak.cli("check", check=False)
    figures["check"] = check.stdout.strip().splitlines()
    if check.returncode != 0:
        problems.append(f"check: {check.stdout.strip()} {check.stderr.strip()}")
    five_xx = sum(1 for s in load.samples if s.status >= 500)
    if five_xx:
        problems.append(f"{five_xx} answers were 5xx")
    if load.errors:
        problems.append(f"requests without an answer: {dict(load.errors)}")
    figures["problems"] = problems
    print(summary_text(figures, load), flush=True)
    if options.out:
        options.out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    if not options.keep:
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
    return 1 if problems else 0


def drive(soak: Soak, load: Load, options: Options, figures: dict[str, Any]) -> list[str]:
    """Run the client threads for the soak's time, reporting at each interval."""
    threads = [
        threading.Thread(target=client, args=(load, seed), daemon=True)
        for seed in range(options.threads)
    ]
    for thread in threads:
        thread.start()
    ends = time.perf_counter() + options.minutes * 60
    total: Counter[int] = Counter()
    seen = 0
    index = 0
    problems: list[str] = []
    while time.perf_counter() < ends:
        load.stop.wait(min(options.report_seconds, max(0.0, ends - time.perf_counter())))
        index += 1
        with load.lock:
            window = load.samples[seen:]
            seen = len(load.samples)
            live = len(load.live)
        total.update(s.status for s in window)
        pid = soak.worker()
        proc = {**memory(pid), **process_counts(pid)}
        disk = store_bytes(soak.data_dir)
        print(minute_report(index, window, total, proc, disk, live), flush=True)
        figures["reports"].append(
            {
                "elapsed_s": round(options.minutes * 60 - (ends - time.perf_counter())),
                "requests": dict(Counter(s.status for s in window)),
                "p50_p99_ms": {
                    a: [round(percentile(t, 0.5), 1), round(percentile(t, 0.99), 1)]
                    for a in ACTIONS
                    if (t := [s.seconds * 1000 for s in window if s.action == a])
                },
                **proc,
                **disk,
                "live": live,
            }
        )
    load.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    reports = figures["reports"]
    if len(reports) >= 3:
        first, last = reports[0]["anon"], reports[-1]["anon"]
        if last > ANON_GROWTH_MAX * first:
            problems.append(
                f"anonymous memory grew from {fmt_mib(first)} to {fmt_mib(last)} "
                f"(more than {ANON_GROWTH_MAX}x)"
            )
    return problems


def summary_text(figures: dict[str, Any], load: Load) -> str:
    """Return the closing lines: totals, vacuum latency, check, problems."""
    statuses = Counter(s.status for s in load.samples)
    vacuum = figures["vacuum"]
    lines = [
        f"requests {sum(statuses.values()):,} {dict(sorted(statuses.items()))}; "
        f"media deleted {load.media_deleted:,}; start {figures.get('start_seconds')} s",
        f"vacuum steps {vacuum['steps']} (longest {vacuum['step_seconds_max']} s); "
        f"100-id deletion p50 idle {vacuum['idle_p50_ms']} ms (n={vacuum['idle_n']}), "
        f"p99 during a step {vacuum['during_p99_ms']} ms (n={vacuum['during_n']})"
        + (f", ratio {vacuum['ratio']}" if "ratio" in vacuum else ""),
        "check: " + " | ".join(figures["check"]),
    ]
    problems = figures["problems"]
    lines.append("PROBLEMS:\n  " + "\n  ".join(problems) if problems else "soak passed")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse(argv))


if __name__ == "__main__":
    sys.exit(main())
