"""Vector stores behind the VectorIndex port."""

from __future__ import annotations

from ..config import Settings
from .base import Space, VectorIndex


def build_vector_index(settings: Settings) -> VectorIndex:
    """Return the configured adapter, not yet opened: a Qdrant server if QDRANT_URL is set."""
    dims: dict[Space, int] = {"hd": settings.hd_dim, "ld": settings.ld_dim}
    if settings.qdrant_url:
        from .server import ServerIndex, connect

        client = connect(settings.qdrant_url, settings.qdrant_api_key)
        return ServerIndex(client, dims)
    from .edge import EdgeIndex

    return EdgeIndex(settings.data_dir, dims)
