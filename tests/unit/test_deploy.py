"""deploy/: the compose file and Dockerfile stay in step with the app's settings.

No Docker engine here: these tests parse the files, they do not run them (deploy/README.md).
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from wickson_batch.config import ENV_KEYS, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Read by gunicorn.conf.py, not by the app.
GUNICORN_KEYS = {"PROMETHEUS_MULTIPROC_DIR"}
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """gunicorn.conf.py sets variables for its workers (and makes a metrics folder) in the
    process that reads it: keep them from the tests that run after these."""
    saved = dict(os.environ)
    yield
    made = os.environ.get("WICKSON_OWN_METRICS_DIR")
    if made and made != saved.get("WICKSON_OWN_METRICS_DIR"):
        shutil.rmtree(made, ignore_errors=True)
    os.environ.clear()
    os.environ.update(saved)


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def resolved_app_env() -> dict[str, str]:
    """The app's environment as compose gives it with no variables set (their defaults)."""
    env = compose()["services"]["app"]["environment"]
    assert isinstance(env, dict)
    resolved = {key: _DEFAULTED.sub(r"\2", str(value)) for key, value in env.items()}
    assert not any("$" in value for value in resolved.values()), "a variable without a default"
    return resolved


def test_the_topology_has_its_four_services_each_with_a_healthcheck() -> None:
    services = compose()["services"]

    assert set(services) == {"nginx", "app", "postgres", "redis", "qdrant"}
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:v")
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert all("test" in service["healthcheck"] for service in services.values())
    assert services["app"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in ("postgres", "redis", "qdrant")
    }


def test_every_app_variable_is_a_setting_the_app_or_gunicorn_reads() -> None:
    env = resolved_app_env()
    gunicorn_conf = (ROOT / "gunicorn.conf.py").read_text()

    unknown = set(env) - ENV_KEYS - GUNICORN_KEYS
    assert not unknown, f"not read by the app or gunicorn.conf.py: {sorted(unknown)}"
    assert all(f'"{key}"' in gunicorn_conf or f"'{key}'" in gunicorn_conf for key in GUNICORN_KEYS)
    settings = load_settings(environ=env)  # every value parses
    assert settings.trusted_proxy_hops == 1  # nginx, the one proxy in front; the guide says more
    assert settings.metrics_enabled is True


def test_the_urls_name_the_services_and_the_database_credentials_match() -> None:
    env = resolved_app_env()
    postgres = compose()["services"]["postgres"]["environment"]

    database = urlsplit(env["DATABASE_URL"])
    assert database.scheme == "postgresql+psycopg"
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == "/" + postgres["POSTGRES_DB"]
    raw_url = compose()["services"]["app"]["environment"]["DATABASE_URL"]
    assert f":{postgres['POSTGRES_PASSWORD']}@postgres:" in raw_url  # the same ${...} expression
    assert urlsplit(env["RATELIMIT_STORAGE_URI"]).hostname == "redis"
    assert env["QDRANT_URL"] == "http://qdrant:6333"


def test_gunicorn_runs_several_workers_in_this_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in resolved_app_env().items():
        monkeypatch.setenv(key, value)

    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))

    assert conf["workers"] == 4
    assert conf["bind"] == "0.0.0.0:8000"
    assert conf["logconfig_dict"]["handlers"]["structured"]["fmt"] == "json"


@pytest.mark.parametrize(
    ("qdrant_url", "database_url", "workers"),
    [
        ("http://qdrant:6333", "postgresql+psycopg://u@db/w", 4),
        ("", "postgresql+psycopg://u@db/w", 1),  # embedded qdrant-edge
        ("http://qdrant:6333", "", 1),  # SQLite
        (":memory:", "postgresql+psycopg://u@db/w", 1),  # qdrant-client local mode
        ("file:///srv/qdrant", "postgresql+psycopg://u@db/w", 1),
    ],
)
def test_only_shared_stores_get_several_workers(
    monkeypatch: pytest.MonkeyPatch, qdrant_url: str, database_url: str, workers: int
) -> None:
    monkeypatch.setenv("QDRANT_URL", qdrant_url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)

    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["workers"] == workers


def test_the_dockerfile_builds_what_compose_and_gunicorn_expect() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    app = compose()["services"]["app"]

    assert (ROOT / app["build"]["context"].replace("..", ".") / app["build"]["dockerfile"]).exists()
    base = re.search(r"^FROM python:3\.(\d+)", dockerfile, re.M)
    assert base and int(base.group(1)) >= 11  # setup.cfg: python_requires >= 3.11
    assert "pip install -r requirements.txt" in dockerfile
    assert "gunicorn --config gunicorn.conf.py wsgi:app" in dockerfile
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/**" in ignore, source
    assert "EXPOSE 8000" in dockerfile
    assert "ports" not in app  # the app port is never public: clients reach nginx
    assert app["expose"] == ["8000"]
    assert "http://127.0.0.1:8000/readyz" in " ".join(app["healthcheck"]["test"])


def test_nginx_fronts_the_app_with_the_apps_limits_and_its_own_envelope() -> None:
    services = compose()["services"]
    nginx = services["nginx"]
    conf = (DEPLOY / "nginx.conf").read_text()
    settings = load_settings(environ=resolved_app_env())

    assert nginx["image"].startswith("nginx:")
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["ports"] == ["${HTTP_PORT:-8080}:8080"]
    assert nginx["depends_on"] == {"app": {"condition": "service_healthy"}}
    assert "server app:8000;" in conf and "listen 8080;" in conf
    size = re.search(r"client_max_body_size (\d+)m;", conf)
    assert size and int(size.group(1)) * 1024 * 1024 == settings.media_max_content_length
    for directive in ("proxy_request_buffering on;", "proxy_buffering on;"):
        assert directive in conf
    for timeout in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert re.search(rf"^\s*{timeout} \d+s;", conf, re.M), timeout
    for status in (400, 408, 413, 414, 429, 494, 500, 502, 503, 504):
        assert f"error_page {status} @error_{status};" in conf
        page = re.search(rf"return {status} '(.*)\\n';", conf)
        assert page, status
        envelope = json.loads(page.group(1))
        assert set(envelope) == {"success", "message", "error"}
        assert envelope["success"] is False and envelope["error"]["details"] == {}
