"""Filters and selections (DESIGN.md section 9): parsed from JSON, answered in SQL.

A *filter* picks the caller's live media by creation time, parent and top-level metadata
equality. A *selection* is the union of plain ids and of filter, children and all items,
each minus its own `exclude`. Both are resolved by the database, never in Python: a job
turns a selection of a million media into its manifest with one INSERT ... SELECT.

Metadata equality never confuses types: `{"n": 1}` matches the number 1 (or 1.0), not the
string "1" nor `true`; `{"flag": true}` matches only the boolean. It compiles to
`json_type`/`json_extract` on SQLite and `json_typeof`/`->>` on PostgreSQL (_MetadataEquals).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Numeric,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import InternalTraversal

from ..models import Media, MediaState
from ..protocol import MEDIA_ID_RULE, is_media_id
from .errors import InvalidFilter, InvalidSelection

__all__ = [
    "EMPTY_FILTER_MESSAGE",
    "FILTER_FIELDS",
    "MAX_FILTER_METADATA_KEYS",
    "MAX_QUERY_VALUE_CHARS",
    "MAX_SELECTION_IDS",
    "MAX_SELECTION_ITEMS",
    "MediaFilter",
    "MetadataValue",
    "Selection",
    "SelectionItem",
    "TIME_PATTERN",
    "filter_clause",
    "filter_from_query",
    "parse_filter",
    "parse_query_value",
    "parse_selection",
    "selected_ids",
]

MetadataValue = str | int | float | bool

FILTER_FIELDS = ("created_before", "created_after", "parent_id", "metadata")
MAX_SELECTION_ITEMS = 100  # filter, children and all items
MAX_SELECTION_IDS = 10_000  # plain ids plus every exclude, as sent
MAX_FILTER_METADATA_KEYS = 32
MAX_METADATA_KEY_CHARS = 256
MAX_METADATA_STRING_CHARS = 4096
# A `metadata.KEY=VALUE` of the listing's query: the whole request line must stay within
# what the HTTP server reads (gunicorn: 4094 bytes), even percent-encoded (up to 12 bytes a
# character). A longer value belongs in a JSON filter.
MAX_QUERY_VALUE_CHARS = 200
# The times a filter reads, exactly (the same pattern is in /openapi.json): a date, or a
# date and a time to the minute, second or microsecond, with an offset (Z, +02:00) or not.
TIME_PATTERN = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    "([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_TIME = re.compile(TIME_PATTERN.strip("^$"))
MAX_TIME_CHARS = 64
# Metadata integers a filter may name: what both databases compare exactly.
_INT64 = (-(2**63), 2**63 - 1)

EMPTY_FILTER_MESSAGE = 'an empty filter selects all your media; send {"all": true} if you mean it'

_ITEM_KINDS = ("filter", "children", "all")
_ITEM_KEYS = frozenset({*_ITEM_KINDS, "exclude"})


# --- the filter -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaFilter:
    """Which of an owner's live media match: every field optional, all ANDed."""

    created_before: datetime | None = None  # exclusive, aware UTC
    created_after: datetime | None = None  # inclusive, aware UTC
    parent_id: str | None = None
    metadata: Mapping[str, MetadataValue] = field(default_factory=lambda: MappingProxyType({}))

    def is_empty(self) -> bool:
        """True when the filter names nothing, so that it matches every media."""
        return (
            self.created_before is None
            and self.created_after is None
            and self.parent_id is None
            and not self.metadata
        )

    def to_json(self) -> dict[str, Any]:
        """Return the canonical JSON of this filter: the fields it names, keys sorted."""
        found: dict[str, Any] = {}
        if self.created_after is not None:
            found["created_after"] = _iso(self.created_after)
        if self.created_before is not None:
            found["created_before"] = _iso(self.created_before)
        if self.metadata:
            found["metadata"] = {key: self.metadata[key] for key in sorted(self.metadata)}
        if self.parent_id is not None:
            found["parent_id"] = self.parent_id
        return found


