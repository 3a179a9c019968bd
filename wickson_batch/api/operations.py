"""GET /v1/operations/<id>: what a past batch did, for a caller that lost its answer."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from ..protocol import Scope, is_media_id
from ..services import deletion
from ..services.errors import OperationNotFound
from .auth import require_principal, require_scope
from .context import stores
from .media import batch_body, dump, in_flight
from .schemas import OperationResponse

bp = Blueprint("operations", __name__, url_prefix="/v1/operations")

_operation_response = OperationResponse()


@bp.route("/<operation_id>", methods=["GET"])
@require_scope(Scope.READ, Scope.DELETE)
def get(operation_id: str) -> ResponseReturnValue:
    """Return the stored answer of one of the owner's batch deletions."""
    principal = require_principal()
    if not is_media_id(operation_id):  # the same alphabet and length bound as media ids
        raise OperationNotFound(operation_id[:128])
    outcome = deletion.get_operation(
        stores().db, owner=principal.owner, operation_id=operation_id, in_flight=in_flight()
    )
    body = batch_body(outcome)
    body["metadata"]["status"] = outcome.status
    return dump(_operation_response, body)
