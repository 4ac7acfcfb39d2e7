"""The Python side of mlrunner (shared.scoring.jvm) against the real jar and a real JVM.

The model is mlrunner's own fixture: an H2O GBM MOJO with H2O's predictions on
its input rows (``mlrunner/src/test/resources/fixtures``). Each test has its own
gateway state directory, so its JVM is its own; needs the jar (`make mlrunner`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.errors import TargetUnavailable
from shared.scoring import jvm
from shared.scoring.kinds import Column, ModelKind, SqlType, output_columns
from shared.scoring.representation import Representation, RepresentationFormat

FIXTURES = Path(__file__).resolve().parents[2] / "mlrunner/src/test/resources/fixtures"
JAR = Path(__file__).resolve().parents[2] / "mlrunner/target/mlrunner.jar"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private state directory and a fresh gateway connection; its JVM stopped after."""
    if not JAR.is_file() and not os.environ.get("MLRUNNER_JAR"):
        pytest.fail(f"{JAR} is missing: build it with `make mlrunner`")
    monkeypatch.setenv("MLRUNNER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLRUNNER_JAR", os.environ.get("MLRUNNER_JAR", str(JAR)))
    monkeypatch.setattr(jvm, "_GATEWAY", jvm.Gateway())
    yield tmp_path / "state"
    jvm.gateway().close()
    with contextlib.suppress(OSError, ValueError, KeyError):
        recorded = json.loads((tmp_path / "state/gateway.json").read_text())
        os.kill(int(recorded["pid"]), signal.SIGKILL)


def binomial() -> tuple[Representation, dict[str, list[Any]], list[list[str]]]:
    """The fixture GBM, its input columns and H2O's own predictions (as CSV text)."""
    meta = json.loads((FIXTURES / "fixtures.json").read_text())["models"]["gbm_binomial"]
    inputs = tuple(
        Column(c["name"], SqlType.TEXT if c["type"] == "text" else SqlType.DOUBLE)
        for c in meta["inputs"]
    )
    classes = tuple(meta["classes"])
    rep = Representation(
        format=RepresentationFormat.MOJO,
        payload=(FIXTURES / meta["file"]).read_bytes(),
        inputs=inputs,
        outputs=output_columns(ModelKind.CLASSIFICATION, classes, classes),
        kind=ModelKind.CLASSIFICATION,
        classes=classes,
        method="predict",
        flavor="h2o",
        model_uri="fixture:gbm_binomial",
    )
    with open(FIXTURES / "gbm_binomial_input.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = {c.name: [value(r[c.name], c.sql_type.is_text) for r in rows] for c in inputs}
    with open(FIXTURES / "gbm_binomial_expected.csv") as handle:
        expected = list(csv.reader(handle))[1:]
    return rep, columns, expected


def value(cell: str, is_text: bool) -> str | float | None:
    """A CSV cell: empty is missing (NA to H2O when it predicted)."""
    if cell == "":
        return None
    return cell if is_text else float(cell)


def assert_matches_h2o(got: list[tuple[Any, ...]], expected: list[list[str]]) -> None:
    assert [g[0] for g in got] == [e[0] for e in expected]
    np.testing.assert_allclose(
        [g[1:] for g in got], [[float(v) for v in e[1:]] for e in expected], rtol=1e-9
    )


def test_pack_and_unpack_keep_numbers_missing_values_and_text() -> None:
    block = jvm.pack(
        [
            ("x", False, [1.5, None, -2.0]),
            ("name", True, ["a", None, "çé"]),
            ("n", False, [1, 2, 3]),
        ]
    )
    (_, numbers), (_, texts), (_, ints) = jvm.unpack(block)
    assert numbers[0] == 1.5 and math.isnan(numbers[1]) and numbers[2] == -2.0
    assert texts == ["a", None, "çé"]
    assert ints.tolist() == [1.0, 2.0, 3.0]


def test_a_gateway_is_started_on_demand_and_scores_as_h2o_did(state: Path) -> None:
    rep, columns, expected = binomial()
    scorer = jvm.JvmScorer(rep)
    assert_matches_h2o(scorer.score(columns), expected)
    # The state says where it is, for this user only.
    assert (state / "gateway.json").stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    # Missing values are NA to H2O: the row is still scored.
    one = {name: values[:1] for name, values in columns.items()}
    one["x1"], one["color"] = [None], [None]
    ((label, *probabilities),) = scorer.score(one)
    assert label in rep.classes and math.isclose(sum(probabilities), 1.0)


def test_processes_share_one_gateway(state: Path) -> None:
    first, second = jvm.Gateway(), jvm.Gateway()
    try:
        assert first.pid() == second.pid()
        assert (first.restarts, second.restarts) == (1, 0)  # the second attached to it
    finally:
        first.close()
        second.close()


def test_a_killed_gateway_is_started_again_and_reloads_the_model(state: Path) -> None:
    rep, columns, expected = binomial()
    scorer = jvm.JvmScorer(rep)
    gone = jvm.gateway().pid()
    os.kill(gone, signal.SIGKILL)
    assert_matches_h2o(scorer.score(columns), expected)
    assert jvm.gateway().pid() != gone
    assert jvm.gateway().restarts == 2


def test_a_hung_gateway_times_out_and_is_replaced(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLRUNNER_TIMEOUT", "2")
    rep, columns, expected = binomial()
    scorer = jvm.JvmScorer(rep)
    hung = jvm.gateway().pid()
    os.kill(hung, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert_matches_h2o(scorer.score(columns), expected)
        assert time.monotonic() - started < 30
        assert jvm.gateway().pid() != hung
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGKILL)


def test_no_jar_or_no_java_is_a_clear_error_at_once(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rep, _, _ = binomial()
    monkeypatch.setenv("MLRUNNER_JAR", "/nowhere/mlrunner.jar")
    with pytest.raises(TargetUnavailable, match=r"/nowhere/mlrunner.jar.*make mlrunner"):
        jvm.JvmScorer(rep)
    monkeypatch.setenv("MLRUNNER_JAR", str(JAR))
    monkeypatch.setenv("MLRUNNER_JAVA", "/nowhere/java")
    with pytest.raises(TargetUnavailable, match=r"needs Java 17.*MLRUNNER_JAVA"):
        jvm.JvmScorer(rep)


def test_a_gateway_that_cannot_start_says_why(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rep, _, _ = binomial()
    monkeypatch.setenv("MLRUNNER_JAVA_OPTS", "-Xmx1k")  # the JVM refuses to start
    with pytest.raises(TargetUnavailable, match="exited with code"):
        jvm.JvmScorer(rep)


def test_the_cli_starts_shows_and_stops_the_gateway(state: Path) -> None:
    from click.testing import CliRunner

    from mlmanager.cli import main

    cli = CliRunner()
    assert cli.invoke(main, ["mlrunner", "status"]).exit_code == 1
    started = cli.invoke(main, ["mlrunner", "start"])
    assert started.exit_code == 0, started.output
    shown = json.loads(started.output)
    assert shown["jar"] == os.environ["MLRUNNER_JAR"] and shown["stats"]["size"] == 0
    status = cli.invoke(main, ["mlrunner", "status"])
    assert json.loads(status.output)["pid"] == shown["pid"]
    stopped = cli.invoke(main, ["mlrunner", "stop"])
    assert stopped.output.strip() == f"stopped gateway pid {shown['pid']}"
    deadline = time.monotonic() + 10
    while cli.invoke(main, ["mlrunner", "status"]).exit_code != 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
