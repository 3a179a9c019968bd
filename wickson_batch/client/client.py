"""A client for the batch-deletion API: chunks ids, retries safely, merges the answers.

Every batch carries its own `Idempotency-Key`, reused on every retry of that batch, so a
retry after a lost answer replays what the server decided instead of deleting again.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar, overload
from urllib.parse import quote

import httpx

from ..protocol import (
    API_KEY_HEADER,
    BATCH_PATH,
    IDEMPOTENCY_KEY_HEADER,
    ITEM_STATUSES,
    JOBS_PATH,
    MEDIA_ID_RULE,
    REPLAYED_HEADER,
    RETRY_AFTER_HEADER,
    ErrorCode,
    JobStatus,
    is_media_id,
)
from ..protocol import DEFAULT_MAX_BATCH_SIZE as DEFAULT_BATCH_SIZE
from .jobs import (
    DeletionJob,
    JobItem,
    JobPreview,
    Selection,
    parse_item,
    parse_job,
    parse_preview,
)

T = TypeVar("T")

# The longest wait a Retry-After header is obeyed for.
MAX_RETRY_AFTER = 86_400.0

# Failures worth another attempt: the request may not have arrived, or its answer was lost.
# Other transport errors (a bad URL scheme, a proxy refusing) would fail the same way again.
RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class Batch:
    """One request: its ids, its reason, and the Idempotency-Key every attempt carries."""

    media_ids: tuple[str, ...]
    reason: str | None
    idempotency_key: str

    @classmethod
    def new(cls, media_ids: Iterable[str], reason: str | None) -> Batch:
        """Return a batch with a fresh random key."""
        return cls(tuple(media_ids), reason, str(uuid.uuid4()))

    def body(self) -> dict[str, Any]:
        """Return the request body; the same every time, as the key requires."""
        return {"media_ids": list(self.media_ids), "reason": self.reason}


@dataclass(frozen=True)
class BatchResult:
    """What the server answered for one batch."""

    batch: Batch
    deleted: tuple[str, ...]
    failed: dict[str, str]
    hd_vectors: int
    ld_vectors: int
    operation_id: str
    cleanup_pending: tuple[str, ...]
    replayed: bool  # the server replayed an earlier answer to this key
    attempts: int  # requests that failed before the one that answered (429s not counted)
    rate_limit_waits: int
    waited_seconds: float


@dataclass(frozen=True)
class Answer:
    """A request's final answer, and what it took to get it."""

    response: httpx.Response
    failures: int  # attempts that failed before it (429s not counted)
    waits: int  # 429s waited out
    waited: float  # seconds slept before it

    @property
    def replayed(self) -> bool:
        """True when the server replayed an earlier answer to this Idempotency-Key."""
        return bool(self.response.headers.get(REPLAYED_HEADER) == "true")


@dataclass
class DeleteResult:
    """The merged outcome of every batch answered so far."""

    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    hd_vectors: int = 0
    ld_vectors: int = 0
    operation_ids: list[str] = field(default_factory=list)
    cleanup_pending: list[str] = field(default_factory=list)
    batches: int = 0
    replayed_batches: int = 0
    retries: int = 0
    rate_limit_waits: int = 0
    waited_seconds: float = 0.0

    def add(self, result: BatchResult) -> None:
        """Merge one batch's answer."""
        self.deleted.extend(result.deleted)
        self.failed.update(result.failed)
        self.hd_vectors += result.hd_vectors
        self.ld_vectors += result.ld_vectors
        self.operation_ids.append(result.operation_id)
        self.cleanup_pending.extend(result.cleanup_pending)
        self.batches += 1
        self.replayed_batches += int(result.replayed)
        self.retries += result.attempts
        self.rate_limit_waits += result.rate_limit_waits
        self.waited_seconds += result.waited_seconds


class WicksonError(Exception):
    """The client stopped; `result` holds what was done before, `batch` the one it stopped on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.result = DeleteResult()
        self.batch: Batch | None = None
        self.remaining: list[Batch] = []  # batches never answered, the stopped one first


class ApiError(WicksonError):
    """The server refused the request in its error envelope; retrying cannot change that."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.server_message = message
        self.details = details or {}
        # Sends of the same batch before this refusal that got no final answer (a network
        # error, a 5xx, a 409 in use): if any, the server may have applied the batch.
        self.unanswered_attempts = 0

    @property
    def request_id(self) -> str | None:
        """The id to quote when reporting this error."""
        value = self.details.get("request_id")
        return value if isinstance(value, str) else None


