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


def test_readme_says_how_to_log_tree_models_with_skops() -> None:
    """MLflow 3.17 saves scikit-learn models with skops, which refuses tree structures it was
    not told to trust: the README shows the argument the tests log trees with."""
    assert "skops" in README
    assert 'skops_trusted_types=["sklearn.tree._tree.Tree"]' in README
