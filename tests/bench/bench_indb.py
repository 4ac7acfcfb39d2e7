"""In-database scoring benchmark: PostgreSQL PL/Python triggers (ARCHITECTURE.md).

One PostgreSQL 15 server with PL/Python, one run, three 20-feature classifiers
trained here (logistic regression, 100-tree XGBoost, 100-tree random forest),
each deployed by the real DEPLOY_DATABASE handler onto new tables.

(a) ``INSERT ... SELECT`` of 100k rows from a source table in the same database:
    into an identical table without a trigger (plain), into the deployed table
    (statement trigger, the default), and the model alone in this process
    (``scorer_for`` the stored representation, one onnxruntime thread).
    efficiency = (plain + model) / scored; the median of 3 repetitions, each on
    an emptied table. A warm-up insert in the measuring session loads the model
    first, so the once-per-session import and load are not counted (a new
    session's first insert is reported apart).
(b) 10k single-row autocommit INSERTs over one connection: scored / plain time,
    statement and row triggers, the tables taking turns in blocks, the client
    and its server process on different CPUs; and the same against PL/Python
    triggers that do nothing (the floor).

Then, on the same server restarted with pg_stat_statements, where the time of a
scored insert goes (the INSERT, the trigger's read of its rows, its Python, its
UPDATE), what PL/Python's value conversion costs, and what two settings do for
the logistic model: the table's fillfactor and plan_cache_mode (the trigger's
UPDATE is a prepared plan: custom plans for a session's first five executions,
then perhaps the generic one), with the UPDATE's plan from auto_explain, on an
empty and on a filled table; and one candidate change, a setting on the trigger
function, measured the same way.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnxruntime as ort
import pandas as pd
import psycopg
import sklearn
import xgboost
from loguru import logger
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine

from shared.db import make_engine
from shared.deployments import DeploymentStore
from shared.migrations import upgrade
from shared.scoring.indb import score_in_batches
from shared.scoring.runtime import scorer_for
from shared.scoring.store import load_representation
from shared.settings import Settings, load_settings
from tests.support import mlflow_store
from tests.support.indb import psql_dsn, run_job
from tests.support.mlflow_store import temporary_tracking_store
from tests.support.pg import PostgresServer

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    import mlflow.pyfunc
    import mlflow.sklearn
    import mlflow.xgboost

ROWS = int(os.environ.get("BENCH_INDB_ROWS", "100000"))
SINGLE_ROWS = int(os.environ.get("BENCH_INDB_SINGLE_ROWS", "10000"))
REPETITIONS = 3
TRAIN_ROWS = 10000
WARM_UP_ROWS = 1000
SINGLE_BLOCK = 1000  # single-row inserts per table before moving to the next one
BREAKDOWN_SINGLE_ROWS = 2000
FILLED_ROWS = 1000000  # rows already in the table for the plan_cache_mode check
N_FEATURES = 20
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
SCHEMA = "apps"
SCORING_SCHEMA = "mlmanager"  # where DEPLOY_DATABASE installs the PL/Python functions
CANDIDATE_SETTING = "enable_seqscan = off"
SOURCE = f"{SCHEMA}.bench_source"
# skops loads tree structures only when trusted (as in tests/unit/scoring).
TRUSTED_TREES = ["sklearn.tree._tree.Tree"]
GOALS = {
    "efficiency_tree_models": 0.6,
    "efficiency_linear_model": 0.35,
    "single_row_scored_over_plain": 1.3,
}
GOAL_EFFICIENCY = {"logistic": 0.35, "xgboost": 0.6, "random_forest": 0.6}
MODELS = ("logistic", "xgboost", "random_forest")
DIAGNOSED_MODEL = "logistic"  # the cheapest model: the database's share is largest


# --- models --------------------------------------------------------------------
def features(rows: int, seed: int) -> pd.DataFrame:
    return pd.DataFrame(
        np.random.default_rng(seed).normal(size=(rows, N_FEATURES)), columns=FEATURES
    )


def labels(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A noisy, partly non-linear target, so that trees grow to their depth."""
    x = frame.to_numpy()
    rng = np.random.default_rng(seed)
    signal = x[:, :8] @ rng.normal(size=8) + x[:, 8] * x[:, 9] + np.sin(2 * x[:, 10])
    return (signal + rng.normal(scale=1.0, size=len(x)) > 0).astype(np.int64)


def train_models(train: pd.DataFrame) -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """name -> (MLflow flavor module, fitted model, extra log_model arguments)."""
    target = labels(train, 2)
    return {
        "logistic": (
            mlflow.sklearn,
            LogisticRegression(max_iter=1000).fit(train, target),
            {},
        ),
        "xgboost": (
            mlflow.xgboost,
            xgboost.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=2).fit(train, target),
            {},
        ),
        "random_forest": (
            mlflow.sklearn,
            RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=2, random_state=0).fit(
                train, target
            ),
            {"skops_trusted_types": TRUSTED_TREES},
        ),
    }


