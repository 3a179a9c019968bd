"""Reading JSON bodies and turning schema errors into the documented error codes."""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from flask import request
from gunicorn.http.errors import ParseException  # type: ignore[import-untyped]
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ..protocol import IDEMPOTENCY_KEY_HEADER, MEDIA_ID_RULE
from .errors import (
    SEND_JSON,
    ApiError,
    BatchTooLarge,
    InvalidMediaIds,
    InvalidRequest,
    MissingMediaIds,
    UnsupportedMediaType,
)
from .schemas import BatchDeleteRequest

_batch_schema = BatchDeleteRequest()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


class _NumberTooLarge(ValueError):
    pass


# Digits past which a number is refused before Python parses it: far beyond any real value,
# and below the interpreter's own int limit (whose message names its internals).
_MAX_NUMBER_CHARS = 1000


def _parse_int(text: str) -> int:
    if len(text) > _MAX_NUMBER_CHARS:
        raise _NumberTooLarge()
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text) if len(text) <= _MAX_NUMBER_CHARS else math.inf
    if math.isinf(value):  # 1e999 parses as infinity, which JSON does not have
        raise _NumberTooLarge()
    return value


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are each given once: a proxy reading the first of two keys and
    this service the last would see different requests."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def json_body(max_bytes: int | None = None) -> Any:
    """Return the JSON value of the body: 415 if not JSON, 413 if too large, 400 if malformed."""
    if not request.is_json:
        raise UnsupportedMediaType(SEND_JSON, {"content_type": request.mimetype or None})
    if max_bytes is not None:
        request.max_content_length = max_bytes
    try:
        raw = request.get_data(cache=False)
    except (ParseException, ClientDisconnected, OSError):
        # gunicorn's InvalidChunkSize, ChunkMissingTerminator...; a body cut short.
        raise InvalidRequest(
            "Malformed body: the chunked encoding is invalid or cut short"
        ) from None
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A streamed (chunked) body is cut at the limit rather than refused: refuse it here.
        raise RequestEntityTooLarge()
    try:
        return json.loads(
            raw,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
            object_pairs_hook=_unique_pairs,
        )
    except _DuplicateKey as error:
        raise InvalidRequest(
            f"Malformed JSON: duplicate key {error.key[:64]!r} in an object",
            {"key": error.key[:64]},
        ) from None
    except _NumberTooLarge:
        problem = "number too large"
    except json.JSONDecodeError as error:
        problem = f"{error.msg} at line {error.lineno} column {error.colno}"
    except UnicodeDecodeError:
        problem = "the body is not UTF-8 text"
    except RecursionError:
        problem = "nested too deeply"
    except ValueError as error:  # NaN and Infinity, which JSON does not have
        problem = str(error)
    raise InvalidRequest(f"Malformed JSON: {problem}")


def json_object(max_bytes: int | None = None) -> dict[str, Any]:
    """Return the request's JSON body, which must be an object."""
    body = json_body(max_bytes)
    if not isinstance(body, dict):
        received = _json_type(body)
        raise InvalidRequest(
            f"The body must be a JSON object, not {'an' if received[0] in 'aeiou' else 'a'} "
            f"{received}",
            {"received": received},
        )
    return body


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _messages(error: ValidationError) -> dict[str, Any]:
    messages = error.messages
    return messages if isinstance(messages, dict) else {"_schema": messages}


def _first_error(messages: Any) -> tuple[list[str | int], str]:
    """Follow marshmallow's message tree to its first leaf: (path below the field, text)."""
    path: list[str | int] = []
    while isinstance(messages, dict | list):
        if isinstance(messages, list):
            messages = messages[0]
            continue
        keys = list(messages)
        key = min(keys) if all(isinstance(k, int) for k in keys) else keys[0]
        path.append(key)
        messages = messages[key]
    return path, str(messages)


def field_error(messages: dict[str, Any]) -> ApiError:
    """Turn marshmallow's messages into one INVALID_REQUEST naming the first bad field.

    Only the first problem is reported: the tree of every problem in a large body could be
    far larger than the body itself.
    """
    name = next(iter(messages))
    path, problem = _first_error(messages[name])
    if problem == "Unknown field.":
        return InvalidRequest(f"Unknown field: {name}", {"field": name})
    where = name + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    details: dict[str, Any] = {"field": name}
    if path:
        details["path"] = path
    return InvalidRequest(f"Invalid {where}: {problem}", details)


