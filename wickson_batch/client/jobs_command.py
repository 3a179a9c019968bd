"""`wickson-batch jobs`: start, follow, cancel and inspect deletion jobs through the API.

The exit status says how the job ended, for `start --wait` and `status` alike: 0 done with
no failure (or not finished yet, without --wait), 1 done with failed items, 4 cancelled,
5 rejected; 2 is bad input, 3 a request refused or retries used up (the message says
which), 130 Ctrl-C (the job goes on on the server).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import click
import httpx
from tqdm import tqdm

from ..protocol import MEDIA_ID_RULE, ItemStatus, JobStatus, Scope, is_media_id
from .client import ApiError, WicksonClient, WicksonError
from .command_options import api_key_option, url_option
from .delete_command import EXIT_FAILED_IDS, EXIT_INTERRUPTED, EXIT_STOPPED, parse_ids
from .jobs import DeletionJob, JobPreview

EXIT_CANCELLED = 4
EXIT_REJECTED = 5

METADATA_PREFIX = "metadata."

if TYPE_CHECKING:
    _Tqdm = tqdm[None]  # generic in its stubs only
else:
    _Tqdm = tqdm


# --- the selection from the options -----------------------------------------------------


def parse_metadata_value(text: str) -> str | int | float | bool:
    """Type a `metadata.KEY=VALUE` value as the listing's query parameters are typed.

    A JSON number, `true`, `false` or a JSON "string" is that value; anything else is the
    text as it stands (`summer-2025`, `null`, `[1]`, `NaN` are strings). So `year=2025` is
    the number and `year="2025"` the string: a filter matches only a value of the same kind.
    """
    try:
        value = json.loads(text, parse_constant=_not_json)
    except ValueError:  # also a number too long to parse: kept as text
        return text
    if isinstance(value, bool | int | float | str):
        return value
    return text


def _not_json(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity: JSON has no such numbers


def parse_filters(filters: tuple[str, ...]) -> dict[str, Any]:
    """Turn repeated `metadata.KEY=VALUE` options into the filter's `metadata` object."""
    metadata: dict[str, Any] = {}
    for given in filters:
        name, equals, raw = given.partition("=")
        key = name.removeprefix(METADATA_PREFIX)
        if not equals or not name.startswith(METADATA_PREFIX) or not key:
            raise click.BadParameter(
                f"{given!r} is not metadata.KEY=VALUE (times go in --created-before and "
                "--created-after)",
                param_hint="--filter",
            )
        if key in metadata:
            raise click.BadParameter(f"metadata.{key} is given twice", param_hint="--filter")
        metadata[key] = parse_metadata_value(raw)
    return metadata


def _timestamp(value: str | None, option: str) -> None:
    if value is None:
        return
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO-8601 time, e.g. 2025-06-01T00:00:00Z", param_hint=option
        ) from None


def build_selection(
    *,
    select_all: bool,
    filters: tuple[str, ...],
    created_before: str | None,
    created_after: str | None,
    children: str | None,
    exclude: list[str],
) -> list[dict[str, Any]]:
    """The one-item selection the options describe, refusing none or several kinds."""
    by_filter = bool(filters) or created_before is not None or created_after is not None
    kinds = [name for name, given in (("all", select_all), ("filter", by_filter)) if given]
    if children is not None:
        kinds.append("children")
    if len(kinds) != 1:
        raise click.UsageError(
            "say what to delete with exactly one of --all, --filter/--created-before/"
            f"--created-after, or --children (got {' and '.join(kinds) or 'none'})"
        )
    item: dict[str, Any]
    if select_all:
        item = {"all": True}
    elif children is not None:
        if not is_media_id(children):
            raise click.BadParameter(
                f"{children[:60]!r} is not a media id: ids are {MEDIA_ID_RULE}",
                param_hint="--children",
            )
        item = {"children": children}
    else:
        _timestamp(created_before, "--created-before")
        _timestamp(created_after, "--created-after")
        described: dict[str, Any] = {}
        if created_before is not None:
            described["created_before"] = created_before
        if created_after is not None:
            described["created_after"] = created_after
        if filters:
            described["metadata"] = parse_filters(filters)
        item = {"filter": described}
    if exclude:
        item["exclude"] = list(dict.fromkeys(exclude))
    return [item]


