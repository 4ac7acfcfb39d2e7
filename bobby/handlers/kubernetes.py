"""DEPLOY_KUBERNETES and UNDEPLOY_KUBERNETES: a model served by pods behind a Service.

The deploy builds the model's representation as every target does (ONNX or MOJO:
``mlrunner serve``; else MLflow's pyfunc server), records the deployment PENDING with a
new model token, server-side applies the manifests (``shared.kube.manifests``: token
Secret, Deployment, Service, and the HPA, PDB and Ingress asked for), and watches the
rollout. Once it is available the record is DEPLOYED and the one it replaced DELETED
(its token revoked). A rollout that fails is reported with Kubernetes' reason; a first
deploy then removes what it created, a replace re-applies the previous deployment (its
pods kept serving all along: ``maxUnavailable: 0``).

Idempotence (``bobby/handlers/base.py``): every apply is a server-side apply, which
converges; a rerun finds its own PENDING or DEPLOYED record (``deployments.job_id``)
and carries on from it, issuing a fresh token. One job per (namespace, name) at a time:
on PostgreSQL a session advisory lock (``shared.kube.target.name_lock``) is held from the
record check to the end of the job, so a second deploy or undeploy of the name waits, then
sees the first's outcome (a deploy without ``replace`` is refused, a replace rolls out over
it), and a reconcile of the name is refused meanwhile. SQLite runs one worker.
"""

from __future__ import annotations

import time

from loguru import logger
from sqlalchemy import Engine, update

from bobby.handlers import register
from bobby.handlers.base import Handler, Step
from bobby.handlers.database import resolve_model_uri
from shared.db import SessionLock
from shared.deployment_tokens import issue, revoke
from shared.deployments import Deployment, DeploymentStore, deployments
from shared.errors import DeploymentConflict, MLManagerError, NotFound
from shared.handlers import SPECS, DeployKubernetesPayload, UndeployKubernetesPayload
from shared.kube.cluster import Cluster, RolloutFailed
from shared.kube.manifests import render, to_yaml
from shared.kube.spec import TARGET, KubernetesDeploymentSpec, object_name, service_url
from shared.kube.target import desired, name_lock
from shared.model_source import ModelSource
from shared.models import utcnow
from shared.scoring.representation import Representation
from shared.scoring.runtime import import_mlflow
from shared.serving import bundle, servable_representation

# Deleted last to first: what routes to the pods before the pods, the Secret at the end.
DELETE_ORDER = (
    "Ingress",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Service",
    "Deployment",
    "Secret",
)
LOCK_POLL_SECONDS = 1.0


def _set_status(engine: Engine, deployment_id: int, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(deployments)
            .where(deployments.c.id == deployment_id)
            .values(status=status, updated_at=utcnow())
        )
        if status == "FAILED":
            revoke(conn, deployment_id)


