"""The deployment plan: what deploying a model onto a table does, as SQL, before it is done.

A pure function of plain data: ``plan_deployment(catalog, payload, representation)``
turns what the database holds (``shared.scoring.catalog.Catalog``, read before) and
what is asked into printable steps, and ``plan_undeploy`` does the same for
undeploying. No step reads the database, so the planner is tested without one
(``tests/unit/scoring/test_plan.py``) and ``dry_run`` prints exactly the steps a
real run executes, after the same synchronous/asynchronous decision.
``DeploymentPlan.render`` prints a plan; ``run_setup`` and ``execute`` run it in the
caller's transaction, so that a failure at any step leaves the table as it was.

A plan has two parts: ``setup``, run with the worker's own rights (installing the
PL/Python scoring functions or the async notify function, which needs a superuser
or owns shared functions), then ``steps``, run with the requesting user's rights
(the table's DDL and trigger).

Names: every schema, table and column name is checked by ``shared.db`` before
it reaches SQL. On PostgreSQL the contract columns (``prediction``,
``cur_user``, ``eval_time``, ``run_id``) and per-class columns are created in
lower case, so that unquoted SQL finds them; SQLite ignores case and keeps the
names of REFERENCE.md. An existing table's columns are matched to model inputs
exactly or else ignoring case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from shared.db import check_identifier, quote_identifier, quote_qualified
from shared.errors import DeploymentConflict, InvalidPayload, NotFound
from shared.handlers import DeployDatabasePayload
from shared.scoring.catalog import Catalog, TableInfo
from shared.scoring.contract import (
    CONTRACT_COLUMNS,
    CUR_USER,
    EVAL_TIME,
    NEW_ROWS,
    NOTIFY_INSERTED,
    RUN_ID,
    SCORE_ROW,
    SCORE_STATEMENT,
    SQLITE_FUNCTION,
    TRIGGER_PREFIX,
    contract_name,
    unscored_index,
)
from shared.scoring.indb import TableBinding
from shared.scoring.kinds import SqlType, input_columns
from shared.scoring.representation import Representation

if TYPE_CHECKING:  # numpy and onnxruntime load only where rows are scored, not in the
    # server, which reads catalogs and plans (drift) through this module
    from shared.scoring.scorer import Scorer

# Room on each page for the UPDATE that writes a statement's predictions back
# (a heap-only update stays on its page): tables we create for statement triggers.
STATEMENT_TABLE_FILLFACTOR = 50
_EXISTING_BATCH = 10000
# A function body longer than this is shown by its size, not its text (the scoring
# functions embed ML Manager's scoring code: ~100 kB).
_SHOWN_SQL = 2000


@dataclass(frozen=True)
class PlanStep:
    description: str
    sql: str | None = None
    action: Callable[[Connection], None] | None = None

    def rendered(self) -> str:
        if self.sql is None:
            return "-- (done in Python, no DDL)"
        if len(self.sql) <= _SHOWN_SQL:
            return f"{self.sql};"
        head = self.sql.split(" AS $", 1)[0]
        return f"{head} AS ... ;  -- ({len(self.sql)} characters, shown by size)"


@dataclass
class Plan:
    """Steps to run in one transaction: ``setup`` with the worker's rights, then ``steps``."""

    steps: list[PlanStep] = field(default_factory=list)
    setup: list[PlanStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said before the steps (decisions)

    def render(self) -> str:
        """The plan as SQL, one commented step after another."""
        lines = [f"-- {note}" for note in self.notes]
        for number, step in enumerate([*self.setup, *self.steps], 1):
            rights = " (with the worker's rights)" if number <= len(self.setup) else ""
            lines.append(f"-- Step {number}: {step.description}{rights}")
            lines.append(step.rendered())
        return "\n".join(lines)

    def run_setup(self, conn: Connection) -> None:
        """Run the ``setup`` steps (before taking the requesting user's role)."""
        for step in self.setup:
            _run(conn, step)

    def execute(
        self, conn: Connection, before_step: Callable[[int, PlanStep], None] | None = None
    ) -> None:
        """Run the steps in ``conn``'s transaction (the caller commits or rolls back)."""
        for number, step in enumerate(self.steps, 1):
            if before_step is not None:
                before_step(number, step)
            _run(conn, step)


def _run(conn: Connection, step: PlanStep) -> None:
    if step.sql is not None:
        conn.exec_driver_sql(step.sql, execution_options={"no_parameters": True})
    if step.action is not None:
        step.action(conn)


@dataclass
class DeploymentPlan(Plan):
    dialect: str = ""
    schema: str = ""
    table: str = ""
    binding: TableBinding = field(default_factory=lambda: TableBinding(0, (), (), ()))
    trigger_name: str = ""
    trigger_mode: str = ""
    creates_table: bool = False
    replaces: tuple[str, ...] = ()
    # (model input, table column) where the input's own name is no SQL name.
    renamed_inputs: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def asynchronous(self) -> bool:
        return self.trigger_mode == "async"

    def render(self) -> str:
        renamed = [
            f"-- model input {name!r} is read from column {column}"
            for name, column in self.renamed_inputs
        ]
        return "\n".join([*renamed, super().render()]) if renamed else super().render()


def table_sql(dialect: str, schema: str, table: str) -> str:
    """The quoted table name (SQLite's one schema, main, is left implicit)."""
    return quote_qualified(schema, table) if dialect == "postgresql" else quote_identifier(table)


def trigger_name(table: str, run_id: str | None, representation_id: int | None) -> str:
    """``RUNMODEL_<table>_<run>`` as the original named them, within 63 characters."""
    suffix = (run_id or f"r{representation_id or 0}")[:8]
    return check_identifier(f"{TRIGGER_PREFIX}{table}"[: 63 - len(suffix) - 1] + f"_{suffix}")


def scoring_setup(
    catalog: Catalog, mode: str, scoring_schema: str | None
) -> tuple[bool, list[PlanStep], list[str]]:
    """The sync/async decision and the functions it needs installed.

    (asynchronous, setup steps, notes): ``mode`` is the payload's (auto, sync,
    async). PostgreSQL scores synchronously with the PL/Python functions when they
    are installed at this code's version or can be (PL/Python present, the worker a
    superuser); else ``auto`` falls back to async mode and says why, and ``sync`` is
    refused. SQLite is always synchronous (an explicit async is refused by the plan).
    """
    if catalog.dialect != "postgresql":
        return mode == "async", [], []
    from shared.scoring.asyncmode import notify_function_sql
    from shared.scoring.postgres import (
        INSTALL_LOCK,
        install_refusal,
        install_statements,
        scoring_version,
    )

    schema = scoring_schema or "mlmanager"
    notes: list[str] = []
    if mode != "async":
        assert catalog.scoring is not None
        if catalog.scoring.installed_version == scoring_version():
            return False, [], []
        refusal = install_refusal(catalog.scoring)
        if refusal is None:
            lock = PlanStep(
                "wait for any other install of the scoring functions",
                f"SELECT pg_advisory_xact_lock(hashtext({_literal(INSTALL_LOCK)}))",
            )
            install = [
                PlanStep(f"install the PL/Python scoring functions in {schema}", sql)
                for sql in install_statements(schema)
            ]
            return (
                False,
                [lock, *install],
                [f"installing the PL/Python scoring functions in {schema}"],
            )
        if mode == "sync":
            raise refusal
        notes.append(f"scoring asynchronously (mode async): {refusal.message}")
    notify = PlanStep(
        f"create the async notify function {schema}.{NOTIFY_INSERTED}()",
        notify_function_sql(schema),
    )
    return True, [notify], notes


def plan_deployment(
    catalog: Catalog,
    payload: DeployDatabasePayload,
    rep: Representation,
    representation_id: int | None,
    *,
    scoring_schema: str | None,
) -> DeploymentPlan:
    """The plan that deploys ``rep`` onto the payload's table, from the database's ``catalog``.

    ``representation_id`` is ``None`` for a dry run (the id is assigned when
    the plan runs). ``scoring_schema`` is where the PL/Python functions live
    (PostgreSQL only). In async mode the table gets a notifying trigger and a
    partial index of the unscored rows instead of the scoring trigger
    (``shared.scoring.asyncmode``).
    """
    dialect = catalog.dialect
    schema, table = payload.db_schema, payload.db_table
    if dialect == "sqlite" and schema != "main":
        raise InvalidPayload(
            f"a SQLite database has one schema, main, not {schema!r}", field="db_schema"
        )
    asynchronous, setup, notes = scoring_setup(catalog, payload.mode, scoring_schema)
    existing = catalog.table
    steps: list[PlanStep] = []
    qualified = table_sql(dialect, schema, table)
    run_id = rep.run_id or payload.run_id
    mode: str = payload.trigger_mode if dialect == "postgresql" else "row"
    if asynchronous:
        if dialect != "postgresql":
            raise InvalidPayload("mode async needs PostgreSQL", field="mode")
        mode = "async"

    outputs = tuple(contract_name(o.name, dialect) for o in rep.outputs)
    if existing is None:
        if not payload.create_model_table:
            raise NotFound(
                f"table {schema}.{table} does not exist: create it, or set create_model_table "
                "(with primary_key and df_schema or a reference table)"
            )
        if not catalog.schema_exists:
            steps.append(
                PlanStep(
                    f"create schema {schema}",
                    f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema, 'schema')}",
                )
            )
        columns, keys = _new_table_columns(catalog, payload, rep, dialect)
        features = _features(payload, rep, TableInfo(columns, keys, ()))
        steps.append(
            PlanStep(
                f"create table {schema}.{table}",
                _create_table(qualified, columns, keys, rep, run_id, dialect, mode),
            )
        )
        key_types = tuple((k, columns[k]) for k in keys)
        replaced: tuple[str, ...] = ()
    else:
        if existing.triggers and not payload.replace:
            raise DeploymentConflict(
                f"table {schema}.{table} already has a model deployed (trigger "
                f"{', '.join(existing.triggers)}): set replace to swap it"
            )
        if not existing.primary_key:
            raise InvalidPayload(
                f"table {schema}.{table} has no primary key: add one (predictions are "
                "written back by key)",
                field="db_table",
            )
        if payload.primary_key and set(payload.primary_key) != set(existing.primary_key):
            raise InvalidPayload(
                f"table {schema}.{table} has primary key {', '.join(existing.primary_key)}, "
                f"not {', '.join(payload.primary_key)}",
                field="primary_key",
            )
        features = _features(payload, rep, existing)
        replaced = existing.triggers
        steps += [
            PlanStep(
                f"drop the trigger of the model being replaced ({old})",
                drop_trigger_sql(dialect, qualified, old),
            )
            for old in existing.triggers
        ]
        outputs = tuple(existing.find(o) or o for o in outputs)
        _check_output_types(existing, rep, outputs, dialect, f"{schema}.{table}")
        for column, sql in _missing_columns(existing, rep, outputs, run_id, dialect):
            steps.append(
                PlanStep(f"add column {column}", f"ALTER TABLE {qualified} ADD COLUMN {sql}")
            )
        run_column = existing.find(contract_name(RUN_ID, dialect))
        if run_column is not None and dialect == "postgresql":
            steps.append(
                PlanStep(
                    f"set the default of {run_column} to the deployed run",
                    f"ALTER TABLE {qualified} ALTER COLUMN {quote_identifier(run_column)} "
                    f"SET DEFAULT {_literal(run_id)}",
                )
            )
        key_types = tuple((k, existing.columns[k]) for k in existing.primary_key)

    binding = TableBinding(
        representation_id=representation_id or 0,
        keys=key_types,
        features=features,
        outputs=outputs,
        max_batch_size=payload.max_batch_size,
    )
    name = trigger_name(table, run_id, representation_id)
    plan = DeploymentPlan(
        steps=steps,
        setup=setup,
        notes=notes,
        dialect=dialect,
        schema=schema,
        table=table,
        binding=binding,
        trigger_name=name,
        trigger_mode=mode,
        creates_table=existing is None,
        replaces=replaced,
        renamed_inputs=tuple(
            (name, column)
            for name, column in input_columns(c.name for c in rep.inputs).items()
            if name != column
        ),
    )
    if asynchronous:
        plan.steps.append(
            PlanStep(
                "index the rows still waiting for a prediction",
                create_unscored_index_sql(schema, table, binding),
            )
        )
    plan.steps.append(
        PlanStep(
            f"create the {mode} scoring trigger {name}",
            _trigger(plan, qualified, scoring_schema, run_id),
        )
    )
    return plan


