"""`wickson-batch delete`: reading ids, refusing bad input, and reading a report to resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from wickson_batch.cli import main
from wickson_batch.client import Batch, BatchResult
from wickson_batch.delete_command import Report, parse_ids, read_report

# Nothing listens here: every test below must stop before the first request.
UNUSED_URL = "http://127.0.0.1:9"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["delete", *args], input=input, env=env)
    return result.exit_code, result.output


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

    code, output = run(
        "--url",
        UNUSED_URL,
        "--api-key",
        "k",
        "--ids-file",
        "-",
        "--report",
        str(report),
        input="vec-1\n",
    )

    assert code == 2
    assert "already holds a report: pass --resume" in output


def test_resume_with_everything_done_sends_nothing(tmp_path: Path) -> None:
    report = tmp_path / "out.jsonl"
    report.write_text(
        '{"media_id": "vec-1", "status": "deleted", "operation_id": "op"}\n'
        '{"media_id": "vec-2", "status": "failed", "reason": "NOT_FOUND", "operation_id": "op"}\n'
    )

    code, output = run(
        "--url",
        UNUSED_URL,
        "--api-key",
        "k",
        "--ids-file",
        "-",
        "--report",
        str(report),
        "--resume",
        input="vec-1\nvec-2\n",
    )

    assert code == 0, output
    assert "deleted 0, failed 0, vectors hd 0 ld 0, skipped 2" in output


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

    code, output = run(
        "--url",
        UNUSED_URL,
        "--api-key",
        "k",
        "--ids-file",
        "-",
        "--report",
        str(report),
        "--resume",
        input="vec-1\n",
    )

    assert code == 2
    assert "line 1 is not a report line" in output
