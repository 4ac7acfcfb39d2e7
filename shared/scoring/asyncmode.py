"""Asynchronous scoring inside PostgreSQL, for databases without PL/Python (issue 6).

A deployed table gets a PL/pgSQL statement trigger that only sends
``pg_notify('mlmanager_scoring', <table oid>)``: a wake-up, whatever the number
of rows, so the 8000-byte payload limit never matters. The worker's scorer
(``bobby.async_scoring``) then claims the table's unscored rows - those whose
first prediction column is NULL, found through a partial index - in batches
with ``FOR UPDATE SKIP LOCKED`` (so that replicas never score a row twice at
once), scores them with the scoring core and writes them back with one
set-based UPDATE per batch. Notifications sent while no scorer listens are lost,
so the scorer also sweeps every async table at start-up and periodically.

Every row whose prediction is NULL is scored, rows that were in the table
before the deploy included. A row that cannot be scored stays NULL, is counted
and logged, and is skipped by that worker until it restarts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from shared.db import quote_identifier, quote_qualified
from shared.deployments import DatabaseDeploymentSpec, DeploymentStore
from shared.scoring.contract import (
    EVAL_TIME,
    NOTIFY_CHANNEL,
    NOTIFY_INSERTED,
    contract_name,
    unscored_index,
)

if TYPE_CHECKING:  # numpy and onnxruntime load only where rows are scored, not in the
    # server, which reads catalogs and plans (drift) through this module
    from shared.scoring.scorer import Scorer

ASYNC = "async"
_EVAL_TIME = quote_identifier(contract_name(EVAL_TIME, "postgresql"))  # async: PostgreSQL only


def notify_function_sql(schema: str) -> str:
    """The trigger function (trusted PL/pgSQL: no superuser needed)."""
    q = quote_identifier(schema, "schema")
    return (
        f"CREATE OR REPLACE FUNCTION {q}.{NOTIFY_INSERTED}() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN "
        f"PERFORM pg_notify('{NOTIFY_CHANNEL}', TG_RELID::text); RETURN NULL; END $$"
    )


def unscored_index_name(table: str) -> str:
    """The quoted name of the partial index of ``table``'s unscored rows."""
    return quote_identifier(unscored_index(table))


@dataclass(frozen=True)
class AsyncTable:
    """One table scored asynchronously, as its deployment record describes it."""

    deployment_id: int
    schema: str
    table: str
    representation_id: int
    keys: tuple[tuple[str, str], ...]
    features: tuple[str, ...]
    outputs: tuple[str, ...]
    output_types: tuple[str, ...] = ()  # as the table declares them (async_tables reads them)

    @property
    def qualified(self) -> str:
        return quote_qualified(self.schema, self.table)

    @classmethod
    def from_spec(cls, deployment_id: int, spec: DatabaseDeploymentSpec) -> AsyncTable:
        return cls(
            deployment_id=deployment_id,
            schema=spec.db_schema,
            table=spec.db_table,
            representation_id=spec.representation_id,
            keys=tuple(spec.keys),
            features=tuple(spec.features),
            outputs=tuple(spec.prediction_columns),
        )


def async_tables(conn: Connection) -> dict[int, AsyncTable]:
    """Every DEPLOYED async table, by table oid (tables dropped since are left out)."""
    found: dict[int, AsyncTable] = {}
    for deployment in DeploymentStore.deployed(conn, target="database"):
        spec = deployment.spec
        if not isinstance(spec, DatabaseDeploymentSpec) or spec.mode != ASYNC:
            continue
        table = AsyncTable.from_spec(deployment.id, spec)
        oid = conn.execute(
            text("SELECT to_regclass(:name)::oid"), {"name": table.qualified}
        ).scalar()
        if oid is not None:
            found[int(oid)] = replace(table, output_types=tuple(_column_types(conn, table)))
    return found


@dataclass
class BatchResult:
    scored: int
    failed: list[tuple[tuple[Any, ...], str]]  # (key, error) of rows that cannot be scored
    inserted_at: list[dt.datetime]  # eval_time of the scored rows that have one