def plan_undeploy(
    dialect: str,
    schema: str,
    table: str,
    existing: TableInfo,
    *,
    prediction_columns: Sequence[str] = (),
    drop_columns: bool = False,
) -> Plan:
    """The plan that removes the model from an existing table: its scoring triggers, the
    async index (PostgreSQL) and, with ``drop_columns``, the prediction columns (those of
    ``prediction_columns`` the table has). The table's data is kept."""
    qualified = table_sql(dialect, schema, table)
    steps = [
        PlanStep(f"drop trigger {trigger}", drop_trigger_sql(dialect, qualified, trigger))
        for trigger in existing.triggers
    ]
    if dialect == "postgresql":
        index = quote_identifier(unscored_index(table))
        steps.append(
            PlanStep(
                "drop the index of the rows waiting for a prediction (async mode), if any",
                f"DROP INDEX IF EXISTS {quote_identifier(schema, 'schema')}.{index}",
            )
        )
    notes = []
    if drop_columns:
        if not prediction_columns:
            notes.append("no deployment record names the prediction columns: none dropped")
        for name in prediction_columns:
            column = existing.find(name)
            if column is not None:
                steps.append(
                    PlanStep(
                        f"drop column {column}",
                        f"ALTER TABLE {qualified} DROP COLUMN {quote_identifier(column, 'column')}",
                    )
                )
    return Plan(steps=steps, notes=notes)


