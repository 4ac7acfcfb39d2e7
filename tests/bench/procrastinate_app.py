"""The procrastinate app the dispatch benchmark compares Bobby with (same task: nothing)."""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_PG_CONNINFO", "")))


@app.task(name="noop", queue="bench")
def noop() -> None:
    return None
