"""The Job Tracker pages in a real Chromium (Debian's, driven by Playwright) against a real
`mlmanager up` on PostgreSQL: deploy through the Deploy page, follow the log, undeploy,
cancel, switch handlers; CSRF refused; hostile names and log lines shown as text.

Every page is screenshotted into ``test-output/ui/`` and checked with axe-core (installed
from npm by ``make ui-deps``) for serious or critical accessibility violations. One server
and one browser serve the whole module; the tests run in file order (each builds on the
deployment of the first).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.models import infer_signature
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine

from shared.db import make_engine
from shared.ledger import Ledger, LogLine
from tests.support.engines import IN_CI, settings_for
from tests.support.indb import insert_rows
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING
from tests.support.pg import PostgresServer
from tests.support.processes import ROOT
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess, tracking_as

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.e2e,
    INPUT_EXAMPLE_WARNING,
    # MLflow's pyfunc module warns about its own type hints when first imported.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType"),
]

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "tests" / "ui" / "node_modules" / "axe-core" / "axe.min.js"
OUTPUT = ROOT / "test-output" / "ui"
ADMIN = ("admin", ADMIN_PASSWORD)
ANN = ("ann", "ann-password-1234")
HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'
FEATURES = ["age", "income", "score"]


@pytest.fixture(scope="module")
def server(
    pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MLManagerProcess]:
    home = tmp_path_factory.mktemp("ui") / "home"
    with pg_server.database(f"ui_{time.time_ns()}") as url:
        proc = MLManagerProcess(home, db_url=url)
        try:
            proc.wait_ready()
            proc.create_user(*ANN)
            with tracking_as(proc.url, ADMIN, "ui"):
                yield proc
        finally:
            proc.stop()


@pytest.fixture(scope="module")
def engine(server: MLManagerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    assert server.db_url is not None
    eng = make_engine(settings_for(server.db_url, tmp_path_factory.mktemp("engine")))
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists() or not AXE.exists():
        message = f"needs {CHROMIUM} (apt install chromium) and {AXE} (make ui-deps)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        # --no-sandbox: CI runs the tests as root, where Chromium's sandbox cannot start.
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Session:
    """One user's browser context (HTTP basic auth, like MLflow's login) and page."""

    def __init__(self, browser: Browser, server: MLManagerProcess, login: tuple[str, str]):
        self.context = browser.new_context(
            http_credentials={"username": login[0], "password": login[1]},
            viewport={"width": 1280, "height": 900},
        )
        self.page = self.context.new_page()
        self.base = f"{server.url}/mlmanager"
        self.dialogs: list[str] = []
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        # Confirmations are accepted; an alert would be injected script: recorded.
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.accept()

    def open(self, path: str) -> Page:
        self.page.goto(f"{self.base}{path}")
        return self.page


@pytest.fixture(scope="module")
def admin(browser: Browser, server: MLManagerProcess) -> Iterator[Session]:
    session = Session(browser, server, ADMIN)
    yield session
    session.context.close()


@pytest.fixture(scope="module")
def ann(browser: Browser, server: MLManagerProcess) -> Iterator[Session]:
    session = Session(browser, server, ANN)
    yield session
    session.context.close()


def check_page(page: Page, name: str) -> None:
    """Screenshot the page and assert axe-core finds no serious or critical violation."""
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => (await axe.run(document)).violations")
    serious = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in result
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == [], f"{name}: {serious}"


def api(
    server: MLManagerProcess, method: str, path: str, login: tuple[str, str] = ADMIN, **kw: Any
) -> requests.Response:
    return requests.request(method, f"{server.api}{path}", auth=login, timeout=30, **kw)


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def log_registered_model(name: str) -> None:
    rng = np.random.default_rng(3)
    x = pd.DataFrame({c: rng.normal(size=200) for c in FEATURES})
    model = LogisticRegression(max_iter=300).fit(x, np.where(x.score > 0, "high", "low"))
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x),
            input_example=x.head(3),
            registered_model_name=name,
        )


def fill_deploy_form(page: Page, table: str) -> None:
    page.select_option("#handler", "DEPLOY_DATABASE")
    page.fill("#f-db_schema", "scored")
    page.fill("#f-db_table", table)
    page.check("#f-create_model_table")
    page.fill("#f-primary_key", '{"id": "BIGINT"}')
    page.select_option("#f-mode", "async")


def test_admin_deploys_a_model_through_the_deploy_page_and_follows_its_log(
    server: MLManagerProcess, admin: Session
) -> None:
    log_registered_model("churn-ui")
    page = admin.open("/deploy?model_uri=models:/churn-ui/1")
    expect(page.locator("#f-model_uri")).to_have_value("models:/churn-ui/1")
    # The model picker reads MLflow's registry.
    page.select_option("#registered-model", "churn-ui")
    expect(page.locator("#model-version option[value='1']")).to_have_count(1)

    # A bad table name: the server's message is shown next to its field.
    fill_deploy_form(page, "bad name;")
    page.click("#submit")
    expect(page.locator("#f-db_table-error")).to_contain_text("db_table")
    expect(page.locator("#f-db_table")).to_have_attribute("aria-invalid", "true")

    # dry_run shows the plan and changes nothing.
    page.fill("#f-db_table", "ui_events")
    page.check("#f-dry_run")
    page.click("#submit")
    expect(page.locator("#plan-state")).to_contain_text("ended: SUCCESS", timeout=120_000)
    expect(page.locator("#plan")).to_contain_text("CREATE TABLE")
    check_page(page, "deploy")
    listed = api(server, "GET", "/deployments").json()["deployments"]
    assert listed == []

    page.uncheck("#f-dry_run")
    page.click("#submit")
    page.wait_for_url("**/mlmanager/jobs/*")
    expect(page.locator("#log-state")).to_contain_text("The job ended: SUCCESS", timeout=180_000)
    expect(page.locator("#log")).not_to_be_empty()
    expect(page.locator("#job-status")).to_have_text("SUCCESS")
    expect(page.locator("#links")).to_contain_text("database scored.ui_events")
    check_page(page, "job")


def test_the_deployment_shows_its_lag_then_is_undeployed(
    server: MLManagerProcess, admin: Session
) -> None:
    rng = np.random.default_rng(5)
    rows = [(i, *map(float, rng.normal(size=3))) for i in range(40)]
    assert server.db_url is not None
    insert_rows(server.db_url, "ui_events", ["id", *FEATURES], rows, "scored")
    (deployment,) = api(server, "GET", "/deployments").json()["deployments"]
    wait_for(
        lambda: api(server, "GET", f"/deployments/{deployment['id']}").json()["stats"][
            "scoring_lag"
        ],
        60,
        "the scoring lag of the inserted rows",
    )
    page = admin.open("/deployments")
    card = page.locator(f"#deployment-{deployment['id']}")
    expect(card).to_contain_text("DEPLOYED")
    expect(card).to_contain_text("scoring lag")
    expect(card).to_contain_text("p99")
    expect(card).to_contain_text("async")
    check_page(page, "deployments")
    page = admin.open("/overview")
    expect(page.locator("#lag svg")).to_have_count(1)
    expect(page.locator("#per-day rect").first).to_be_visible()
    check_page(page, "overview")

    page = admin.open("/deployments")
    page.get_by_role("button", name="Undeploy scored.ui_events").click()
    page.wait_for_url("**/mlmanager/jobs/*")
    expect(page.locator("#log-state")).to_contain_text("The job ended: SUCCESS", timeout=120_000)
    page = admin.open("/deployments")
    expect(page.locator(f"#deployment-{deployment['id']}")).to_contain_text("DELETED")
    assert [d for d in admin.dialogs if not d.startswith("confirm")] == []


def test_a_user_cancels_a_pending_job_and_sees_only_their_jobs(
    server: MLManagerProcess, ann: Session, engine: Engine
) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    # Not runnable for a day: it stays PENDING for the test.
    job = Ledger(engine).enqueue("RECORD", {"sleep": 0}, "ann", run_after=later)
    page = ann.open("/")
    expect(page.locator("#jobs-table tbody")).to_contain_text(f"#{job.id}")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)  # not the admin's jobs
    expect(page.locator("#counts")).to_contain_text("PENDING: 1")
    check_page(page, "jobs")
    page.set_viewport_size({"width": 390, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=str(OUTPUT / "jobs-narrow.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    page.click(f"text=#{job.id}")
    page.wait_for_url(f"**/mlmanager/jobs/{job.id}")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status")).to_have_text("CANCELLED")
    assert any(d.startswith("confirm") for d in ann.dialogs)
    assert api(server, "GET", f"/jobs/{job.id}").json()["status"] == "CANCELLED"


def test_an_admin_disables_a_handler_and_a_user_sees_no_switch(
    server: MLManagerProcess, admin: Session, ann: Session
) -> None:
    page = admin.open("/admin")
    switch = page.get_by_role("switch", name="RECORD enabled")
    expect(switch).to_be_checked()
    expect(page.locator("#workers-table tbody tr")).not_to_have_count(0)
    check_page(page, "admin")
    switch.click()
    wait_for(
        lambda: (
            not next(
                h
                for h in api(server, "GET", "/handlers").json()["handlers"]
                if h["name"] == "RECORD"
            )["enabled"]
        ),
        10,
        "RECORD disabled",
    )
    expect(page.get_by_role("switch", name="RECORD enabled")).not_to_be_checked()

    page = ann.open("/admin")
    expect(page.locator("#handlers-table tbody")).to_contain_text("RECORD")
    expect(page.get_by_role("switch")).to_have_count(0)
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    assert api(server, "POST", "/handlers/RECORD/enable", ANN).status_code == 403
    assert api(server, "POST", "/handlers/RECORD/enable").status_code == 200


def test_state_changing_calls_from_another_site_are_refused(
    server: MLManagerProcess, admin: Session, engine: Engine
) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    job = Ledger(engine).enqueue("RECORD", {}, "admin", run_after=later)
    cancel = f"{server.api}/jobs/{job.id}/cancel"
    # The browser holds the admin's credentials for the server's origin (127.0.0.1)...
    admin.open("/")
    # ...and a page of another origin (localhost: same server, another site to the
    # browser) forges a form POST and a no-cors fetch to it.
    evil = admin.page
    evil.goto(f"http://localhost:{server.port}/mlmanager/static/app.css")
    evil.set_content(
        f'<form id="f" method="post" action="{cancel}"><input name="a" value="1"></form>'
    )
    with evil.expect_navigation():
        evil.evaluate("document.getElementById('f').submit()")
    assert "UNAUTHENTICATED" not in evil.content()  # the browser sent the credentials
    evil.goto(f"http://localhost:{server.port}/mlmanager/static/app.css")
    evil.evaluate(f"fetch({cancel!r}, {{method: 'POST', mode: 'no-cors', credentials: 'include'}})")
    evil.evaluate(
        f"fetch({cancel!r}, {{method: 'POST', mode: 'no-cors', credentials: 'include', "
        "body: '{}', headers: {'Content-Type': 'text/plain'}})"
    )
    time.sleep(0.5)
    assert api(server, "GET", f"/jobs/{job.id}").json()["status"] == "PENDING"

    # The same refusals, named, over plain HTTP; a same-site or non-browser call passes.
    r = api(server, "POST", f"/jobs/{job.id}/cancel", headers={"Origin": "https://evil.example"})
    # 403 from MLflow's own cross-origin check (mlflow.server.security) or ours (csrf.py).
    assert r.status_code == 403
    r = api(
        server, "POST", f"/jobs/{job.id}/cancel", data="x", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 400
    r = api(server, "DELETE", "/deployments/1", headers={"Referer": "http://evil.example/x"})
    assert r.status_code == 403
    r = api(server, "POST", f"/jobs/{job.id}/cancel", headers={"Origin": server.url})
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"


def test_hostile_names_and_log_lines_are_shown_as_text(
    server: MLManagerProcess, admin: Session, engine: Engine
) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    ledger = Ledger(engine)
    job = ledger.enqueue("RECORD", {"sleep": 0}, "admin", run_after=later)
    ledger.append_logs(
        job.id, [LogLine(1, dt.datetime.now(dt.UTC), "ERROR", f"table {HOSTILE} failed")]
    )
    ledger.cancel(job.id)  # ended: the page reads the whole log and stops
    # A payload value (model name, table name) as the API stores it.
    hostile_job = ledger.enqueue(
        "DEPLOY_DATABASE",
        {"model_uri": f"models:/{HOSTILE}/1", "db_schema": "s", "db_table": HOSTILE},
        "admin",
        run_after=later,
    )
    ledger.cancel(hostile_job.id)

    page = admin.open(f"/jobs/{job.id}")
    expect(page.locator("#log")).to_contain_text(HOSTILE)
    assert page.locator("img").count() == 0
    page = admin.open(f"/jobs/{hostile_job.id}")
    expect(page.locator("#payload")).to_contain_text(f"models:/{HOSTILE}/1")
    assert page.locator("img").count() == 0
    page = admin.open(f"/?q={quote('<img src=x onerror')}")
    expect(page.locator("#jobs-table tbody")).to_contain_text(HOSTILE)
    assert page.locator("img").count() == 0

    # The table name typed in the form comes back in the server's error message.
    page = admin.open("/deploy?model_uri=models:/churn-ui/1")
    fill_deploy_form(page, HOSTILE)
    page.click("#submit")
    expect(page.locator("#f-db_table-error")).to_contain_text("db_table")
    assert page.locator("img").count() == 0
    assert [d for d in admin.dialogs if d.startswith("alert")] == []