def drop_trigger_sql(dialect: str, qualified: str, trigger: str) -> str:
    on = f" ON {qualified}" if dialect == "postgresql" else ""
    return f"DROP TRIGGER {quote_identifier(trigger)}{on}"


def create_unscored_index_sql(schema: str, table: str, binding: TableBinding) -> str:
    """Async mode's partial index of the rows whose first prediction column is NULL."""
    keys = ", ".join(quote_identifier(k) for k, _ in binding.keys)
    return (
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(unscored_index(table))} "
        f"ON {quote_qualified(schema, table)} ({keys}) "
        f"WHERE {quote_identifier(binding.outputs[0])} IS NULL"
    )


def add_score_existing(plan: DeploymentPlan, rep: Representation) -> None:
    """Append the step that fills predictions for rows already in the table."""

    def score_existing(conn: Connection) -> None:
        from shared.scoring.runtime import scorer_for

        score_existing_rows(conn, plan, scorer_for(rep))

    plan.steps.append(
        PlanStep(
            "score the rows already in the table (prediction still NULL)", None, score_existing
        )
    )


def score_existing_rows(conn: Connection, plan: DeploymentPlan, scorer: Scorer) -> int:
    """Score the table's rows whose first prediction column is NULL; how many were scored."""
    dialect = plan.dialect
    qualified = table_sql(dialect, plan.schema, plan.table)
    binding = plan.binding
    keys = [k for k, _ in binding.keys]
    read = ", ".join(quote_identifier(c) for c in [*keys, *binding.features])
    rows = conn.execute(
        text(f"SELECT {read} FROM {qualified} WHERE {quote_identifier(binding.outputs[0])} IS NULL")
    ).all()
    sets = ", ".join(f"{quote_identifier(c)} = :o{i}" for i, c in enumerate(binding.outputs))
    where = " AND ".join(f"{quote_identifier(k)} = :k{i}" for i, k in enumerate(keys))
    update = text(f"UPDATE {qualified} SET {sets} WHERE {where}")
    names = [c.name for c in scorer.representation.inputs]
    for start in range(0, len(rows), _EXISTING_BATCH):
        chunk = rows[start : start + _EXISTING_BATCH]
        columns = list(zip(*chunk, strict=True))
        features = dict(zip(names, columns[len(keys) :], strict=True))
        predictions = scorer.score_columns(features)
        params = [
            {f"k{i}": row[i] for i in range(len(keys))}
            | {f"o{j}": values[n] for j, values in enumerate(predictions)}
            for n, row in enumerate(chunk)
        ]
        conn.execute(update, params)
    return len(rows)


