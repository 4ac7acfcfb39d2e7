"""The names a deployed table and the database's scoring code agree on, defined once.

The table contract of REFERENCE.md (the prediction and contract columns), the
triggers' and scoring functions' names, the async mode's channel and index.
Pure data (standard library only): the database's Python imports it too.
"""

from __future__ import annotations

# --- columns every deployed table holds besides the features (REFERENCE.md) ----------
PREDICTION = "PREDICTION"
CUR_USER = "CUR_USER"
EVAL_TIME = "EVAL_TIME"
RUN_ID = "RUN_ID"
CONTRACT_COLUMNS = (CUR_USER, EVAL_TIME, RUN_ID)
RESERVED_COLUMNS = frozenset({PREDICTION, *CONTRACT_COLUMNS})

# --- triggers and the functions they call ---------------------------------------------
TRIGGER_PREFIX = "RUNMODEL_"  # every scoring trigger's name starts so (as the original's)
SCORE_STATEMENT = "score_statement"  # PL/Python, statement trigger (the default)
SCORE_ROW = "score_row"  # PL/Python, row trigger
NOTIFY_INSERTED = "notify_inserted"  # PL/pgSQL, async mode's statement trigger
SCORING_LOAD = "scoring_load"  # PL/Python: loads the embedded scoring code
SQLITE_FUNCTION = "mlmanager_score"  # registered on every SQLite connection
NEW_ROWS = "mlmanager_new_rows"  # the transition table a statement trigger reads

# --- async mode -------------------------------------------------------------------------
NOTIFY_CHANNEL = "mlmanager_scoring"
_UNSCORED_INDEX_PREFIX = "mlmanager_unscored_"


def contract_name(name: str, dialect: str) -> str:
    """A contract or prediction column's name as created on ``dialect`` (PostgreSQL: lower
    case, so that unquoted SQL finds it; SQLite keeps REFERENCE.md's upper case)."""
    return name.lower() if dialect == "postgresql" else name


def unscored_index(table: str) -> str:
    """The name (unquoted) of async mode's partial index of ``table``'s unscored rows."""
    return f"{_UNSCORED_INDEX_PREFIX}{table}"[:63]
