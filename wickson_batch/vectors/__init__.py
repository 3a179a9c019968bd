"""Vector stores behind the VectorIndex port."""

from __future__ import annotations

from ..config import Settings
from .base import Space, VectorIndex


def build_vector_index(settings: Settings) -> VectorIndex:
    """Return the configured adapter, not yet opened: a Qdrant server if QDRANT_URL is set."""
    dims: dict[Space, int] = {"hd": settings.hd_dim, "ld": settings.ld_dim}
    if settings.qdrant_url:
        from qdrant_client.models import WriteOrdering

        from .server import ClusterOptions, ServerIndex, connect

        options = ClusterOptions(
            shard_number=settings.qdrant_shard_number,
            replication_factor=settings.qdrant_replication_factor,
            write_consistency_factor=settings.qdrant_write_consistency_factor,
            ordering=WriteOrdering(settings.qdrant_write_ordering),
            prefer_grpc=settings.qdrant_prefer_grpc,
            timeout_seconds=settings.qdrant_timeout_seconds,
        )
        client = connect(settings.qdrant_url, settings.qdrant_api_key, options)
        return ServerIndex(client, dims, options)
    from .edge import EdgeIndex

    return EdgeIndex(settings.data_dir, dims)
