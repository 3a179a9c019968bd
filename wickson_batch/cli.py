"""The `wickson-batch` console script: db, keys, seed, reconcile, check, optimize, delete, jobs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import click

from .client.delete_command import delete
from .client.jobs_command import jobs
from .config import ConfigError, Settings, load_settings
from .db import FIRST_REVISION, Database, SchemaChange, SchemaError
from .logs import configure_logging
from .models import iso_utc
from .protocol import SCOPES
from .services import cleanup, keys
from .services.errors import STORE_ERRORS, DomainError
from .services.stores import Stores, vacuum_policy
from .services.vacuum import vacuum_due

# What a command reports as a one-line error, never a traceback.
_OPERATOR_ERRORS: tuple[type[Exception], ...] = (DomainError, SchemaError, *STORE_ERRORS)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    configure_logging("WARNING", settings.log_format)
    return settings


@contextmanager
def _unmigrated_database() -> Iterator[Database]:
    """The database as it is, for the commands that migrate it or report its revision."""
    db = Database(_settings().database_url)
    try:
        yield db
    except _OPERATOR_ERRORS as error:
        raise click.ClickException(str(error)) from None
    finally:
        db.dispose()


@contextmanager
def _database() -> Iterator[Database]:
    """The database, migrated to head."""
    with _unmigrated_database() as db:
        db.upgrade_schema()
        yield db


@contextmanager
def _stores() -> Iterator[Stores]:
    try:
        held = Stores.open(_settings())
    except _OPERATOR_ERRORS as error:
        raise click.ClickException(str(error)) from None
    try:
        yield held
    except _OPERATOR_ERRORS as error:
        raise click.ClickException(str(error)) from None
    finally:
        held.close()


@click.group()
def main() -> None:
    """Operate wickson-batch: API keys, demo data, reconciliation, deletion through the API."""


main.add_command(delete)
main.add_command(jobs)


@main.command()
def init() -> None:
    """Migrate the schema to head and create the vector collections that are missing."""
    with _stores():
        pass
    click.echo("stores ready", err=True)


@main.group(name="db")
def db_group() -> None:
    """Migrate the database schema (the server upgrades to head at start by itself)."""


def _report(change: SchemaChange, verb: str, mark: str = "") -> None:
    before, after = change.before or "base", (change.after or "base") + mark
    if change.stamped:
        click.echo(f"stamped the tables made before migrations as {FIRST_REVISION}")
    if change.before == change.after:
        click.echo(f"{'' if change.stamped else 'nothing to do: '}the database is at {after}")
    else:
        click.echo(f"{verb} {before} -> {after}")


@db_group.command(name="upgrade")
def db_upgrade() -> None:
    """Migrate the schema to the newest revision (head)."""
    with _unmigrated_database() as db:
        change = db.upgrade_schema()
    _report(change, "upgraded", " (head)")


@db_group.command(name="current")
def db_current() -> None:
    """Print the database's revision, marked `(head)` when it is the newest."""
    with _unmigrated_database() as db:
        described = db.describe_revision()
    if described:
        click.echo(described)
    else:
        click.echo("no revision: the database is empty or was made before migrations", err=True)


