"""Opaque keyset cursors for the lists of the API: a position (time, id) bound to one listing.

A cursor holds the (created_at, id) of the last item of a page and a check that binds it to
the listing it came from (the owner, and the filter or whatever else scopes it). A cursor
that is cut, edited, or made for another owner or another filter is refused: it cannot be
turned into a page of anything. The check is a hash, not a secret signature: a cursor
grants nothing, since every listing reads only its owner's rows whatever the position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import InvalidCursor

__all__ = ["CURSOR_PATTERN", "MAX_CURSOR_CHARS", "Position", "decode_cursor", "encode_cursor"]

# A cursor is base64url without padding; one for a 128-character id is about 300 characters.
MAX_CURSOR_CHARS = 512
CURSOR_PATTERN = f"^[A-Za-z0-9_-]{{1,{MAX_CURSOR_CHARS}}}$"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the sort key of its last item."""

    created_at: datetime  # aware UTC, microseconds kept
    id: str


def _check(scope: str, moment: str, item_id: str) -> str:
    digest = hashlib.sha256(f"{_VERSION}\n{scope}\n{moment}\n{item_id}".encode()).hexdigest()
    return digest[:24]


def encode_cursor(scope: str, position: Position) -> str:
    """Return the opaque cursor after `position` in the listing named by `scope`."""
    moment = position.created_at.astimezone(UTC).isoformat()
    check = _check(scope, moment, position.id)
    payload = {"v": _VERSION, "t": moment, "i": position.id, "c": check}
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, scope: str, field: str = "cursor") -> Position:
    """Return the position a cursor of this listing holds; raise InvalidCursor otherwise."""
    problem = "it is not a cursor this service made; start again without one"
    try:
        if not cursor or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
            raise ValueError(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("v") != _VERSION:
            raise ValueError(cursor)
        moment, item_id, check = payload["t"], payload["i"], payload["c"]
        if not all(isinstance(part, str) for part in (moment, item_id, check)):
            raise ValueError(cursor)
        if check != _check(scope, moment, item_id):
            problem = (
                "it belongs to another listing (another owner, or other filters); "
                "page with the filters it was given for, or start again without one"
            )
            raise ValueError(cursor)
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None:
            raise ValueError(cursor)
    except (ValueError, KeyError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidCursor(f"Invalid {field}: {problem}", field) from None
    return Position(created_at.astimezone(UTC), item_id)
