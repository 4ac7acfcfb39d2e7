"""Payload specs of the test handlers (HANDLER_SPEC_MODULES: what the server imports)."""

from __future__ import annotations

from pydantic import Field

from shared.handlers import HandlerSpec, Payload, register_spec


class NoopPayload(Payload):
    pass


class RecordPayload(Payload):
    # Bounded: the API fuzz test submits whatever the schema allows.
    sleep: float = Field(0.0, ge=0, le=60)
    steps: int = Field(1, ge=1, le=100)
    fail_times: int = Field(0, ge=0, le=10)
    lines: int = Field(0, ge=0, le=10_000)


NOOP = register_spec(HandlerSpec("NOOP", "does nothing (benchmarks)", NoopPayload, idempotent=True))
RECORD = register_spec(
    HandlerSpec("RECORD", "records its runs (tests)", RecordPayload, idempotent=True)
)
