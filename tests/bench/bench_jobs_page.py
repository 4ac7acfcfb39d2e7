"""The Jobs page with 100k jobs in the ledger (issue: "The Job Tracker and deployments UI").

The page is static HTML plus one REST call per view: ``GET /jobs?limit=25&counts=true``
with the user's filters, sort and offset (what ``app.js`` sends), and the overview's
``GET /jobs/daily``. A real ``mlmanager server`` on PostgreSQL answers them with
BENCH_JOBS_SMALL (1,000) jobs and then BENCH_JOBS_LARGE (100,000) jobs in its ledger,
inserted in SQL (created over 30 days, five statuses, four handlers, 20 users).
The anchor is the same call on the small ledger: the ratio shows how each view scales.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tests.bench.bench_tracking import ADMIN, Server
from tests.support.pg import PostgresServer

SMALL = int(os.environ.get("BENCH_JOBS_SMALL", "1000"))
LARGE = int(os.environ.get("BENCH_JOBS_LARGE", "100000"))
CALLS = int(os.environ.get("BENCH_JOBS_CALLS", "20"))
API = "/api/2.0/mlmanager"

VIEWS: dict[str, str] = {
    "first page (newest, counts)": "jobs?limit=25&counts=true&sort=id&order=desc",
    "status filter": "jobs?limit=25&counts=true&status=FAILURE",
    "handler + user filter": "jobs?limit=25&counts=true&handler=DEPLOY_DATABASE&user=user7",
    "sort by finished_at": "jobs?limit=25&counts=true&sort=finished_at&order=desc",
    "text search in payloads": "jobs?limit=25&counts=true&q=table_4242",
    "last 24 h": "jobs?limit=25&counts=true&since={since}",
    "deep page (offset 900)": "jobs?limit=25&counts=true&offset=900",
    "overview: jobs per day": "jobs/daily?days=30",
    "page HTML": "/mlmanager/",
}


def fill(pg: PostgresServer, dbname: str, total: int) -> None:
    """Top the ledger up to ``total`` jobs, in SQL (the API would take minutes for 100k)."""
    with pg.connect(dbname) as conn:
        have = conn.execute("SELECT count(*) FROM mlmanager.jobs").fetchone()[0]
        conn.execute(
            """
            WITH h AS (SELECT array_agg(name ORDER BY name) AS names FROM mlmanager.handlers),
                 s AS (SELECT i, now() - make_interval(secs => i * 2592000.0 / %(n)s::bigint) AS t
                       FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS i)
            INSERT INTO mlmanager.jobs (handler_name, status, username, payload, created_at,
                run_after, started_at, finished_at, attempt, max_attempts, cancel_requested)
            SELECT h.names[1 + s.i %% cardinality(h.names)],
                   (ARRAY['SUCCESS','SUCCESS','SUCCESS','FAILURE','CANCELLED'])[1 + s.i %% 5],
                   'user' || (s.i %% 20),
                   jsonb_build_object('db_table', 'table_' || s.i,
                                      'model_uri', 'models:/m' || (s.i %% 50) || '/1',
                                      'db_schema', 'public'),
                   s.t, s.t, s.t + interval '1 second', s.t + interval '5 seconds', 1, 3, false
            FROM s, h
            """,
            {"n": LARGE, "start": have + 1, "stop": total},
        )
        conn.execute("ANALYZE mlmanager.jobs")


def measure(server: Server, since: str) -> dict[str, float]:
    session = requests.Session()
    session.auth = ADMIN
    out: dict[str, float] = {}
    for name, path in VIEWS.items():
        url = server.url + (path if path.startswith("/") else f"{API}/{path.format(since=since)}")
        session.get(url, timeout=60).raise_for_status()  # warm
        samples = []
        for _ in range(CALLS):
            t0 = time.perf_counter()
            response = session.get(url, timeout=60)
            samples.append(time.perf_counter() - t0)
            response.raise_for_status()
        out[name] = round(statistics.median(samples) * 1000, 2)
    return out


def run() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mlm-bench-jobs-"))
    pg = PostgresServer()
    pg.init()
    pg.start()
    server = None
    result: dict[str, Any] = {}
    try:
        with pg.connect() as conn:
            conn.execute('CREATE DATABASE "jobs_page"')
        server = Server("mlmanager-jobs", pg.url("jobs_page"), workdir)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
        for size in (SMALL, LARGE):
            fill(pg, "jobs_page", size)
            result[f"{size}_jobs_median_ms"] = measure(server, since)
    finally:
        if server is not None:
            server.stop()
        pg.cleanup()
    small, large = result[f"{SMALL}_jobs_median_ms"], result[f"{LARGE}_jobs_median_ms"]
    result["ratios"] = {
        f"{view}: {LARGE} over {SMALL} jobs": round(large[view] / small[view], 2) for view in VIEWS
    }
    result["settings"] = {"calls": CALLS, "backend": "postgresql", "gunicorn_workers": 2}
    print(f"{'view':30} {f'{SMALL} jobs':>12} {f'{LARGE} jobs':>12} {'ratio':>7}  (median ms)")
    for view in VIEWS:
        print(f"{view:30} {small[view]:12.2f} {large[view]:12.2f} {large[view] / small[view]:7.2f}")
    return result