# --- what is shown ----------------------------------------------------------------------


def exit_status(job: DeletionJob) -> int:
    """How a command reporting `job` exits (the module's docstring lists them)."""
    if job.status == JobStatus.CANCELLED:
        return EXIT_CANCELLED
    if job.status == JobStatus.REJECTED:
        return EXIT_REJECTED
    if job.status == JobStatus.DONE and job.progress.failed:
        return EXIT_FAILED_IDS
    return 0


def summary(job: DeletionJob) -> str:
    """One line: the job, its status, its counts (and, once finished, its time from start)."""
    head = f"job {job.job_id} {job.status}"
    if job.status == JobStatus.REJECTED and job.error is not None:
        return f"{head}: {job.error.code}: {job.error.message}"
    p = job.progress
    if p.total is None:
        return f"{head}: the selection is not resolved yet"
    parts = [f"deleted {p.deleted}, failed {p.failed} of {p.total}"]
    if p.remaining:
        left = "left live" if job.status == JobStatus.CANCELLED else "remaining"
        parts.append(f"{p.remaining} {left}")
    parts.append(f"vectors hd {p.hd_vectors} ld {p.ld_vectors}")
    if job.finished_at is not None:
        # The API's times are whole seconds: a rate from them would be off by up to 100%.
        seconds = round((job.finished_at - job.created_at).total_seconds())
        parts.append(f"in {seconds} s" if seconds >= 1 else "in under 1 s")
    return f"{head}: " + "; ".join(parts)


def preview_summary(preview: JobPreview) -> str:
    """What a dry run found."""
    sample = " ".join(preview.sample)
    line = (
        f"dry run: would delete {preview.total} media "
        f"(vectors hd {preview.hd_vectors} ld {preview.ld_vectors}); nothing was deleted"
    )
    return line + (f"\nfirst ids: {sample}" if sample else "")


class _Bar(_Tqdm):
    # The monitor thread only tunes `miniters` for fast loops; a poll a second needs none.
    monitor_interval = 0


class JobProgressBar:
    """A progress bar on a terminal: media reported of the total, rate, ETA, failures."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._bar: _Bar | None = None
        self._counting = False  # the bar has the total: it counts media

    def update(self, job: DeletionJob) -> None:
        """Show the job as just polled."""
        p = job.progress
        description = job.status  # the id is in the line above ("started job …") or the command
        failures = f"failed {p.failed}" if p.failed else ""
        if self._bar is None or (p.total is not None and not self._counting):
            self._open(job, description, failures)
            return
        self._bar.set_description_str(description, refresh=False)
        self._bar.set_postfix_str(failures, refresh=False)
        if self._counting and p.done > self._bar.n:
            self._bar.update(p.done - self._bar.n)  # refreshes: mininterval is 0
        else:
            self._bar.refresh()

    def _open(self, job: DeletionJob, description: str, failures: str) -> None:
        if self._bar is not None:
            self._bar.close()  # the bar of the wait in the queue, cleared (leave=False)
        p = job.progress
        self._counting = p.total is not None
        options: dict[str, Any] = {
            "desc": description,
            "postfix": failures or None,
            "file": self._file,
            "mininterval": 0,
            "miniters": 1,
        }
        if self._counting:
            # Opened when the total is known, at what is done already: the rate and the ETA
            # count from here, not from the time the job spent queued.
            self._bar = _Bar(total=p.total, initial=p.done, unit=" media", **options)
        else:
            self._bar = _Bar(total=None, bar_format="{desc} [{elapsed}]", leave=False, **options)

    def close(self) -> None:
        """Leave the last state on screen."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class StatusLines:
    """Without a terminal: one line on stderr each time the job changes status."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._status: str | None = None

    def update(self, job: DeletionJob) -> None:
        """Write a line when the status differs from the last poll's."""
        if job.status != self._status and not job.finished:
            self._status = job.status
            click.echo(summary(job), file=self._file)

    def close(self) -> None:
        """Nothing to close."""


