"""The README's configuration table names every setting there is, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from wickson_batch.config import ENV_KEYS

README = Path(__file__).resolve().parents[2] / "README.md"
# Read by gunicorn.conf.py for prometheus-client, not a field of Settings.
NOT_SETTINGS = {"PROMETHEUS_MULTIPROC_DIR"}


def _table_variables() -> set[str]:
    text = README.read_text()
    table = text[text.index("## Configuration") :]
    table = table[: table.index("\n## ", 1)]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    assert sorted(ENV_KEYS - _table_variables()) == []


def test_the_table_names_no_setting_that_does_not_exist() -> None:
    assert sorted(_table_variables() - ENV_KEYS - NOT_SETTINGS) == []
