"""The QDRANT_* cluster settings: read from the environment, and refused when unusable."""

from __future__ import annotations

import re

import pytest

from wickson_batch.config import ConfigError, load_settings


def test_cluster_settings_are_read_typed_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "QDRANT_SHARD_NUMBER": "6",
            "QDRANT_REPLICATION_FACTOR": "3",
            "QDRANT_WRITE_CONSISTENCY_FACTOR": "2",
            "QDRANT_WRITE_ORDERING": "strong",
            "QDRANT_PREFER_GRPC": "true",
            "QDRANT_TIMEOUT_SECONDS": "3",
        }
    )

    assert (
        settings.qdrant_shard_number,
        settings.qdrant_replication_factor,
        settings.qdrant_write_consistency_factor,
        settings.qdrant_write_ordering,
        settings.qdrant_prefer_grpc,
        settings.qdrant_timeout_seconds,
    ) == (6, 3, 2, "strong", True, 3)


def test_cluster_settings_default_to_the_servers_choice() -> None:
    settings = load_settings(environ={})

    assert (
        settings.qdrant_shard_number,
        settings.qdrant_replication_factor,
        settings.qdrant_write_consistency_factor,
        settings.qdrant_write_ordering,
        settings.qdrant_prefer_grpc,
        settings.qdrant_timeout_seconds,
    ) == (None, None, None, "weak", False, 10)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"QDRANT_REPLICATION_FACTOR": "2", "QDRANT_WRITE_CONSISTENCY_FACTOR": "3"},
            "QDRANT_WRITE_CONSISTENCY_FACTOR must be between 1 and QDRANT_REPLICATION_FACTOR "
            "(2), got 3",
        ),
        (
            {"QDRANT_WRITE_CONSISTENCY_FACTOR": "2"},
            "QDRANT_WRITE_CONSISTENCY_FACTOR must be between 1 and QDRANT_REPLICATION_FACTOR "
            "(1), got 2",
        ),
        (
            {"QDRANT_REPLICATION_FACTOR": "2", "QDRANT_WRITE_CONSISTENCY_FACTOR": "0"},
            "QDRANT_WRITE_CONSISTENCY_FACTOR must be between 1 and QDRANT_REPLICATION_FACTOR "
            "(2), got 0",
        ),
        (
            {"QDRANT_WRITE_ORDERING": "eventual"},
            "QDRANT_WRITE_ORDERING must be one of weak, medium, strong, got 'eventual'",
        ),
        (
            {"QDRANT_WRITE_ORDERING": "STRONG"},
            "QDRANT_WRITE_ORDERING must be one of weak, medium, strong, got 'STRONG'",
        ),
        ({"QDRANT_SHARD_NUMBER": "0"}, "QDRANT_SHARD_NUMBER must be at least 1, got 0"),
        ({"QDRANT_SHARD_NUMBER": "two"}, "QDRANT_SHARD_NUMBER must be a whole number, got 'two'"),
        (
            {"QDRANT_REPLICATION_FACTOR": "-1"},
            "QDRANT_REPLICATION_FACTOR must be at least 1, got -1",
        ),
        ({"QDRANT_PREFER_GRPC": "maybe"}, "QDRANT_PREFER_GRPC must be true or false, got 'maybe'"),
        ({"QDRANT_TIMEOUT_SECONDS": "0"}, "QDRANT_TIMEOUT_SECONDS must be at least 1, got 0"),
        (
            {"QDRANT_TIMEOUT_SECONDS": "2.5"},
            "QDRANT_TIMEOUT_SECONDS must be a whole number, got '2.5'",
        ),
        (
            {"QDRANT_TIMEOUT_SECONDS": "soon"},
            "QDRANT_TIMEOUT_SECONDS must be a whole number, got 'soon'",
        ),
    ],
)
def test_unusable_cluster_settings_are_refused_with_the_setting_named(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_settings(environ=environ)