def _literal(value: str | None) -> str:
    """A SQL string literal (for values we produced: run ids, trigger arguments)."""
    if value is None:
        return "NULL"
    return "'" + value.replace("'", "''") + "'"


_TYPE_FAMILIES = {
    SqlType.TEXT: ("TEXT", "VARCHAR", "CHAR", "CHARACTER"),
    SqlType.DOUBLE: ("DOUBLE", "REAL", "FLOAT", "NUMERIC", "DECIMAL"),
    SqlType.INTEGER: ("INTEGER", "BIGINT", "SMALLINT", "INT"),
}


def _check_output_types(
    table: TableInfo, rep: Representation, outputs: Sequence[str], dialect: str, name: str
) -> None:
    """Refuse a model whose predictions do not fit prediction columns already there."""
    if dialect == "sqlite":  # SQLite columns take any value
        return
    for column, output in zip(outputs, rep.outputs, strict=True):
        declared = table.columns.get(column)
        family = _TYPE_FAMILIES.get(output.sql_type, ())
        if declared is not None and not declared.upper().startswith(family):
            raise DeploymentConflict(
                f"column {column} of {name} is {declared}, but this {rep.kind} model's "
                f"{output.name} is {output.sql_type.in_dialect(dialect)}: undeploy with "
                "drop_columns first, or deploy onto another table"
            )


