"""What the server and the worker both know about each kind of job.

A :class:`HandlerSpec` names a handler, its payload model (the same pydantic
model validates the REST body, the CLI flags and the stored payload), its retry
policy and who may submit it. The steps that do the work live in ``bobby``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    """Base of every job payload: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    description: str
    payload_model: type[Payload]
    # A handler may be retried (after an error or a crash) only if it is idempotent:
    # a second run must finish what a first, interrupted run half did.
    idempotent: bool = False
    max_attempts: int | None = None  # None: JOB_MAX_ATTEMPTS for idempotent handlers
    admin_only: bool = False

    def attempts(self, default: int) -> int:
        if not self.idempotent:
            return 1
        return self.max_attempts or default


SPECS: dict[str, HandlerSpec] = {}


def register_spec(spec: HandlerSpec) -> HandlerSpec:
    if spec.name in SPECS and SPECS[spec.name] != spec:
        raise ValueError(f"two different handler specs named {spec.name}")
    SPECS[spec.name] = spec
    return spec


class ServicePayload(Payload):
    service: str = Field(description="Name of the handler to switch on or off")


ENABLE_SERVICE = register_spec(
    HandlerSpec(
        "ENABLE_SERVICE",
        "Enable a kind of job (administrators only)",
        ServicePayload,
        idempotent=True,
        admin_only=True,
    )
)
DISABLE_SERVICE = register_spec(
    HandlerSpec(
        "DISABLE_SERVICE",
        "Disable a kind of job (administrators only)",
        ServicePayload,
        idempotent=True,
        admin_only=True,
    )
)
# Switching handlers on and off must itself never be switched off.
ALWAYS_ENABLED = frozenset({ENABLE_SERVICE.name, DISABLE_SERVICE.name})