class RetriesExhausted(WicksonError):
    """A batch kept failing (network errors, 5xx, 409 in use, or 429s past the cap)."""

    def __init__(self, attempts: int, last_error: str) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


class ProtocolError(WicksonError):
    """The server answered something that is not the documented response."""


class JobWaitTimeout(WicksonError):
    """A job did not finish in the time given to wait for it; it goes on all the same."""

    def __init__(self, job: DeletionJob, timeout: float) -> None:
        super().__init__(f"job {job.job_id} is still {job.status} after {timeout:g} s")
        self.job = job


def plan_batches(
    media_ids: Iterable[str], reason: str | None, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[Batch]:
    """Dedupe ids (first occurrence kept), check them, and split them into keyed batches."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    unique = list(dict.fromkeys(media_ids))
    for media_id in unique:
        if not isinstance(media_id, str) or not is_media_id(media_id):
            raise ValueError(f"{media_id!r} is not a valid media id: ids are {MEDIA_ID_RULE}")
    return [
        Batch.new(unique[start : start + batch_size], reason)
        for start in range(0, len(unique), batch_size)
    ]


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Return the seconds a Retry-After header asks for (delta or HTTP date), or None.

    Only what HTTP allows is taken (whole seconds, or a date), at most a day: a header such
    as `inf` or `1e400` is ignored rather than put to sleep for ever.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


SendHook = Callable[[Batch], None]
BatchHook = Callable[[BatchResult], None]
WaitHook = Callable[[float, str], None]


class WicksonClient:
    """Delete any number of media through the batch API, retrying only what is safe to."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        max_rate_limit_waits: int | None = 100,
        in_use_timeout: float = 120.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_rate_limit_waits = max_rate_limit_waits
        self.in_use_timeout = in_use_timeout
        self.batch_size = batch_size
        self._sleep = sleep
        self._clock = clock
        self._random = random_fraction
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={API_KEY_HEADER: api_key, "User-Agent": "wickson-batch-client"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> WicksonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def plan(self, media_ids: Iterable[str], reason: str | None = None) -> list[Batch]:
        """Split ids into this client's batches, each with a fresh Idempotency-Key."""
        return plan_batches(media_ids, reason, self.batch_size)

    def delete_media(
        self,
        media_ids: Iterable[str],
        reason: str | None = None,
        *,
        on_send: SendHook | None = None,
        on_batch: BatchHook | None = None,
        on_wait: WaitHook | None = None,
    ) -> DeleteResult:
        """Delete every id, batch by batch, and return the merged result.

        `on_send` runs before a batch's first attempt, `on_batch` after its answer, `on_wait`
        before every sleep (seconds, why). On an error that stops the run, the exception's
        `result` holds the batches answered until then.
        """
        return self.delete_batches(
            self.plan(media_ids, reason), on_send=on_send, on_batch=on_batch, on_wait=on_wait
        )

    def delete_batches(
        self,
        batches: Sequence[Batch],
        *,
        on_send: SendHook | None = None,
        on_batch: BatchHook | None = None,
        on_wait: WaitHook | None = None,
    ) -> DeleteResult:
        """Send prepared batches in order (keys kept, e.g. to finish an interrupted run)."""
        result = DeleteResult()
        queue = deque(batches)
        while queue:
            batch = queue[0]
            if on_send:
                on_send(batch)
            try:
                answer = self.delete_batch(batch, on_wait=on_wait)
            except ApiError as error:
                smaller = _smaller_batch_size(error, len(batch.media_ids))
                if smaller is None:
                    raise _stopped(error, result, queue) from None
                # The server takes fewer ids than we sent, and a 400 changed nothing:
                # re-split what is left at its size, with new keys.
                self.batch_size = smaller
                queue = deque(
                    part
                    for queued in queue
                    for part in plan_batches(queued.media_ids, queued.reason, smaller)
                )
                continue
            except WicksonError as error:
                raise _stopped(error, result, queue) from None
            queue.popleft()
            result.add(answer)
            if on_batch:
                on_batch(answer)
        return result

    def delete_batch(self, batch: Batch, *, on_wait: WaitHook | None = None) -> BatchResult:
        """Send one batch until it is answered; raise when it cannot be."""
        answer = self._send(
            "DELETE",
            BATCH_PATH,
            json=batch.body(),
            headers={IDEMPOTENCY_KEY_HEADER: batch.idempotency_key},
            on_wait=on_wait,
        )
        return _batch_result(batch, answer)

    @overload
    def start_deletion_job(
        self,
        selection: Selection,
        reason: str | None = None,
        cascade: bool = False,
        idempotency_key: str | None = None,
        dry_run: Literal[False] = False,
    ) -> DeletionJob: ...

    @overload
    def start_deletion_job(
        self,
        selection: Selection,
        reason: str | None = None,
        cascade: bool = False,
        idempotency_key: str | None = None,
        *,
        dry_run: Literal[True],
    ) -> JobPreview: ...

    def start_deletion_job(
        self,
        selection: Selection,
        reason: str | None = None,
        cascade: bool = False,
        idempotency_key: str | None = None,
        dry_run: bool = False,
    ) -> DeletionJob | JobPreview:
        """Start a job deleting `selection` in the background, and return it (queued).

        Every attempt carries the same `Idempotency-Key` (a fresh UUID unless one is given),
        so a retry after a lost answer gets the job the first attempt started, never a second
        job. With `dry_run=True` nothing is stored: the answer says what would be deleted.
        """
        body: dict[str, Any] = {"selection": _selection_body(selection), "cascade": cascade}
        if reason is not None:
            body["reason"] = reason
        if dry_run:
            headers = {IDEMPOTENCY_KEY_HEADER: idempotency_key} if idempotency_key else {}
            answer = self._send(
                "POST", JOBS_PATH, json=body, params={"dry_run": "true"}, headers=headers
            )
            return _parsed("a dry run", answer, parse_preview)
        key = idempotency_key or str(uuid.uuid4())
        answer = self._send(
            "POST",
            JOBS_PATH,
            ok=(200, 202),
            json=body,
            headers={IDEMPOTENCY_KEY_HEADER: key},
        )
        return _parsed("a new job", answer, lambda data: parse_job(data, replayed=answer.replayed))

    def get_deletion_job(self, job_id: str) -> DeletionJob:
        """Return the job as it stands now (404 `JOB_NOT_FOUND` for another owner's)."""
        answer = self._send("GET", _job_path(job_id))
        return _parsed("a job", answer, parse_job)

    def list_deletion_jobs(self, *, page_size: int | None = None) -> Iterator[DeletionJob]:
        """Yield every job of the key's owner, newest first, fetching page after page."""
        for entry in self._pages(JOBS_PATH, {}, page_size):
            yield _parsed_entry("a job", entry, parse_job)

    def cancel_deletion_job(self, job_id: str) -> DeletionJob:
        """Ask a job to stop between chunks, and return it.

        Its status becomes `cancelled` once the chunk at work has committed: until then the
        answer may still say `processing`. A finished job is 409 `JOB_FINISHED`, unless an
        earlier attempt of this call, whose answer was lost, is what cancelled it.
        """
        try:
            answer = self._send("POST", f"{_job_path(job_id)}/cancel", ok=(200, 202))
        except ApiError as error:
            if error.code == ErrorCode.JOB_FINISHED and error.unanswered_attempts:
                job = self.get_deletion_job(job_id)
                if job.status == JobStatus.CANCELLED:
                    return job
            raise
        return _parsed("a cancelled job", answer, parse_job)

    def job_items(
        self, job_id: str, status: str | None = None, *, page_size: int | None = None
    ) -> Iterator[JobItem]:
        """Yield a job's per-media outcomes (only `deleted` or `failed` ones, if asked)."""
        if status is not None and status not in ITEM_STATUSES:
            raise ValueError(f"status must be one of {', '.join(ITEM_STATUSES)}")
        query = {"status": status} if status else {}
        for entry in self._pages(f"{_job_path(job_id)}/items", query, page_size):
            yield _parsed_entry("a job item", entry, parse_item)

    def wait_for_job(
        self,
        job_id: str,
        *,
        on_progress: Callable[[DeletionJob], None] | None = None,
        poll_interval: float = 1.0,
        timeout: float | None = None,
    ) -> DeletionJob:
        """Poll a job every `poll_interval` seconds until it finishes, and return it.

        `on_progress` gets the job after every poll, the last (finished) one included.
        Raise `JobWaitTimeout` (with the job as last seen) after `timeout` seconds; the job
        goes on all the same.
        """
        if poll_interval <= 0:
            raise ValueError("poll_interval must be more than 0")
        started = self._clock()
        while True:
            job = self.get_deletion_job(job_id)
            if on_progress:
                on_progress(job)
            if job.finished:
                return job
            if timeout is not None and self._clock() - started + poll_interval > timeout:
                raise JobWaitTimeout(job, timeout)
            self._sleep(poll_interval)

    def _pages(self, path: str, query: Mapping[str, str], page_size: int | None) -> Iterator[Any]:
        """Yield the raw entries of a paged list, following `next_cursor` to the end."""
        params = dict(query)
        if page_size is not None:
            params["limit"] = str(page_size)
        while True:
            answer = self._send("GET", path, params=params)
            page = _parsed("a page", answer, _page)
            yield from page.items
            if not page.has_more:
                return
            if page.next_cursor is None or page.next_cursor == params.get("cursor"):
                raise ProtocolError(f"a page of {path} says it has more but gives no new cursor")
            params["cursor"] = page.next_cursor

    def _send(
        self,
        method: str,
        path: str,
        *,
        ok: Container[int] = (200,),
        json: Any = None,
        params: Mapping[str, str | Sequence[str]] | None = None,
        headers: Mapping[str, str] | None = None,
        on_wait: WaitHook | None = None,
    ) -> Answer:
        """Send one request until it is answered with a status in `ok`; raise when it cannot be.

        Every attempt is the same request (body, headers, Idempotency-Key): only requests that
        are safe to repeat, or that carry a key, may come through here.
        """
        failures = 0
        waits = 0
        waited = 0.0
        in_use_waited = 0.0
        in_use_polls = 0
        while True:
            delay: float | None = None
            try:
                response = self._http.request(
                    method, path, json=json, params=params, headers=headers
                )
            except RETRYABLE_TRANSPORT_ERRORS as error:
                problem = f"{type(error).__name__}: {error}"
            except httpx.HTTPError as error:
                raise WicksonError(f"request failed: {type(error).__name__}: {error}") from error
            else:
                if response.status_code in ok:
                    return Answer(response, failures, waits, waited)
                refusal = _api_error(response)
                retry_after = parse_retry_after(response.headers.get(RETRY_AFTER_HEADER))
                if response.status_code == 429:
                    # The limit is not a failure: wait as told and send the same request again.
                    waits += 1
                    if self.max_rate_limit_waits is not None and waits > self.max_rate_limit_waits:
                        raise RetriesExhausted(failures + waits, str(refusal))
                    delay = retry_after if retry_after is not None else self._backoff(waits)
                    why = f"rate limited: {refusal.server_message}"
                    waited += self._wait(delay, why, on_wait)
                    continue
                if refusal.code == ErrorCode.IDEMPOTENCY_KEY_IN_USE:
                    # The first send of this request is still at work, or its server died
                    # after deciding it (the server then answers 409 until the operation is
                    # older than its RECONCILE_GRACE_SECONDS, 60 by default): poll as told, for
                    # up to `in_use_timeout` seconds, and get the decided answer replayed.
                    if in_use_waited >= self.in_use_timeout:
                        raise RetriesExhausted(failures + in_use_polls + 1, str(refusal))
                    in_use_polls += 1
                    delay = retry_after if retry_after is not None else 1.0
                    waited += self._wait(delay, f"retrying: {refusal.server_message}", on_wait)
                    in_use_waited += delay
                    continue
                if response.status_code < 500:
                    refusal.unanswered_attempts = failures + in_use_polls
                    raise refusal
                problem, delay = str(refusal), retry_after
            failures += 1
            if failures > self.max_retries:
                raise RetriesExhausted(failures, problem)
            if delay is None:
                delay = self._backoff(failures)
            waited += self._wait(delay, f"retrying: {problem}", on_wait)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(n-1))]."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return float(self._random() * ceiling)

    def _wait(self, seconds: float, why: str, on_wait: WaitHook | None) -> float:
        if on_wait:
            on_wait(seconds, why)
        started = self._clock()
        self._sleep(seconds)
        return self._clock() - started