@db_group.command(name="downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the schema down to REVISION (`base`: remove every table)."""
    with _unmigrated_database() as db:
        change = db.downgrade_schema(revision)
    _report(change, "downgraded")


@main.group(name="keys")
def keys_group() -> None:
    """Create, list and revoke API keys."""


@keys_group.command(name="create")
@click.option("--owner", required=True, help="Whose media the key acts on.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    help="Repeat for several; default: all three.",
)
@click.option("--rate-limit", default=None, help="This key's own limit, e.g. '100/minute'.")
@click.option("--name", default=None, help="A label to recognise the key by.")
def keys_create(
    owner: str, scopes: tuple[str, ...], rate_limit: str | None, name: str | None
) -> None:
    """Create a key and print it, alone, on stdout: it is shown only this once."""
    with _database() as db:
        info, secret = keys.create_key(
            db, owner=owner, scopes=scopes or SCOPES, rate_limit=rate_limit, name=name
        )
    click.echo(secret)
    click.echo(f"created key id {info.id} for owner {info.owner}; store it now", err=True)


@keys_group.command(name="list")
def keys_list() -> None:
    """List keys: id, owner, name, scopes, limit, created, revoked (never the key)."""
    with _database() as db:
        rows = keys.list_keys(db)
    click.echo("id\towner\tname\tscopes\trate_limit\tcreated\trevoked")
    for k in rows:
        fields = [
            str(k.id),
            k.owner,
            k.name or "-",
            ",".join(k.scopes),
            k.rate_limit or "default",
            iso_utc(k.created_at),
            iso_utc(k.revoked_at) if k.revoked_at else "-",
        ]
        click.echo("\t".join(fields))


@keys_group.command(name="revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke the key with this id."""
    with _database() as db:
        keys.revoke_key(db, key_id)
    click.echo(f"revoked key {key_id}", err=True)


@main.command()
@click.option("--owner", required=True)
@click.option("--count", required=True, type=click.IntRange(min=1))
@click.option("--hd-per-media", default=1, show_default=True, type=click.IntRange(0, 256))
@click.option("--ld-per-media", default=1, show_default=True, type=click.IntRange(0, 256))
def seed(owner: str, count: int, hd_per_media: int, ld_per_media: int) -> None:
    """Write COUNT demo media with random vectors and print their ids, one a line."""
    from .services.seeding import seed_media

    if hd_per_media + ld_per_media == 0:
        raise click.BadParameter("a media needs at least one vector", param_hint="--hd-per-media")
    with _stores() as held:
        out = sys.stdout
        for ids in seed_media(
            held.db, held.vectors, owner=owner, count=count, hd=hd_per_media, ld=ld_per_media
        ):
            out.write("\n".join(ids) + "\n")
        out.flush()


@main.command()
@click.option(
    "--repair",
    is_flag=True,
    help="Also delete the live media whose points are gone, as operations of their owners.",
)
def reconcile(repair: bool) -> None:
    """Drain every pending vector cleanup now and remove orphan points.

    Exits 1 when a cleanup task failed. Live media missing points (older than
    RECONCILE_GRACE_SECONDS) are only named, unless `--repair` deletes them through the
    batch-deletion protocol, with reason `repair:missing_points`.
    """
    settings = _settings()
    grace = timedelta(seconds=settings.reconcile_grace_seconds)
    with _stores() as held:
        stale = cleanup.remove_stale_pending(held.db, grace=grace)
        if repair:
            missing = cleanup.repair_missing_points(
                held.db, held.vectors, grace=grace, max_batch=settings.max_batch_size
            )
        else:
            missing = cleanup.find_missing_points(held.db, held.vectors, grace=grace)
        report = cleanup.drain_cleanup(
            held.db, held.vectors, grace=timedelta(0), postponed_too=True
        )
        orphans = cleanup.remove_orphans(held.db, held.vectors)
    click.echo(
        f"cleanup tasks done: {report.tasks_done}, failed: {report.tasks_failed}; "
        f"stale pending media removed: {stale}; "
        f"orphan points removed: hd {orphans['hd']}, ld {orphans['ld']}"
    )
    _report_missing(missing, repair, settings.reconcile_grace_seconds)
    if report.tasks_failed:
        sys.exit(1)


def _report_missing(missing: cleanup.RepairReport, repaired: bool, grace: float) -> None:
    if repaired and missing.operation_ids:
        click.echo(
            f"live media missing points repaired: {missing.repaired}; "
            f"operations: {' '.join(missing.operation_ids)}"
        )
    elif not repaired and missing.found:
        click.echo(
            f"live media missing points: {len(missing.found)}, left as they are: "
            "run `wickson-batch reconcile --repair` to delete them"
        )
        for media in missing.found[:20]:
            click.echo(f"  {media.describe()}")
    if missing.recovered:
        click.echo(f"live media whose points came back before the repair: {missing.recovered}")
    if missing.too_young:
        click.echo(
            f"live media missing points younger than {grace:g} s, left for a later run: "
            f"{missing.too_young}"
        )


@main.command()
def check() -> None:
    """Compare the database with the vector store; exit 1 when they disagree."""
    with _stores() as held:
        report = cleanup.check_consistency(held.db, held.vectors)
    click.echo(f"live media: {report.live_media}, pending media: {report.pending_media}")
    click.echo(f"points: hd {report.points['hd']}, ld {report.points['ld']}")
    click.echo(f"pending cleanup tasks: {report.pending_cleanup}")
    click.echo(f"orphan points: hd {report.orphan_points['hd']}, ld {report.orphan_points['ld']}")
    click.echo(f"media missing points: {report.missing_points_count}")
    for media in report.media_missing_points:
        click.echo(f"  {media.describe()}")
    if report.missing_points_count > len(report.media_missing_points):
        click.echo(
            f"  ... and {report.missing_points_count - len(report.media_missing_points)} more"
        )
    if report.consistent:
        click.echo("consistent")
    elif report.missing_points_count:
        click.echo(
            "INCONSISTENT: run `wickson-batch reconcile --repair` "
            "(it deletes the live media missing points)",
            err=True,
        )
        sys.exit(1)
    else:
        click.echo("INCONSISTENT: run `wickson-batch reconcile`", err=True)
        sys.exit(1)


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / (1024 * 1024):.1f} MiB"


@main.command()
@click.option(
    "--if-due",
    is_flag=True,
    help="Only the spaces the server would vacuum now (VACUUM_DELETED_THRESHOLD, "
    "VACUUM_MAX_AGE_SECONDS).",
)
def optimize(if_due: bool) -> None:
    """Vacuum the embedded vector store now and give SQLite's free pages back.

    Every deleted point's vector leaves the segment files. With the embedded store the
    server must be stopped (the server vacuums by itself, every VACUUM_INTERVAL_SECONDS);
    a Qdrant server vacuums its collections itself, so there is nothing to do there.
    """
    settings = _settings()
    with _stores() as held:
        before = held.vectors.disk_bytes()
        steps = vacuum_due(
            held.vectors, held.db.gate, vacuum_policy(settings), force=not if_due, pause=0
        )
        after = held.vectors.disk_bytes()
        pages = held.db.reclaim_pages()
    if before is None:
        click.echo("the Qdrant server vacuums its collections itself: nothing to do")
    for step in steps:
        click.echo(
            f"{step.space}: vacuumed in {step.seconds:.2f} s ({step.deleted} points counted "
            f"deleted, {step.live} live)"
        )
    if before is not None:
        if not steps:
            click.echo("no space is due a vacuum")
        click.echo(f"vector store on disk: {_mib(before)} -> {_mib(after)}")
    click.echo(f"sqlite pages given back: {pages}")