def log_model(flavor: Any, model: Any, frame: pd.DataFrame, extra: dict[str, Any]) -> str:
    with warnings.catch_warnings():
        # MLflow's SQLite store (SQLAlchemy 2.1) and its input example under pandas 3.
        warnings.filterwarnings("ignore", message="The ``noload`` loader strategy")
        warnings.filterwarnings("ignore", message="Operation with range is deprecated")
        return mlflow_store.log_model(flavor, model, frame, **extra)


# --- tables ----------------------------------------------------------------------
COLUMNS = ", ".join(["id", *FEATURES])


def insert_select(table: str, limit: int | None = None, id_offset: int = 0) -> str:
    where = f" WHERE id <= {limit}" if limit is not None else ""
    read = ", ".join([f"id + {id_offset}", *FEATURES]) if id_offset else COLUMNS
    return f"INSERT INTO {SCHEMA}.{table} ({COLUMNS}) SELECT {read} FROM {SOURCE}{where}"


def insert_values(table: str) -> str:
    """A one-row INSERT of the source's columns, with parameters."""
    marks = ", ".join(["%s"] * (N_FEATURES + 1))
    return f"INSERT INTO {SCHEMA}.{table} ({COLUMNS}) VALUES ({marks})"


def create_source(conn: psycopg.Connection[Any], frame: pd.DataFrame) -> None:
    columns = ", ".join(f"{f} double precision" for f in FEATURES)
    conn.execute(f"CREATE TABLE {SOURCE} (id bigint PRIMARY KEY, {columns})")
    with conn.cursor().copy(f"COPY {SOURCE} ({COLUMNS}) FROM STDIN") as copy:
        for number, row in enumerate(frame.itertuples(index=False), 1):
            copy.write_row((number, *row))
    conn.execute(f"VACUUM ANALYZE {SOURCE}")


def create_plain_twin(conn: psycopg.Connection[Any], table: str) -> str:
    """A table like the deployed ``table`` (columns, defaults, key, fillfactor), no trigger."""
    twin = f"{table}_plain"
    (options,) = conn.execute(
        "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (f"{SCHEMA}.{table}",)
    ).fetchone()  # type: ignore[misc]
    with_options = f" WITH ({', '.join(options)})" if options else ""
    conn.execute(
        f"CREATE TABLE {SCHEMA}.{twin} (LIKE {SCHEMA}.{table} INCLUDING ALL){with_options}"
    )
    return twin


def deploy(engine: Engine, settings: Settings, uri: str, table: str, mode: str) -> int:
    """DEPLOY_DATABASE onto a new table; the id of the stored representation."""
    payload = {
        "model_uri": uri,
        "db_schema": SCHEMA,
        "db_table": table,
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
        "trigger_mode": mode,
    }
    run_job(engine, settings, "DEPLOY_DATABASE", payload)
    with engine.connect() as conn:
        deployment = DeploymentStore.active(conn, "database", f"{SCHEMA}.{table}")
    assert deployment is not None, f"{table} was not deployed"
    return int(deployment.details["representation_id"])


# --- measuring -----------------------------------------------------------------
def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(psql_dsn(url), autocommit=True)


def timed(conn: psycopg.Connection[Any], sql: str) -> float:
    started = time.perf_counter()
    conn.execute(sql)
    return time.perf_counter() - started


def emptied(conn: psycopg.Connection[Any], *tables: str) -> None:
    """Empty the tables and write out dirty pages, so that no checkpoint lands in a timing."""
    for table in tables:
        conn.execute(f"TRUNCATE {SCHEMA}.{table}")
    conn.execute("CHECKPOINT")


def unscored(conn: psycopg.Connection[Any], table: str) -> int:
    (count,) = conn.execute(
        f"SELECT count(*) FROM {SCHEMA}.{table} WHERE prediction IS NULL"
    ).fetchone()  # type: ignore[misc]
    return int(count)


def model_alone(rep_id: int, engine: Engine, frame: pd.DataFrame) -> dict[str, Any]:
    """The model on the same rows in this process, single thread (median seconds).

    ``scorer`` (the efficiency's model time): ``Scorer.score_columns`` on float64
    columns, one batch. ``onnxruntime``: the session's run alone. ``trigger_code``:
    what the trigger's Python does with its input, Python lists in batches of
    ``max_batch_size`` (``score_in_batches``). And the same for one row, in
    microseconds per call (what a single-row insert pays).
    """
    with engine.connect() as conn:
        rep = load_representation(conn, rep_id)
    scorer = scorer_for(rep)
    arrays = {f: frame[f].to_numpy() for f in FEATURES}
    lists = [frame[f].tolist() for f in FEATURES]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(rep.payload, options, providers=["CPUExecutionProvider"])
    (only,) = session.get_inputs()  # the converters give one input holding all features
    dtype = np.float32 if only.type == "tensor(float)" else np.float64
    matrix = frame[FEATURES].to_numpy(dtype=dtype)
    one_row = [column[:1] for column in lists]

    def seconds(work: Any, calls: int = 1) -> float:
        work()  # warm-up
        times = []
        for _ in range(REPETITIONS):
            started = time.perf_counter()
            for _ in range(calls):
                work()
            times.append((time.perf_counter() - started) / calls)
        return statistics.median(times)

    return {
        "scorer_s": round(seconds(lambda: scorer.score_columns(arrays)), 4),
        "onnxruntime_s": round(seconds(lambda: session.run(None, {only.name: matrix})), 4),
        "trigger_code_s": round(seconds(lambda: score_in_batches(scorer, lists, 10000)), 4),
        "one_row_trigger_code_us": round(
            seconds(lambda: score_in_batches(scorer, one_row, 10000), 2000) * 1e6, 1
        ),
        "one_row_onnxruntime_us": round(
            seconds(lambda: session.run(None, {only.name: matrix[:1]}), 2000) * 1e6, 1
        ),
        "onnx_input_type": only.type,
    }