def _iso(moment: datetime) -> str:
    """An aware time as ISO-8601 in UTC with `Z`, microseconds kept when there are any."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _at(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _shown(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _clean_text(value: str, where: str) -> None:
    """Refuse text no database can compare as sent (NUL, lone surrogates)."""
    if "\x00" in value:
        raise InvalidFilter(f"{where} must not contain the NUL character", where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFilter(
            f"{where} must be Unicode text (it holds a lone surrogate)", where
        ) from None


def _parse_time(raw: object, where: str) -> datetime:
    example = "e.g. 2025-06-01 or 2025-06-01T12:00:00Z"
    if not isinstance(raw, str):
        raise InvalidFilter(f"{where} must be an ISO-8601 date or time string, {example}", where)
    try:
        if len(raw) > MAX_TIME_CHARS or not _TIME.fullmatch(raw):
            raise ValueError(raw)
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidFilter(
            f"{where} is not an ISO-8601 date or time: {_shown(raw)!r}; {example}", where
        ) from None
    # A time without an offset is UTC, as every time this API shows is.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_metadata_value(raw: object, where: str) -> MetadataValue:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        if not _INT64[0] <= raw <= _INT64[1]:
            raise InvalidFilter(f"{where} is out of range: integers are 64-bit", where)
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise InvalidFilter(f"{where} must be a finite number", where)
        return raw
    if isinstance(raw, str):
        if len(raw) > MAX_METADATA_STRING_CHARS:
            raise InvalidFilter(
                f"{where} is longer than {MAX_METADATA_STRING_CHARS} characters", where
            )
        _clean_text(raw, where)
        return raw
    raise InvalidFilter(
        f"{where} must be a string, a number or a boolean: metadata matches by equality", where
    )


def _parse_metadata(raw: object, where: str) -> Mapping[str, MetadataValue]:
    if not isinstance(raw, dict):
        raise InvalidFilter(f"{where} must be a JSON object of KEY: VALUE", where)
    if len(raw) > MAX_FILTER_METADATA_KEYS:
        raise InvalidFilter(f"{where} names at most {MAX_FILTER_METADATA_KEYS} keys", where)
    found: dict[str, MetadataValue] = {}
    for key, value in raw.items():
        at = f"{where}.{_shown(key)}"
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise InvalidFilter(
                f"{at}: a metadata key is 1 to {MAX_METADATA_KEY_CHARS} characters", at
            )
        _clean_text(key, at)
        found[key] = _parse_metadata_value(value, at)
    return MappingProxyType(dict(sorted(found.items())))


def _parse_filter(raw: object, prefix: str) -> MediaFilter:
    if not isinstance(raw, dict):
        where = prefix or "filter"
        raise InvalidFilter(f"{where} must be a JSON object", where)
    for name in raw:
        if name not in FILTER_FIELDS:
            at = _at(prefix, _shown(str(name)))
            raise InvalidFilter(
                f"Unknown filter field: {at} (a filter has {', '.join(FILTER_FIELDS)})", at
            )
    before = after = parent = None
    metadata: Mapping[str, MetadataValue] = MappingProxyType({})
    if raw.get("created_before") is not None:
        before = _parse_time(raw["created_before"], _at(prefix, "created_before"))
    if raw.get("created_after") is not None:
        after = _parse_time(raw["created_after"], _at(prefix, "created_after"))
    if raw.get("parent_id") is not None:
        parent = raw["parent_id"]
        where = _at(prefix, "parent_id")
        if not isinstance(parent, str) or not is_media_id(parent):
            raise InvalidFilter(f"{where} must be a media id: {MEDIA_ID_RULE}", where)
    if raw.get("metadata") is not None:
        metadata = _parse_metadata(raw["metadata"], _at(prefix, "metadata"))
    return MediaFilter(before, after, parent, metadata)


def parse_filter(raw: object, field: str = "filter") -> MediaFilter:
    """Parse a JSON filter; raise InvalidFilter naming the field under `field` that is wrong.

    A field given as null is the same as a field left out. An empty filter is returned as
    it is: refusing it is the selection's business (a listing without a filter is fine).
    """
    return _parse_filter(raw, field)


def parse_query_value(text: str) -> MetadataValue:
    """Type a `metadata.KEY=VALUE` query value: a JSON number, true, false or "string",
    else the text as it stands (`summer-2025`, `null`, `[1]` are all strings).

    So `metadata.n=1` is the number 1 and `metadata.n="1"` the string "1".
    """
    try:
        value = json.loads(text, parse_constant=_not_json)
    except ValueError:  # also a number too long to parse: keep it as text
        return text
    if isinstance(value, bool | int | float | str):
        return value
    return text


def _not_json(name: str) -> Any:
    raise ValueError(name)


def filter_from_query(params: Sequence[tuple[str, str]]) -> MediaFilter:
    """Build a filter from query parameters: `created_before`, `created_after`, `parent_id`
    and `metadata.KEY=VALUE` (typed by parse_query_value), each at most once.

    `params` holds only those parameters; errors name the parameter.
    """
    raw: dict[str, Any] = {}
    metadata: dict[str, MetadataValue] = {}
    for name, text in params:
        if name.startswith("metadata."):
            key = name.removeprefix("metadata.")
            if key in metadata:
                raise InvalidFilter(f"Query parameter {_shown(name)} was given twice", name)
            if len(text) > MAX_QUERY_VALUE_CHARS:
                raise InvalidFilter(
                    f"{_shown(name)} is longer than {MAX_QUERY_VALUE_CHARS} characters; "
                    "filter on longer values with a JSON filter (a selection)",
                    _shown(name),
                )
            metadata[key] = parse_query_value(text)
        elif name in raw:
            raise InvalidFilter(f"Query parameter {name} was given twice; give it once", name)
        elif name in ("created_before", "created_after", "parent_id"):
            raw[name] = text
        else:
            raise InvalidFilter(f"Unknown filter field: {_shown(name)}", _shown(name))
    if metadata:
        raw["metadata"] = metadata
    return _parse_filter(raw, "")


# --- metadata equality, per dialect ------------------------------------------------------

_Kind = Literal["string", "number", "boolean"]


class _MetadataEquals(ColumnElement[bool]):
    """`media.metadata` has the top-level `key` equal to a value of exactly one JSON kind.

    `value` is bound as text: the string itself, a number's JSON text, or true/false.
    Keys and values are bound parameters, so the compiled statement is cached once per shape.
    """

    type = Boolean()
    inherit_cache = True
    _traverse_internals = [
        ("key_param", InternalTraversal.dp_clauseelement),
        ("value_param", InternalTraversal.dp_clauseelement),
        ("kind", InternalTraversal.dp_string),
        ("by_path", InternalTraversal.dp_boolean),
    ]

    def __init__(self, key: str, value: MetadataValue) -> None:
        self.key_param: BindParameter[str] = bindparam(None, key, type_=String(), unique=True)
        kind: _Kind
        if isinstance(value, bool):
            kind, text = "boolean", "true" if value else "false"
        elif isinstance(value, int | float):
            kind, text = "number", json.dumps(value)
        else:
            kind, text = "string", value
        self.kind = kind
        self.value_param: BindParameter[str] = bindparam(None, text, type_=String(), unique=True)
        # SQLite (3.40) matches a JSON path against a key's text as stored, escapes and
        # all, and a path cannot hold a double quote: only a key that Python's json writes
        # as it is (printable ASCII, no quote, no backslash) is looked up by path; any other
        # by json_each, which decodes keys.
        self.by_path = all(" " <= char <= "~" and char not in '"\\' for char in key)


def _document() -> Any:
    return Media.__table__.c.metadata


@compiles(_MetadataEquals, "sqlite")
def _sqlite_metadata_equals(element: _MetadataEquals, compiler: SQLCompiler, **kw: Any) -> str:
    doc = _document()
    type_: Any
    value: Any
    if not element.by_path:
        entries = func.json_each(doc).table_valued("key", "type", "value")
        type_, value = entries.c.type, entries.c.value
        clause: ColumnElement[bool] = (
            select(literal(1))
            .where(entries.c.key == element.key_param, _sqlite_match(element, type_, value))
            .exists()
        )
    else:
        path = literal('$."', String()) + element.key_param + literal('"', String())
        type_, value = func.json_type(doc, path), func.json_extract(doc, path)
        clause = _sqlite_match(element, type_, value)
    # Parenthesised: without native booleans the caller may append "= 1" to it.
    return f"({compiler.process(clause, **kw)})"


def _sqlite_match(element: _MetadataEquals, type_: Any, value: Any) -> ColumnElement[bool]:
    # json_type says 'true'/'false' for booleans, which json_extract turns into 1/0.
    if element.kind == "boolean":
        return type_ == element.value_param  # type: ignore[no-any-return]
    if element.kind == "number":
        # CAST has NUMERIC affinity, which would turn the text "1" into 1: json_type first.
        number = cast(element.value_param, Numeric)
        return and_(type_.in_(["integer", "real"]), value == number)
    # Neither side has an affinity, so SQLite compares the text only with text: the number
    # 1 (or true, extracted as 1) never equals the string "1". One JSON lookup per row.
    return value == element.value_param  # type: ignore[no-any-return]


@compiles(_MetadataEquals, "postgresql")
def _postgresql_metadata_equals(element: _MetadataEquals, compiler: SQLCompiler, **kw: Any) -> str:
    doc = _document()
    key = cast(element.key_param, Text)
    json_kind = func.json_typeof(doc.op("->")(key))
    as_text = doc.op("->>", return_type=Text)(key)
    clause: ColumnElement[bool]
    if element.kind == "number":
        # CASE first: a string value must never reach the cast to numeric.
        number = case((json_kind == "number", cast(as_text, Numeric)), else_=None)
        clause = number == cast(element.value_param, Numeric)
    else:
        clause = and_(json_kind == element.kind, as_text == element.value_param)
    # Parenthesised: without native booleans the caller may append "= 1" to it.
    return f"({compiler.process(clause, **kw)})"


# --- filters as SQL ---------------------------------------------------------------------


def _conditions(media_filter: MediaFilter) -> Iterator[ColumnElement[bool]]:
    if media_filter.created_before is not None:
        yield Media.created_at < media_filter.created_before
    if media_filter.created_after is not None:
        yield Media.created_at >= media_filter.created_after
    if media_filter.parent_id is not None:
        yield Media.parent_id == media_filter.parent_id
    for key, value in media_filter.metadata.items():
        yield _MetadataEquals(key, value)


def _live_of(owner: str) -> ColumnElement[bool]:
    return and_(Media.owner == owner, Media.state == MediaState.LIVE)


def filter_clause(owner: str, media_filter: MediaFilter) -> ColumnElement[bool]:
    """The WHERE clause of the live media of `owner` that match `media_filter`."""
    return and_(_live_of(owner), *_conditions(media_filter))


# --- the selection ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SelectionItem:
    """One object item of a selection: what it picks (by `kind`), minus `exclude`.

    `filter`: the media matching `media_filter`; `children`: the direct children of
    `children_of`; `all`: every media of the owner.
    """

    kind: Literal["filter", "children", "all"]
    exclude: tuple[str, ...] = ()
    media_filter: MediaFilter | None = None
    children_of: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the canonical JSON of this item."""
        found: dict[str, Any] = {}
        if self.kind == "all":
            found["all"] = True
        elif self.kind == "children":
            found["children"] = self.children_of
        if self.exclude:
            found["exclude"] = list(self.exclude)
        if self.kind == "filter":
            assert self.media_filter is not None
            found["filter"] = self.media_filter.to_json()
        return found

    def clause(self) -> ColumnElement[bool]:
        """What this item picks among one owner's live media, its exclude removed."""
        if self.kind == "filter":
            assert self.media_filter is not None
            picked: list[ColumnElement[bool]] = list(_conditions(self.media_filter))
        elif self.kind == "children":
            picked = [Media.parent_id == self.children_of]
        else:
            picked = [true()]
        if self.exclude:
            picked.append(Media.id.not_in(self.exclude))
        return and_(*picked)


