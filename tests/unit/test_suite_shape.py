"""The test suite shares code through conftest.py fixtures and helper modules, read from imports.

A test module imported by another runs twice over (its fixtures and names leak into the
importer), and a conftest imported as a module is a second copy of the one pytest loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.source_imports import imported_modules, module_name

TESTS = Path(__file__).resolve().parents[1]


def forbidden(module: str) -> str | None:
    """Return the test module or conftest of the suite that `module` is or is inside, if any."""
    parts = module.split(".")
    if parts[0] != "tests":
        return None
    for depth, part in enumerate(parts[1:], start=2):
        if part == "conftest" or part.startswith("test_"):
            return ".".join(parts[:depth])
    return None


def _arrows() -> list[str]:
    arrows: set[str] = set()
    for path in sorted(TESTS.rglob("*.py")):
        name = module_name(path, TESTS.parent)
        for module in imported_modules(path.read_text(), name, path.name == "__init__.py"):
            target = forbidden(module)
            if target is not None:
                arrows.add(f"{name} -> {target}")
    return sorted(arrows)


def test_no_file_of_the_suite_imports_a_test_module_or_a_conftest() -> None:
    assert _arrows() == []


@pytest.mark.parametrize(
    ("source", "name", "found"),
    [
        ("from tests.api.test_errors import assert_error", "tests.api.test_x", True),
        ("from tests.conftest import Caller", "tests.api.test_x", True),
        ("import tests.integration.test_server", "tests.integration.test_x", True),
        ("from tests.unit import test_client", "tests.unit.test_x", True),
        ("from . import test_client", "tests.unit.test_x", True),
        ("from .test_deletion_service import db", "tests.unit.test_x", True),
        ("from ..conftest import body", "tests.unit.test_x", True),
        ("from tests.helpers import Caller", "tests.api.test_x", False),
        ("from tests.unit.fakes import FakeVectors", "tests.unit.test_x", False),
        ("from wickson_batch.api import test_view", "tests.api.test_x", False),
    ],
)
def test_the_check_sees_every_spelling_of_such_an_import(
    source: str, name: str, found: bool
) -> None:
    assert any(forbidden(module) for module in imported_modules(source, name)) is found


def test_no_helper_module_shadows_an_importable_module() -> None:
    # With tests/ on sys.path, tests/gunicorn.py would be imported as `gunicorn`.
    helpers = {
        path.stem
        for path in TESTS.rglob("*.py")
        if path.stem not in {"__init__", "conftest"} and not path.stem.startswith("test_")
    }
    assert sorted(name for name in helpers if importlib.util.find_spec(name) is not None) == []
