"""SCHEDULE_RETRAIN and RETRAIN: retrain a registered model, keep the better one deployed.

A RETRAIN job (one firing of a schedule, or "run now") runs the model's MLflow Project
(an ``MLproject`` logged with the champion's run, or the schedule's git URI) with
``mlflow run`` into the same experiment, with lineage tags; registers what it logged as
a new version (the challenger); compares the challenger's logged metric with the
champion's, the champion read again at compare time; and only if it is better by the
schedule's margin moves the ``champion``
alias to it and submits a DEPLOY_DATABASE ``replace`` of every active database
deployment of the old version (one job each, its unique key naming this job). A loser
stays registered with the comparison in its tags.

With the schedule's ``environment: kubernetes`` the project runs as a Kubernetes Job
(``shared.kube.jobs``, followed by ``bobby.project_job``) instead of a worker subprocess;
the steps around it are the same.

A RETRAIN job holds its schedule's :class:`~shared.schedules.RetrainSlot` from its first
step to its end: a firing that comes while another retrain of the same schedule runs is
skipped with a log line (one retrain of a schedule at a time).

The leader worker that fires the schedules is ``bobby.scheduler``, run here as a
worker service.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from loguru import logger
from sqlalchemy.exc import DBAPIError

from bobby.handlers import ServiceContext, register, register_service
from bobby.handlers.base import Handler, Step
from bobby.process_guard import die_with_parent, guarded
from bobby.scheduler import RetrainScheduler
from shared import job_tokens
from shared.deploy_rules import DATABASE_TARGET
from shared.deployments import DatabaseDeploymentSpec, Deployment, DeploymentStore
from shared.errors import DeploymentConflict, MLManagerError, NotFound, ProjectFailed
from shared.handlers import SPECS, DeployDatabasePayload, RetrainPayload, ScheduleRetrainPayload
from shared.schedules import RetrainSlot, ScheduleStore
from shared.scoring.runtime import import_mlflow
from shared.settings import inherited_environment

CHAMPION = "champion"
TAG = "mlmanager.retrain"
# The project is the user's code: it logs its run as the schedule's owner (a job token,
# ``shared.job_tokens``), and gets none of ML Manager's own secrets (database, clouds,
# the worker's MLflow login) or settings.
HIDDEN_ENVIRONMENT = (
    "DB_",
    "MLMANAGER_",
    "AWS_",
    "AZURE_",
    "SAGEMAKER_",
    "JOB_",
    "WORKER_",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)
OUTPUT_TAIL_LINES = 20


def project_environment(username: str, token: str) -> dict[str, str]:
    """The project's environment: MLflow as ``username`` (with a job token), no ML Manager
    secrets; with ``--env-manager local`` its ``python`` is the worker's own interpreter
    (its venv first on PATH)."""
    env = inherited_environment()
    env = {k: v for k, v in env.items() if not k.startswith(HIDDEN_ENVIRONMENT)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_TRACKING_USERNAME"] = username
    env["MLFLOW_TRACKING_PASSWORD"] = token
    return env


@register
class ScheduleRetrain(Handler):
    """SCHEDULE_RETRAIN: create the schedule (the server checked the model is readable)."""

    spec = SPECS["SCHEDULE_RETRAIN"]
    payload: ScheduleRetrainPayload

    def steps(self) -> list[Step]:
        return [("creating the schedule", self.create)]

    def create(self) -> None:
        store = ScheduleStore(self.ctx.ledger.engine)
        wanted = self.payload.model_dump(mode="json", exclude_unset=True)
        existing = store.by_name(self.payload.name)
        if existing is not None:
            if existing.user == self.ctx.job.user and existing.spec == wanted:
                logger.info(
                    "schedule {} ({}) exists: nothing left to do", existing.id, existing.name
                )
                return
            raise DeploymentConflict(f"a schedule named {self.payload.name} exists", field="name")
        p = self.payload
        schedule = store.create(
            p.name, p.model_name, p.cron_exp, p.timezone, wanted, self.ctx.job.user
        )
        logger.info(
            "schedule {} ({}) created: {} ({}), next firing {}",
            schedule.id,
            schedule.name,
            schedule.cron_exp,
            schedule.timezone,
            schedule.next_fire_at,
        )


@register
class Retrain(Handler):
    """RETRAIN: one retraining of a schedule's model (see the module's docstring)."""

    spec = SPECS["RETRAIN"]
    payload: RetrainPayload
    workdir: Path | None = None

    def steps(self) -> list[Step]:
        # The slot decides the plan: held, retrain; held by another job, skip this firing.
        self.slot = RetrainSlot(self.ctx.ledger.engine, self.payload.schedule_id)
        if not self.slot.take():
            return [("skipping this firing", self.skip)]
        return [
            ("reading the schedule and the champion", self.read),
            ("fetching the MLflow Project", self.fetch_project),
            ("running the project", self.run_project),
            ("registering the challenger", self.register_challenger),
            ("comparing the challenger with the champion", self.compare),
            ("promoting and redeploying", self.promote),
        ]

    def close(self) -> None:
        try:
            with self.ctx.ledger.engine.begin() as conn:
                job_tokens.revoke(conn, self.ctx.job.id)
        except DBAPIError as exc:  # the token still ends with the job's RUNNING status
            logger.warning("could not revoke the job's MLflow token now: {}", exc.orig)
        self.slot.release()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- steps -----------------------------------------------------------------------
    def skip(self) -> None:
        schedule = ScheduleStore(self.ctx.ledger.engine).get(self.payload.schedule_id)
        when = f"firing {self.payload.fire_time}" if self.payload.fire_time else "run now"
        logger.warning(
            "schedule {} ({}): another retrain of it is still running; this {} is skipped "
            "(one retrain of a schedule at a time)",
            schedule.id,
            schedule.name,
            when,
        )

    def read(self) -> None:
        import_mlflow()
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.store = ScheduleStore(self.ctx.ledger.engine)
        self.schedule = self.store.get(self.payload.schedule_id)
        self.plan = ScheduleRetrainPayload.model_validate(self.schedule.spec)
        name = self.plan.model_name
        self.champion = self._champion(name)
        source_run = self.plan.run_id or (self.champion.run_id if self.champion else None)
        if source_run is None:
            raise NotFound(f"model {name} has no version to retrain from: give run_id")
        self.source_run = self.client.get_run(source_run)
        self.experiment_id = self.source_run.info.experiment_id
        # A retrained run names the run its project came from: the project stays with the
        # model's first run however many retrains follow.
        self.project_run = self.source_run.data.tags.get(f"{TAG}.project_run", source_run)
        when = self.payload.fire_time or "now (run on request)"
        logger.info("schedule {} ({}), firing {}", self.schedule.id, self.schedule.name, when)
        logger.info(
            "model {}: champion {}; retrained from run {} (experiment {})",
            name,
            f"version {self.champion.version}" if self.champion else "none",
            source_run,
            self.experiment_id,
        )

    def fetch_project(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="mlmanager-retrain-"))
        if self.plan.project_uri:
            self.project = self.plan.project_uri
            self.entry_point = self.plan.entry_point or "main"
            logger.info("project {} (entry point {})", self.project, self.entry_point)
            return
        folder = self.project_folder = self._project_folder()
        import mlflow.artifacts

        local = mlflow.artifacts.download_artifacts(
            run_id=self.project_run,
            artifact_path=folder or None,
            dst_path=str(self.workdir),
        )
        self.project = local
        entry_points = (yaml.safe_load((Path(local) / "MLproject").read_text()) or {}).get(
            "entry_points", {}
        )
        default = "retrain" if "retrain" in entry_points else "main"
        self.entry_point = self.plan.entry_point or default
        logger.info(
            "project: artifact {} of run {} (entry point {})",
            folder or "/",
            self.project_run,
            self.entry_point,
        )

    def run_project(self) -> None:
        tags = {
            f"{TAG}.schedule": self.schedule.name,
            f"{TAG}.parent_run": self.source_run.info.run_id,
            f"{TAG}.challenged_version": self.champion.version if self.champion else "",
            f"{TAG}.job": str(self.ctx.job.id),
            "mlflow.user": self.ctx.job.user,
        }
        if self.payload.fire_time:
            tags[f"{TAG}.fire_time"] = self.payload.fire_time
        if not self.plan.project_uri:
            tags[f"{TAG}.project_run"] = self.project_run
        run = self.client.create_run(self.experiment_id, tags=tags)
        self.run_id = run.info.run_id
        logger.info("run {} in experiment {}", self.run_id, self.experiment_id)
        command = [
            sys.executable, "-m", "mlflow", "run", str(self.project),
            "-e", self.entry_point,
            "--env-manager", self.ctx.settings.retrain_env_manager,
            "--experiment-id", self.experiment_id,
            "--run-id", self.run_id,
        ]  # fmt: skip
        for key, value in self.plan.parameters.items():
            command += ["-P", f"{key}={value}"]
        if self.plan.environment != "kubernetes":
            logger.info("$ {}", " ".join(command[1:]))
        with self.ctx.ledger.engine.begin() as conn:
            token = job_tokens.issue(conn, self.ctx.job.id, self.schedule.user)
        logger.info(
            "the project logs to MLflow as {} (a token valid while this job runs)",
            self.schedule.user,
        )
        if self.plan.environment == "kubernetes":
            self._run_on_kubernetes(token)
            return
        code, tail = self._stream(command, project_environment(self.schedule.user, token))
        if code != 0:
            self._end_run("FAILED")
            raise ProjectFailed(
                f"the project failed (exit code {code}); its last lines:\n" + "\n".join(tail)
            )

    def register_challenger(self) -> None:
        import mlflow

        metrics = self.client.get_run(self.run_id).data.metrics
        metric = self.plan.metric
        if metric not in metrics:
            raise ProjectFailed(
                f"the project's run {self.run_id} logged no metric {metric!r} "
                f"(it logged: {', '.join(sorted(metrics)) or 'none'})"
            )
        self.challenger_value = float(metrics[metric])
        uri = self._logged_model_uri()
        self.version = mlflow.register_model(
            uri, self.plan.model_name, tags={f"{TAG}.schedule": self.schedule.name}
        )
        logger.info(
            "challenger: version {} of {} ({} = {:.6g})",
            self.version.version,
            self.plan.model_name,
            metric,
            self.challenger_value,
        )

    def compare(self) -> None:
        metric, margin = self.plan.metric, self.plan.margin
        started_with = self.champion
        # Read again: the alias may have moved while the project ran (by hand: a retrain
        # of this schedule cannot, it holds the slot).
        self.champion = self._champion(self.plan.model_name, below=int(self.version.version))
        if _version(started_with) != _version(self.champion):
            logger.info(
                "the champion changed while the project ran: version {} (was {})",
                _version(self.champion) or "none",
                _version(started_with) or "none",
            )
        champion_value = None
        if self.champion is not None:
            champion_value = self.client.get_run(self.champion.run_id).data.metrics.get(metric)
        if champion_value is None:
            self.wins = True
            comparison = f"{metric} {self.challenger_value:.6g}; no champion value to beat"
        else:
            sign = 1.0 if self.plan.greater_is_better else -1.0
            gain = sign * (self.challenger_value - champion_value)
            self.wins = gain > margin
            comparison = (
                f"{metric} {self.challenger_value:.6g} vs {champion_value:.6g} of champion "
                f"version {self.champion.version if self.champion else '?'} "
                f"({'higher' if self.plan.greater_is_better else 'lower'} is better): "
                f"better by {gain:.6g}, margin {margin:g}"
            )
        outcome = "promoted" if self.wins else "rejected"
        tags = {
            f"{TAG}.job": str(self.ctx.job.id),
            f"{TAG}.metric": metric,
            f"{TAG}.challenger_value": repr(self.challenger_value),
            f"{TAG}.champion_value": "" if champion_value is None else repr(champion_value),
            f"{TAG}.champion_version": self.champion.version if self.champion else "",
            f"{TAG}.margin": repr(margin),
            f"{TAG}.outcome": outcome,
            f"{TAG}.comparison": comparison,
        }
        for key, value in tags.items():
            self.client.set_model_version_tag(
                self.plan.model_name, self.version.version, key, value
            )
        self.outcome = f"version {self.version.version} {outcome}: {comparison}"
        logger.info("{}", self.outcome)

    def promote(self) -> None:
        name, new = self.plan.model_name, self.version.version
        if not self.wins:
            logger.info("the champion stays; nothing is redeployed")
            self.store.record_outcome(self.schedule.id, self.ctx.job.id, self.outcome)
            return
        self.client.set_registered_model_alias(name, CHAMPION, new)
        logger.info("alias {} -> version {}", CHAMPION, new)
        old = self._old_deployments()
        jobs = [self._redeploy(d, f"models:/{name}/{new}") for d in old]
        if jobs:
            self.outcome += (
                f"; redeploying {len(jobs)} deployment(s): jobs {', '.join(map(str, jobs))}"
            )
        else:
            logger.info("no active database deployment of the old version to redeploy")
        self.store.record_outcome(self.schedule.id, self.ctx.job.id, self.outcome)

    # --- helpers ---------------------------------------------------------------------
    def _champion(self, name: str, below: int | None = None) -> Any:
        """The version aliased ``champion``, else the latest one (older than ``below``, the
        challenger's), else None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            pass
        versions = [
            v
            for v in self.client.search_model_versions(f"name = '{name}'")
            if below is None or int(v.version) < below
        ]
        return max(versions, key=lambda v: int(v.version)) if versions else None

    def _project_folder(self) -> str:
        """The artifact folder of the project's run that holds an MLproject ('' = the root)."""
        run_id = self.project_run
        top = self.client.list_artifacts(run_id)
        if any(a.path == "MLproject" for a in top):
            return ""
        for folder in (a.path for a in top if a.is_dir):
            if any(
                a.path == f"{folder}/MLproject" for a in self.client.list_artifacts(run_id, folder)
            ):
                return folder
        raise NotFound(
            f"run {run_id} logged no MLflow Project (an MLproject file at the artifact root or "
            "in a folder of it, e.g. mlflow.log_artifacts('project', 'project')): log one, "
            "or give the schedule a project_uri",
            field="run_id",
        )

    def _stream(self, command: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
        """Run the project; every output line into the job log; (exit code, last lines)."""
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        proc = subprocess.Popen(
            guarded(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            cwd=self.workdir,
            # Its own process group: a stop kills the project's own children too (mlflow
            # run starts the entry point's command in a shell); and the group dies with this
            # worker, even one killed with SIGKILL (bobby.process_guard).
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        control = self.ctx.control
        done = threading.Event()

        def watch() -> None:  # a cancelled job or a lost lease stops the project
            while not done.wait(0.5):
                if control.cancel.is_set() or control.lost.is_set():
                    with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                        os.killpg(proc.pid, signal.SIGKILL)
                    return

        threading.Thread(target=watch, name=f"retrain-{self.ctx.job.id}", daemon=True).start()
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                logger.info("| {}", line)
            code = proc.wait()
        finally:
            done.set()
        self.ctx.check()
        return code, list(tail)

    def _run_on_kubernetes(self, token: str) -> None:
        """The project as a Kubernetes Job (``shared.kube.jobs``), followed to its end."""
        from bobby.project_job import follow
        from shared.kube.jobs import JOB_LABEL, ProjectJobs, ProjectRun, job_manifests, job_name

        settings = self.ctx.settings
        run = ProjectRun(
            entry_point=self.entry_point,
            env_manager=settings.retrain_env_manager,
            experiment_id=self.experiment_id,
            run_id=self.run_id,
            parameters=self.plan.parameters,
            project_uri=self.plan.project_uri,
            project_run=None if self.plan.project_uri else self.project_run,
            project_folder="" if self.plan.project_uri else self.project_folder,
        )
        name = job_name(self.ctx.job.id)
        login = {
            "MLFLOW_TRACKING_URI": settings.kubernetes_model_url or settings.server_url,
            "MLFLOW_TRACKING_USERNAME": self.schedule.user,
            "MLFLOW_TRACKING_PASSWORD": token,
        }
        jobs = ProjectJobs(settings)
        secret, job = job_manifests(
            name, jobs.namespace, run, login, settings, {JOB_LABEL: str(self.ctx.job.id)}
        )
        try:
            jobs.start(secret, job)
            logger.info(
                "Job {} in namespace {} (image {}, deadline {} s); its pod runs:\n{}",
                name,
                jobs.namespace,
                settings.retrain_kubernetes_image,
                settings.retrain_kubernetes_deadline_seconds,
                run.script(),
            )
            try:
                state, tail = follow(jobs, name, settings, self.ctx.control, self.ctx.check)
            except BaseException:  # cancelled, lease lost, API down: the pod stops too
                try:
                    jobs.cluster.delete("Job", name)
                except MLManagerError as exc:
                    logger.warning("could not delete the Job {}: {}", name, exc.message)
                raise
        finally:
            try:
                jobs.remove_secret(name)
            except MLManagerError as exc:  # its token is revoked with the job anyway
                logger.warning("could not delete the Secret {}: {}", name, exc.message)
            jobs.close()
        if not state.succeeded:
            self._end_run("FAILED")
            raise ProjectFailed(
                f"the project's Job {name} failed ({state.reason}); its last lines:\n"
                + "\n".join(tail)
            )

    def _end_run(self, status: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            if self.client.get_run(self.run_id).info.status == "RUNNING":
                self.client.set_terminated(self.run_id, status)
        except MlflowException as exc:
            logger.warning("could not mark run {} {}: {}", self.run_id, status, exc.message)

    def _logged_model_uri(self) -> str:
        models = self.client.search_logged_models(
            experiment_ids=[self.experiment_id], filter_string=f"source_run_id = '{self.run_id}'"
        )
        if len(models) > 1:
            raise ProjectFailed(f"run {self.run_id} logged {len(models)} models: log one")
        if models:
            return f"models:/{models[0].model_id}"
        if any(a.path == "model" for a in self.client.list_artifacts(self.run_id)):
            return f"runs:/{self.run_id}/model"
        raise ProjectFailed(f"the project's run {self.run_id} logged no model")

    def _old_deployments(self) -> list[Deployment]:
        """Active database deployments of the champion this challenger replaced."""
        if self.champion is None:
            return []
        old = self.champion
        uris = {f"models:/{self.plan.model_name}/{old.version}", old.source}
        if getattr(old, "model_id", None):
            uris.add(f"models:/{old.model_id}")
        with self.ctx.ledger.engine.connect() as conn:
            active = DeploymentStore.deployed(conn, target=DATABASE_TARGET)
        return [d for d in active if d.model_uri in uris]

    def _redeploy(self, deployment: Deployment, model_uri: str) -> int:
        spec = deployment.spec
        assert isinstance(spec, DatabaseDeploymentSpec)
        fields: dict[str, Any] = {
            "model_uri": model_uri,
            "db_schema": spec.db_schema,
            "db_table": spec.db_table,
            "replace": True,
            "max_batch_size": spec.max_batch_size,
            "mode": spec.mode,
        }
        if spec.trigger_mode != "async":
            fields["trigger_mode"] = spec.trigger_mode
        payload = DeployDatabasePayload.model_validate(fields)
        deploy = SPECS["DEPLOY_DATABASE"]
        job = self.ctx.ledger.enqueue(
            deploy.name,
            payload.model_dump(mode="json", exclude_unset=True),
            deployment.user,  # the owner's deployment, redeployed with the owner's rights
            max_attempts=deploy.attempts(self.ctx.settings.job_max_attempts),
            unique_key=f"retrain:{self.ctx.job.id}:redeploy:{deployment.id}",
        )
        logger.info(
            "deployment {} ({}.{}): replace with {} as job {}",
            deployment.id,
            spec.db_schema,
            spec.db_table,
            model_uri,
            job.id,
        )
        return job.id


@register_service("retrain-scheduler")
def retrain_scheduler(ctx: ServiceContext) -> Callable[[], None] | None:
    """Fires the retraining schedules on the one leader worker (``bobby.scheduler``)."""
    return RetrainScheduler(ctx.engine, ctx.settings, ctx.stopping).run


def _version(model_version: Any) -> str | None:
    return None if model_version is None else str(model_version.version)
