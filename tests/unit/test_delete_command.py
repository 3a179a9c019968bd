"""`wickson-batch delete`: reading ids, refusing bad input, and reading a report to resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.unit.fakes import FakeServer, envelope
from wickson_batch.cli import main
from wickson_batch.client import Batch, BatchResult, WicksonClient, delete_command
from wickson_batch.client.delete_command import Report, parse_ids, read_report

# Nothing listens here: every test below must stop before the first request.
UNUSED_URL = "http://127.0.0.1:9"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["delete", *args], input=input, env=env)
    return result.exit_code, result.output


def run_with_report(
    ids: list[str], report: Path, *extra: str, url: str = "http://wickson.test"
) -> tuple[int, str]:
    """Run with `ids` on standard input and `--report report`."""
    args = ["--url", url, "--api-key", "k", "--ids-file", "-"]
    return run(*args, "--report", str(report), *extra, input="\n".join(ids) + "\n")


def test_ids_one_a_line_with_blank_lines_ignored() -> None:
    assert parse_ids("vec-1\n\n  vec-2  \r\nvec-3\n\n") == ["vec-1", "vec-2", "vec-3"]


def test_ids_as_a_json_array() -> None:
    assert parse_ids(' ["vec-1", "vec-2"]\n') == ["vec-1", "vec-2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vec-1\nnot an id\n", "line 2 ('not an id') is not a media id"),
        ('["vec-1", 7]', "item 1 (7) is not a media id"),
        ('["vec-1",', "not a valid JSON array"),
    ],
)
def test_bad_input_is_refused_with_exit_2(text: str, message: str) -> None:
    code, output = run("--url", UNUSED_URL, "--api-key", "k", "--ids-file", "-", input=text)

    assert code == 2
    assert message in output
    assert "Invalid value for --ids-file" in output


def test_empty_input_is_refused() -> None:
    code, output = run("--url", UNUSED_URL, "--api-key", "k", "--ids-file", "-", input="\n\n")

    assert code == 2
    assert "no media ids in the input" in output


def test_the_api_key_may_come_from_the_environment() -> None:
    code, output = run("--url", UNUSED_URL, "--ids-file", "-", input="bad id\n")
    assert code == 2 and "Missing option '--api-key'" in output

    code, output = run(
        "--url", UNUSED_URL, "--ids-file", "-", input="bad id\n", env={"WICKSON_API_KEY": "k"}
    )
    assert code == 2 and "is not a media id" in output  # got past the key


def test_resume_needs_a_report() -> None:
    code, output = run(
        "--url", UNUSED_URL, "--api-key", "k", "--ids-file", "-", "--resume", input="vec-1\n"
    )

    assert code == 2
    assert "--resume needs --report" in output


def test_an_existing_report_is_not_appended_to_without_resume(tmp_path: Path) -> None:
    report = tmp_path / "out.jsonl"
    report.write_text('{"media_id": "vec-1", "status": "deleted", "operation_id": "op"}\n')

    code, output = run_with_report(["vec-1"], report, url=UNUSED_URL)

    assert code == 2
    assert "already holds a report: pass --resume" in output


def test_resume_with_everything_done_sends_nothing(tmp_path: Path) -> None:
    report = tmp_path / "out.jsonl"
    report.write_text(
        '{"media_id": "vec-1", "status": "deleted", "operation_id": "op"}\n'
        '{"media_id": "vec-2", "status": "failed", "reason": "NOT_FOUND", "operation_id": "op"}\n'
    )

    code, output = run_with_report(["vec-1", "vec-2"], report, "--resume", url=UNUSED_URL)

    # Nothing left to send, but not every id was deleted: the exit status says so.
    assert code == 1, output
    assert "deleted 0, failed 0, vectors hd 0 ld 0, skipped 2" in output
    assert "failed in an earlier run: 1 (see the report)" in output


def sending(key: str, ids: list[str], reason: str | None = None) -> str:
    batch = {"idempotency_key": key, "media_ids": ids, "reason": reason}
    return json.dumps({"status": "sending", "batch": batch}) + "\n"


def outcome(media_id: str, status: str = "deleted") -> str:
    return json.dumps({"media_id": media_id, "status": status, "operation_id": "op"}) + "\n"


def test_a_batch_sent_without_outcome_is_in_doubt_with_its_key(tmp_path: Path) -> None:
    report = tmp_path / "out.jsonl"
    report.write_text(
        sending("k1", ["vec-1", "vec-2"])
        + outcome("vec-1")
        + outcome("vec-2", "failed")
        + sending("k2", ["vec-3", "vec-4"], "why")
    )

    state = read_report(report)

    assert state.outcomes == {"vec-1": "deleted", "vec-2": "failed"}
    assert [(b.idempotency_key, b.media_ids, b.reason) for b in state.in_doubt] == [
        ("k2", ("vec-3", "vec-4"), "why")
    ]


def test_a_line_torn_by_a_kill_is_dropped_from_the_file(tmp_path: Path) -> None:
    report = tmp_path / "out.jsonl"
    whole = sending("k1", ["vec-1"]) + outcome("vec-1")
    report.write_text(whole + '{"media_id": "vec-2", "sta')

    state = read_report(report)

    assert state.outcomes == {"vec-1": "deleted"}
    assert report.read_text() == whole


def test_a_batch_resent_smaller_supersedes_the_refused_one(tmp_path: Path) -> None:
    report = tmp_path / "out.jsonl"
    report.write_text(sending("big", ["vec-1", "vec-2"]) + sending("small", ["vec-1"]))

    state = read_report(report)

    assert [b.idempotency_key for b in state.in_doubt] == ["small"]


def test_a_batch_the_server_refused_is_not_in_doubt(tmp_path: Path) -> None:
    report = tmp_path / "out.jsonl"
    refused = {"status": "refused", "idempotency_key": "k1", "code": "INVALID_REQUEST"}
    report.write_text(sending("k1", ["vec-1"], "x" * 600) + json.dumps(refused) + "\n")

    state = read_report(report)

    assert state.in_doubt == []
    assert state.outcomes == {}


def test_a_batch_whose_outcome_lines_were_cut_short_is_in_doubt(tmp_path: Path) -> None:
    report = tmp_path / "out.jsonl"
    report.write_text(sending("k1", ["vec-1", "vec-2", "vec-3"]) + outcome("vec-1"))

    state = read_report(report)

    assert [(b.idempotency_key, b.media_ids) for b in state.in_doubt] == [
        ("k1", ("vec-1", "vec-2", "vec-3"))
    ]


def test_a_replayed_batch_writes_no_second_outcome_for_an_id(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    report = Report(path, known={"vec-1"})
    batch = Batch(("vec-1", "vec-2"), None, "k1")
    report.answered(BatchResult(batch, ("vec-1", "vec-2"), {}, 2, 2, "op", (), True, 0, 0, 0.0))
    report.close()

    assert [json.loads(line)["media_id"] for line in path.read_text().splitlines()] == ["vec-2"]


def test_a_malformed_url_is_a_usage_error() -> None:
    code, output = run("--url", "http://[::1", "--api-key", "k", "--ids-file", "-", input="vec-1\n")

    assert code == 2, output
    assert "Error: Invalid value for --url: Invalid port: ':1'" in output


def test_a_report_line_that_is_not_json_is_refused(tmp_path: Path) -> None:
    report = tmp_path / "out.jsonl"
    report.write_text("hello\n" + outcome("vec-1"))

    code, output = run_with_report(["vec-1"], report, "--resume", url=UNUSED_URL)

    assert code == 2
    assert "line 1 is not a report line" in output


def test_a_utf8_bom_before_the_ids_is_not_part_of_the_first_id(tmp_path: Path) -> None:
    lines, array = tmp_path / "ids.txt", tmp_path / "ids.json"
    lines.write_bytes(b"\xef\xbb\xbfvec-1\r\nvec-2\r\n")
    array.write_bytes(b'\xef\xbb\xbf["vec-1", "vec-2"]')

    for path in (lines, array):
        code, output = run("--url", "http://[::1", "--api-key", "k", "--ids-file", str(path))

        # Read as two good ids, the command reached the next check: the malformed URL.
        assert code == 2, output
        assert "Invalid value for --url" in output


def test_a_file_that_is_not_a_report_is_left_as_it_was(tmp_path: Path) -> None:
    report = tmp_path / "ids.txt"
    report.write_text("vec-1\nvec-2")  # no final newline: would look like a torn line

    code, output = run_with_report(["vec-1"], report, "--resume", url=UNUSED_URL)

    assert code == 2
    assert "line 1 is not a report line" in output
    assert report.read_text() == "vec-1\nvec-2"


# Against a fake server (tests/unit/fakes.py's, which replays a key it has answered)


@dataclass
class LossyServer(FakeServer):
    """A FakeServer that applies its first `lost` requests but loses their answers."""

    lost: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.lost:
            return super().__call__(request)
        self.lost -= 1
        script, self.script = self.script, []  # the script is for the requests after
        try:
            super().__call__(request)
        finally:
            self.script = script
        raise httpx.ReadTimeout("the answer was lost", request=request)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> LossyServer:
    """The command's client talks to a LossyServer and never really sleeps."""
    fake = LossyServer()

    def client(url: str, api_key: str, **options: Any) -> WicksonClient:
        transport = httpx.MockTransport(fake)
        return WicksonClient(url, api_key, transport=transport, sleep=lambda _: None, **options)

    monkeypatch.setattr(delete_command, "WicksonClient", client)
    return fake


