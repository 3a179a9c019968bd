"""The package's dependencies point one way (DESIGN.md section 1), read from the imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.source_imports import import_graph

PACKAGE = Path(__file__).resolve().parents[2] / "wickson_batch"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _arrows(sources: str, targets: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} -> {imported}"
        for module, imported_set in import_graph(PACKAGE).items()
        if _within(module, sources)
        for imported in imported_set
        if any(_within(imported, target) for target in targets)
    )


@pytest.mark.parametrize("adapter", ["wickson_batch.db", "wickson_batch.vectors"])
def test_the_stores_import_nothing_from_the_layers_above_them(adapter: str) -> None:
    above = ("wickson_batch.services", "wickson_batch.api", "wickson_batch.client", "flask")
    assert _arrows(adapter, above) == []


def test_the_services_never_import_the_web_layer_or_flask() -> None:
    assert _arrows("wickson_batch.services", ("wickson_batch.api", "flask", "werkzeug")) == []


def test_the_client_shares_only_the_protocol_with_the_server() -> None:
    server_side = tuple(
        f"wickson_batch.{name}"
        for name in ("api", "services", "db", "models", "vectors", "config", "logs", "cli")
    )
    assert _arrows("wickson_batch.client", (*server_side, "flask", "marshmallow")) == []


def test_the_protocol_imports_no_framework() -> None:
    imported = import_graph(PACKAGE)["wickson_batch.protocol"]
    assert imported <= {"__future__", "__future__.annotations", "re"}


def test_no_module_is_named_after_a_library_it_could_shadow() -> None:
    names = {path.stem for path in PACKAGE.rglob("*.py")}
    assert names.isdisjoint({"logging", "limits", "flask", "marshmallow", "httpx", "redis"})


def test_the_client_imports_and_works_where_flask_cannot_be_imported(tmp_path: Path) -> None:
    # A blocker that makes `import flask` (and marshmallow, sqlalchemy) fail in a fresh
    # interpreter, then the client plans batches as it does for a real run.
    script = textwrap.dedent(
        """
        import sys

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"flask", "marshmallow", "sqlalchemy", "werkzeug"}:
                    raise ImportError(f"{name} is not importable here")
                return None

        sys.meta_path.insert(0, Refuse())
        from wickson_batch.client import WicksonClient, plan_batches
        from wickson_batch.client.delete_command import parse_ids

        batches = plan_batches([f"vec-{i}" for i in range(250)], "cleanup", 100)
        print([len(batch.media_ids) for batch in batches], parse_ids("vec-a\\nvec-b\\n"))
        WicksonClient("http://127.0.0.1:9", "wkb_key").close()
        loaded = sorted(
            name for name in sys.modules
            if name.split(".")[0] in {"flask", "marshmallow", "sqlalchemy", "werkzeug"}
        )
        print(loaded)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[100, 100, 50] ['vec-a', 'vec-b']", "[]"]
