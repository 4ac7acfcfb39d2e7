"""``model_representations``: saving a built representation and reading it back (worker side)."""

from __future__ import annotations

from sqlalchemy import Connection, Table, insert, select

from shared.errors import NotFound
from shared.models import ModelRepresentationRow, utcnow
from shared.scoring.kinds import Column
from shared.scoring.representation import Representation, representation_from

representations: Table = ModelRepresentationRow.__table__  # type: ignore[assignment]


def _columns(columns: tuple[Column, ...]) -> list[dict[str, str]]:
    return [{"name": c.name, "sql_type": str(c.sql_type)} for c in columns]


def save_representation(conn: Connection, rep: Representation, user: str) -> int:
    """Insert ``rep`` (in the caller's transaction) and return its id."""
    values = {
        "format": str(rep.format),
        "payload": rep.payload,
        "checksum": rep.checksum,
        "kind": str(rep.kind),
        "method": rep.method,
        "flavor": rep.flavor,
        "inputs": _columns(rep.inputs),
        "outputs": _columns(rep.outputs),
        "classes": list(rep.classes),
        "model_uri": rep.model_uri,
        "run_id": rep.run_id,
        "model_version": rep.model_version,
        "created_at": utcnow(),
        "created_by": user,
    }
    key = conn.execute(insert(representations).values(values)).inserted_primary_key
    assert key is not None
    return int(key[0])


def load_representation(conn: Connection, representation_id: int) -> Representation:
    row = (
        conn.execute(select(representations).where(representations.c.id == representation_id))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"no model representation {representation_id}")
    return representation_from(dict(row))