def _features(
    payload: DeployDatabasePayload, rep: Representation, table: TableInfo
) -> tuple[str, ...]:
    """The table column that feeds each model input, in input order."""
    names = [c.name for c in rep.inputs]
    if payload.model_cols:
        if len(payload.model_cols) != len(names):
            raise InvalidPayload(
                f"model_cols names {len(payload.model_cols)} columns but the model takes "
                f"{len(names)} inputs ({', '.join(names)})",
                field="model_cols",
            )
        wanted = list(payload.model_cols)
    else:
        columns = input_columns(names)
        wanted = [columns[name] for name in names]
    found = [table.find(name) for name in wanted]
    missing = [name for name, column in zip(wanted, found, strict=True) if column is None]
    if missing:
        raise InvalidPayload(
            f"table lacks the model's input columns: {', '.join(missing)} (name the table's "
            "columns for each input, in order, with model_cols)",
            field="model_cols",
        )
    return tuple(column for column in found if column is not None)


def _new_table_columns(
    catalog: Catalog, payload: DeployDatabasePayload, rep: Representation, dialect: str
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Key and feature columns of a new table: from df_schema, a reference table or the model."""
    if not payload.primary_key:
        raise InvalidPayload(
            "a new table needs primary_key (column -> SQL type)", field="primary_key"
        )
    columns: dict[str, str] = dict(payload.primary_key)
    if payload.df_schema:
        features = dict(payload.df_schema)
    elif payload.reference_table:
        reference = catalog.reference
        if reference is None:
            raise NotFound(
                f"reference table {payload.reference_schema or payload.db_schema}."
                f"{payload.reference_table} does not exist"
            )
        features = dict(reference.columns)
    else:
        columns_of = input_columns(c.name for c in rep.inputs)
        features = {columns_of[c.name]: c.sql_type.in_dialect(dialect) for c in rep.inputs}
    reserved = {contract_name(n, dialect).lower() for n in CONTRACT_COLUMNS}
    reserved |= {contract_name(o.name, dialect).lower() for o in rep.outputs}
    for name, sql_type in features.items():
        check_identifier(name, "column")
        if name.lower() in reserved:
            raise InvalidPayload(
                f"column {name} is one the deployment adds (prediction and contract columns)",
                field="df_schema",
            )
        if name.lower() not in {c.lower() for c in columns}:
            columns[name] = sql_type
    return columns, tuple(payload.primary_key)


def _contract_columns(
    rep: Representation, outputs: Sequence[str], run_id: str | None, dialect: str, new: bool
) -> list[tuple[str, str]]:
    """(name, column definition) of the contract and prediction columns."""
    q = quote_identifier
    if dialect == "postgresql":
        contract = [
            (CUR_USER, "text DEFAULT current_user"),
            (EVAL_TIME, "timestamp with time zone DEFAULT CURRENT_TIMESTAMP"),
            (RUN_ID, f"text DEFAULT {_literal(run_id)}"),
        ]
    else:
        # SQLite cannot ADD COLUMN with a non-constant default; the trigger sets EVAL_TIME.
        contract = [
            (CUR_USER, "TEXT"),
            (EVAL_TIME, "TEXT DEFAULT CURRENT_TIMESTAMP" if new else "TEXT"),
            (RUN_ID, f"TEXT DEFAULT {_literal(run_id)}"),
        ]
    named = [(contract_name(n, dialect), definition) for n, definition in contract]
    named += [
        (name, o.sql_type.in_dialect(dialect)) for name, o in zip(outputs, rep.outputs, strict=True)
    ]
    return [(name, f"{q(name)} {definition}") for name, definition in named]


def _create_table(
    qualified: str,
    columns: dict[str, str],
    keys: Sequence[str],
    rep: Representation,
    run_id: str | None,
    dialect: str,
    mode: str,
) -> str:
    outputs = [contract_name(o.name, dialect) for o in rep.outputs]
    definitions = [f"{quote_identifier(c, 'column')} {t}" for c, t in columns.items()]
    definitions += [d for _, d in _contract_columns(rep, outputs, run_id, dialect, new=True)]
    definitions.append(f"PRIMARY KEY ({', '.join(quote_identifier(k) for k in keys)})")
    options = ""
    if dialect == "postgresql" and mode in ("statement", "async"):
        options = f" WITH (fillfactor = {STATEMENT_TABLE_FILLFACTOR})"
    return f"CREATE TABLE {qualified} (\n  " + ",\n  ".join(definitions) + f"\n){options}"


def _missing_columns(
    table: TableInfo,
    rep: Representation,
    outputs: Sequence[str],
    run_id: str | None,
    dialect: str,
) -> list[tuple[str, str]]:
    return [
        (name, definition)
        for name, definition in _contract_columns(rep, outputs, run_id, dialect, new=False)
        if table.find(name) is None
    ]


def _trigger(
    plan: DeploymentPlan, qualified: str, scoring_schema: str | None, run_id: str | None
) -> str:
    binding, name = plan.binding, quote_identifier(plan.trigger_name)
    if plan.dialect == "postgresql":
        function = f"{quote_identifier(scoring_schema or 'mlmanager', 'schema')}."
        argument = _literal(binding.to_json())
        if plan.trigger_mode == "async":
            return (
                f"CREATE TRIGGER {name} AFTER INSERT ON {qualified} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION {function}{NOTIFY_INSERTED}()"
            )
        if plan.trigger_mode == "row":
            return (
                f"CREATE TRIGGER {name} BEFORE INSERT ON {qualified} FOR EACH ROW "
                f"EXECUTE FUNCTION {function}{SCORE_ROW}({argument})"
            )
        return (
            f"CREATE TRIGGER {name} AFTER INSERT ON {qualified} REFERENCING NEW TABLE AS "
            f"{NEW_ROWS} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {function}{SCORE_STATEMENT}({argument})"
        )
    q = quote_identifier
    outputs = ", ".join(q(c) for c in binding.outputs)
    picks = ", ".join(f"json_extract(s, '$[{i}]')" for i in range(len(binding.outputs)))
    features = ", ".join(f"NEW.{q(c)}" for c in binding.features)
    where = " AND ".join(f"{q(k)} = NEW.{q(k)}" for k, _ in binding.keys)
    eval_time = q(contract_name(EVAL_TIME, plan.dialect))
    # SQLite cannot change a column default, so the trigger also stamps the run.
    return (
        f"CREATE TRIGGER {name} AFTER INSERT ON {qualified} FOR EACH ROW BEGIN "
        f"UPDATE {qualified} SET ({outputs}) = (SELECT {picks} FROM (SELECT "
        f"{SQLITE_FUNCTION}({binding.representation_id}, {features}) AS s)), "
        f"{eval_time} = coalesce(NEW.{eval_time}, CURRENT_TIMESTAMP), "
        f"{q(RUN_ID)} = {_literal(run_id)} WHERE {where}; END"
    )


def create_trigger_sql(plan: DeploymentPlan, scoring_schema: str | None, run_id: str | None) -> str:
    """``plan``'s CREATE TRIGGER alone (reconcile re-creates a trigger dropped by hand)."""
    return _trigger(plan, table_sql(plan.dialect, plan.schema, plan.table), scoring_schema, run_id)


def missing_contract_columns(
    table: TableInfo, rep: Representation, outputs: Sequence[str], run_id: str | None, dialect: str
) -> list[tuple[str, str]]:
    """(name, column definition) of the contract and prediction columns ``table`` lacks."""
    return _missing_columns(table, rep, outputs, run_id, dialect)
