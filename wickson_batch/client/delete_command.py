"""`wickson-batch delete`: delete ids from a file through the API, with a resumable report.

The report is JSON lines, appended and flushed batch by batch:

- before a batch is first sent, one line `{"status": "sending", "batch": {"idempotency_key",
  "media_ids", "reason"}}` records the exact request;
- after its answer, one line per id: `{"media_id", "status": "deleted"|"failed", "reason"?,
  "operation_id"}`.

`--resume` skips every id that has an outcome line. A batch with a `sending` line and no
outcome is in doubt: the run stopped while it was on its way, and the server may have
deleted those ids. It is sent again exactly as before, with the same key, so the server
replays what it decided (for 24 hours) instead of answering NOT_FOUND for ids it deleted.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click
import httpx

from ..protocol import DEFAULT_MAX_BATCH_SIZE as DEFAULT_BATCH_SIZE
from ..protocol import MEDIA_ID_RULE, Scope, is_media_id
from .client import (
    ApiError,
    Batch,
    BatchResult,
    DeleteResult,
    WicksonClient,
    WicksonError,
)
from .command_options import api_key_option, url_option

SENDING = "sending"
REFUSED = "refused"  # the server answered a batch with a final 4xx: it changed nothing
EXIT_FAILED_IDS = 1  # the run finished, some ids failed
EXIT_STOPPED = 3  # the run stopped before every id was answered: rerun with --resume
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def parse_ids(text: str) -> list[str]:
    """Return the ids of a file: a JSON array of strings, or one id a line (blanks ignored)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a valid JSON array: {error}") from None
        if not isinstance(value, list):
            raise ValueError("not a JSON array")
        ids: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not is_media_id(item):
                raise ValueError(
                    f"item {index} ({json.dumps(item)[:60]}) is not a media id: "
                    f"ids are {MEDIA_ID_RULE}"
                )
            ids.append(item)
        return ids
    ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        media_id = line.strip()
        if not media_id:
            continue
        if not is_media_id(media_id):
            raise ValueError(
                f"line {number} ({media_id[:60]!r}) is not a media id: ids are {MEDIA_ID_RULE}"
            )
        ids.append(media_id)
    return ids


@dataclass
class ReportState:
    """What an earlier run's report says: outcomes by id and the batches left in doubt."""

    outcomes: dict[str, str] = field(default_factory=dict)
    in_doubt: list[Batch] = field(default_factory=list)


