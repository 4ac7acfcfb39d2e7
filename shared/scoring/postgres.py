"""The PL/Python functions that score rows inside PostgreSQL, and their installation.

The functions live in our schema (``DB_SCHEMA``). ``scoring_load()`` carries the
source of the modules the database needs (``shared.scoring.indb`` and what it
imports) and serves them to ``import`` from memory, so the database server
needs numpy and onnxruntime (and mlflow-skinny + pandas for pyfunc models) but
not ML Manager itself, and always runs the code of the version that installed
it. Installing needs a superuser once (``plpython3u`` is untrusted); deploying
onto a table afterwards needs only rights on that table.

The database's Python finds its packages on ``sys.path`` plus the directories
of the setting ``mlmanager.plpython_path`` (``make plpython-deps`` installs
them in ``/opt/mlmanager/plpython``; set it with ``ALTER DATABASE ... SET`` or
in ``postgresql.conf``). H2O models are scored by mlrunner's JVM, which the
database starts on demand: ``mlmanager.mlrunner_jar`` and ``mlmanager.mlrunner_java``
say where its jar and Java are (see ``shared.scoring.jvm``).
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from sqlalchemy import Connection, text

from shared.db import check_identifier, quote_identifier
from shared.errors import MLManagerError, NotAuthorized, TargetUnavailable
from shared.scoring.catalog import SCORING_COMMENT_PREFIX, ScoringFunctions, read_scoring
from shared.scoring.contract import SCORE_ROW, SCORE_STATEMENT, SCORING_LOAD

# Modules the database imports, served from the source embedded in scoring_load().
EMBEDDED_MODULES = (
    "shared.errors",
    "shared.model_source",
    "shared.scoring.contract",
    "shared.scoring.kinds",
    "shared.scoring.representation",
    "shared.scoring.columns",
    "shared.scoring.scorer",
    "shared.scoring.runtime",
    "shared.scoring.flavors",
    "shared.scoring.jvm",
    "shared.scoring.indb",
)
_PACKAGES = ("shared", "shared.scoring")
PATH_SETTING = "mlmanager.plpython_path"

_LOADER = """
import importlib.abc, importlib.util, os, sys
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
_path = plpy.execute("SELECT current_setting('{path_setting}', true) AS p")[0]["p"] or ""
for _entry in reversed([p for p in _path.split(":") if p]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

# The JVM scorer (H2O models): where its jar and Java are, when not in the environment.
for _setting, _variable in (
    ("mlmanager.mlrunner_jar", "MLRUNNER_JAR"),
    ("mlmanager.mlrunner_java", "MLRUNNER_JAVA"),
):
    _value = plpy.execute("SELECT current_setting('" + _setting + "', true) AS v")[0]["v"]
    if _value:
        os.environ[_variable] = _value

class _Embedded(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, sources, packages):
        self.sources, self.packages = sources, packages
    def find_spec(self, name, path=None, target=None):
        if name in self.sources or name in self.packages:
            return importlib.util.spec_from_loader(name, self, is_package=name in self.packages)
        return None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        source = self.sources.get(module.__name__, "")
        exec(compile(source, "<mlmanager " + module.__name__ + ">", "exec"), module.__dict__)

for _name in [n for n in sys.modules if n == "shared" or n.startswith("shared.")]:
    del sys.modules[_name]
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_Embedded"]
sys.meta_path.insert(0, _Embedded({sources!r}, {packages!r}))
try:
    import numpy, onnxruntime
except ImportError as exc:
    plpy.error(
        "ML Manager cannot score in this database: its Python (" + sys.executable + ") cannot "
        "import " + str(exc.name) + ". Install numpy and onnxruntime for it (make plpython-deps) "
        "and point the setting {path_setting} at them."
    )
import shared.scoring.indb
GD["mlmanager"] = shared.scoring.indb.PostgresScoring(plpy, {schema!r})
GD["mlmanager_version"] = {version!r}
"""

# Each entry point loads the code once per session (or again after a reinstall).
_ENTRY = """
if GD.get("mlmanager_version") != {version!r}:
    plpy.execute({load!r})
return GD["mlmanager"].{call}
"""

_FUNCTIONS = (
    # The UPDATE back is planned once per session, often while the table is small: a
    # plan that scans the whole table would then serve it as it grows (measured: a
    # single-row insert 0.74 -> 1.6 ms over 8k rows). Key lookups are always right.
    (f"{SCORE_STATEMENT}()", "trigger", "statement_trigger(TD)", " SET enable_seqscan = off"),
    (f"{SCORE_ROW}()", "trigger", "row_trigger(TD)", ""),
    ("predict(model text, features jsonb)", "jsonb", "predict(model, features)", " STABLE"),
    (
        "predict_batch(model text, rows jsonb)",
        "SETOF jsonb",
        "predict_batch(model, rows)",
        " STABLE",
    ),
)


@functools.cache
def _sources() -> dict[str, str]:
    root = resources.files("shared")
    sources = {}
    for name in EMBEDDED_MODULES:
        parts = name.split(".")[1:]
        sources[name] = root.joinpath(*parts[:-1], parts[-1] + ".py").read_text(encoding="utf-8")
    return sources


@functools.cache
def scoring_version() -> str:
    """A digest of the embedded code: a different one means the functions need reinstalling."""
    digest = hashlib.sha256()
    for name, source in sorted(_sources().items()):
        digest.update(name.encode() + b"\0" + source.encode() + b"\0")
    return digest.hexdigest()[:16]


def install_statements(schema: str) -> list[str]:
    """The SQL that installs (or upgrades) the scoring functions in ``schema``."""
    check_identifier(schema, "schema")
    version = scoring_version()
    q = quote_identifier(schema, "schema")
    loader = _LOADER.format(
        path_setting=PATH_SETTING,
        sources=_sources(),
        packages=_PACKAGES,
        schema=schema,
        version=version,
    )
    if "$mlmanager$" in loader:
        raise AssertionError("the embedded source holds the function body's quote tag")
    statements = [
        "CREATE EXTENSION IF NOT EXISTS plpython3u",
        f"CREATE OR REPLACE FUNCTION {q}.{SCORING_LOAD}() RETURNS void "
        f"LANGUAGE plpython3u AS $mlmanager${loader}$mlmanager$",
        f"COMMENT ON FUNCTION {q}.{SCORING_LOAD}() IS '{SCORING_COMMENT_PREFIX}{version}'",
    ]
    for signature, returns, call, volatility in _FUNCTIONS:
        body = _ENTRY.format(version=version, load=f"SELECT {q}.{SCORING_LOAD}()", call=call)
        statements.append(
            f"CREATE OR REPLACE FUNCTION {q}.{signature} RETURNS {returns} "
            f"LANGUAGE plpython3u{volatility} AS $mlmanager${body}$mlmanager$"
        )
    # Inserting sessions read the model (not the jobs) through their own rights.
    statements += [
        f"GRANT USAGE ON SCHEMA {q} TO PUBLIC",
        f"GRANT SELECT ON {q}.model_representations TO PUBLIC",
    ]
    return statements


INSTALL_LOCK = "mlmanager.scoring_install"


def install_refusal(state: ScoringFunctions) -> MLManagerError | None:
    """Why the scoring functions cannot be installed in this database, or ``None``."""
    if not state.plpython:
        return TargetUnavailable(
            "this PostgreSQL server has no PL/Python (plpython3u): install its package "
            "(Debian: postgresql-plpython3-15) to score inside the database"
        )
    if not state.superuser:
        return NotAuthorized(
            "the scoring functions are missing or outdated and installing them needs a "
            "PostgreSQL superuser (PL/Python is untrusted): run `mlmanager db install-scoring` "
            "once with a superuser's DB_USER"
        )
    return None


def ensure_scoring_installed(conn: Connection, schema: str) -> list[str]:
    """Install or upgrade the scoring functions if needed (in the caller's transaction).

    Returns the statements it ran (empty when the current version is there).
    Without PL/Python, or without the superuser right it needs, raises a
    clear error saying what a database administrator must do. (A deploy plans the
    same install from the catalog instead: ``shared.scoring.plan``.)
    """
    if read_scoring(conn, schema).installed_version == scoring_version():
        return []
    # Two first deploys at once would both CREATE OR REPLACE the functions
    # ("tuple concurrently updated"): the second waits here, then finds them.
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": INSTALL_LOCK})
    state = read_scoring(conn, schema)
    if state.installed_version == scoring_version():
        return []
    refusal = install_refusal(state)
    if refusal is not None:
        raise refusal
    statements = install_statements(schema)
    for statement in statements:
        # (No parameters: the embedded source holds % signs the driver must not read.)
        conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
    return statements