def load(schema: Schema, body: dict[str, Any]) -> dict[str, Any]:
    """Load a body with a schema; any error is INVALID_REQUEST naming the field."""
    try:
        data: dict[str, Any] = schema.load(body)
    except ValidationError as error:
        raise field_error(_messages(error)) from None
    return data


def load_batch_request(body: dict[str, Any], max_batch: int) -> tuple[list[str], str | None]:
    """Return the unique ids (first occurrence kept, in order) and the reason of a batch."""
    if "media_ids" not in body:
        raise MissingMediaIds("media_ids is required: an array of media id strings")
    ids = body["media_ids"]
    if isinstance(ids, list) and len(ids) > max_batch:
        raise BatchTooLarge(
            f"Maximum {max_batch} media IDs per batch deletion",
            {"max_batch_size": max_batch, "received": len(ids)},
        )
    try:
        data = _batch_schema.load(body)
    except ValidationError as error:
        messages = _messages(error)
        if "media_ids" in messages:
            raise _invalid_ids(messages["media_ids"]) from None
        raise field_error(messages) from None
    return list(dict.fromkeys(data["media_ids"])), data["reason"]


def _invalid_ids(problem: Any) -> InvalidMediaIds:
    if isinstance(problem, dict):
        index = min(int(i) for i in problem)
        return InvalidMediaIds(
            f"media_ids[{index}] is not a valid media id: ids are {MEDIA_ID_RULE}",
            {"field": "media_ids", "index": index, "errors": {str(i): problem[i] for i in problem}},
        )
    return InvalidMediaIds(
        "media_ids must be a non-empty array of media id strings",
        {"field": "media_ids", "errors": problem},
    )


# Exactly these spellings: the OpenAPI document lists them, and a client bug ("TRUE" meant
# as true, or not) is better caught than guessed.
FLAG_TRUE, FLAG_FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})
# Visible ASCII, as in the IETF draft and the payment APIs that use the header.
IDEMPOTENCY_KEY_PATTERN = "^[!-~]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN.strip("^$"))


def query_flag(name: str) -> bool:
    """Return a boolean query parameter: true/false or 1/0; absent is false; twice is refused."""
    given = request.args.getlist(name)
    if len(given) > 1:
        raise InvalidRequest(
            f"Query parameter {name} was given {len(given)} times; give it once",
            {"parameter": name},
        )
    raw = given[0] if given else None
    if raw is None or raw in FLAG_FALSE:
        return False
    if raw in FLAG_TRUE:
        return True
    raise InvalidRequest(
        f"Query parameter {name} must be true or false", {"parameter": name, "received": raw[:64]}
    )


def query_value(name: str) -> str | None:
    """Return a query parameter given at most once (None when absent); twice is refused."""
    given = request.args.getlist(name)
    if len(given) > 1:
        raise InvalidRequest(
            f"Query parameter {name} was given {len(given)} times; give it once",
            {"field": name},
        )
    return given[0] if given else None


_DIGITS = re.compile(r"[0-9]{1,9}")


def query_int(name: str, default: int, low: int, high: int) -> int:
    """Return an integer query parameter within low..high, written in plain digits."""
    raw = query_value(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidRequest(
            f"Query parameter {name} must be an integer from {low} to {high}",
            {"field": name, "received": raw[:64]},
        )
    return int(raw)


def idempotency_key() -> str | None:
    """Return the request's Idempotency-Key, if it sent one; refuse a malformed one."""
    given = request.headers.getlist(IDEMPOTENCY_KEY_HEADER)
    if not given:
        return None
    if len(given) > 1:
        raise InvalidRequest(
            f"{IDEMPOTENCY_KEY_HEADER} was sent {len(given)} times; send it once",
            {"header": IDEMPOTENCY_KEY_HEADER},
        )
    key = given[0]
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest(
            f"{IDEMPOTENCY_KEY_HEADER} must be 1 to 255 visible ASCII characters "
            "(a UUID is a good choice)",
            {"header": IDEMPOTENCY_KEY_HEADER},
        )
    return key


def refuse_idempotency_key(why: str) -> None:
    """Refuse an Idempotency-Key on a route that cannot honour it, rather than ignore it."""
    if IDEMPOTENCY_KEY_HEADER in request.headers:
        raise InvalidRequest(
            f"{IDEMPOTENCY_KEY_HEADER} is not supported here: {why}",
            {"header": IDEMPOTENCY_KEY_HEADER},
        )