def bulk(conn: psycopg.Connection[Any], scored: str, plain: str) -> dict[str, Any]:
    """(a) for one model: plain and scored INSERT ... SELECT, REPETITIONS times each."""
    emptied(conn, plain, scored)
    conn.execute(insert_select(plain, WARM_UP_ROWS))
    conn.execute(insert_select(scored, WARM_UP_ROWS))  # loads the model in this session
    plain_times, scored_times = [], []
    for _ in range(REPETITIONS):
        emptied(conn, plain, scored)
        plain_times.append(timed(conn, insert_select(plain)))
        conn.execute("CHECKPOINT")
        scored_times.append(timed(conn, insert_select(scored)))
        missing = unscored(conn, scored)
        assert missing == 0, f"{missing} rows of {scored} were not scored"
    return {
        "plain_s": round(statistics.median(plain_times), 4),
        "scored_s": round(statistics.median(scored_times), 4),
        "plain_runs_s": [round(t, 4) for t in plain_times],
        "scored_runs_s": [round(t, 4) for t in scored_times],
    }


def first_insert_ms(url: str, table: str) -> float:
    """A new session's first scored single-row insert: imports and model load included."""
    with connect(url) as conn:
        emptied(conn, table)
        elapsed = timed(conn, insert_select(table, 1))
        emptied(conn, table)
    return round(elapsed * 1000, 1)


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(sorted(values), n=100, method="inclusive")
    return {
        "total_s": round(sum(values), 3),
        "p50_ms": round(q[49] * 1000, 3),
        "p99_ms": round(q[98] * 1000, 3),
        "samples": len(values),
    }


