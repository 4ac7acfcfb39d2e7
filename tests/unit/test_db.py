from __future__ import annotations

import pytest

from shared.db import check_identifier, parse_url, quote_identifier, quote_qualified
from shared.errors import ConfigError, InvalidIdentifier


@pytest.mark.parametrize("name", ["iris", "IRIS_2024", "_t", "a" * 63])
def test_plain_identifiers_pass_and_are_quoted(name: str) -> None:
    assert check_identifier(name) == name
    assert quote_identifier(name) == f'"{name}"'


@pytest.mark.parametrize(
    "name",
    ['x"; DROP TABLE jobs; --', "a b", "1abc", "", "a.b", "naïve", "a" * 64, "t;", None, 5],
)
def test_hostile_or_odd_identifiers_are_rejected(name: object) -> None:
    with pytest.raises(InvalidIdentifier, match="table"):
        check_identifier(name, "table")


def test_qualified_names_check_both_parts() -> None:
    assert quote_qualified("s", "t") == '"s"."t"'
    with pytest.raises(InvalidIdentifier, match="schema"):
        quote_qualified("s'", "t")


def test_plain_postgresql_url_gets_psycopg3_driver() -> None:
    assert parse_url("postgresql://u:p@h/d").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url", ["mysql://u:p@h/d", "not a url"])
def test_unsupported_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="DB_URL"):
        parse_url(url)