def score_batch(
    conn: Connection,
    table: AsyncTable,
    scorer: Scorer,
    limit: int,
    skip: Sequence[tuple[Any, ...]] = (),
) -> BatchResult:
    """Claim up to ``limit`` unscored rows (SKIP LOCKED), score them, write them back.

    Runs in the caller's transaction: the claimed rows stay locked until it
    commits. Rows the model refuses are scored one by one to find them, and
    reported in ``failed`` (left NULL).
    """
    q = quote_identifier
    keys = [k for k, _ in table.keys]
    read = ", ".join(q(c) for c in [*keys, *table.features])
    skip_clause = ""
    params: dict[str, Any] = {"limit": limit}
    if skip and len(keys) == 1:
        skip_clause = f" AND NOT ({q(keys[0])} = ANY(:skip))"
        params["skip"] = [k[0] for k in skip]
    elif skip:
        pairs = " OR ".join(
            "(" + " AND ".join(f"{q(k)} = :s{n}_{i}" for i, k in enumerate(keys)) + ")"
            for n in range(len(skip))
        )
        skip_clause = f" AND NOT ({pairs})"
        params |= {f"s{n}_{i}": v for n, key in enumerate(skip) for i, v in enumerate(key)}
    rows = (
        conn.execute(
            text(
                f"SELECT {read}, {_EVAL_TIME} FROM {table.qualified} "
                f"WHERE {q(table.outputs[0])} IS NULL{skip_clause} "
                f"ORDER BY {', '.join(q(k) for k in keys)} LIMIT :limit FOR UPDATE SKIP LOCKED"
            ),
            params,
        )
        .tuples()
        .all()
    )
    if not rows:
        return BatchResult(0, [], [])
    good, failed, predictions = _score_rows(scorer, rows, len(keys))
    if good:
        _write_back(conn, table, [rows[i] for i in good], predictions, len(keys))
    inserted = [rows[i][-1] for i in good if isinstance(rows[i][-1], dt.datetime)]
    return BatchResult(len(good), failed, inserted)


def _score_rows(
    scorer: Scorer, rows: Sequence[Any], key_count: int
) -> tuple[list[int], list[tuple[tuple[Any, ...], str]], list[list[Any]]]:
    """Score the batch at once; if the model refuses it, row by row to find the bad ones."""
    names = [c.name for c in scorer.representation.inputs]

    def features(subset: Sequence[Any]) -> dict[str, list[Any]]:
        columns = list(zip(*subset, strict=True))[key_count:-1]  # transposed in C
        return {n: list(c) for n, c in zip(names, columns, strict=True)}

    try:
        return list(range(len(rows))), [], scorer.score_columns(features(rows))
    except Exception:  # the row-by-row pass below reports what failed
        pass
    good: list[int] = []
    failed: list[tuple[tuple[Any, ...], str]] = []
    scored: list[list[Any]] = [[] for _ in scorer.representation.outputs]
    for i, row in enumerate(rows):
        try:
            one = scorer.score_columns(features([row]))
        except Exception as exc:
            failed.append((tuple(row[:key_count]), f"{type(exc).__name__}: {exc}"))
            continue
        good.append(i)
        for column, values in zip(scored, one, strict=True):
            column.extend(values)
    return good, failed, scored


def _write_back(
    conn: Connection,
    table: AsyncTable,
    rows: Sequence[Any],
    predictions: list[list[Any]],
    key_count: int,
) -> None:
    q = quote_identifier
    rep_types = list(table.output_types) or _column_types(conn, table)
    keys = [f"k{i}" for i in range(key_count)]
    outs = [f"o{i}" for i in range(len(table.outputs))]
    # Each array travels as one text literal that PostgreSQL parses in C: psycopg
    # dumping the lists value by value took 0.7 s per 100k rows of 4 columns.
    arrays = [
        f"CAST(CAST(:{name} AS text) AS {sql_type}[])"
        for name, sql_type in zip(keys + outs, [t for _, t in table.keys] + rep_types, strict=True)
    ]
    statement = text(
        f"UPDATE {table.qualified} AS t SET "
        + ", ".join(f"{q(c)} = u.{o}" for c, o in zip(table.outputs, outs, strict=True))
        + f" FROM unnest({', '.join(arrays)}) AS u({', '.join(keys + outs)}) WHERE "
        + " AND ".join(f"t.{q(k)} = u.{n}" for (k, _), n in zip(table.keys, keys, strict=True))
    )
    values = {f"k{i}": array_literal([r[i] for r in rows]) for i in range(key_count)}
    values |= {o: array_literal(p) for o, p in zip(outs, predictions, strict=True)}
    conn.execute(statement, values)


def array_literal(values: Sequence[Any]) -> str:
    """A PostgreSQL array literal (``{1.5,NULL,"a b"}``) of numbers or text.

    A column holds one type: numbers are recognised by their first value.
    """
    if values and None not in values and type(values[0]) in (int, float):
        return "{" + ",".join(map(repr, values)) + "}"
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        else:
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'"{escaped}"')
    return "{" + ",".join(items) + "}"


def _column_types(conn: Connection, table: AsyncTable) -> list[str]:
    """The SQL types of the prediction columns, as the table declares them."""
    rows = conn.execute(
        text(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(:name) AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"name": table.qualified},
    ).all()
    types: dict[str, str] = {str(name): str(sql_type) for name, sql_type in rows}
    return [types[c] for c in table.outputs]


def backlog(conn: Connection, table: AsyncTable) -> dict[str, Any]:
    """Rows still waiting for a prediction, and how long the oldest has waited."""
    q = quote_identifier
    count, oldest = conn.execute(
        text(
            f"SELECT count(*), extract(epoch FROM now() - min({_EVAL_TIME})) "
            f"FROM {table.qualified} WHERE {q(table.outputs[0])} IS NULL"
        )
    ).one()
    return {"unscored_rows": int(count), "oldest_unscored_seconds": oldest and float(oldest)}