# --- the commands -----------------------------------------------------------------------


def on_terminal() -> bool:
    """True when stderr, where progress goes, is a terminal."""
    return sys.stderr.isatty()


def _client(url: str, api_key: str) -> WicksonClient:
    try:
        return WicksonClient(url, api_key)
    except httpx.InvalidURL as error:
        raise click.BadParameter(str(error), param_hint="--url") from None


@contextmanager
def _requests(url: str, api_key: str) -> Iterator[WicksonClient]:
    """A client; a request that fails for good ends the command with exit status 3."""
    client = _client(url, api_key)
    try:
        with client:
            yield client
    except WicksonError as error:
        click.echo(f"error: {error.message}", err=True)
        if isinstance(error, ApiError) and error.request_id:
            click.echo(f"request id: {error.request_id}", err=True)
        sys.exit(EXIT_STOPPED)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _follow(client: WicksonClient, url: str, job: DeletionJob, poll_interval: float) -> None:
    """Wait for the job, showing its progress; print its summary; exit as it ended."""
    shown = JobProgressBar(sys.stderr) if on_terminal() else StatusLines(sys.stderr)
    try:
        try:
            if job.finished:
                shown.update(job)
            else:
                job = client.wait_for_job(
                    job.job_id, on_progress=shown.update, poll_interval=poll_interval
                )
        finally:
            shown.close()
    except KeyboardInterrupt:
        click.echo(
            f"interrupted: job {job.job_id} goes on; follow it with `wickson-batch jobs status "
            f"--url {url} --wait {job.job_id}`, stop it with `wickson-batch jobs cancel "
            f"--url {url} {job.job_id}`",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    _finish(job, url)


def _finish(job: DeletionJob, url: str) -> None:
    click.echo(summary(job))
    if job.status == JobStatus.DONE and job.progress.failed:
        click.echo(
            f"failed: {job.progress.failed}; list them with `wickson-batch jobs items "
            f"--url {url} --failed {job.job_id}`",
            err=True,
        )
    sys.exit(exit_status(job))


poll_option = click.option(
    "--poll-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between two looks at the job while waiting.",
)


@click.group()
def jobs() -> None:
    """Delete a selection of media as a background job, and follow it."""


@jobs.command()
@url_option
@api_key_option(Scope.DELETE)
@click.option("--all", "select_all", is_flag=True, help="Every media of the key's owner.")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="metadata.KEY=VALUE",
    help="Media whose metadata KEY equals VALUE; repeat for several keys (all must match). "
    'A JSON number, true, false or "string" is typed; other text is a string.',
)
@click.option("--created-before", metavar="TIME", help="Media created before TIME (exclusive).")
@click.option("--created-after", metavar="TIME", help="Media created at or after TIME.")
@click.option("--children", metavar="ID", help="The direct children of this media.")
@click.option(
    "--exclude-file",
    type=click.File("r", encoding="utf-8-sig"),
    default=None,
    help="Ids to leave out: one a line, or a JSON array; - reads standard input.",
)
@click.option("--reason", default=None, help="Stored and logged with every chunk of the job.")
@click.option("--cascade", is_flag=True, help="Also delete what derives from the selected media.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, and delete nothing.")
@click.option("--wait", is_flag=True, help="Follow the job to its end (a progress bar on a tty).")
@poll_option
def start(
    url: str,
    api_key: str,
    select_all: bool,
    filters: tuple[str, ...],
    created_before: str | None,
    created_after: str | None,
    children: str | None,
    exclude_file: IO[str] | None,
    reason: str | None,
    cascade: bool,
    dry_run: bool,
    wait: bool,
    poll_interval: float,
) -> None:
    """Start a job deleting the selected media; print its id (or, with --wait, how it ended).

    Times are ISO-8601, e.g. 2025-06-01T00:00:00Z.
    """
    exclude: list[str] = []
    if exclude_file is not None:
        try:
            exclude = parse_ids(exclude_file.read())
        except (ValueError, UnicodeDecodeError) as error:
            raise click.BadParameter(str(error), param_hint="--exclude-file") from None
    selection = build_selection(
        select_all=select_all,
        filters=filters,
        created_before=created_before,
        created_after=created_after,
        children=children,
        exclude=exclude,
    )
    with _requests(url, api_key) as client:
        if dry_run:
            preview = client.start_deletion_job(
                selection, reason=reason, cascade=cascade, dry_run=True
            )
            click.echo(preview_summary(preview))
            return
        job = client.start_deletion_job(selection, reason=reason, cascade=cascade)
        if not wait:
            click.echo(job.job_id)
            click.echo(f"started job {job.job_id} ({job.status})", err=True)
            return
        click.echo(f"started job {job.job_id}", err=True)
        _follow(client, url, job, poll_interval)