def _stopped(error: WicksonError, result: DeleteResult, queue: deque[Batch]) -> WicksonError:
    error.result = result
    error.batch = queue[0] if queue else None
    error.remaining = list(queue)
    return error


def _smaller_batch_size(error: ApiError, sent: int) -> int | None:
    if error.code != ErrorCode.BATCH_TOO_LARGE:
        return None
    limit = error.details.get("max_batch_size")
    if isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit < sent:
        return limit
    return None


@dataclass(frozen=True)
class _Page:
    items: list[Any]
    has_more: bool
    next_cursor: str | None


def _page(data: Any) -> _Page:
    items, has_more, cursor = data["items"], data["has_more"], data["next_cursor"]
    if not isinstance(items, list) or not isinstance(has_more, bool):
        raise TypeError("items must be a list and has_more a boolean")
    if cursor is not None and not isinstance(cursor, str):
        raise TypeError("next_cursor must be a string or null")
    return _Page(items, has_more, cursor)


def _parsed(what: str, answer: Answer, parse: Callable[[Any], T]) -> T:
    """Parse the `data` of an answer, or raise ProtocolError naming `what` was expected."""
    body = _json(answer.response)
    try:
        return parse(body["data"])
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        raise ProtocolError(
            f"unexpected answer for {what} (status {answer.response.status_code}): {error!r}"
        ) from None


