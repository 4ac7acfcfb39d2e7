"""The registry of job handlers this worker can run, and of its background services."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from bobby.handlers.base import Handler
from bobby.metrics import Metrics
from shared.handlers import import_modules
from shared.settings import Settings

BUILTIN_MODULES = (
    "bobby.handlers.service",
    "bobby.handlers.database",
    "bobby.handlers.elasticsearch",
    "bobby.handlers.retrain",
    "bobby.handlers.sagemaker",
    "bobby.handlers.azureml",
    "bobby.handlers.kubernetes",
)

REGISTRY: dict[str, type[Handler]] = {}


@dataclass(frozen=True)
class ServiceContext:
    """What a background service of a handler module may use."""

    engine: Engine
    settings: Settings
    metrics: Metrics
    stopping: threading.Event  # set when the worker stops; the service should return soon


# Given the worker's context, a service returns the function its thread runs, or None when
# it has nothing to do on this worker (e.g. a PostgreSQL-only service on SQLite).
Service = Callable[[ServiceContext], Callable[[], None] | None]
SERVICES: dict[str, Service] = {}


def register(cls: type[Handler]) -> type[Handler]:
    """Class decorator: make a handler runnable by this worker."""
    REGISTRY[cls.spec.name] = cls
    return cls


def register_service(name: str) -> Callable[[Service], Service]:
    """Decorator: a background service every worker that loads this module runs in a thread.

    Handler modules use it for work beside their jobs (the database target's async scorer),
    so the worker need not know any handler by name.
    """

    def decorate(service: Service) -> Service:
        SERVICES[name] = service
        return service

    return decorate


def load_handlers(extra_modules: str = "") -> dict[str, type[Handler]]:
    """Import the built-in handler modules and those named in HANDLER_MODULES."""
    import_modules(",".join(BUILTIN_MODULES), "built-in handlers")
    import_modules(extra_modules, "HANDLER_MODULES")
    return REGISTRY
