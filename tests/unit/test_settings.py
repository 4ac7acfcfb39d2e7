from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import load_settings


def test_embedded_mode_uses_sqlite_in_home(tmp_path: Path) -> None:
    s = load_settings(mlmanager_home=tmp_path)
    assert s.embedded
    assert s.database_url == f"sqlite:///{tmp_path / 'mlmanager.db'}"
    assert s.backend_store_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    s.require_secure("server")  # the embedded mode needs no secrets


def test_original_variable_names_build_a_postgres_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv("DB_PORT", "6543")
    monkeypatch.setenv("DB_USER", "MLMANAGER")
    monkeypatch.setenv("DB_PASSWORD", "p@ss:word/1")
    monkeypatch.setenv("DB_NAME", "models")
    monkeypatch.setenv("ENVIRONMENT", "aws")
    monkeypatch.setenv("WORKER_THREADS", "7")
    s = load_settings()
    assert not s.embedded
    assert s.environment == "aws"
    assert s.worker_threads == 7
    assert (
        s.database_url == "postgresql+psycopg://MLMANAGER:p%40ss%3Aword%2F1@db.example:6543/models"
    )


def test_unknown_environment_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "mars")
    with pytest.raises(ConfigError, match=r"ENVIRONMENT: .*'default'.*got 'mars'"):
        load_settings()


@pytest.mark.parametrize("password", [None, "changeme", "<your password>", "  ", "password"])
def test_missing_or_placeholder_db_password_refused(password: str | None) -> None:
    s = load_settings(
        db_host="db",
        db_password=password,
        mlmanager_secret_key="k" * 32,
        mlmanager_admin_password="a-real-admin-pw",
    )
    with pytest.raises(ConfigError, match="DB_PASSWORD"):
        s.require_secure("worker")


def test_server_needs_secret_key_and_admin_password_outside_embedded() -> None:
    s = load_settings(db_host="db", db_password="a-real-db-pw-123")
    s.require_secure("worker")
    with pytest.raises(ConfigError, match="MLMANAGER_SECRET_KEY"):
        s.require_secure("server")
    s = load_settings(db_host="db", db_password="a-real-db-pw-123", mlmanager_secret_key="x" * 40)
    with pytest.raises(ConfigError, match="MLMANAGER_ADMIN_PASSWORD"):
        s.require_secure("server")


def test_db_url_password_is_checked_and_masked() -> None:
    s = load_settings(db_url="postgresql://u:changeme@h/db")
    with pytest.raises(ConfigError, match="DB_URL"):
        s.require_secure("worker")
    s = load_settings(db_url="postgresql://u:S3cret-pw-42@h/db")
    s.require_secure("worker")
    assert "S3cret-pw-42" in s.secret_values()