@jobs.command()
@url_option
@api_key_option(f"{Scope.READ} or {Scope.DELETE}")
@click.option("--wait", is_flag=True, help="Follow the job to its end (a progress bar on a tty).")
@poll_option
@click.argument("job_id")
def status(url: str, api_key: str, wait: bool, poll_interval: float, job_id: str) -> None:
    """Print where job JOB_ID stands; the exit status says how it ended (0 if not yet)."""
    with _requests(url, api_key) as client:
        job = client.get_deletion_job(job_id)
        if wait:
            _follow(client, url, job, poll_interval)
    _finish(job, url)


@jobs.command()
@url_option
@api_key_option(Scope.DELETE)
@click.argument("job_id")
def cancel(url: str, api_key: str, job_id: str) -> None:
    """Stop job JOB_ID between two chunks; what it deleted stays deleted, the rest stays live.

    Exits 0 once the cancel is taken, 3 if the job had already finished (409 JOB_FINISHED).
    """
    with _requests(url, api_key) as client:
        job = client.cancel_deletion_job(job_id)
    click.echo(summary(job))
    if not job.finished:
        click.echo(
            f"cancel requested: the job stops once its chunk at work is done; follow it with "
            f"`wickson-batch jobs status --url {url} --wait {job_id}`",
            err=True,
        )


@jobs.command()
@url_option
@api_key_option(f"{Scope.READ} or {Scope.DELETE}")
@click.option("--failed", "only", flag_value=ItemStatus.FAILED, help="Only the media that failed.")
@click.option("--deleted", "only", flag_value=ItemStatus.DELETED, help="Only the media deleted.")
@click.argument("job_id")
def items(url: str, api_key: str, only: str | None, job_id: str) -> None:
    """Print each media's outcome in job JOB_ID, one JSON object a line.

    `{"media_id", "status": "deleted"|"failed", "reason"?, "operation_id"}`, as the report of
    `wickson-batch delete` has them.
    """
    with _requests(url, api_key) as client:
        for item in client.job_items(job_id, status=only):
            line: dict[str, Any] = {"media_id": item.media_id, "status": item.status}
            if item.reason is not None:
                line["reason"] = item.reason
            line["operation_id"] = item.operation_id
            click.echo(json.dumps(line))


@jobs.command(name="list")
@url_option
@api_key_option(f"{Scope.READ} or {Scope.DELETE}")
def list_jobs(url: str, api_key: str) -> None:
    """List the key owner's jobs, newest first: id, status, counts, created, reason."""
    with _requests(url, api_key) as client:
        click.echo("job_id\tstatus\ttotal\tdeleted\tfailed\tcreated\treason")
        for job in client.list_deletion_jobs():
            p = job.progress
            fields = [
                job.job_id,
                job.status,
                "-" if p.total is None else str(p.total),
                str(p.deleted),
                str(p.failed),
                job.created_at.isoformat().replace("+00:00", "Z"),
                job.reason or "-",
            ]
            click.echo("\t".join(fields))
