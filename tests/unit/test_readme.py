"""README.md stays true: every setting is documented, the two commands are shown."""

from __future__ import annotations

from pathlib import Path

from shared.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_configuration_variable_is_in_the_readme_table() -> None:
    missing = [n.upper() for n in Settings.model_fields if f"| `{n.upper()}` |" not in README]
    assert missing == []


def test_readme_shows_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README
