"""`wickson-batch jobs`: the selection from the options, progress, summaries, exit statuses.

The command's client talks to FakeJobServer; its sleeps advance a fake clock that the
progress bar (tqdm) reads too, so rates and ETAs are exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from hypothesis import example, given
from hypothesis import strategies as st

from tests.unit.fakes import FakeJobServer, envelope, job_data
from wickson_batch.cli import main
from wickson_batch.client import WicksonClient, jobs_command
from wickson_batch.client.jobs import parse_job
from wickson_batch.client.jobs_command import parse_metadata_value, summary
from wickson_batch.services.selection import parse_query_value

URL = "http://wickson.test"
# Nothing listens here: the tests that use it must stop before the first request.
UNUSED_URL = "http://127.0.0.1:9"
FINISHED = "2026-03-09T12:35:06Z"  # 10 s after job_data's created_at


@dataclass
class Clock:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> FakeJobServer:
    fake = FakeJobServer()

    def client(url: str, api_key: str, **options: Any) -> WicksonClient:
        transport = httpx.MockTransport(fake)
        return WicksonClient(
            url, api_key, transport=transport, sleep=clock.sleep, clock=clock, **options
        )

    monkeypatch.setattr(jobs_command, "WicksonClient", client)
    monkeypatch.setattr(jobs_command, "on_terminal", lambda: False)
    return fake


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["jobs", *args], input=input, env=env)


def start(*args: str, input: str | None = None) -> Result:
    return run("start", "--url", URL, "--api-key", "k", *args, input=input)


def selection_sent(server: FakeJobServer) -> Any:
    (body,) = server.bodies()
    return body["selection"]


# --- the selection ----------------------------------------------------------------------


def test_start_all_prints_the_job_id_alone_on_stdout(server: FakeJobServer) -> None:
    result = start("--all", "--reason", "tenant left")

    assert result.exit_code == 0, result.output
    assert result.stdout == "job_1\n"
    assert result.stderr == "started job job_1 (queued)\n"
    assert server.bodies() == [
        {"selection": [{"all": True}], "cascade": False, "reason": "tenant left"}
    ]


def test_filters_and_times_make_one_filter_item_with_typed_values(server: FakeJobServer) -> None:
    result = start(
        "--filter", "metadata.campaign=summer-2025",
        "--filter", "metadata.year=2025",
        "--filter", "metadata.ratio=0.5",
        "--filter", "metadata.archived=false",
        "--filter", 'metadata.code="42"',
        "--created-before", "2025-06-01T00:00:00Z",
        "--created-after", "2025-01-01",
        "--exclude-file", "-",
        input="vec-keep-1\nvec-keep-2\n\nvec-keep-1\n",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert selection_sent(server) == [
        {
            "filter": {
                "created_before": "2025-06-01T00:00:00Z",
                "created_after": "2025-01-01",
                "metadata": {
                    "campaign": "summer-2025",
                    "year": 2025,
                    "ratio": 0.5,
                    "archived": False,
                    "code": "42",
                },
            },
            "exclude": ["vec-keep-1", "vec-keep-2"],
        }
    ]


def test_children_with_cascade(server: FakeJobServer) -> None:
    result = start("--children", "vec-parent", "--cascade")

    assert result.exit_code == 0, result.output
    assert server.bodies()[0]["selection"] == [{"children": "vec-parent"}]
    assert server.bodies()[0]["cascade"] is True


@pytest.mark.parametrize(
    ("value", "typed"),
    [
        ("summer", "summer"),
        ("2025", 2025),
        ("-3", -3),
        ("1.5e3", 1500.0),
        ("true", True),
        ("false", False),
        ('"true"', "true"),
        ('"2025"', "2025"),
        ("", ""),
        ("null", "null"),
        ("[1]", "[1]"),
        ('"unclosed', '"unclosed'),
        ('"caf\\u00e9"', "café"),
        (" 12 ", 12),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("007", "007"),  # not a JSON number: a string, as written
    ],
)
def test_metadata_values_are_typed(value: str, typed: Any) -> None:
    assert parse_metadata_value(value) == typed
    assert type(parse_metadata_value(value)) is type(typed)


@given(st.text(max_size=40) | st.from_regex(r'-?[0-9]{1,25}(\.[0-9]+)?(e-?[0-9]{1,3})?|"[^"]*"'))
@example(" 1 ")
@example('"\\ud800"')
def test_the_command_types_a_value_as_the_listing_does(text: str) -> None:
    # The client cannot import the server's function: its own copy must agree with it.
    ours, listing = parse_metadata_value(text), parse_query_value(text)
    assert (type(ours), ours) == (type(listing), listing)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "exactly one of --all, --filter/--created-before/--created-after, or --children"),
        (("--all", "--children", "vec-1"), "(got all and children)"),
        (("--all", "--created-after", "2025-01-01"), "(got all and filter)"),
        (("--filter", "campaign=summer"), "'campaign=summer' is not metadata.KEY=VALUE"),
        (("--filter", "metadata.=x"), "'metadata.=x' is not metadata.KEY=VALUE"),
        (("--filter", "metadata.campaign"), "is not metadata.KEY=VALUE"),
        (("--filter", "metadata.a=1", "--filter", "metadata.a=2"), "metadata.a is given twice"),
        (("--created-before", "June"), "'June' is not an ISO-8601 time"),
        (("--children", "not an id"), "'not an id' is not a media id"),
    ],
)
def test_bad_selections_are_refused_before_anything_is_sent(
    args: tuple[str, ...], message: str
) -> None:
    result = run("start", "--url", UNUSED_URL, "--api-key", "k", *args)

    assert result.exit_code == 2
    assert message in result.output


def test_a_bad_exclude_file_is_refused() -> None:
    result = run(
        "start", "--url", UNUSED_URL, "--api-key", "k", "--all", "--exclude-file", "-",
        input="vec-1\nnot an id\n",
    )  # fmt: skip

    assert result.exit_code == 2
    assert "Invalid value for --exclude-file" in result.output
    assert "line 2 ('not an id') is not a media id" in result.output


def test_the_api_key_may_come_from_the_environment(server: FakeJobServer) -> None:
    missing = run("start", "--url", URL, "--all")
    assert missing.exit_code == 2 and "Missing option '--api-key'" in missing.output

    result = run("start", "--url", URL, "--all", env={"WICKSON_API_KEY": "from-env"})

    assert result.exit_code == 0, result.output
    assert server.requests[0].headers["X-Api-Key"] == "from-env"


def test_a_dry_run_says_what_would_be_deleted(server: FakeJobServer) -> None:
    result = start("--all", "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "dry run: would delete 3 media (vectors hd 6 ld 3); nothing was deleted\n"
        "first ids: vec-1 vec-2\n"
    )
    assert server.requests[0].url.params["dry_run"] == "true"


def test_a_refused_start_exits_3_with_the_message_and_request_id(server: FakeJobServer) -> None:
    server.script = [envelope(401, "INVALID_API_KEY", "Invalid or missing API key")]

    result = start("--all")

    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == (
        "error: 401 INVALID_API_KEY: Invalid or missing API key\nrequest id: req_1\n"
    )


# --- waiting: summaries and exit statuses -----------------------------------------------


def finishing(status: str, **counts: Any) -> list[dict[str, Any]]:
    return [
        job_data(),
        job_data(status="processing", total=10, deleted=4),
        job_data(status=status, total=10, finished_at=FINISHED, **counts),
    ]


def test_wait_without_a_terminal_prints_status_lines_then_the_summary(
    server: FakeJobServer, clock: Clock
) -> None:
    server.timeline["job_1"] = finishing("done", deleted=10)

    result = start("--all", "--wait", "--poll-interval", "2")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "job job_1 done: deleted 10, failed 0 of 10; vectors hd 20 ld 10; in 10 s\n"
    )
    assert result.stderr == (
        "started job job_1\n"
        "job job_1 queued: the selection is not resolved yet\n"
        "job job_1 processing: deleted 4, failed 0 of 10; 6 remaining; vectors hd 8 ld 4\n"
    )
    assert clock.sleeps == [2.0, 2.0]


@pytest.mark.parametrize(
    ("status", "counts", "code", "line"),
    [
        ("done", {"deleted": 8, "failed": 2}, 1, "job job_1 done: deleted 8, failed 2 of 10"),
        ("cancelled", {"deleted": 4}, 4, "job job_1 cancelled: deleted 4, failed 0 of 10; 6 left"),
        ("done", {"deleted": 10}, 0, "job job_1 done: deleted 10, failed 0 of 10"),
    ],
)  # fmt: skip
def test_the_exit_status_says_how_the_job_ended(
    server: FakeJobServer, status: str, counts: dict[str, int], code: int, line: str
) -> None:
    server.timeline["job_1"] = finishing(status, **counts)

    result = start("--all", "--wait")

    assert result.exit_code == code, result.output
    assert result.stdout.startswith(line)


def test_failures_point_at_the_items_command(server: FakeJobServer) -> None:
    server.timeline["job_1"] = finishing("done", deleted=8, failed=2)

    result = start("--all", "--wait")

    assert result.exit_code == 1
    assert result.stderr.endswith(
        f"failed: 2; list them with `wickson-batch jobs items --url {URL} --failed job_1`\n"
    )


def test_a_rejected_job_exits_5_with_its_error(server: FakeJobServer) -> None:
    error = {"code": "JOB_TOO_LARGE", "message": "The selection holds 12 media; at most 10"}
    server.timeline["job_1"] = [job_data(), job_data(status="rejected", error=error)]

    result = start("--all", "--wait")

    assert result.exit_code == 5
    assert result.stdout == (
        "job job_1 rejected: JOB_TOO_LARGE: The selection holds 12 media; at most 10\n"
    )


def test_ctrl_c_while_waiting_leaves_the_job_running_and_says_how_to_follow_it(
    server: FakeJobServer,
) -> None:
    server.timeline["job_1"] = [job_data()]
    server.script = [None, KeyboardInterrupt()]  # the start answers; the first poll is cut

    result = start("--all", "--wait")

    assert result.exit_code == 130
    assert result.stderr.endswith(
        "interrupted: job job_1 goes on; follow it with `wickson-batch jobs status "
        f"--url {URL} --wait job_1`, stop it with `wickson-batch jobs cancel --url {URL} job_1`\n"
    )


def test_a_terminal_gets_a_progress_bar_with_rate_and_eta(
    server: FakeJobServer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_command, "on_terminal", lambda: True)
    monkeypatch.setattr("tqdm.std.time", clock)
    server.timeline["job_1"] = [
        job_data(),
        job_data(status="processing", total=4500),
        job_data(status="processing", total=4500, deleted=1000),
        job_data(status="processing", total=4500, deleted=1990, failed=10),
        job_data(status="done", total=4500, deleted=4490, failed=10, finished_at=FINISHED),
    ]

    result = start("--all", "--wait")

    assert result.exit_code == 1, result.output
    frames = [frame.strip() for frame in result.stderr.split("\r") if frame.strip()]
    # The total is known at the second poll (t=1 s): the rate and ETA count from there.
    assert frames[:4] == [
        "started job job_1",
        "queued [00:00]",
        "processing:   0%|          | 0/4500 [00:00<?, ? media/s]",
        "processing:  22%|██▏       | 1000/4500 [00:01<00:03, 1000.00 media/s]",
    ]
    assert frames[4] == (
        "processing:  44%|████▍     | 2000/4500 [00:02<00:02, 1000.00 media/s, failed 10]"
    )
    # Closed at the end with the overall rate: 4500 in 3 s.
    assert frames[-1].splitlines()[0] == (
        "done: 100%|██████████| 4500/4500 [00:03<00:00, 1500.00 media/s, failed 10]"
    )
    assert result.stdout.startswith("job job_1 done: deleted 4490, failed 10 of 4500")


# --- status, cancel, items, list ---------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (job_data(), 0),
        (job_data(status="processing", total=10, deleted=3), 0),
        (job_data(status="done", total=3, deleted=3, finished_at=FINISHED), 0),
        (job_data(status="done", total=3, deleted=2, failed=1, finished_at=FINISHED), 1),
        (job_data(status="cancelled", total=3, deleted=1, finished_at=FINISHED), 4),
        (job_data(status="rejected", error={"code": "X", "message": "m"}), 5),
    ],
)
def test_status_prints_the_summary_and_exits_as_the_job_stands(
    server: FakeJobServer, state: dict[str, Any], code: int
) -> None:
    server.timeline["job_1"] = [state]

    result = run("status", "--url", URL, "--api-key", "k", "job_1")

    assert result.exit_code == code, result.output
    assert result.stdout.splitlines() == [summary(parse_job(state))]
    assert server.requests[0].url.path == "/v1/deletion-jobs/job_1"


def test_status_wait_follows_a_running_job(server: FakeJobServer) -> None:
    server.timeline["job_1"] = finishing("done", deleted=10)[1:]

    result = run("status", "--url", URL, "--api-key", "k", "--wait", "job_1")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("job job_1 done: deleted 10")


def test_status_of_an_unknown_job_exits_3(server: FakeJobServer) -> None:
    result = run("status", "--url", URL, "--api-key", "k", "job_nope")

    assert result.exit_code == 3
    assert "error: 404 JOB_NOT_FOUND: No deletion job job_nope" in result.stderr


def test_cancel_prints_the_job_and_how_to_follow_it(server: FakeJobServer) -> None:
    server.timeline["job_1"] = [job_data(status="processing", total=10, deleted=4)]

    result = run("cancel", "--url", URL, "--api-key", "k", "job_1")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "job job_1 cancelled: deleted 4, failed 0 of 10; 6 left live; vectors hd 8 ld 4\n"
    )


def test_cancel_while_the_chunk_is_at_work_says_it_stops_later(server: FakeJobServer) -> None:
    server.timeline["job_1"] = [job_data(status="processing", total=10, deleted=4)]
    server.script = [
        httpx.Response(
            200,
            json={"success": True, "data": job_data(status="processing", total=10, deleted=4)},
        )
    ]

    result = run("cancel", "--url", URL, "--api-key", "k", "job_1")

    assert result.exit_code == 0, result.output
    assert "cancel requested: the job stops once its chunk at work is done" in result.stderr


def test_cancelling_a_finished_job_exits_3(server: FakeJobServer) -> None:
    server.timeline["job_1"] = [job_data(status="done", total=1, deleted=1)]

    result = run("cancel", "--url", URL, "--api-key", "k", "job_1")

    assert result.exit_code == 3
    assert "error: 409 JOB_FINISHED: Job job_1 is done" in result.stderr


ITEMS = [
    {"media_id": "vec-1", "status": "deleted", "operation_id": "op_1"},
    {"media_id": "vec-2", "status": "failed", "reason": "NOT_FOUND", "operation_id": "op_1"},
    {"media_id": "vec-3", "status": "failed", "reason": "LEGAL_HOLD", "operation_id": "op_2"},
]


@pytest.mark.parametrize(
    ("flag", "wanted"),
    [((), ITEMS), (("--failed",), ITEMS[1:]), (("--deleted",), ITEMS[:1])],
)
def test_items_prints_json_lines_across_pages(
    server: FakeJobServer, flag: tuple[str, ...], wanted: list[dict[str, Any]]
) -> None:
    server.timeline["job_1"] = [job_data(status="done")]
    server.items["job_1"] = ITEMS

    result = run("items", "--url", URL, "--api-key", "k", *flag, "job_1")

    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == wanted


def test_list_prints_one_line_a_job(server: FakeJobServer) -> None:
    server.listed = [
        job_data("job_2", "processing", total=10, deleted=3, reason=None),
        job_data("job_1", "done", total=5, deleted=4, failed=1),
        job_data("job_0"),
    ]

    result = run("list", "--url", URL, "--api-key", "k")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "job_id\tstatus\ttotal\tdeleted\tfailed\tcreated\treason",
        "job_2\tprocessing\t10\t3\t0\t2026-03-09T12:34:56Z\t-",
        "job_1\tdone\t5\t4\t1\t2026-03-09T12:34:56Z\tcampaign ended",
        "job_0\tqueued\t-\t0\t0\t2026-03-09T12:34:56Z\tcampaign ended",
    ]