class _KubernetesHandler(Handler):
    _held: SessionLock | None = None

    @property
    def engine(self) -> Engine:
        return self.ctx.ledger.engine

    def _lock(self, namespace: str, name: str) -> None:
        """Hold (namespace, name) for the rest of the job, waiting for the job that holds
        it (cancellable; PostgreSQL only). Released by ``close``."""
        held = name_lock(self.engine, namespace, name)
        if held is None or self._held is not None:
            return
        waited = False
        while not held.take():
            if not waited:
                logger.info("another job is changing {} in {}: waiting for it", name, namespace)
                waited = True
            self.ctx.check()
            time.sleep(LOCK_POLL_SECONDS)
        if waited:
            logger.info("{} in {} is ours now", name, namespace)
        self._held = held

    def close(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None

    def _cluster(self, namespace: str | None = None) -> Cluster:
        return Cluster(self.ctx.settings, namespace)

    def _remove(self, cluster: Cluster, name: str) -> list[str]:
        """Delete every object of ``name`` (foreground) and wait until each is gone."""
        from shared.kube.spec import secret_name

        removed = []
        for kind in DELETE_ORDER:
            object_name_ = secret_name(name) if kind == "Secret" else name
            if cluster.delete(kind, object_name_):
                removed.append(f"{kind} {object_name_}")
        timeout = self.ctx.settings.kubernetes_rollout_timeout_seconds
        for kind in DELETE_ORDER:
            object_name_ = secret_name(name) if kind == "Secret" else name
            cluster.wait_gone(kind, object_name_, timeout, self.ctx.check)
        return removed


@register
class DeployKubernetes(_KubernetesHandler):
    spec = SPECS["DEPLOY_KUBERNETES"]
    payload: DeployKubernetesPayload

    def steps(self) -> list[Step]:
        self.source: ModelSource | None = None
        self.rep: Representation | None = None
        self.reason: str | None = None
        self.record: Deployment | None = None
        self.previous: Deployment | None = None
        self.started = time.time()
        steps: list[Step] = [
            ("reading the model", self.read_model),
            ("rendering the manifests", self.render),
        ]
        if not self.payload.dry_run:
            steps += [
                ("applying the manifests", self.apply),
                ("waiting for the rollout", self.wait),
            ]
        return steps

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        super().close()

    def read_model(self) -> None:
        import_mlflow()
        self.model_uri = resolve_model_uri(self.payload.run_id, self.payload.model_uri)
        self.source = source = ModelSource.open(self.model_uri)
        try:
            # Built and checked as `mlmanager serve` and a database deploy build it.
            self.rep, why = servable_representation(source)
            self.reason = None if self.rep is not None else why
        except MLManagerError as exc:
            self.reason = exc.message
        if self.reason is None:
            assert self.rep is not None
            logger.info(
                "{} served by mlrunner ({} representation of a {} model)",
                self.model_uri,
                self.rep.format.value,
                self.rep.flavor,
            )
        else:
            logger.warning(
                "mlrunner cannot serve {}: {}; its pods run MLflow's pyfunc server",
                self.model_uri,
                self.reason,
            )

    def _spec(self, representation_id: int) -> KubernetesDeploymentSpec:
        payload, settings = self.payload, self.ctx.settings
        run_id = (self.rep.run_id if self.rep else None) or payload.run_id
        if self.source is not None and run_id is None:
            run_id = self.source.run_id
        name = object_name(payload.name, self.model_uri, run_id)
        ingress_host = None
        if payload.expose_external:
            if not settings.kubernetes_ingress_host:
                from shared.errors import InvalidPayload

                raise InvalidPayload(
                    "expose_external needs KUBERNETES_INGRESS_HOST (the Ingress hosts' DNS "
                    "suffix) on the worker",
                    field="expose_external",
                )
            ingress_host = f"{name}.{settings.kubernetes_ingress_host}"
        mlrunner = self.reason is None
        return KubernetesDeploymentSpec(
            namespace=settings.namespace,
            name=name,
            representation_id=representation_id,
            runtime="mlrunner" if mlrunner else "mlflow",
            image=settings.kubernetes_serving_image
            if mlrunner
            else settings.kubernetes_pyfunc_image,
            server_url=settings.kubernetes_model_url or settings.server_url,
            model_uri=self.model_uri,
            model_sha256=self._sha256() if mlrunner else None,
            model_version=self.rep.model_version if self.rep else None,
            service_port=payload.service_port,
            base_replicas=payload.base_replicas,
            autoscaling_enabled=payload.autoscaling_enabled,
            max_replicas=payload.max_replicas,
            target_cpu_utilization=payload.target_cpu_utilization,
            disable_nginx=payload.disable_nginx,
            threads=payload.gunicorn_workers,
            cpu_request=payload.cpu_request if payload.resource_requests_enabled else None,
            memory_request=payload.memory_request if payload.resource_requests_enabled else None,
            cpu_limit=payload.cpu_limit if payload.resource_limits_enabled else None,
            memory_limit=payload.memory_limit if payload.resource_limits_enabled else None,
            ingress_host=ingress_host,
        )

    def _sha256(self) -> str:
        import hashlib

        assert self.rep is not None
        return hashlib.sha256(bundle(self.rep)).hexdigest()

    def render(self) -> None:
        spec = self._spec(0)
        self.name = spec.name
        if self.payload.dry_run:
            run_id = (self.rep.run_id if self.rep else None) or self.payload.run_id
            objects = render(spec, 0, run_id, token="<token>")
            logger.info(
                "dry run: the manifests for {} in namespace {}, not applied (the deployment "
                "id 0 and the token are filled in at deploy):\n{}",
                spec.name,
                spec.namespace,
                to_yaml(objects),
            )

    def apply(self) -> None:
        from shared.scoring.store import save_representation

        store = DeploymentStore(self.engine)
        job = self.ctx.job
        self._lock(self.ctx.settings.namespace, self.name)
        with self.engine.begin() as conn:
            mine = DeploymentStore.of_job(conn, TARGET, self.name, job.id)
            self.previous = DeploymentStore.active(conn, TARGET, self.name)
            if mine is not None and mine.status in ("PENDING", "DEPLOYED"):
                logger.info(
                    "an earlier attempt of this job recorded deployment {} ({}): carrying on",
                    mine.id,
                    mine.status,
                )
                if self.previous is not None and self.previous.id == mine.id:
                    self.previous = None
                record = mine
            else:
                if self.previous is not None and not self.payload.replace:
                    raise DeploymentConflict(
                        f"{self.previous.model_uri} is already deployed as {self.name} "
                        f"(deployment {self.previous.id}): set replace to roll out the new model"
                    )
                assert self.rep is not None or self.reason is not None
                rep_id = save_representation(conn, self.rep, job.user) if self.rep else 0
                record = store.record(
                    conn=conn,
                    target=TARGET,
                    name=self.name,
                    user=job.user,
                    status="PENDING",
                    model_uri=self.model_uri,
                    run_id=(self.rep.run_id if self.rep else None) or self.payload.run_id,
                    spec=self._spec(rep_id),
                    job_id=job.id,
                )
            revoke(conn, record.id)  # a rerun's token replaces the earlier attempt's
            token = issue(conn, record.id)
        self.record = record
        spec = record.spec
        assert isinstance(spec, KubernetesDeploymentSpec)
        objects = render(
            spec,
            record.id,
            record.run_id,
            token=token,
            replicas=not spec.autoscaling_enabled or self.previous is None,
        )
        logger.info("manifests:\n{}", to_yaml(objects))
        cluster = self._cluster(spec.namespace)
        try:
            for manifest in objects:
                cluster.apply(manifest)
                logger.info("applied {} {}", manifest["kind"], manifest["metadata"]["name"])
        except MLManagerError as exc:
            if exc.http_status < 500:  # refused (permissions, invalid): nothing will change
                self._failed(cluster, exc)
            raise
        finally:
            cluster.close()

    def wait(self) -> None:
        assert self.record is not None
        record = self.record
        spec = record.spec
        assert isinstance(spec, KubernetesDeploymentSpec)
        cluster = self._cluster(spec.namespace)
        try:
            began = time.monotonic()
            try:
                state = cluster.wait_rollout(
                    spec.name,
                    self.ctx.settings.kubernetes_rollout_timeout_seconds,
                    lambda line: logger.info("{}", line),
                    self.ctx.check,
                    self.started - 5,
                )
            except RolloutFailed as exc:
                self._failed(cluster, exc)
                raise
            logger.info(
                "{} available in {:.1f} s: {} replica(s) at {}",
                spec.name,
                time.monotonic() - began,
                state.available,
                service_url(spec),
            )
            with self.engine.begin() as conn:
                conn.execute(
                    update(deployments)
                    .where(deployments.c.id == record.id)
                    .values(status="DEPLOYED", updated_at=utcnow())
                )
                if self.previous is not None:
                    DeploymentStore.retire(conn, self.previous, self.ctx.job.id)
                    logger.info(
                        "replaced deployment {} ({})", self.previous.id, self.previous.model_uri
                    )
        finally:
            cluster.close()

    def _failed(self, cluster: Cluster, exc: Exception) -> None:
        """Undo a deploy that will not become available: the record FAILED (token
        revoked); a first deploy's objects removed, a replace's previous state re-applied."""
        assert self.record is not None
        _set_status(self.engine, self.record.id, "FAILED")
        if self.previous is None:
            removed = self._remove(cluster, self.name)
            logger.error("deploy failed ({}); removed {}", exc, ", ".join(removed) or "nothing")
            return
        previous = self.previous
        with self.engine.begin() as conn:
            revoke(conn, previous.id)
            token = issue(conn, previous.id)
        spec = previous.spec
        assert isinstance(spec, KubernetesDeploymentSpec)
        cluster.apply(render(spec, previous.id, previous.run_id, token=token)[0])
        for manifest in desired(previous):
            cluster.apply(manifest)
        logger.error(
            "replace failed ({}); deployment {} ({}) re-applied and still serving",
            exc,
            previous.id,
            previous.model_uri,
        )


@register
class UndeployKubernetes(_KubernetesHandler):
    spec = SPECS["UNDEPLOY_KUBERNETES"]
    payload: UndeployKubernetesPayload

    def steps(self) -> list[Step]:
        return [("removing the deployment from the cluster", self.undeploy)]

    def _find(self) -> Deployment | None:
        payload = self.payload
        with self.engine.connect() as conn:
            if payload.name:
                return DeploymentStore.active(conn, TARGET, payload.name)
            for deployment in reversed(DeploymentStore.deployed(conn, target=TARGET)):
                if (payload.run_id and deployment.run_id == payload.run_id) or (
                    payload.model_uri and deployment.model_uri == payload.model_uri
                ):
                    return deployment
        return None

    def undeploy(self) -> None:
        deployment = self._find()
        if deployment is not None:
            spec = deployment.spec
            assert isinstance(spec, KubernetesDeploymentSpec)
            self._lock(spec.namespace, spec.name)
            deployment = self._find()  # what the job we waited for left
        if deployment is None:
            if self.payload.name:
                with self.engine.connect() as conn:
                    mine = DeploymentStore.retired_by(
                        conn, TARGET, self.payload.name, self.ctx.job.id
                    )
                if mine is not None:
                    logger.info(
                        "an earlier attempt of this job already removed {}: nothing left to do",
                        mine.name,
                    )
                    return
            which = self.payload.name or self.payload.run_id or self.payload.model_uri
            raise NotFound(f"no model is deployed on Kubernetes as {which}")
        if deployment.user != self.ctx.job.user and not self._submitter_is_admin():
            from shared.errors import NotAuthorized

            raise NotAuthorized(
                f"{self.ctx.job.user} may not undeploy deployment {deployment.id}: "
                f"it is {deployment.user}'s"
            )
        spec = deployment.spec
        assert isinstance(spec, KubernetesDeploymentSpec)
        cluster = self._cluster(spec.namespace)
        try:
            removed = self._remove(cluster, spec.name)
        finally:
            cluster.close()
        with self.engine.begin() as conn:
            DeploymentStore.retire(conn, deployment, self.ctx.job.id)
        logger.info(
            "removed {} from namespace {} ({}); its model token is revoked",
            spec.name,
            spec.namespace,
            ", ".join(removed) or "nothing was left",
        )