def outcomes_of(report: Path) -> dict[str, str]:
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    return {line["media_id"]: line["status"] for line in lines if "media_id" in line}


def test_a_refusal_after_an_unanswered_send_keeps_the_batch_in_doubt(
    server: LossyServer, tmp_path: Path
) -> None:
    # The first send is applied but its answer is lost; the retry is refused (the key was
    # revoked meanwhile, say). Those ids were deleted: they must never come back NOT_FOUND.
    wanted = ["vec-1", "vec-2", "vec-3"]
    server.live, server.lost = set(wanted), 1
    server.script = [envelope(401, "INVALID_API_KEY", "A valid API key is required")]
    report = tmp_path / "out.jsonl"

    first, first_output = run_with_report(wanted, report)
    resumed, resumed_output = run_with_report(wanted, report, "--resume")

    assert first == 3, first_output
    assert "error: 401 INVALID_API_KEY: A valid API key is required" in first_output
    assert resumed == 0, resumed_output
    assert "resending 1 batch(es) the last run left in doubt" in resumed_output
    assert server.keys() == [server.keys()[0]] * 3  # one key: the resend got the replay
    assert outcomes_of(report) == {m: "deleted" for m in wanted}


def test_a_refused_resend_of_a_batch_in_doubt_stays_in_doubt(
    server: LossyServer, tmp_path: Path
) -> None:
    wanted = ["vec-1", "vec-2"]
    report = tmp_path / "out.jsonl"
    report.write_text(sending("k1", wanted))  # a run killed with this batch on its way
    server.script = [envelope(401, "INVALID_API_KEY", "A valid API key is required")]

    code, output = run_with_report(wanted, report, "--resume")

    assert code == 3, output
    assert [b.idempotency_key for b in read_report(report).in_doubt] == ["k1"]