def _parsed_entry(what: str, entry: Any, parse: Callable[[Any], T]) -> T:
    try:
        return parse(entry)
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        raise ProtocolError(f"unexpected entry for {what} in a page: {error!r}") from None


def _job_path(job_id: str) -> str:
    # Quoted whole, dots too: an id such as `../x` or `..` names no other route (a path's
    # `.` and `..` segments are resolved before sending, `%2E` ones are not).
    if not job_id:
        raise ValueError("a job id is not empty")
    return f"{JOBS_PATH}/{quote(job_id, safe='').replace('.', '%2E')}"


def _selection_body(selection: Selection) -> list[Any]:
    if isinstance(selection, str | Mapping):
        raise TypeError("a selection is a list of items: wrap a single id or object in [...]")
    return [item if isinstance(item, str) else dict(item) for item in selection]


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _api_error(response: httpx.Response) -> ApiError:
    body = _json(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        details = error.get("details")
        return ApiError(
            response.status_code,
            error["code"],
            str(body.get("message", "")),
            details if isinstance(details, dict) else None,
        )
    # Not our envelope: a proxy or load balancer answered.
    text = response.text[:200].strip() or response.reason_phrase
    return ApiError(response.status_code, f"HTTP_{response.status_code}", text)


def _batch_result(batch: Batch, answer: Answer) -> BatchResult:
    response = answer.response
    body = _json(response)
    try:
        data = body["data"]
        deleted, failed = data["deleted"], data["failed"]
        result = BatchResult(
            batch=batch,
            deleted=tuple(str(i) for i in deleted["media_ids"]),
            failed={str(k): str(v) for k, v in failed["reasons"].items()},
            hd_vectors=int(deleted["hd_vectors"]),
            ld_vectors=int(deleted["ld_vectors"]),
            operation_id=str(body["metadata"]["operation_id"]),
            cleanup_pending=tuple(str(i) for i in deleted.get("cleanup_pending", [])),
            replayed=answer.replayed,
            attempts=answer.failures,
            rate_limit_waits=answer.waits,
            waited_seconds=answer.waited,
        )
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        raise ProtocolError(
            f"unexpected answer to a batch (status {response.status_code}): {error!r}"
        ) from None
    unanswered = set(batch.media_ids) - set(result.deleted) - set(result.failed)
    if unanswered:
        raise ProtocolError(f"the answer leaves out {len(unanswered)} of the batch's ids")
    return result