@dataclass(frozen=True, slots=True)
class Selection:
    """A parsed selection: plain ids, and object items each with its own exclude."""

    ids: tuple[str, ...]  # the plain "vec-..." items, deduplicated, in order
    items: tuple[SelectionItem, ...]  # filter / children / all items, in order

    def to_json(self) -> list[Any]:
        """Return the canonical JSON: the ids, then the items; parse_selection reads it back."""
        return [*self.ids, *(item.to_json() for item in self.items)]


def _invalid_id(where: str) -> InvalidSelection:
    return InvalidSelection(f"{where} is not a valid media id: ids are {MEDIA_ID_RULE}", where)


def _parse_exclude(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise InvalidSelection(f"{where} must be an array of media ids", where)
    for index, media_id in enumerate(raw):
        if not isinstance(media_id, str) or not is_media_id(media_id):
            raise _invalid_id(f"{where}[{index}]")
    return tuple(dict.fromkeys(raw))


def _parse_item(raw: dict[str, Any], where: str) -> SelectionItem:
    for key in raw:
        if key not in _ITEM_KEYS:
            at = f"{where}.{_shown(str(key))}"
            raise InvalidSelection(
                f"Unknown field {at}: an item has one of filter, children or all, "
                "and an optional exclude",
                at,
            )
    kinds = [kind for kind in _ITEM_KINDS if kind in raw]
    if len(kinds) != 1:
        problem = "has none" if not kinds else f"has {' and '.join(kinds)}"
        raise InvalidSelection(
            f"{where} must have exactly one of filter, children or all; it {problem}", where
        )
    (kind,) = kinds
    exclude = _parse_exclude(raw["exclude"], f"{where}.exclude") if "exclude" in raw else ()
    if kind == "filter":
        media_filter = parse_filter(raw["filter"], f"{where}.filter")
        if media_filter.is_empty():
            raise InvalidSelection(EMPTY_FILTER_MESSAGE, f"{where}.filter")
        return SelectionItem("filter", exclude, media_filter=media_filter)
    if kind == "children":
        parent = raw["children"]
        if not isinstance(parent, str) or not is_media_id(parent):
            raise _invalid_id(f"{where}.children")
        return SelectionItem("children", exclude, children_of=parent)
    if raw["all"] is not True:
        raise InvalidSelection(f"{where}.all must be true", f"{where}.all")
    return SelectionItem("all", exclude)


def parse_selection(raw: object) -> Selection:
    """Parse a JSON selection; raise InvalidSelection naming the position that is wrong.

    A filter inside it is parsed by parse_filter, so a bad filter field raises InvalidFilter
    (400 INVALID_REQUEST naming `selection[i].filter.<field>`); an empty filter is an
    InvalidSelection.
    """
    if not isinstance(raw, list):
        raise InvalidSelection(
            "selection must be a JSON array of media ids and "
            '{"filter"|"children"|"all": ..., "exclude"?: [...]} items',
            "selection",
        )
    if not raw:
        raise InvalidSelection("selection must not be empty", "selection")
    ids: list[str] = []
    items: list[SelectionItem] = []
    counted = 0
    for index, entry in enumerate(raw):
        where = f"selection[{index}]"
        if isinstance(entry, str):
            if not is_media_id(entry):
                raise _invalid_id(where)
            ids.append(entry)
            counted += 1
        elif isinstance(entry, dict):
            if len(items) == MAX_SELECTION_ITEMS:
                raise InvalidSelection(
                    f"{where}: a selection holds at most {MAX_SELECTION_ITEMS} "
                    "filter, children or all items",
                    where,
                )
            exclude = entry.get("exclude")
            counted += len(exclude) if isinstance(exclude, list) else 0
            if counted > MAX_SELECTION_IDS:
                raise _too_many_ids(where)
            items.append(_parse_item(entry, where))
        else:
            raise InvalidSelection(
                f"{where} must be a media id string or an object with filter, children or all",
                where,
            )
        if counted > MAX_SELECTION_IDS:
            raise _too_many_ids(where)
    return Selection(tuple(dict.fromkeys(ids)), tuple(items))


def _too_many_ids(where: str) -> InvalidSelection:
    return InvalidSelection(
        f"{where}: a selection holds at most {MAX_SELECTION_IDS} media ids in all its lists "
        "together (plain ids and every exclude)",
        where,
    )


def selected_ids(owner: str, selection: Selection) -> Select[str]:
    """SQL selecting the live media ids of `owner` that `selection.items` pick.

    Each item minus its own exclude, their union, ordered by (created_at, id); each id
    once, since every row of `media` is read at most once. `selection.ids` are not in it:
    the caller adds those. Usable as a subquery and in INSERT ... FROM SELECT.
    """
    picked = [item.clause() for item in selection.items]
    return (
        select(Media.id)
        .where(_live_of(owner), or_(*picked) if picked else false())
        .order_by(Media.created_at, Media.id)
    )
