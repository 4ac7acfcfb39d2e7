"""Model kinds, SQL column types and the prediction columns of the table contract.

Pure data: importable inside the database's Python with nothing but the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from shared.errors import InvalidPayload
from shared.scoring.contract import PREDICTION, RESERVED_COLUMNS

METHODS = ("predict", "predict_proba", "transform")
# SQL's reserved words (PostgreSQL's list): a column named TRUE or SELECT would need
# quotes in every query, so labels like these get C0, C1... names instead.
SQL_RESERVED = frozenset(
    [
        "ALL",
        "ANALYSE",
        "ANALYZE",
        "AND",
        "ANY",
        "ARRAY",
        "AS",
        "ASC",
        "ASYMMETRIC",
        "BOTH",
        "CASE",
        "CAST",
        "CHECK",
        "COLLATE",
        "COLUMN",
        "CONSTRAINT",
        "CREATE",
        "CURRENT_CATALOG",
        "CURRENT_DATE",
        "CURRENT_ROLE",
        "CURRENT_TIME",
        "CURRENT_TIMESTAMP",
        "CURRENT_USER",
        "DEFAULT",
        "DEFERRABLE",
        "DESC",
        "DISTINCT",
        "DO",
        "ELSE",
        "END",
        "EXCEPT",
        "FALSE",
        "FETCH",
        "FOR",
        "FOREIGN",
        "FROM",
        "GRANT",
        "GROUP",
        "HAVING",
        "IN",
        "INITIALLY",
        "INTERSECT",
        "INTO",
        "LATERAL",
        "LEADING",
        "LIMIT",
        "LOCALTIME",
        "LOCALTIMESTAMP",
        "NOT",
        "NULL",
        "OFFSET",
        "ON",
        "ONLY",
        "OR",
        "ORDER",
        "PLACING",
        "PRIMARY",
        "REFERENCES",
        "RETURNING",
        "SELECT",
        "SESSION_USER",
        "SOME",
        "SYMMETRIC",
        "TABLE",
        "THEN",
        "TO",
        "TRAILING",
        "TRUE",
        "UNION",
        "UNIQUE",
        "USER",
        "USING",
        "VARIADIC",
        "WHEN",
        "WHERE",
        "WINDOW",
        "WITH",
    ]
)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_NOT_PLAIN = re.compile(r"[^A-Za-z0-9_]+")


class ModelKind(StrEnum):
    """What a model's prediction is, which decides the prediction columns."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    CLUSTERING = "clustering"
    MULTI_OUTPUT = "multi_output"


class SqlType(StrEnum):
    """Dialect-neutral column types; the deployment plan maps them per database."""

    DOUBLE = "DOUBLE"
    INTEGER = "INTEGER"
    BIGINT = "BIGINT"
    TEXT = "TEXT"
    BOOLEAN = "BOOLEAN"

    @property
    def is_text(self) -> bool:
        return self is SqlType.TEXT

    def in_dialect(self, dialect: str) -> str:
        """The column type on ``postgresql`` or ``sqlite``."""
        return _DIALECT_TYPES[dialect][self]


_DIALECT_TYPES = {
    "postgresql": {
        SqlType.DOUBLE: "double precision",
        SqlType.INTEGER: "integer",
        SqlType.BIGINT: "bigint",
        SqlType.TEXT: "text",
        SqlType.BOOLEAN: "boolean",
    },
    "sqlite": {
        SqlType.DOUBLE: "REAL",
        SqlType.INTEGER: "INTEGER",
        SqlType.BIGINT: "INTEGER",
        SqlType.TEXT: "TEXT",
        SqlType.BOOLEAN: "INTEGER",
    },
}


@dataclass(frozen=True)
class Column:
    """A named, typed column: a model input or a prediction column."""

    name: str
    sql_type: SqlType

    def __post_init__(self) -> None:
        object.__setattr__(self, "sql_type", SqlType(self.sql_type))


def method_from(library_specific: Mapping[str, object] | None) -> str | None:
    """The model method named by a payload's ``library_specific`` (``None``: the default)."""
    method = (library_specific or {}).get("method")
    if method is None:
        return None
    if method not in METHODS:
        raise InvalidPayload(
            f"library_specific.method must be one of {', '.join(METHODS)}, not {method!r}",
            field="library_specific",
        )
    return str(method)


def output_column_names(labels: Iterable[object]) -> tuple[str, ...]:
    """Column names for per-class or per-output values.

    The labels themselves when they are all plain SQL identifiers, distinct
    regardless of case, clear of the reserved columns and of SQL's reserved
    words; else ``C0``, ``C1``... so that labels such as ``0``, ``"high risk"``
    or ``True`` still give usable names.
    """
    names = [str(label) for label in labels]
    upper = {name.upper() for name in names}
    usable = (
        all(_PLAIN_NAME.fullmatch(name) for name in names)
        and len(upper) == len(names)
        and not upper & (RESERVED_COLUMNS | SQL_RESERVED)
    )
    return tuple(names) if usable else tuple(f"C{i}" for i in range(len(names)))


def output_columns(
    kind: ModelKind, classes: tuple[str, ...], output_names: tuple[str, ...]
) -> tuple[Column, ...]:
    """The prediction columns of the table contract for one model."""
    if kind is ModelKind.CLASSIFICATION:
        probabilities = [Column(name, SqlType.DOUBLE) for name in output_names]
        return (Column(PREDICTION, SqlType.TEXT), *probabilities)
    if kind is ModelKind.REGRESSION:
        return (Column(PREDICTION, SqlType.DOUBLE),)
    if kind is ModelKind.CLUSTERING:
        return (Column(PREDICTION, SqlType.INTEGER),)
    return tuple(Column(name, SqlType.DOUBLE) for name in output_names)


def column_name(input_name: str) -> str:
    """The table column that feeds a model input named ``input_name``.

    The name itself when it is a plain SQL identifier; else runs of other
    characters become one underscore, trimmed at the ends (scikit-learn's
    ``sepal length (cm)`` becomes ``sepal_length_cm``), with ``c_`` before a
    leading digit. The result still goes through ``shared.db.check_identifier``
    wherever it reaches SQL (names are always quoted there, so SQL's reserved
    words are fine).
    """
    if _PLAIN_NAME.fullmatch(input_name):
        return input_name
    plain = _NOT_PLAIN.sub("_", input_name).strip("_")
    if not plain or plain[0].isdigit():
        plain = f"c_{plain}"
    return plain[:63]


def input_columns(names: Iterable[str]) -> dict[str, str]:
    """Model input name -> table column (``column_name``), refusing two inputs on one column."""
    columns = {name: column_name(name) for name in names}
    by_column: dict[str, list[str]] = {}
    for name, column in columns.items():
        by_column.setdefault(column.lower(), []).append(name)
    shared = [names for names in by_column.values() if len(names) > 1]
    if shared:
        clashes = "; ".join(" and ".join(repr(n) for n in names) for names in shared)
        raise InvalidPayload(
            f"model inputs {clashes} would be the same table column: rename them in the "
            "model's signature, or deploy onto a table and name its columns with model_cols",
            field="model_cols",
        )
    return columns
