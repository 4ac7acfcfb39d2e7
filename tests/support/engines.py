"""Settings and engines built the way ML Manager builds them, for the tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from shared.settings import Settings, load_settings

# In CI a missing service is a failure, not a skip.
IN_CI = os.environ.get("CI") == "true"

EngineFor = Callable[[str], Engine]


def settings_for(url: str | None, home: Path, **extra: object) -> Settings:
    return load_settings(db_url=url, mlmanager_home=home, **extra)
