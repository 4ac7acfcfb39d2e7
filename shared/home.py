"""The data folder (MLMANAGER_HOME) and the secrets generated into it once.

The embedded mode needs no setup: the first start creates the folder, a Flask
secret key and an admin password (each a 0600 file), and later starts reuse them.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from shared.errors import ConfigError
from shared.settings import Settings


def prepare_home(settings: Settings) -> Path:
    """Create MLMANAGER_HOME if needed and prove it is writable."""
    home = settings.home
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"MLMANAGER_HOME {home} is not a writable folder ({exc.strerror or exc}); "
            "set MLMANAGER_HOME to one that is"
        ) from None
    return home


def stored_secret(settings: Settings, filename: str) -> str:
    """Read ``filename`` from the home folder, generating it (0600) on first use."""
    path = settings.home / filename
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if value:
            return value
        raise ConfigError(f"{path} is empty; delete it to have a new secret generated") from None
    value = secrets.token_urlsafe(18)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


ADMIN_PASSWORD_FILE = "admin_password"
SECRET_KEY_FILE = "secret_key"


def admin_password(settings: Settings) -> tuple[str, str]:
    """The admin password and where it comes from (for the start-up message)."""
    if settings.mlmanager_admin_password is not None:
        return settings.mlmanager_admin_password.get_secret_value(), "MLMANAGER_ADMIN_PASSWORD"
    return stored_secret(settings, ADMIN_PASSWORD_FILE), str(settings.home / ADMIN_PASSWORD_FILE)


def secret_key(settings: Settings) -> str:
    if settings.mlmanager_secret_key is not None:
        return settings.mlmanager_secret_key.get_secret_value()
    return stored_secret(settings, SECRET_KEY_FILE)


def require_free_port(host: str, port: int, variable: str) -> None:
    """Fail with a clear message if ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                f"stop what uses it or set {variable} to another port"
            ) from None
