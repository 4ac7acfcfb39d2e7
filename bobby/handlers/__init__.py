"""The registry of job handlers this worker can run."""

from __future__ import annotations

import importlib

from bobby.handlers.base import Handler
from shared.errors import ConfigError

BUILTIN_MODULES = ("bobby.handlers.service", "bobby.handlers.database")

REGISTRY: dict[str, type[Handler]] = {}


def register(cls: type[Handler]) -> type[Handler]:
    """Class decorator: make a handler runnable by this worker."""
    REGISTRY[cls.spec.name] = cls
    return cls


def load_handlers(extra_modules: str = "") -> dict[str, type[Handler]]:
    """Import the built-in handler modules and those named in HANDLER_MODULES."""
    names = [*BUILTIN_MODULES, *(m.strip() for m in extra_modules.split(",") if m.strip())]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"HANDLER_MODULES: cannot import {name!r} ({exc})") from None
    return REGISTRY
