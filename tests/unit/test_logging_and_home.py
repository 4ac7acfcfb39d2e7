from __future__ import annotations

import io
import socket
import stat
from pathlib import Path

import pytest
from loguru import logger

from shared.errors import ConfigError
from shared.home import prepare_home, require_free_port, stored_secret
from shared.logging import SecretMasker, configure_logging
from shared.settings import load_settings


def test_configured_secrets_never_reach_the_log(tmp_path: Path) -> None:
    settings = load_settings(
        mlmanager_home=tmp_path,
        db_url="postgresql://u:Very-Secret-DB-pw@h/db",
        aws_secret_access_key="AKIA-secret-value-xyz",
    )
    out = io.StringIO()
    configure_logging(settings, "test", stream=out)
    logger.info("connecting with Very-Secret-DB-pw and AKIA-secret-value-xyz")
    try:
        raise RuntimeError("failed: Very-Secret-DB-pw")
    except RuntimeError:
        logger.exception("boom")
    text = out.getvalue()
    assert "Very-Secret-DB-pw" not in text
    assert "AKIA-secret-value-xyz" not in text
    assert text.count("****") >= 3


def test_json_format_masks_too(tmp_path: Path) -> None:
    settings = load_settings(
        mlmanager_home=tmp_path, log_format="json", mlmanager_admin_password='quote"pw-12345'
    )
    out = io.StringIO()
    configure_logging(settings, "test", stream=out)
    logger.info('admin password is quote"pw-12345')
    assert "pw-12345" not in out.getvalue()
    assert '"message": "admin password is ****"' in out.getvalue()


def test_masker_masks_longest_first() -> None:
    m = SecretMasker(["abcd", "abcdefgh"])
    assert m("x abcdefgh y abcd") == "x **** y ****"


def test_a_url_password_is_masked_even_when_it_is_no_configured_secret() -> None:
    """A project parameter or command argument holding a database URL (the retrain job logs
    its `mlflow run` command line) shows the user and host, never the password."""
    m = SecretMasker()
    line = "$ mlflow run . -P db_url=postgresql+psycopg://trainer:s3cr3t-pw@db:5432/sales -P n=3"
    assert (
        m(line) == "$ mlflow run . -P db_url=postgresql+psycopg://trainer:****@db:5432/sales -P n=3"
    )
    quoted = "export DB='mysql://u:p%40ss@h/x'; http://host:8080/path user:pw"
    assert m(quoted) == "export DB='mysql://u:****@h/x'; http://host:8080/path user:pw"


def test_generated_secret_is_stable_and_private(tmp_path: Path) -> None:
    settings = load_settings(mlmanager_home=tmp_path)
    first = stored_secret(settings, "admin_password")
    assert stored_secret(settings, "admin_password") == first
    assert len(first) >= 20
    assert stat.S_IMODE((tmp_path / "admin_password").stat().st_mode) == 0o600


def test_home_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"MLMANAGER_HOME .* not a writable folder"):
        prepare_home(load_settings(mlmanager_home=blocker / "home"))


def test_port_in_use_names_the_variable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}.*MLMANAGER_PORT"):
            require_free_port("127.0.0.1", port, "MLMANAGER_PORT")
