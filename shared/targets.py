"""Observe and reconcile: what every deployment target implements.

A target (database today; Kubernetes, SageMaker and Azure ML next) reads the
live state of a deployment record (:meth:`Target.observe`), names what differs
from the record's typed spec (``LiveState.drift``, shown by
``GET /deployments/{id}``), and re-applies the record
(:meth:`Target.reconcile`, run by the ``RECONCILE`` job and the worker's
periodic reconcile). Reconcile is idempotent: on a target that matches its
record it changes nothing, and a rerun after a crash finishes the repair.

The server observes (read-only); only the worker reconciles.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from sqlalchemy import Connection, Engine

from shared.deployments import DatabaseDeploymentSpec, Deployment
from shared.errors import InvalidPayload, NotFound
from shared.scoring.contract import (
    CONTRACT_COLUMNS,
    SQLITE_FUNCTION,
    contract_name,
    unscored_index,
)


@dataclass(frozen=True)
class LiveState:
    """What a target holds now for one record; ``drift`` names each difference."""

    drift: tuple[str, ...] = ()

    @property
    def in_sync(self) -> bool:
        return not self.drift


class Target(ABC):
    """One deployment target: observe a record's live state, re-apply the record."""

    name: ClassVar[str]

    @abstractmethod
    def observe(self, deployment: Deployment) -> LiveState:
        """The live state of ``deployment`` (read only)."""

    @abstractmethod
    def reconcile(self, deployment: Deployment) -> list[str]:
        """Re-apply ``deployment``'s spec; the steps taken (none when it was in sync)."""


# --- database ------------------------------------------------------------------------
# Where a trigger's definition names the representation it scores: the JSON binding
# argument of the PL/Python functions, or the SQLite function's first argument.
_BOUND_REPRESENTATION = re.compile(
    rf'"representation_id":\s*(\d+)|{re.escape(SQLITE_FUNCTION)}\((\d+),'
)


@dataclass(frozen=True)
class DatabaseLiveState(LiveState):
    table_exists: bool = True
    # Our (RUNMODEL_) triggers on the table -> the representation each scores (None:
    # the async notify trigger, which names none).
    triggers: dict[str, int | None] = field(default_factory=dict)
    missing_columns: tuple[str, ...] = ()
    index_missing: bool = False


def _spec_of(deployment: Deployment) -> DatabaseDeploymentSpec:
    if not isinstance(deployment.spec, DatabaseDeploymentSpec):
        raise InvalidPayload(f"deployment {deployment.id} has no database spec")
    return deployment.spec


