"""Vector stores behind the VectorIndex port."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import VectorIndex


def build_vector_index(settings: Mapping[str, Any]) -> VectorIndex:
    """Return the configured adapter, not yet opened: a Qdrant server if QDRANT_URL is set."""
    dims = {"hd": int(settings["HD_DIM"]), "ld": int(settings["LD_DIM"])}
    if settings.get("QDRANT_URL"):
        from .server import ServerIndex, connect

        client = connect(settings["QDRANT_URL"], settings.get("QDRANT_API_KEY"))
        return ServerIndex(client, dims)  # type: ignore[arg-type]
    from .edge import EdgeIndex

    return EdgeIndex(settings["DATA_DIR"], dims)  # type: ignore[arg-type]
