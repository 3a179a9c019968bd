"""API keys: made high-entropy, shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from limits import parse_many
from sqlalchemy import select, update

from ..db import Database
from ..models import ApiKey, utcnow
from ..protocol import SCOPES
from .errors import DomainError

KEY_PREFIX = "wkb_"


class InvalidKeySpec(DomainError):
    """A key cannot be made with these settings."""


class UnknownKey(DomainError):
    """No key has this id."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: the key's id, owner, scopes and own rate limit."""

    key_id: int
    owner: str
    scopes: frozenset[str]
    rate_limit: str | None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as `keys list` shows it: never the key or its hash."""

    id: int
    owner: str
    name: str | None
    scopes: tuple[str, ...]
    rate_limit: str | None
    created_at: datetime
    revoked_at: datetime | None


def check_rate_limit(value: str) -> None:
    """Raise InvalidKeySpec unless `value` is a rate limit such as `100/minute`."""
    try:
        parse_many(value)
    except ValueError:
        raise InvalidKeySpec(f"rate limit {value!r} is not like '100/minute'") from None


def hash_key(key: str) -> str:
    """Return the SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(
    db: Database,
    *,
    owner: str,
    scopes: Sequence[str] = SCOPES,
    rate_limit: str | None = None,
    name: str | None = None,
) -> tuple[KeyInfo, str]:
    """Store a new key and return it with the only copy of its secret."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidKeySpec(f"unknown scope {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
    if not owner.strip() or len(owner) > 128:
        raise InvalidKeySpec("owner must be 1 to 128 characters")
    if rate_limit is not None:
        check_rate_limit(rate_limit)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        owner=owner,
        name=name,
        key_hash=hash_key(secret),
        scopes=" ".join(s for s in SCOPES if s in scopes),
        rate_limit=rate_limit,
        created_at=utcnow(),
    )
    with db.unit_of_work() as uow:
        uow.session.add(row)
        uow.commit()
    return _info(row), secret


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        row.id,
        row.owner,
        row.name,
        tuple(row.scopes.split()),
        row.rate_limit,
        row.created_at,
        row.revoked_at,
    )


def list_keys(db: Database) -> list[KeyInfo]:
    """Return every key, oldest first."""
    with db.unit_of_work() as uow:
        return [_info(row) for row in uow.session.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(db: Database, key_id: int) -> None:
    """Revoke a key; raise UnknownKey if there is none with this id."""
    with db.unit_of_work() as uow:
        if uow.session.get(ApiKey, key_id) is None:
            raise UnknownKey(f"no API key with id {key_id}")
        uow.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        uow.commit()
    _revocations[0] += 1


# Bumped by every revocation in this process: it voids every KeyCache entry made before it.
_revocations = [0]


class KeyCache:
    """The principals of keys looked up in the last `ttl` seconds (at most MAX_ENTRIES).

    Only valid keys are kept (a wrong key is looked up, and counted, every time). An entry
    is trusted for `ttl` seconds from the lookup that made it, so a key revoked by another
    process is refused by every request that starts more than `ttl` after the revocation
    committed; `revoke_key` in this process voids every entry at once.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, int, Principal]] = {}

    def get(self, key_hash: str) -> Principal | None:
        """Return the cached principal of a key hash, None if absent, expired or voided."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        expires, generation, principal = entry
        if generation != _revocations[0] or self._clock() >= expires:
            self._entries.pop(key_hash, None)
            return None
        return principal

    def put(self, key_hash: str, principal: Principal, generation: int) -> None:
        """Remember a principal looked up when revocations were at `generation`."""
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_hash] = (self._clock() + self.ttl, generation, principal)


def authenticate(db: Database, key: str, cache: KeyCache | None = None) -> Principal | None:
    """Return the principal of a valid, unrevoked key, else None (see KeyCache for `cache`)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    key_hash = hash_key(key)
    if cache is not None:
        cached = cache.get(key_hash)
        if cached is not None:
            return cached
    generation = _revocations[0]  # read before the lookup: a revocation during it voids it
    with db.unit_of_work() as uow:
        row = uow.session.execute(
            select(ApiKey.id, ApiKey.owner, ApiKey.scopes, ApiKey.rate_limit).where(
                ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        return None
    principal = Principal(row.id, row.owner, frozenset(row.scopes.split()), row.rate_limit)
    if cache is not None:
        cache.put(key_hash, principal, generation)
    return principal
