"""ML Manager's small public helpers for applications.

``mlmanager.connect(path)`` opens a SQLite database that has models deployed on
its tables: a ``sqlite3`` connection with the scoring function the tables'
triggers call. A plain ``sqlite3.connect`` lacks it, and an INSERT into a
deployed table then fails with ``no such function: mlmanager_score``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["connect"]


def connect(database: str | Path, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(database, **kwargs)`` plus ML Manager's scoring function."""
    # Imported here: the package also holds the command line, which must not load the
    # scoring core (onnxruntime) for every command.
    from shared.scoring.indb import register_sqlite_scoring

    conn = sqlite3.connect(database, **kwargs)
    register_sqlite_scoring(conn)
    return conn