@contextmanager
def apart(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """This thread on one CPU and ``conn``'s server process on another, meanwhile.

    A plain single-row insert takes 0.04 ms when the scheduler puts both on
    one CPU and 0.10 ms when it does not (each reply then wakes the other CPU),
    and it picks per connection. Apart is what a client on another machine
    gets, and the same for every table.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield
        return
    (server,) = conn.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
    os.sched_setaffinity(0, {cpus[0]})
    os.sched_setaffinity(server, {cpus[1]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def single_rows(
    conn: psycopg.Connection[Any], tables: dict[str, str], rows: list[tuple[Any, ...]]
) -> dict[str, dict[str, Any]]:
    """(b): each table gets every row, one autocommit INSERT each.

    The tables take turns every SINGLE_BLOCK rows, so that drift hits them
    alike; ``block_ms`` is the mean per insert of each block, as the table grows.
    """
    sql = {name: insert_values(table) for name, table in tables.items()}
    emptied(conn, *tables.values())
    for name in tables:  # warm-up: prepared statements, model loaded
        for row in rows[:50]:
            conn.execute(sql[name], row, prepare=True)
    emptied(conn, *tables.values())
    times: dict[str, list[float]] = {name: [] for name in tables}
    with apart(conn):
        for start in range(0, len(rows), SINGLE_BLOCK):
            for name in tables:
                for row in rows[start : start + SINGLE_BLOCK]:
                    started = time.perf_counter()
                    conn.execute(sql[name], row, prepare=True)
                    times[name].append(time.perf_counter() - started)
    return {
        name: {
            **percentiles(values),
            "block_ms": [
                round(statistics.mean(values[i : i + SINGLE_BLOCK]) * 1000, 3)
                for i in range(0, len(values), SINGLE_BLOCK)
            ],
        }
        for name, values in times.items()
    }


# Triggers that do nothing but what PL/Python itself costs: the floor under ours.
FLOOR_TRIGGERS = {
    "row": (
        "BEFORE INSERT ON {table} FOR EACH ROW",
        "TD['new']['prediction'] = '0'\nreturn 'MODIFY'",
    ),
    "statement": (
        "AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
        "return None",
    ),
}


def plpython_floor(url: str, rows: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """Single-row inserts into twins of DIAGNOSED_MODEL's tables with do-nothing PL/Python
    triggers, against their plain twins."""
    tables = {}
    with connect(url) as conn:
        for mode, (when, body) in FLOOR_TRIGGERS.items():
            table = f"{DIAGNOSED_MODEL}_{mode}_floor"
            conn.execute(
                f"CREATE TABLE {SCHEMA}.{table} (LIKE {SCHEMA}.{DIAGNOSED_MODEL}_{mode}_plain "
                "INCLUDING ALL)"
            )
            conn.execute(
                f"CREATE FUNCTION {SCHEMA}.{table}() RETURNS trigger LANGUAGE plpython3u "
                f"AS $floor${body}$floor$"
            )
            conn.execute(
                f"CREATE TRIGGER floor {when.format(table=f'{SCHEMA}.{table}')} "
                f"EXECUTE FUNCTION {SCHEMA}.{table}()"
            )
            tables[f"plain_{mode}"] = f"{DIAGNOSED_MODEL}_{mode}_plain"
            tables[f"floor_{mode}"] = table
        return single_rows(conn, tables, rows)


# --- where the time goes (the server restarted with pg_stat_statements) -------------
PLAN_CACHE_MODES = ("force_custom_plan", "force_generic_plan", "auto")


def server_log_since(pg: PostgresServer, offset: int) -> str:
    with pg.logfile.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def update_plan(log: str) -> list[str]:
    """The trigger UPDATE's plan that auto_explain wrote into a piece of the server log.

    Its query text is left out (it only repeats the UPDATE the trigger builds).
    """
    plans: list[list[str]] = []
    for line in log.splitlines():
        if "LOG:" in line and "plan:" in line:
            plans.append([line.split("LOG:", 1)[1].strip()])
        elif plans and line.startswith("\t"):
            plans[-1].append(line.strip())
    for plan in plans:
        if any(line.startswith("Query Text: UPDATE") for line in plan):
            return [line for line in plan if not line.startswith("Query Text")]
    return []


def breakdown(url: str, table: str, rows: list[tuple[Any, ...]] | None = None) -> dict[str, float]:
    """Where a scored insert's time goes, in ms: ``INSERT ... SELECT`` of every source row,
    or (``rows``) one single-row INSERT per row, totals over all.

    pg_stat_statements (track = all, with planning) times the INSERT (trigger
    included), and the statement trigger's read of its transition table and
    its UPDATE; the trigger function's own total comes from
    pg_stat_user_functions. What is left of the function is its Python: the
    conversion of SQL values to Python and back, and the scoring.
    """
    values = insert_values(table)

    def insert(conn: psycopg.Connection[Any], count: int) -> None:
        if rows is None:
            conn.execute(insert_select(table, count))
        else:
            for row in rows[:count]:
                conn.execute(values, row, prepare=True)

    with connect(url) as conn:
        emptied(conn, table)
        insert(conn, 50 if rows else WARM_UP_ROWS)
        emptied(conn, table)
        conn.execute("SET pg_stat_statements.track = 'all'")
        conn.execute("SET pg_stat_statements.track_planning = on")
        conn.execute("SET track_functions = 'pl'")
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("SELECT pg_stat_reset()")
        started = time.perf_counter()
        insert(conn, len(rows) if rows else ROWS)
        wall = time.perf_counter() - started
        conn.execute("SET pg_stat_statements.track = 'top'")
        conn.execute("SELECT pg_stat_force_next_flush()")
        statements = conn.execute(
            "SELECT query, toplevel, total_exec_time + total_plan_time FROM pg_stat_statements"
        ).fetchall()
        (function_ms,) = conn.execute(
            "SELECT coalesce(sum(total_time), 0) FROM pg_stat_user_functions "
            "WHERE funcname IN ('score_statement', 'score_row')"
        ).fetchone()  # type: ignore[misc]
    spent = {"insert": 0.0, "select": 0.0, "update": 0.0}
    for query, toplevel, ms in statements:
        if query.startswith("INSERT INTO") and toplevel:
            spent["insert"] += ms
        elif query.startswith("SELECT array_agg") and not toplevel:
            spent["select"] += ms
        elif query.startswith("UPDATE") and not toplevel:
            spent["update"] += ms
    function = float(function_ms)
    return {
        "wall_ms": round(wall * 1000, 1),
        "insert_statement_ms": round(spent["insert"], 1),
        "insert_without_trigger_ms": round(spent["insert"] - function, 1),
        "trigger_ms": round(function, 1),
        "trigger_select_array_agg_ms": round(spent["select"], 1),
        "trigger_python_ms": round(function - spent["select"] - spent["update"], 1),
        "trigger_update_ms": round(spent["update"], 1),
    }


# Runs inside the database (argument n): what PL/Python's value conversion costs.
PROBE = """
import json, time
columns = @COLUMNS@
source = " FROM @SOURCE@ WHERE id <= " + str(n)
select = "SELECT " + ", ".join(f"array_agg({c}) AS {c}" for c in columns)
counts = "SELECT " + ", ".join(f"cardinality(array_agg({c}))" for c in columns) + source
one_row = select + " FROM @SOURCE@ WHERE id = 1"
one_row_plan = plpy.prepare(one_row)

def ms(work):
    started = time.perf_counter()
    work()
    return round((time.perf_counter() - started) * 1000, 1)

def per_call_us(work, calls=2000):
    work()
    return round(ms(lambda: [work() for _ in range(calls)]) * 1000 / calls, 1)

def to_sql(values, sql_type):
    plan = plpy.prepare("SELECT cardinality($1)", [sql_type])
    return ms(lambda: plpy.execute(plan, [values]))

read = plpy.execute(select + source)[0]
floats = read["f0"]
aggregated = ms(lambda: plpy.execute(counts))
return json.dumps({
    "sql_arrays_to_python_lists": ms(lambda: plpy.execute(select + source)) - aggregated,
    "python_list_to_float8_array": to_sql(floats, "float8[]"),
    "python_list_to_bigint_array": to_sql(read["id"], "bigint[]"),
    "python_list_to_text_array": to_sql([str(v > 0) for v in floats], "text[]"),
    "one_row_select_as_text_us": per_call_us(lambda: plpy.execute(one_row)),
    "one_row_select_prepared_us": per_call_us(lambda: plpy.execute(one_row_plan)),
})
"""


def plpython_conversion(url: str) -> dict[str, float]:
    """What PL/Python's conversion of values costs inside the database (ms for ROWS rows).

    The statement trigger reads its rows as SQL arrays that become Python lists
    (every key and feature column), and passes the keys and predictions back as
    lists that become SQL arrays (one column each here). And what its read of
    one row costs as SQL text (parsed each time, as the trigger runs it) and as
    a prepared plan, in microseconds.
    """
    body = PROBE.replace("@COLUMNS@", repr(["id", *FEATURES])).replace("@SOURCE@", SOURCE)
    with connect(url) as conn:
        conn.execute(
            f"CREATE FUNCTION {SCHEMA}.bench_conversion(n int) RETURNS jsonb "
            f"LANGUAGE plpython3u AS $probe${body}$probe$"
        )
        conn.execute(f"SELECT {SCHEMA}.bench_conversion(%s)", (WARM_UP_ROWS,))
        (measured,) = conn.execute(f"SELECT {SCHEMA}.bench_conversion(%s)", (ROWS,)).fetchone()  # type: ignore[misc]
    return {key if key.endswith("_us") else f"{key}_ms": value for key, value in measured.items()}


def update_counts(conn: psycopg.Connection[Any], table: str) -> tuple[int, int]:
    """(updated, heap-only updated) rows of ``table`` so far, this session's included."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    row = conn.execute(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = %s::regclass",
        (table,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def fillfactor_effect(url: str, scored: str) -> dict[str, dict[str, float]]:
    """Scored INSERT ... SELECT into the empty table at fillfactor 50 (ours) and 100, in turns."""
    table = f"{SCHEMA}.{scored}"
    times: dict[int, list[float]] = {50: [], 100: []}
    hot: dict[int, float] = {}
    size: dict[int, int] = {}
    with connect(url) as conn:
        emptied(conn, scored)
        conn.execute(insert_select(scored, WARM_UP_ROWS))
        for _ in range(REPETITIONS):
            for fillfactor in times:
                conn.execute(f"ALTER TABLE {table} SET (fillfactor = {fillfactor})")
                emptied(conn, scored)
                updated, heap_only = update_counts(conn, table)
                times[fillfactor].append(timed(conn, insert_select(scored)))
                now_updated, now_heap_only = update_counts(conn, table)
                hot[fillfactor] = (now_heap_only - heap_only) / (now_updated - updated)
                (size[fillfactor],) = conn.execute(
                    "SELECT pg_total_relation_size(%s::regclass)", (table,)
                ).fetchone()  # type: ignore[misc]
        conn.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")
    return {
        f"fillfactor_{fillfactor}": {
            "scored_s": round(statistics.median(runs), 4),
            "hot_update_share": round(hot[fillfactor], 3),
            "table_and_index_mb": round(size[fillfactor] / 2**20, 1),
        }
        for fillfactor, runs in times.items()
    }


def fill(url: str, scored: str) -> None:
    """Put FILLED_ROWS unscored rows (ids after the source's) into the table."""
    table = f"{SCHEMA}.{scored}"
    with connect(url) as conn:
        emptied(conn, scored)
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for k in range(FILLED_ROWS // ROWS):
            conn.execute(insert_select(scored, id_offset=(k + 1) * ROWS))
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        conn.execute(f"VACUUM ANALYZE {table}")


def plan_cache_effect(
    pg: PostgresServer,
    url: str,
    scored: str,
    filled: bool,
    modes: tuple[str, ...] = PLAN_CACHE_MODES,
) -> dict[str, dict[str, Any]]:
    """Scored INSERT ... SELECT under each plan_cache_mode, and the UPDATE plan it got.

    A session per mode, taking turns. Each first runs the insert 5 times on
    WARM_UP_ROWS rows, so that under ``auto`` PostgreSQL has made its choice
    between custom plans and the generic plan for the trigger's prepared
    UPDATE, as in a long-lived session.
    """
    table = f"{SCHEMA}.{scored}"

    def clear(conn: psycopg.Connection[Any]) -> None:
        if filled:
            conn.execute(f"DELETE FROM {table} WHERE id <= {ROWS}")
            conn.execute(f"VACUUM {table}")
            conn.execute("CHECKPOINT")
        else:
            emptied(conn, scored)

    times: dict[str, list[float]] = {mode: [] for mode in modes}
    plans = {}
    with ExitStack() as stack:
        sessions = {mode: stack.enter_context(connect(url)) for mode in modes}
        for mode, conn in sessions.items():
            conn.execute(f"SET plan_cache_mode = {mode}")
            for _ in range(5):
                clear(conn)
                conn.execute(insert_select(scored, WARM_UP_ROWS))
        for _ in range(REPETITIONS):
            for mode, conn in sessions.items():
                clear(conn)
                times[mode].append(timed(conn, insert_select(scored)))
        for mode, conn in sessions.items():
            clear(conn)
            conn.execute("LOAD 'auto_explain'")
            conn.execute("SET auto_explain.log_min_duration = 0")
            conn.execute("SET auto_explain.log_analyze = on")
            conn.execute("SET auto_explain.log_nested_statements = on")
            offset = pg.logfile.stat().st_size
            conn.execute(insert_select(scored))
            conn.execute("SET auto_explain.log_min_duration = -1")
            plans[mode] = update_plan(server_log_since(pg, offset))
    return {
        mode: {"scored_s": round(statistics.median(runs), 4), "update_plan": plans[mode]}
        for mode, runs in times.items()
    }


@contextmanager
def trigger_function_setting(url: str, setting: str) -> Iterator[None]:
    """``ALTER FUNCTION <scoring schema>.score_statement() SET setting`` meanwhile: how a
    setting on the function itself (it applies to the trigger's own queries only) would do."""
    function = f"{SCORING_SCHEMA}.score_statement()"
    with connect(url) as conn:
        conn.execute(f"ALTER FUNCTION {function} SET {setting}")
    try:
        yield
    finally:
        with connect(url) as conn:
            conn.execute(f"ALTER FUNCTION {function} RESET ALL")


# --- the run ---------------------------------------------------------------------
def deploy_models(engine: Engine, settings: Settings, workdir: Path) -> dict[str, int]:
    """Train, log and deploy each model onto a statement- and a row-trigger table;
    the representation ids."""
    train = features(TRAIN_ROWS, 1)
    rep_ids = {}
    with temporary_tracking_store(workdir, "indb"):
        for name, (flavor, model, extra) in train_models(train).items():
            uri = log_model(flavor, model, train, extra)
            rep_ids[name] = deploy(engine, settings, uri, f"{name}_statement", "statement")
            deploy(engine, settings, uri, f"{name}_row", "row")
    return rep_ids


def measure_bulk(
    url: str, engine: Engine, rep_ids: dict[str, int], source: pd.DataFrame
) -> dict[str, Any]:
    """(a) for every model."""
    result = {}
    for name in MODELS:
        scored = f"{name}_statement"
        first_ms = first_insert_ms(url, scored)
        with connect(url) as conn:
            measured = bulk(conn, scored, f"{scored}_plain")
        alone = model_alone(rep_ids[name], engine, source)
        efficiency = (measured["plain_s"] + alone["scorer_s"]) / measured["scored_s"]
        result[name] = {
            **measured,
            "model_alone": alone,
            "plain_rows_per_s": round(ROWS / measured["plain_s"]),
            "scored_rows_per_s": round(ROWS / measured["scored_s"]),
            "efficiency": round(efficiency, 3),
            "goal_efficiency": GOAL_EFFICIENCY[name],
            "new_session_first_insert_ms": first_ms,
        }
    return result


def measure_single_rows(url: str, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """(b) for every model."""
    result = {}
    for name in MODELS:
        tables = {
            "plain_statement": f"{name}_statement_plain",
            "statement": f"{name}_statement",
            "plain_row": f"{name}_row_plain",
            "row": f"{name}_row",
        }
        with connect(url) as conn:
            result[name] = single_rows(conn, tables, rows)
            for mode in ("statement", "row"):
                missing = unscored(conn, tables[mode])
                assert missing == 0, f"{missing} rows of {tables[mode]} were not scored"
    return result


def diagnose(pg: PostgresServer, url: str, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Where the time goes and what the settings do; the server gets pg_stat_statements."""
    with pg.connect() as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    pg.stop()
    pg.start()
    with connect(url) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    diagnosed = f"{DIAGNOSED_MODEL}_statement"
    per_insert = {
        mode: breakdown(url, f"{DIAGNOSED_MODEL}_{mode}", rows[:BREAKDOWN_SINGLE_ROWS])
        for mode in ("statement", "row")
    }
    result: dict[str, Any] = {
        "model": DIAGNOSED_MODEL,
        "breakdown_ms": {name: breakdown(url, f"{name}_statement") for name in MODELS},
        "single_row_breakdown_us_per_insert": {
            mode: {
                key.removesuffix("_ms") + "_us": round(value * 1000 / BREAKDOWN_SINGLE_ROWS, 1)
                for key, value in measured.items()
            }
            for mode, measured in per_insert.items()
        },
        "plpython_conversion": plpython_conversion(url),
        "fillfactor": fillfactor_effect(url, diagnosed),
        "plan_cache_mode_empty_table": plan_cache_effect(pg, url, diagnosed, filled=False),
    }
    pair = {"plain_statement": f"{diagnosed}_plain", "statement": diagnosed}
    candidate: dict[str, Any] = {"setting": CANDIDATE_SETTING}
    with connect(url) as conn:
        candidate["single_row_as_deployed"] = single_rows(conn, pair, rows)
    with trigger_function_setting(url, CANDIDATE_SETTING):
        with connect(url) as conn:
            candidate["single_row_with_setting"] = single_rows(conn, pair, rows)
        candidate["empty_table_with_setting"] = plan_cache_effect(
            pg, url, diagnosed, filled=False, modes=("auto",)
        )["auto"]
    fill(url, diagnosed)
    result["plan_cache_mode_filled_table"] = plan_cache_effect(pg, url, diagnosed, filled=True)
    with trigger_function_setting(url, CANDIDATE_SETTING):
        candidate["filled_table_with_setting"] = plan_cache_effect(
            pg, url, diagnosed, filled=True, modes=("auto",)
        )["auto"]
    result["candidate_trigger_function_setting"] = candidate
    return result


def bench_database(pg: PostgresServer, workdir: Path) -> tuple[str, Settings, Engine]:
    """A new database ``bench`` with ML Manager's tables; its URL, settings and engine."""
    with pg.connect() as conn:
        conn.execute("CREATE DATABASE bench")
    url = pg.url("bench")
    settings = load_settings(db_url=url, mlmanager_home=workdir)
    engine = make_engine(settings)
    upgrade(engine)
    return url, settings, engine


@dataclass
class BenchPostgres:
    pg: PostgresServer
    url: str
    settings: Settings
    engine: Engine
    workdir: Path


@contextmanager
def bench_postgres(prefix: str) -> Iterator[BenchPostgres]:
    """A PostgreSQL server of its own with the ``bench`` database, stopped afterwards.

    The handler logs each deployment plan; a benchmark's output is its table, so
    ML Manager's loggers are silenced meanwhile.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    pg = PostgresServer()
    pg.init()
    pg.start()
    logger.disable("bobby")
    logger.disable("shared")
    engine = None
    try:
        url, settings, engine = bench_database(pg, workdir)
        yield BenchPostgres(pg, url, settings, engine, workdir)
    finally:
        if engine is not None:
            engine.dispose()
        logger.enable("bobby")
        logger.enable("shared")
        pg.cleanup()


def run() -> dict[str, Any]:
    with bench_postgres("mlm-bench-indb-") as bench:
        pg, url, settings, engine = bench.pg, bench.url, bench.settings, bench.engine
        rep_ids = deploy_models(engine, settings, bench.workdir)
        source = features(ROWS, 3)
        with connect(url) as conn:
            create_source(conn, source)
            for name in MODELS:
                create_plain_twin(conn, f"{name}_statement")
                create_plain_twin(conn, f"{name}_row")
        rows = [
            (number, *map(float, values))
            for number, values in enumerate(source.head(SINGLE_ROWS).itertuples(index=False), 1)
        ]
        bulk_result = measure_bulk(url, engine, rep_ids, source)
        single_result = measure_single_rows(url, rows)
        floor = plpython_floor(url, rows)
        engine.dispose()
        diagnostics = {"plpython_trigger_floor": floor, **diagnose(pg, url, rows)}

    ratios: dict[str, float] = {}
    for name in MODELS:
        ratios[f"bulk_efficiency_{name}"] = bulk_result[name]["efficiency"]
    for name in MODELS:
        for mode in ("statement", "row"):
            r = single_result[name]
            ratios[f"single_row_{mode}_over_plain_{name}"] = round(
                r[mode]["total_s"] / r[f"plain_{mode}"]["total_s"], 3
            )
    result = {
        "bulk_insert_select": bulk_result,
        "single_row_inserts": single_result,
        "diagnostics": diagnostics,
        "ratios": ratios,
        "goals": GOALS,
        "settings": {
            "rows": ROWS,
            "single_rows": SINGLE_ROWS,
            "repetitions": REPETITIONS,
            "features": N_FEATURES,
            "train_rows": TRAIN_ROWS,
            "warm_up": f"a {WARM_UP_ROWS}-row insert in the measuring session loads the model "
            "before the timed inserts; new_session_first_insert_ms is a new session's first",
            "filled_rows": FILLED_ROWS,
            "models": {
                "logistic": "LogisticRegression(max_iter=1000)",
                "xgboost": "XGBClassifier(n_estimators=100, max_depth=6)",
                "random_forest": "RandomForestClassifier(n_estimators=100, max_depth=10)",
            },
            "versions": {
                "onnxruntime": ort.__version__,
                "scikit-learn": sklearn.__version__,
                "xgboost": xgboost.__version__,
            },
            "cpus": os.cpu_count(),
            "single_row_cpus": "client and its server process pinned to different CPUs",
            "server": "PostgreSQL 15 (tests.support.pg.PostgresServer: "
            "fsync off, synchronous_commit on)",
        },
    }
    print_table(result)
    return result


def describe(b: dict[str, float], unit: str) -> str:
    """A breakdown as one line: the statement, the rows, the trigger and its parts."""
    v = {key.removesuffix(f"_{unit}"): value for key, value in b.items()}
    return (
        f"wall {v['wall']}, INSERT {v['insert_statement']} = rows {v['insert_without_trigger']}"
        f" + trigger {v['trigger']} (SELECT array_agg {v['trigger_select_array_agg']},"
        f" Python {v['trigger_python']}, UPDATE {v['trigger_update']})"
    )


def print_table(r: dict[str, Any]) -> None:
    print(
        f"(a) INSERT ... SELECT of {ROWS} rows, median of {REPETITIONS}; a warm-up insert "
        "loaded the model in the session first (not counted)"
    )
    print(
        f"{'':14} {'plain s':>8} {'model s':>8} {'scored s':>9} {'scored rows/s':>14} "
        f"{'efficiency':>11} {'goal':>6} {'1st insert ms':>14}"
    )
    for name, v in r["bulk_insert_select"].items():
        print(
            f"{name:14} {v['plain_s']:8.3f} {v['model_alone']['scorer_s']:8.3f} "
            f"{v['scored_s']:9.3f} {v['scored_rows_per_s']:14,} {v['efficiency']:11.3f} "
            f"{'>=' + str(v['goal_efficiency']):>6} {v['new_session_first_insert_ms']:14.1f}"
        )
    print(f"(b) {SINGLE_ROWS} single-row autocommit INSERTs (ms per insert, p50 / p99)")
    print(
        f"{'':14} {'plain':>15} {'statement':>15} {'ratio':>6} {'plain':>15} {'row':>15} "
        f"{'ratio':>6}  goal <= {GOALS['single_row_scored_over_plain']}"
    )
    for name, v in r["single_row_inserts"].items():
        cells = []
        for mode in ("statement", "row"):
            plain, scored = v[f"plain_{mode}"], v[mode]
            cells.append(
                f"{plain['p50_ms']:7.3f}/{plain['p99_ms']:7.3f} "
                f"{scored['p50_ms']:7.3f}/{scored['p99_ms']:7.3f} "
                f"{scored['total_s'] / plain['total_s']:6.2f}"
            )
        print(f"{name:14} {' '.join(cells)}")
    d = r["diagnostics"]
    for name, v in r["single_row_inserts"].items():
        growth = v["statement"]["block_ms"]
        print(
            f"  {name} statement trigger, ms per insert from the first to the last block of "
            f"{SINGLE_BLOCK} (the table growing): {growth[0]} -> {growth[-1]}"
        )
    floor = d["plpython_trigger_floor"]
    print(
        "  PL/Python triggers doing nothing, on the same tables (the floor): "
        + ", ".join(
            f"{mode} {floor[f'floor_{mode}']['total_s'] / floor[f'plain_{mode}']['total_s']:.2f}"
            f" x plain"
            for mode in ("statement", "row")
        )
    )
    print("where a scored INSERT ... SELECT's time goes (ms; pg_stat_statements, track = all):")
    for name, b in d["breakdown_ms"].items():
        in_process = r["bulk_insert_select"][name]["model_alone"]["trigger_code_s"] * 1000
        print(f"  {name:13} {describe(b, 'ms')}; its scoring code in this process {in_process:.0f}")
    print(f"where a single-row INSERT's time goes ({d['model']}, us per insert):")
    for mode, b in d["single_row_breakdown_us_per_insert"].items():
        print(f"  {mode:13} {describe(b, 'us')}")
    alone = r["bulk_insert_select"][d["model"]]["model_alone"]
    print(
        f"  its scoring code for one row in this process {alone['one_row_trigger_code_us']}"
        f" (onnxruntime alone {alone['one_row_onnxruntime_us']})"
    )
    print(f"PL/Python value conversion in the database, {ROWS} rows (ms):")
    for key, value in d["plpython_conversion"].items():
        print(f"  {key.removesuffix('_ms')}: {value}")
    print(f"settings ({d['model']}, scored INSERT ... SELECT of {ROWS} rows, median s):")
    for key, value in d["fillfactor"].items():
        print(f"  {key}: {value}")
    for state in ("empty_table", "filled_table"):
        for mode, value in d[f"plan_cache_mode_{state}"].items():
            nodes = [line for line in value["update_plan"] if line.startswith("->")]
            join = nodes[0].split("(cost")[0].removeprefix("->").strip() if nodes else "?"
            print(f"  {state}, plan_cache_mode {mode}: {value['scored_s']} s (UPDATE: {join})")
    c = d["candidate_trigger_function_setting"]
    print(f"candidate: ALTER FUNCTION score_statement() SET {c['setting']} ({d['model']}):")
    for variant in ("as_deployed", "with_setting"):
        v = c[f"single_row_{variant}"]
        ratio = v["statement"]["total_s"] / v["plain_statement"]["total_s"]
        print(
            f"  single-row {variant}: statement / plain {ratio:.2f}, "
            f"ms per insert by block {v['statement']['block_ms']}"
        )
    for state in ("empty_table", "filled_table"):
        before = d[f"plan_cache_mode_{state}"]["auto"]["scored_s"]
        after = c[f"{state}_with_setting"]["scored_s"]
        print(f"  {state} INSERT ... SELECT: {before} s as deployed, {after} s with it")
    for key, value in r["ratios"].items():
        print(f"{key}: {value}")
