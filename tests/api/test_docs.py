"""GET /docs: the interactive reference, served whole by this app with no outside fetch."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.helpers import body, settings_for, stores_of
from wickson_batch import create_app
from wickson_batch.api.docs import ASSETS


def test_page_loads_only_its_own_assets(client: FlaskClient) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "//" not in html.replace("<!DOCTYPE html>", "")  # no absolute or external URL
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(sources) == sorted(
        ["/docs/swagger-ui.css", "/docs/favicon-32x32.png", "/openapi.json"]
        + ["/docs/swagger-ui-bundle.js", "/docs/init.js"]
    )
    assert 'data-spec-url="/openapi.json"' in html


def test_page_sends_a_self_only_content_security_policy(client: FlaskClient) -> None:
    headers = client.get("/docs").headers

    policy = dict(
        part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_every_asset_is_served_from_the_installed_package(client: FlaskClient) -> None:
    types = {
        "swagger-ui-bundle.js": "text/javascript",
        "swagger-ui.css": "text/css",
        "favicon-32x32.png": "image/png",
        "init.js": "text/javascript",
    }
    assert set(ASSETS) == set(types)

    for name, mimetype in types.items():
        with client.get(f"/docs/{name}") as response:  # a file response: close it
            assert response.status_code == 200, name
            assert response.mimetype == mimetype
            assert len(response.get_data()) > 100

    with client.get("/docs/swagger-ui-bundle.js") as response:
        assert b"SwaggerUIBundle" in response.get_data()


def test_an_unknown_asset_is_a_404_in_the_envelope(client: FlaskClient) -> None:
    for name in ("index.html", "oauth2-redirect.html", "..%2Fflask_swagger_ui.py", "LICENSE"):
        response = client.get(f"/docs/{name}")

        assert response.status_code == 404, name
        assert body(response)["error"]["code"] == "NOT_FOUND"


@pytest.fixture
def tightly_limited_app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(settings_for(tmp_path, "edge", RATE_LIMIT_DEFAULT="2/minute"))
    yield app
    stores_of(app).close()


def test_docs_and_metrics_need_no_key_and_are_not_limited(tightly_limited_app: Flask) -> None:
    client = tightly_limited_app.test_client()

    statuses = [client.get(path).status_code for path in ("/docs", "/metrics", "/docs/init.js") * 3]

    assert statuses == [200] * 9
    assert client.get("/v1/media/x").status_code == 401  # a limited route, for contrast
    assert "X-RateLimit-Limit" not in client.get("/docs").headers
