"""The stores one process holds: the database, the vector index, the reconciler."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app

from .db import Database
from .services.cleanup import Reconciler
from .vectors import build_vector_index
from .vectors.base import VectorIndex

# Present while a server process holds the embedded stores; left behind by an unclean stop.
RUNNING_MARKER = "server.running"


@dataclass
class Stores:
    """The database and vector index of this process."""

    db: Database
    vectors: VectorIndex
    reconciler: Reconciler | None = None
    marker: str | None = None

    @classmethod
    def open(cls, settings: Mapping[str, Any]) -> Stores:
        """Connect both stores, creating the schema and collections that are missing."""
        db = Database(settings["DATABASE_URL"])
        db.create_schema()
        vectors = build_vector_index(settings)
        try:
            vectors.ensure()
        except Exception:
            db.dispose()
            raise
        return cls(db, vectors)

    def start_reconciler(self, settings: Mapping[str, Any]) -> None:
        """Run the reconciler in this process; after an unclean stop, scan for orphans first."""
        os.makedirs(settings["DATA_DIR"], exist_ok=True)
        self.marker = os.path.join(settings["DATA_DIR"], RUNNING_MARKER)
        unclean = os.path.exists(self.marker)
        with open(self.marker, "w") as handle:
            handle.write(str(os.getpid()))
        self.reconciler = Reconciler(
            self.db,
            self.vectors,
            interval=float(settings["RECONCILE_INTERVAL_SECONDS"]),
            grace=float(settings["RECONCILE_GRACE_SECONDS"]),
            full_scan_first=unclean,
        )
        self.reconciler.start()

    def close(self) -> None:
        """Stop the reconciler, flush and release both stores."""
        if self.reconciler is not None:
            self.reconciler.stop()
            self.reconciler = None
        self.vectors.close()
        self.db.dispose()
        if self.marker and os.path.exists(self.marker):
            os.remove(self.marker)
            self.marker = None


def stores() -> Stores:
    """Return the stores of the current app."""
    return current_app.extensions["wickson"]  # type: ignore[no-any-return]