def read_report(path: Path) -> ReportState:
    """Read a report; drop a last line cut short by a kill (its batch is then in doubt)."""
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    state = ReportState()
    sent: list[Batch] = []
    refused: set[str] = set()
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if entry["status"] == REFUSED:
                refused.add(str(entry["idempotency_key"]))
            elif entry["status"] == SENDING:
                batch = entry["batch"]
                sent.append(
                    Batch(tuple(batch["media_ids"]), batch["reason"], batch["idempotency_key"])
                )
            else:
                state.outcomes[str(entry["media_id"])] = str(entry["status"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}: line {number} is not a report line") from None
    if len(complete) != len(raw):  # only once the rest has been read as a report
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    # Newest first: a later sending line for an id supersedes an earlier one (the client
    # re-splits batches the server found too large, and a 400 changed nothing). A batch is
    # in doubt while any of its ids lacks an outcome: a kill can cut its outcome lines short.
    claimed: set[str] = set()
    for batch in reversed(sent):
        ids = set(batch.media_ids)
        unanswered = any(i not in state.outcomes for i in batch.media_ids)
        if batch.idempotency_key not in refused and unanswered and not ids & claimed:
            state.in_doubt.insert(0, batch)
        claimed |= ids
    return state


class ReportWriteError(WicksonError):
    """The report could not be written (a full disk, say): the run stops there."""


class Report:
    """An append-only JSON-lines report; each batch is one write, flushed at once.

    An id already in the report (`known`: a batch whose outcome lines a kill cut short,
    resent and replayed) gets no second outcome line.
    """

    def __init__(self, path: Path | None, known: set[str] | None = None) -> None:
        self._path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if path else None
        self._known = set(known or ())

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, entries: list[dict[str, Any]]) -> None:
        if self._fd is None or not entries:
            return
        # One write per batch: a kill leaves whole batches, or at most a torn last line.
        data = memoryview("".join(json.dumps(e) + "\n" for e in entries).encode())
        try:
            while data:  # a write may be cut short (a full disk raises on the next one)
                data = data[os.write(self._fd, data) :]
        except OSError as error:
            raise ReportWriteError(f"cannot write the report {self._path}: {error}") from error

    def sending(self, batch: Batch) -> None:
        """Record a batch before it is first sent."""
        body = {"idempotency_key": batch.idempotency_key, **batch.body()}
        self._write([{"status": SENDING, "batch": body}])

    def refused(self, batch: Batch, error: ApiError) -> None:
        """Record that the server refused a batch (4xx): it is not in doubt."""
        line = {"status": REFUSED, "idempotency_key": batch.idempotency_key, "code": error.code}
        self._write([line])

    def answered(self, result: BatchResult) -> None:
        """Record one outcome line per id of an answered batch, in request order."""
        entries: list[dict[str, Any]] = []
        deleted = set(result.deleted)
        for media_id in result.batch.media_ids:
            if media_id in self._known:
                continue
            if media_id in deleted:
                entries.append(
                    {"media_id": media_id, "status": "deleted", "operation_id": result.operation_id}
                )
            else:
                entries.append(
                    {
                        "media_id": media_id,
                        "status": "failed",
                        "reason": result.failed[media_id],
                        "operation_id": result.operation_id,
                    }
                )
        self._write(entries)