def test_ids_of_a_batch_cut_short_are_counted_once(server: LossyServer, tmp_path: Path) -> None:
    wanted = [f"vec-{i}" for i in range(5)]
    server.live = set(wanted)
    body = {"media_ids": wanted[:3], "reason": None}
    server(
        httpx.Request(
            "DELETE", "http://wickson.test/", json=body, headers={"Idempotency-Key": "k1"}
        )
    )
    report = tmp_path / "out.jsonl"
    # A kill cut the batch's outcome lines short, after two of its three ids.
    report.write_text(sending("k1", wanted[:3]) + outcome(wanted[0]) + outcome(wanted[1]))

    code, output = run_with_report(wanted, report, "--resume", "--batch-size", "3")

    assert code == 0, output
    assert "deleted 5, failed 0, vectors hd 10 ld 5, skipped 0" in output.splitlines()
    assert outcomes_of(report) == {m: "deleted" for m in wanted}


def test_a_report_that_cannot_be_written_stops_the_run_with_exit_3(server: LossyServer) -> None:
    server.live = {"vec-1"}

    code, output = run_with_report(["vec-1"], Path("/dev/full"))

    assert code == 3, output
    assert "error: cannot write the report /dev/full: [Errno 28] No space left on device" in output
    assert "Traceback" not in output
    assert server.requests == []  # stopped before sending a batch it could not record


def test_ctrl_c_while_reading_the_input_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(text: str) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(delete_command, "parse_ids", interrupted)

    code, output = run("--url", UNUSED_URL, "--api-key", "k", "--ids-file", "-", input="vec-1\n")

    assert code == 130
    assert "error: interrupted" in output