class DatabaseTarget(Target):
    """A model scoring the rows inserted into a table (``DatabaseDeploymentSpec``).

    ``prepare`` runs first in the reconcile's transaction: the worker locks the table,
    checks the user's rights, installs the scoring functions and takes the user's role
    there, as a deploy does.
    """

    name = "database"

    def __init__(
        self,
        engine: Engine,
        *,
        scoring_schema: str | None = None,
        prepare: Callable[[Connection, DatabaseDeploymentSpec], None] | None = None,
    ) -> None:
        self.engine = engine
        self.scoring_schema = scoring_schema
        self.prepare = prepare

    def observe(self, deployment: Deployment) -> DatabaseLiveState:
        with self.engine.connect() as conn:
            return self.observe_in(conn, _spec_of(deployment))

    def observe_in(self, conn: Connection, spec: DatabaseDeploymentSpec) -> DatabaseLiveState:
        from shared.scoring.catalog import index_exists, read_table, read_triggers

        dialect = conn.dialect.name
        name = f"{spec.db_schema}.{spec.db_table}"
        info = read_table(conn, spec.db_schema, spec.db_table)
        if info is None:
            return DatabaseLiveState(drift=(f"table {name} missing",), table_exists=False)
        triggers = _bound(read_triggers(conn, spec.db_schema, spec.db_table))
        drift: list[str] = []
        bound = triggers.get(spec.trigger, -1)
        if spec.trigger not in triggers:
            drift.append(f"trigger {spec.trigger} missing")
        elif spec.mode == "sync" and bound != spec.representation_id:
            drift.append(
                f"trigger {spec.trigger} scores representation {bound}, "
                f"not {spec.representation_id}"
            )
        drift += [f"trigger {t} is not the recorded one" for t in triggers if t != spec.trigger]
        contract = [contract_name(c, dialect) for c in CONTRACT_COLUMNS]
        missing = tuple(c for c in (*spec.prediction_columns, *contract) if info.find(c) is None)
        drift += [f"column {c} missing" for c in missing]
        index_missing = False
        if spec.mode == "async":
            index = unscored_index(spec.db_table)
            index_missing = not index_exists(conn, spec.db_schema, index)
            if index_missing:
                drift.append(f"index {index} missing")
        return DatabaseLiveState(
            drift=tuple(drift),
            triggers=triggers,
            missing_columns=missing,
            index_missing=index_missing,
        )

    def reconcile(self, deployment: Deployment) -> list[str]:
        spec = _spec_of(deployment)
        with self.engine.begin() as conn:
            if self.prepare is not None:
                self.prepare(conn, spec)
            live = self.observe_in(conn, spec)
            if live.in_sync:
                return []
            steps = self.repair_steps(conn, deployment, live)
            for _, sql in steps:
                conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
            return [description for description, _ in steps]

    def repair_steps(
        self, conn: Connection, deployment: Deployment, live: DatabaseLiveState
    ) -> list[tuple[str, str]]:
        """(description, SQL) that bring the table back to ``deployment``'s spec."""
        from shared.scoring.catalog import read_table
        from shared.scoring.indb import TableBinding
        from shared.scoring.plan import (
            DeploymentPlan,
            create_trigger_sql,
            create_unscored_index_sql,
            drop_trigger_sql,
            missing_contract_columns,
            table_sql,
        )
        from shared.scoring.store import load_representation

        spec = _spec_of(deployment)
        name = f"{spec.db_schema}.{spec.db_table}"
        if not live.table_exists:
            raise NotFound(f"table {name} no longer exists: deploy the model again")
        dialect = conn.dialect.name
        qualified = table_sql(dialect, spec.db_schema, spec.db_table)
        steps: list[tuple[str, str]] = []
        for trigger, bound in live.triggers.items():
            wrong = spec.mode == "sync" and bound != spec.representation_id
            if trigger != spec.trigger or wrong:
                drop = drop_trigger_sql(dialect, qualified, trigger)
                steps.append((f"drop trigger {trigger}", drop))
        if live.missing_columns:
            info = read_table(conn, spec.db_schema, spec.db_table)
            assert info is not None
            rep = load_representation(conn, spec.representation_id)
            for column, definition in missing_contract_columns(
                info, rep, spec.prediction_columns, deployment.run_id, dialect
            ):
                steps.append(
                    (f"add column {column}", f"ALTER TABLE {qualified} ADD COLUMN {definition}")
                )
        binding = TableBinding(
            representation_id=spec.representation_id,
            keys=tuple(spec.keys),
            features=tuple(spec.features),
            outputs=tuple(spec.prediction_columns),
            max_batch_size=spec.max_batch_size,
        )
        plan = DeploymentPlan(
            dialect=dialect,
            schema=spec.db_schema,
            table=spec.db_table,
            binding=binding,
            trigger_name=spec.trigger,
            trigger_mode=spec.trigger_mode,
        )
        if live.index_missing:
            steps.append(
                (
                    "index the rows still waiting for a prediction",
                    create_unscored_index_sql(spec.db_schema, spec.db_table, binding),
                )
            )
        in_place = live.triggers.get(spec.trigger, -1)
        if spec.trigger not in live.triggers or (
            spec.mode == "sync" and in_place != spec.representation_id
        ):
            steps.append(
                (
                    f"create the {spec.trigger_mode} scoring trigger {spec.trigger}",
                    create_trigger_sql(plan, self.scoring_schema, deployment.run_id),
                )
            )
        return steps


def _bound(definitions: dict[str, str]) -> dict[str, int | None]:
    """Trigger -> the representation its definition names (None: async's notify trigger)."""
    found: dict[str, int | None] = {}
    for name, definition in definitions.items():
        match = _BOUND_REPRESENTATION.search(definition)
        found[name] = int(match.group(1) or match.group(2)) if match else None
    return found


TARGETS: dict[str, type[Target]] = {DatabaseTarget.name: DatabaseTarget}


def drift_of(engine: Engine, deployment: Deployment) -> list[str] | None:
    """What differs between a DEPLOYED record and its live target (None: nothing, or a
    target that cannot be observed yet)."""
    if deployment.status != "DEPLOYED" or deployment.spec is None:
        return None
    if deployment.target != DatabaseTarget.name:
        return None
    live = DatabaseTarget(engine).observe(deployment)
    return list(live.drift) or None
