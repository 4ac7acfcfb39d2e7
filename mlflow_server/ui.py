"""The Job Tracker and deployments pages, served under ``/mlmanager/``.

Plain server-rendered pages with a little JavaScript (``static/mlmanager/app.js``), no
build step and no third-party code: each page is a Jinja shell that names the signed-in
user, and its script reads and changes everything through the public REST API
(``mlflow_server.api``), so the pages and the API cannot disagree. The script writes
every value with ``textContent``, never as HTML.

The pages sit behind the same login as MLflow (``auth.guard`` authenticates
``/mlmanager/``). Admin controls are only rendered for admins; the API refuses
non-admins anyway.
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from flask.typing import ResponseReturnValue

from mlflow_server.auth import current_user, is_admin
from mlflow_server.schemas import API_PREFIX, MAX_ID, UI_PREFIX

ui = Blueprint(
    "mlmanager_ui",
    __name__,
    url_prefix=UI_PREFIX,
    template_folder="templates",
    static_folder="static/mlmanager",
    static_url_path="/static",
)

# (endpoint, label) of the header's links, in order; admin pages are marked.
NAV = [
    ("mlmanager_ui.jobs", "Jobs"),
    ("mlmanager_ui.deployments", "Deployments"),
    ("mlmanager_ui.deploy", "Deploy"),
    ("mlmanager_ui.overview", "Overview"),
    ("mlmanager_ui.admin", "Admin"),
]


def _page(template: str, page: str, title: str, **context: object) -> str:
    return render_template(
        f"mlmanager/{template}",
        page=page,
        title=title,
        nav=NAV,
        user=current_user(),
        admin=is_admin(),
        api=API_PREFIX,
        **context,
    )


@ui.get("/")
def jobs() -> ResponseReturnValue:
    return _page("jobs.html", "jobs", "Jobs")


@ui.get("/jobs/<int:job_id>")
def job(job_id: int) -> ResponseReturnValue:
    if not 1 <= job_id <= MAX_ID:
        abort(404)
    return _page("job.html", "job", f"Job {job_id}", job_id=job_id)


@ui.get("/deployments")
def deployments() -> ResponseReturnValue:
    return _page("deployments.html", "deployments", "Deployments")


@ui.get("/deploy")
def deploy() -> ResponseReturnValue:
    """The deploy form; ``?model_uri=models:/name/1`` (and any payload field) pre-fills it."""
    return _page("deploy.html", "deploy", "Deploy a model")


@ui.get("/admin")
def admin() -> ResponseReturnValue:
    return _page("admin.html", "admin", "Admin")


@ui.get("/overview")
def overview() -> ResponseReturnValue:
    return _page("overview.html", "overview", "Overview")
