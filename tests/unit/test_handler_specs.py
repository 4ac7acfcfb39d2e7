"""The retry policy of the handler specs (the rule is in bobby/handlers/base.py)."""

from __future__ import annotations

import pytest

from shared.handlers import SPECS

DEPLOY_TARGETS = sorted(n for n in SPECS if n.startswith(("DEPLOY_", "UNDEPLOY_")))


def test_there_are_deploy_targets_to_check() -> None:
    assert {"DEPLOY_DATABASE", "UNDEPLOY_DATABASE"} <= set(DEPLOY_TARGETS)


@pytest.mark.parametrize("name", DEPLOY_TARGETS)
def test_every_deploy_and_undeploy_target_is_retried(name: str) -> None:
    """A deploy whose worker is lost or whose connection drops is run again (up to
    JOB_MAX_ATTEMPTS), instead of failing for good after one attempt."""
    spec = SPECS[name]
    assert spec.idempotent
    assert spec.attempts(3) == 3
    assert spec.attempts(5) == 5
