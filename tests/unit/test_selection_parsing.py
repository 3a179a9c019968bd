"""Parsing filters and selections (DESIGN.md section 9): what is accepted, and every refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from wickson_batch.services.errors import InvalidFilter, InvalidSelection
from wickson_batch.services.selection import (
    EMPTY_FILTER_MESSAGE,
    MAX_SELECTION_IDS,
    MAX_SELECTION_ITEMS,
    MediaFilter,
    Selection,
    SelectionItem,
    filter_from_query,
    parse_filter,
    parse_query_value,
    parse_selection,
)

A, B, C = "vec-a", "vec-b", "vec-c"


def test_a_full_filter_is_parsed_to_aware_utc_times() -> None:
    parsed = parse_filter(
        {
            "created_before": "2025-06-01T02:00:00+02:00",
            "created_after": "2025-01-01",
            "parent_id": A,
            "metadata": {"campaign": "summer-2025", "n": 3, "ratio": 0.5, "draft": False},
        }
    )

    assert parsed == MediaFilter(
        created_before=datetime(2025, 6, 1, tzinfo=UTC),
        created_after=datetime(2025, 1, 1, tzinfo=UTC),
        parent_id=A,
        metadata={"campaign": "summer-2025", "draft": False, "n": 3, "ratio": 0.5},
    )
    assert parsed.created_before is not None and parsed.created_before.tzinfo is UTC
    assert not parsed.is_empty()


def test_a_time_without_offset_is_utc_and_z_is_accepted() -> None:
    assert parse_filter({"created_after": "2025-06-01T12:30:00"}).created_after == datetime(
        2025, 6, 1, 12, 30, tzinfo=UTC
    )
    assert parse_filter({"created_after": "2025-06-01T12:30:00.25Z"}).created_after == datetime(
        2025, 6, 1, 12, 30, 0, 250000, tzinfo=UTC
    )


def test_an_empty_filter_and_null_fields_are_empty() -> None:
    assert parse_filter({}).is_empty()
    assert parse_filter({"created_before": None, "metadata": None, "parent_id": None}).is_empty()
    assert parse_filter({"metadata": {}}).is_empty()
    assert MediaFilter().is_empty()


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ([], "filter", "filter must be a JSON object"),
        ({"colour": "red"}, "filter.colour", "Unknown filter field: filter.colour"),
        ({"created_before": 5}, "filter.created_before", "must be an ISO-8601 date or time"),
        ({"created_after": "June"}, "filter.created_after", "is not an ISO-8601 date or time"),
        ({"created_after": "2" * 100}, "filter.created_after", "is not an ISO-8601"),
        ({"created_after": "20250601"}, "filter.created_after", "is not an ISO-8601"),
        ({"created_after": "2025-06-01T12"}, "filter.created_after", "is not an ISO-8601"),
        ({"created_after": "2025-06-01t12:00z"}, "filter.created_after", "is not an ISO-8601"),
        ({"created_after": "２０２５-06-01"}, "filter.created_after", "is not an ISO-8601"),
        ({"parent_id": "not an id"}, "filter.parent_id", "must be a media id"),
        ({"parent_id": 7}, "filter.parent_id", "must be a media id"),
        ({"metadata": ["a"]}, "filter.metadata", "must be a JSON object"),
        ({"metadata": {"k": None}}, "filter.metadata.k", "a string, a number or a boolean"),
        ({"metadata": {"k": [1]}}, "filter.metadata.k", "a string, a number or a boolean"),
        ({"metadata": {"k": {"a": 1}}}, "filter.metadata.k", "a string, a number or a boolean"),
        ({"metadata": {"k": 2**63}}, "filter.metadata.k", "out of range"),
        ({"metadata": {"k": float("nan")}}, "filter.metadata.k", "finite"),
        ({"metadata": {"k": "a\x00b"}}, "filter.metadata.k", "NUL"),
        ({"metadata": {"k": "\ud800"}}, "filter.metadata.k", "lone surrogate"),
        ({"metadata": {"k": "x" * 5000}}, "filter.metadata.k", "longer than 4096"),
        ({"metadata": {"": 1}}, "filter.metadata.", "a metadata key is 1 to 256"),
        ({"metadata": {str(n): n for n in range(33)}}, "filter.metadata", "at most 32 keys"),
    ],
)
def test_a_bad_filter_names_its_field(raw: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(raw)

    assert caught.value.field == field
    assert message in str(caught.value)


def test_the_field_prefix_is_the_callers() -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter({"when": 1}, "selection[2].filter")

    assert caught.value.field == "selection[2].filter.when"
    assert str(caught.value).startswith("Unknown filter field: selection[2].filter.when")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("summer-2025", "summer-2025"),
        ("1", 1),
        ("-2.5", -2.5),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ('"1"', "1"),
        ('"true"', "true"),
        ("null", "null"),
        ("[1]", "[1]"),
        ("NaN", "NaN"),
        ("", ""),
        (" 1", 1),
    ],
)
def test_a_query_value_is_a_json_scalar_or_else_text(text: str, value: Any) -> None:
    parsed = parse_query_value(text)

    assert parsed == value and type(parsed) is type(value)


def test_a_filter_from_query_parameters() -> None:
    parsed = filter_from_query(
        [
            ("created_before", "2025-06-01"),
            ("metadata.campaign", "summer"),
            ("metadata.n", "1"),
            ("metadata.code", '"007"'),
            ("parent_id", A),
        ]
    )

    assert parsed == MediaFilter(
        created_before=datetime(2025, 6, 1, tzinfo=UTC),
        parent_id=A,
        metadata={"campaign": "summer", "code": "007", "n": 1},
    )


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ([("colour", "red")], "colour", "Unknown filter field: colour"),
        ([("metadata", "x")], "metadata", "Unknown filter field: metadata"),
        ([("metadata.", "x")], "metadata.", "a metadata key is 1 to 256"),
        ([("parent_id", A), ("parent_id", B)], "parent_id", "given twice"),
        ([("metadata.k", "1"), ("metadata.k", "2")], "metadata.k", "given twice"),
        ([("created_after", "soon")], "created_after", "is not an ISO-8601"),
        ([("metadata.k", "99999999999999999999")], "metadata.k", "out of range"),
    ],
)
def test_bad_query_parameters_name_the_parameter(
    params: list[tuple[str, str]], field: str, message: str
) -> None:
    with pytest.raises(InvalidFilter) as caught:
        filter_from_query(params)

    assert caught.value.field == field
    assert message in str(caught.value)


def test_a_selection_of_every_kind() -> None:
    selection = parse_selection(
        [
            A,
            {"filter": {"metadata": {"campaign": "summer"}}, "exclude": [B, B, C]},
            B,
            A,
            {"children": C},
            {"all": True, "exclude": []},
        ]
    )

    assert selection.ids == (A, B)
    assert selection.items == (
        SelectionItem("filter", (B, C), media_filter=MediaFilter(metadata={"campaign": "summer"})),
        SelectionItem("children", children_of=C),
        SelectionItem("all"),
    )


def test_the_canonical_json_reads_back_to_the_same_selection() -> None:
    raw = [
        {
            "exclude": [C],
            "filter": {
                "metadata": {"z": True, "a": 1.5},
                "created_before": "2025-06-01T00:00:00.123456+01:00",
            },
        },
        B,
        {"all": True},
        {"children": A, "exclude": [B]},
    ]
    selection = parse_selection(raw)

    canonical = selection.to_json()

    assert canonical == [
        B,
        {
            "exclude": [C],
            "filter": {
                "created_before": "2025-05-31T23:00:00.123456Z",
                "metadata": {"a": 1.5, "z": True},
            },
        },
        {"all": True},
        {"children": A, "exclude": [B]},
    ]
    assert list(canonical[1]["filter"]["metadata"]) == ["a", "z"]
    assert parse_selection(canonical) == selection
    assert parse_selection(canonical).to_json() == canonical


def test_the_empty_filter_is_refused_with_the_documented_message() -> None:
    with pytest.raises(InvalidSelection) as caught:
        parse_selection([A, {"filter": {}}])

    assert str(caught.value) == EMPTY_FILTER_MESSAGE
    assert str(caught.value) == (
        'an empty filter selects all your media; send {"all": true} if you mean it'
    )
    assert caught.value.field == "selection[1].filter"


def test_a_bad_filter_inside_a_selection_is_a_filter_error_at_its_position() -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_selection([{"filter": {"colour": "red"}}])

    assert caught.value.field == "selection[0].filter.colour"


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"all": True}, "selection", "selection must be a JSON array"),
        ("vec-a", "selection", "selection must be a JSON array"),
        ([], "selection", "selection must not be empty"),
        ([A, "bad id"], "selection[1]", "selection[1] is not a valid media id"),
        ([A, 5], "selection[1]", "must be a media id string or an object"),
        ([None], "selection[0]", "must be a media id string or an object"),
        ([{}], "selection[0]", "exactly one of filter, children or all; it has none"),
        ([{"exclude": [A]}], "selection[0]", "it has none"),
        (
            [{"all": True, "children": A}],
            "selection[0]",
            "exactly one of filter, children or all; it has children and all",
        ),
        ([{"all": True, "colour": 1}], "selection[0].colour", "Unknown field selection[0].colour"),
        ([{"all": False}], "selection[0].all", "selection[0].all must be true"),
        ([{"all": 1}], "selection[0].all", "must be true"),
        ([{"children": "x y"}], "selection[0].children", "is not a valid media id"),
        ([{"children": None}], "selection[0].children", "is not a valid media id"),
        ([{"all": True, "exclude": A}], "selection[0].exclude", "must be an array of media ids"),
        (
            [A, A, A, {"all": True, "exclude": [A, "bad/id"]}],
            "selection[3].exclude[1]",
            "selection[3].exclude[1] is not a valid media id",
        ),
        ([{"all": True, "exclude": [7]}], "selection[0].exclude[0]", "is not a valid media id"),
    ],
)
def test_a_bad_selection_names_the_position(raw: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidSelection) as caught:
        parse_selection(raw)

    assert caught.value.field == field
    assert message in str(caught.value)


def test_at_most_100_object_items() -> None:
    parse_selection([{"all": True}] * MAX_SELECTION_ITEMS + [A])

    with pytest.raises(InvalidSelection) as caught:
        parse_selection([A] + [{"all": True}] * (MAX_SELECTION_ITEMS + 1))

    assert caught.value.field == f"selection[{MAX_SELECTION_ITEMS + 1}]"
    assert "at most 100 filter, children or all items" in str(caught.value)


def ids(count: int, start: int = 0) -> list[str]:
    return [f"vec-{n}" for n in range(start, start + count)]


def test_at_most_10000_ids_in_all_lists_together() -> None:
    half = MAX_SELECTION_IDS // 2
    exact: list[Any] = [*ids(half), {"all": True, "exclude": ids(half - 1)}, {"children": A}]
    exact.append({"children": B, "exclude": [C]})
    assert len(parse_selection(exact).ids) == half

    with pytest.raises(InvalidSelection) as caught:
        parse_selection([*ids(half), {"all": True, "exclude": ids(half)}, C])

    assert caught.value.field == f"selection[{half + 1}]"
    assert "at most 10000 media ids in all its lists together" in str(caught.value)


def test_duplicates_count_towards_the_limit_as_sent() -> None:
    with pytest.raises(InvalidSelection) as caught:
        parse_selection([A] * (MAX_SELECTION_IDS + 1))

    assert caught.value.field == f"selection[{MAX_SELECTION_IDS}]"


def test_a_selection_is_a_plain_value() -> None:
    first = parse_selection([A, {"all": True}])

    assert first == Selection((A,), (SelectionItem("all"),))
    assert first.to_json() == [A, {"all": True}]


def test_times_in_other_offsets_compare_equal_in_utc() -> None:
    paris = timezone(timedelta(hours=1))

    assert parse_filter({"created_before": "2025-06-01T01:00:00+01:00"}) == MediaFilter(
        created_before=datetime(2025, 6, 1, 1, tzinfo=paris)
    )