@contextmanager
def progress(total: int) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; otherwise nothing is drawn."""
    if not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, label="deleting", file=sys.stderr) as bar:
        yield bar


def summary(result: DeleteResult, skipped: int) -> str:
    """The closing lines: counts, vectors, waits."""
    lines = [
        f"deleted {len(result.deleted)}, failed {len(result.failed)}, "
        f"vectors hd {result.hd_vectors} ld {result.ld_vectors}, skipped {skipped}",
        f"batches {result.batches} (replayed {result.replayed_batches}), "
        f"rate-limit waits {result.rate_limit_waits}, retries {result.retries}, "
        f"waited {result.waited_seconds:.1f} s",
    ]
    if result.cleanup_pending:
        lines.append(f"vectors still queued for cleanup: {len(result.cleanup_pending)} media")
    return "\n".join(lines)


def failure_counts(result: DeleteResult) -> str:
    """Failed ids counted by reason, e.g. `NOT_FOUND 2`."""
    counts: dict[str, int] = {}
    for reason in result.failed.values():
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


@click.command()
@url_option
@api_key_option(Scope.DELETE)
@click.option(
    "--ids-file",
    type=click.File("r", encoding="utf-8-sig"),  # a BOM, as spreadsheet exports write, is not an id
    required=True,
    help="One id a line, or a JSON array of ids; - reads standard input.",
)
@click.option("--reason", default=None, help="Stored and logged with every batch.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append every id's outcome to this JSON-lines file, batch by batch.",
)
@click.option("--resume", is_flag=True, help="Skip ids the report already has an outcome for.")
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Ids per request (the server's MAX_BATCH_SIZE at most).",
)
def delete(**options: Any) -> None:
    """Delete the ids in a file through the API, 100 a request, waiting out rate limits."""
    try:
        _delete(**options)
    except KeyboardInterrupt:  # while reading the input or the report: nothing was sent
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _delete(
    url: str,
    api_key: str,
    ids_file: IO[str],
    reason: str | None,
    report_path: Path | None,
    resume: bool,
    batch_size: int,
) -> None:
    try:
        ids = parse_ids(ids_file.read())
    except (ValueError, UnicodeDecodeError) as error:
        raise click.BadParameter(str(error), param_hint="--ids-file") from None
    if not ids:
        raise click.BadParameter("no media ids in the input", param_hint="--ids-file")
    state = _report_state(report_path, resume)
    unique = list(dict.fromkeys(ids))
    in_doubt_ids = {i for batch in state.in_doubt for i in batch.media_ids}
    # An id of a batch in doubt is answered again by its replay, and counted there.
    done_before = [i for i in unique if i in state.outcomes and i not in in_doubt_ids]
    failed_before = sum(1 for i in done_before if state.outcomes[i] != "deleted")
    todo_ids = [i for i in unique if i not in state.outcomes and i not in in_doubt_ids]

    try:
        client = WicksonClient(url, api_key, batch_size=batch_size)
    except httpx.InvalidURL as error:
        raise click.BadParameter(str(error), param_hint="--url") from None
    try:
        report = Report(report_path, set(state.outcomes))
    except OSError as error:
        raise click.BadParameter(f"cannot open it: {error}", param_hint="--report") from None
    with client:
        batches = state.in_doubt + client.plan(todo_ids, reason)
        total = sum(len(b.media_ids) for b in batches)
        if state.in_doubt:
            click.echo(
                f"resending {len(state.in_doubt)} batch(es) the last run left in doubt, "
                "with their original Idempotency-Keys",
                err=True,
            )
        try:
            result, stopped = _run(client, batches, report, total, in_doubt=state.in_doubt)
        finally:
            report.close()
    click.echo(summary(result, len(done_before)))
    if result.failed:
        click.echo(f"failed: {failure_counts(result)}", err=True)
    if failed_before:
        click.echo(f"failed in an earlier run: {failed_before} (see the report)", err=True)
    if stopped is not None:
        left = total - len(result.deleted) - len(result.failed)
        hint = " with --resume" if report_path else ""
        why = "interrupted" if isinstance(stopped, KeyboardInterrupt) else stopped.message
        click.echo(f"error: {why}", err=True)
        click.echo(f"stopped with {left} id(s) not done; run again{hint} to finish", err=True)
        sys.exit(EXIT_INTERRUPTED if isinstance(stopped, KeyboardInterrupt) else EXIT_STOPPED)
    if result.failed or failed_before:
        sys.exit(EXIT_FAILED_IDS)


def _report_state(path: Path | None, resume: bool) -> ReportState:
    if resume and path is None:
        raise click.UsageError("--resume needs --report: the report says what was done")
    if path is None or not path.exists() or path.stat().st_size == 0:
        return ReportState()
    if not resume:
        raise click.UsageError(
            f"{path} already holds a report: pass --resume to continue it, or choose another file"
        )
    try:
        return read_report(path)
    except (ValueError, UnicodeDecodeError, OSError) as error:
        raise click.BadParameter(str(error), param_hint="--report") from None


def _run(
    client: WicksonClient,
    batches: list[Batch],
    report: Report,
    total: int,
    *,
    in_doubt: list[Batch],
) -> tuple[DeleteResult, WicksonError | KeyboardInterrupt | None]:
    done = DeleteResult()  # merged here, batch by batch, so an interruption keeps it
    with progress(total) as bar:

        def answered(result: BatchResult) -> None:
            report.answered(result)
            done.add(result)
            if bar is not None:
                bar.label = "deleting"
                bar.update(len(result.batch.media_ids))

        def waiting(seconds: float, why: str) -> None:
            if bar is not None:
                bar.label = f"waiting {seconds:.0f} s ({why.split(':')[0]})"
                bar.render_progress()

        try:
            client.delete_batches(
                batches, on_send=report.sending, on_batch=answered, on_wait=waiting
            )
        except (WicksonError, KeyboardInterrupt) as error:
            if isinstance(error, ApiError) and error.batch is not None:
                # A refusal clears a batch only if no send of it can have been applied: not
                # one an earlier run left in doubt, and none of this run's sends unanswered.
                # Otherwise it stays in doubt, to be replayed with its key.
                if not error.unanswered_attempts and error.batch not in in_doubt:
                    try:
                        report.refused(error.batch, error)
                    except ReportWriteError:
                        pass  # unrecorded, the batch stays in doubt: resent, never lost
            return done, error
    return done, None
