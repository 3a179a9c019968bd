"""GET /docs: Swagger UI over /openapi.json, every asset served from the installed package."""

from __future__ import annotations

from importlib.resources import as_file, files

from flask import Blueprint, Response, abort, send_file, url_for
from markupsafe import escape

bp = Blueprint("docs", __name__, url_prefix="/docs")

# Swagger UI's own build, as shipped inside the pinned flask-swagger-ui wheel (its dist/
# folder); the blueprint that package offers is not used: its page runs an inline script.
SWAGGER_UI_PACKAGE = "flask_swagger_ui"
_PACKAGED = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
INIT_SCRIPT = "init.js"
ASSETS = (*_PACKAGED, INIT_SCRIPT)

# A script file, not an inline one, so that the page's CSP can allow scripts from 'self' only.
_INIT_JS = """\
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    defaultModelsExpandDepth: 0
  });
});
"""

# Swagger UI sets style attributes and shows inline SVG icons as data: images; everything
# else, scripts first, comes from this server alone.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wickson-batch API reference</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" type="image/png" href="{icon}">
</head>
<body>
<noscript>This page needs JavaScript. The contract itself is at
<a href="{spec}">{spec}</a>.</noscript>
<div id="swagger-ui" data-spec-url="{spec}"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""


def _asset_url(name: str) -> str:
    return str(escape(url_for("docs.asset", name=name)))


@bp.route("", methods=["GET"])
def page() -> Response:
    """Serve the interactive API reference."""
    html = _PAGE.format(
        css=_asset_url("swagger-ui.css"),
        icon=_asset_url("favicon-32x32.png"),
        spec=escape(url_for("openapi.openapi")),
        bundle=_asset_url("swagger-ui-bundle.js"),
        init=_asset_url(INIT_SCRIPT),
    )
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.route("/<name>", methods=["GET"])
def asset(name: str) -> Response:
    """Serve one file the page loads; any other name is a 404."""
    if name == INIT_SCRIPT:
        return Response(_INIT_JS, content_type="text/javascript; charset=utf-8")
    if name not in _PACKAGED:
        abort(404)
    with as_file(files(SWAGGER_UI_PACKAGE) / "dist" / name) as path:
        return send_file(path, mimetype=_PACKAGED[name], max_age=0)
