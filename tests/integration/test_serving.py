"""`mlrunner serve` answers as `mlflow models serve` does, for each model kind of the database flow.

One real `mlflow models serve` process (``--env-manager local``, its default single
worker) per model is the reference; the mlrunner process is started from the plan
`mlmanager serve` makes (the representation built and checked as a database deploy
does). Every accepted request format is sent to both and the predictions compared:
labels and cluster indexes exactly (with their JSON types), numbers within 1e-4
relative (ONNX scores trees in float32). Both are started once per module, in parallel,
since `mlflow models serve` takes seconds to start. The H2O GBM (a MOJO for mlrunner) is
trained in one local H2O cluster for the module, which MLflow's h2o flavor connects to
when `mlflow models serve` loads it (the flavor's ``settings``) rather than starting a
second JVM; its answers are records (``predict`` and a probability per class).
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm
import mlflow
import mlflow.artifacts
import mlflow.h2o
import mlflow.lightgbm
import mlflow.sklearn
import mlflow.xgboost
import numpy as np
import pandas as pd
import pytest
import requests
import xgboost
from mlflow.models import infer_signature
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sqlalchemy import create_engine, update

from mlmanager.serve import plan
from shared.deployment_tokens import issue
from shared.deployments import DeploymentStore
from shared.models import DeploymentRow
from shared.scoring.kinds import Column, ModelKind, SqlType, column_name
from shared.scoring.representation import Representation, RepresentationFormat
from shared.scoring.store import save_representation
from tests.support.custom_models import Doubler
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING, MLFLOW_SQLITE_STORE_WARNING, frame
from tests.support.mlflow_store import log_model as log
from tests.support.pg import free_port
from tests.support.processes import ROOT
from tests.support.servers import MLManagerProcess
from tests.support.serving import MLRUNNER_JAR, ServingProcess

with warnings.catch_warnings():  # MLflow's own type hints, when pyfunc is first imported
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    import mlflow.pyfunc

pytestmark = [
    MLFLOW_SQLITE_STORE_WARNING,
    INPUT_EXAMPLE_WARNING,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:h2o"),
]

TRUSTED = ["sklearn.tree._tree.Tree", "sklearn._loss.link.MultinomialLogit"]
TOLERANCE = 1e-4
MODEL_NAMES = (
    "logistic_multiclass",
    "forest_regression",
    "kmeans",
    "xgboost",
    "lightgbm",
    "onehot_pipeline",
    "h2o_gbm",
)
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs", "csv")


@dataclass
class Served:
    rows: pd.DataFrame  # the rows every request sends
    reference: ServingProcess  # mlflow models serve
    candidate: ServingProcess  # what mlmanager serve plans
    runtime: str


def models() -> dict[str, tuple[Any, Any, pd.DataFrame, dict[str, Any]]]:
    """name -> (MLflow flavor, fitted model, features, log_model extras)."""
    iris = load_iris(as_frame=True)
    diabetes = load_diabetes(as_frame=True)
    cancer = load_breast_cancer(as_frame=True)
    plain_cancer = cancer.data.rename(columns=column_name)
    plain_diabetes = diabetes.data.rename(columns=column_name)
    texts = frame(300, seed=3, text=True)
    labels = np.where(texts["income"] + 10 * (texts["color"] == "red") > 52, "yes", "no")
    encode = ColumnTransformer(
        [("color", OneHotEncoder(handle_unknown="ignore"), ["color"])], remainder="passthrough"
    )
    trusted = {"skops_trusted_types": TRUSTED}
    return {
        "logistic_multiclass": (
            mlflow.sklearn,
            LogisticRegression(max_iter=1000).fit(iris.data, iris.target),
            iris.data,
            trusted,
        ),
        "forest_regression": (
            mlflow.sklearn,
            RandomForestRegressor(n_estimators=15, max_depth=6, random_state=0).fit(
                diabetes.data, diabetes.target
            ),
            diabetes.data,
            trusted,
        ),
        "kmeans": (
            mlflow.sklearn,
            KMeans(n_clusters=3, n_init=3, random_state=0).fit(iris.data),
            iris.data,
            trusted,
        ),
        "xgboost": (
            mlflow.xgboost,
            xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(plain_cancer, cancer.target),
            plain_cancer,
            {},
        ),
        "lightgbm": (
            mlflow.lightgbm,
            lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(
                plain_diabetes, diabetes.target
            ),
            plain_diabetes,
            {},
        ),
        "onehot_pipeline": (
            mlflow.sklearn,
            make_pipeline(encode, LogisticRegression(max_iter=1000)).fit(texts, labels),
            texts,
            trusted,
        ),
    }


@pytest.fixture(scope="module")
def h2o_gbm() -> Iterator[tuple[Any, Any, pd.DataFrame, dict[str, Any]]]:
    """A small H2O GBM classifier (iris, five trees) in a local H2O cluster on a free port,
    started once for the module; logged with settings that make MLflow's h2o flavor
    connect to that cluster when `mlflow models serve` loads the model."""
    import h2o
    from h2o.estimators import H2OGradientBoostingEstimator
    from h2o.exceptions import H2ODependencyWarning

    # h2o's import puts its own filter for its advice to install polars (when MLflow
    # checks the input example) before pytest's.
    warnings.filterwarnings("ignore", "Converting H2O frame to pandas", H2ODependencyWarning)

    port = free_port()
    h2o.init(port=port, nthreads=1, max_mem_size="512M", verbose=False)
    h2o.no_progress()
    server = h2o.connection().local_server
    try:
        iris = load_iris(as_frame=True)
        features = iris.data.rename(columns=column_name)
        species = pd.Series(iris.target_names[iris.target], name="species")
        train = h2o.H2OFrame(features.assign(species=species), column_types={"species": "enum"})
        model = H2OGradientBoostingEstimator(ntrees=5, max_depth=3, seed=7)
        model.train(x=list(features.columns), y="species", training_frame=train)
        settings = {"init": {"url": f"http://127.0.0.1:{port}"}}
        yield mlflow.h2o, model, features, {"settings": settings}
    finally:
        h2o.cluster().shutdown()
        server.shutdown()  # waits for the JVM's process to end


@pytest.fixture(scope="module")
def served(
    tracking: None,
    h2o_gbm: tuple[Any, Any, pd.DataFrame, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Served]]:
    root = tmp_path_factory.mktemp("serving")
    started: dict[str, Served] = {}
    try:
        for name, (flavor, model, features, extra) in {**models(), "h2o_gbm": h2o_gbm}.items():
            uri = log(flavor, model, features, **extra)
            local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(root / name)))
            reference = ServingProcess.mlflow(local, root / f"{name}.mlflow.log")
            work = root / f"{name}.work"
            work.mkdir()
            chosen = plan(uri, "127.0.0.1", free_port(), 2, work)
            candidate = _start(chosen.command, root / f"{name}.mlrunner.log")
            started[name] = Served(
                features.sample(7, random_state=1), reference, candidate, chosen.runtime
            )
        for entry in started.values():
            entry.reference.wait_ready()
            entry.candidate.wait_ready()
        yield started
    finally:
        for entry in started.values():
            entry.reference.stop()
            entry.candidate.stop()


def _start(command: list[str], log: Path) -> ServingProcess:
    port = int(command[command.index("--port") + 1])
    return ServingProcess("mlmanager serve", command, log, port)


def body(rows: pd.DataFrame, fmt: str) -> tuple[str, str]:
    """(content type, body) of a request in one of MLflow's formats."""
    if fmt == "csv":
        return "text/csv", rows.to_csv(index=False)
    records = json.loads(rows.to_json(orient="records"))
    payload: Any = {
        "dataframe_split": json.loads(rows.to_json(orient="split", index=False)),
        "dataframe_records": records,
        "instances": records,
        "inputs": {c: json.loads(rows[c].to_json(orient="values")) for c in rows.columns},
    }[fmt]
    return "application/json", json.dumps({fmt: payload})


def post(server: ServingProcess, content_type: str, data: str | bytes) -> requests.Response:
    return requests.post(
        f"{server.url}/invocations", data=data, headers={"Content-Type": content_type}, timeout=30
    )


def assert_same(expected: list[Any], actual: list[Any], where: str) -> None:
    assert len(expected) == len(actual), where
    for row, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert_value(want, got, f"{where} row {row}")


def assert_value(want: Any, got: Any, where: str) -> None:
    """One prediction: numbers within the tolerance, a record (H2O's) key by key in order,
    anything else equal and of the same JSON type."""
    if isinstance(want, float):
        assert isinstance(got, float), f"{where}: {got!r} for {want!r}"
        if math.isnan(want):
            assert math.isnan(got), where
        else:
            assert math.isclose(got, want, rel_tol=TOLERANCE, abs_tol=TOLERANCE), (
                f"{where}: {got} for {want}"
            )
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: {got!r} for {want!r}"
        for key in want:
            assert_value(want[key], got[key], f"{where} {key}")
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} for {want!r}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_request_format_answers_as_mlflow_models_serve(
    served: dict[str, Served], name: str
) -> None:
    entry = served[name]
    assert entry.runtime == "mlrunner", f"{name} should have an ONNX or MOJO representation"
    for fmt in FORMATS:
        content_type, data = body(entry.rows, fmt)
        expected = post(entry.reference, content_type, data)
        actual = post(entry.candidate, content_type, data)
        assert expected.status_code == 200, f"{fmt}: mlflow answered {expected.text[:500]}"
        assert actual.status_code == 200, f"{fmt}: mlrunner answered {actual.text[:500]}"
        assert list(actual.json()) == ["predictions"]
        assert_same(expected.json()["predictions"], actual.json()["predictions"], f"{name} {fmt}")


@pytest.mark.parametrize("tolerated", ["an extra column", "a number in a text column"])
def test_what_mlflow_tolerates_is_tolerated(served: dict[str, Served], tolerated: str) -> None:
    """MLflow ignores extra columns and casts a number sent for a text column to its text."""
    entry = served["onehot_pipeline"]
    if tolerated == "an extra column":
        rows = entry.rows.assign(unused=1.5)
    else:
        rows = entry.rows.assign(color=7)
    content_type, data = body(rows, "dataframe_records")
    expected = post(entry.reference, content_type, data).json()["predictions"]
    actual = post(entry.candidate, content_type, data).json()["predictions"]
    assert_same(expected, actual, tolerated)


BAD_INPUTS = {
    "missing column": ("application/json", '{"dataframe_records": [{"age": 30, "income": 50}]}'),
    "text in a number column": (
        "application/json",
        '{"dataframe_records": [{"age": 30, "income": "high", "score": 0.1, "color": "red"}]}',
    ),
    "malformed JSON": ("application/json", '{"dataframe_records": [{"age": 30'),
    "no format key": ("application/json", '{"rows": [[1, 2, 3, "red"]]}'),
    "short split row": (
        "application/json",
        '{"dataframe_split": {"columns": ["age", "income", "score", "color"], "data": [[1, 2]]}}',
    ),
    "malformed CSV": ("text/csv", 'age,income,score,color\n30,50,0.1,"red\n'),
    "CSV lacking a column": ("text/csv", "age,income\n30,50\n"),
    "empty body": ("application/json", ""),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_bad_request_never_a_500(served: dict[str, Served], case: str) -> None:
    """mlrunner answers MLflow's error JSON with 400 where `mlflow models serve` refuses
    too (it answers some of these with a 500: a missing column is its INTERNAL_ERROR)."""
    entry = served["onehot_pipeline"]
    content_type, data = BAD_INPUTS[case]
    assert post(entry.reference, content_type, data).status_code != 200
    answer = post(entry.candidate, content_type, data)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["error_code"] == "BAD_REQUEST" and error["message"], error


def test_probes_version_and_metrics(served: dict[str, Served]) -> None:
    server = served["xgboost"].candidate
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/version", timeout=5).text
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert 'mlrunner_requests_total{route="/invocations",status="200"}' in metrics
    assert "mlrunner_rows_scored_total" in metrics
    assert "mlrunner_model_info{" in metrics and "sha256=" in metrics


@pytest.fixture
def xgboost_bundle(served: dict[str, Served], tmp_path: Path) -> tuple[Path, str]:
    """The bundle the xgboost server serves, copied."""
    command = served["xgboost"].candidate.proc.args
    assert isinstance(command, list)
    source = Path(command[command.index("--model") + 1])
    target = tmp_path / "model.bundle"
    target.write_bytes(source.read_bytes())
    return target, str(command[command.index("--sha256") + 1])


def test_a_bundle_whose_checksum_differs_is_refused_at_start(
    xgboost_bundle: tuple[Path, str],
) -> None:
    path, sha256 = xgboost_bundle
    wrong = ("0" if sha256[0] != "0" else "1") + sha256[1:]
    done = subprocess.run(
        [
            "java",
            "-jar",
            MLRUNNER_JAR,
            "serve",
            "--model",
            str(path),
            "--sha256",
            wrong,
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"SHA-256 is {sha256}, not the expected {wrong}: refusing to serve it" in done.stderr


def test_a_body_over_the_limit_is_answered_413(
    xgboost_bundle: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha256 = xgboost_bundle
    server = ServingProcess.mlrunner(
        path, sha256, tmp_path / "limit.log", "--max-body-bytes", "2000"
    )
    try:
        server.wait_ready()
        rows = load_breast_cancer(as_frame=True).data.rename(columns=column_name).head(50)
        answer = post(server, *body(rows, "dataframe_split"))
        assert answer.status_code == 413, answer.text
        assert answer.json()["error_code"] == "BAD_REQUEST" and "2000" in answer.json()["message"]
        assert post(server, *body(rows.head(1), "dataframe_split")).status_code == 200
    finally:
        server.stop()


def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_ones(
    served: dict[str, Served], xgboost_bundle: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha256 = xgboost_bundle
    server = ServingProcess.mlrunner(path, sha256, tmp_path / "drain.log", "--grace-seconds", "20")
    server.wait_ready()
    rows = load_breast_cancer(as_frame=True).data.rename(columns=column_name).head(3)
    data = body(rows, "dataframe_split")[1].encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        # A request in flight: its headers and half its body are sent, the rest comes later.
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        client.sendall(head + data[: len(data) // 2])
        time.sleep(0.3)
        stopping = time.monotonic()
        server.proc.terminate()
        time.sleep(0.5)
        refused = post(server, "application/json", data)
        assert refused.status_code == 503, refused.text
        client.sendall(data[len(data) // 2 :])
        answer = _read_http(client)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    expected = post(served["xgboost"].reference, "application/json", data).json()
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == expected
    assert server.proc.wait(20) == 143  # the JVM's exit code after SIGTERM
    assert time.monotonic() - stopping < 20


def _read_http(client: socket.socket) -> bytes:
    """One HTTP answer with a Content-Length, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += client.recv(65536)
    return head + b"\r\n\r\n" + rest


def test_a_model_without_representation_is_served_by_mlflow(tracking: None, tmp_path: Path) -> None:
    """A custom pyfunc has no ONNX form: `mlmanager serve` runs MLflow's own server on the
    same host and port, which answers the model's predictions."""
    rows = frame(4, seed=5)
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(
            name="model",
            python_model=Doubler(),
            signature=infer_signature(rows),
            input_example=rows.head(3),
            pip_requirements=[],
        ).model_uri
    port = free_port()
    chosen = plan(uri, "127.0.0.1", port, None, tmp_path)
    assert chosen.runtime == "mlflow", chosen
    assert "no ONNX or MOJO representation" in chosen.reason
    assert chosen.command[1:5] == ["-m", "mlflow", "models", "serve"]
    assert chosen.command[-6:] == [
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    fallback = _start(chosen.command, tmp_path / "fallback.log")
    try:
        fallback.wait_ready()
        answer = post(fallback, *body(rows, "dataframe_split")).json()["predictions"]
        values = [record["0"] for record in answer]  # MLflow writes a Series as records
        assert_same((rows["income"] * 2.0 + rows["score"]).tolist(), values, "pyfunc")
    finally:
        fallback.stop()


def test_mlmanager_serve_serves_a_logged_model_and_passes_sigterm_on(
    tracking: None, tmp_path: Path
) -> None:
    """The command itself: `mlmanager serve MODEL_URI --port P` builds the representation,
    starts mlrunner, answers; SIGTERM reaches the JVM, which drains and exits."""
    iris = load_iris(as_frame=True)
    model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
    uri = log(mlflow.sklearn, model, iris.data, skops_trusted_types=TRUSTED)
    port = free_port()
    command = [sys.executable, "-m", "mlmanager", "serve", uri, "--port", str(port)]
    log_file = tmp_path / "serve.log"
    served = ServingProcess(
        "mlmanager serve", command, log_file, port, MLFLOW_TRACKING_URI=mlflow.get_tracking_uri()
    ).wait_ready()
    try:
        rows = iris.data.head(3)
        answer = post(served, *body(rows, "dataframe_split")).json()
        assert answer == {"predictions": model.predict(rows).tolist()}
    finally:
        code = served.stop()
    assert code == 143, log_file.read_text()[-2000:]  # the JVM's exit after SIGTERM
    log_text = log_file.read_text()
    assert "serving " + uri + " with mlrunner (onnx representation" in log_text
    assert "draining" in log_text and "stopped" in log_text


LOGREG_FIXTURE = ROOT / "mlrunner/src/test/resources/fixtures/logreg.onnx"


def test_a_pod_fetches_its_model_with_the_deployment_token_until_undeploy(
    tmp_path: Path,
) -> None:
    """The model route of a real server (`mlmanager up` on SQLite): the deployment's token
    reads its bundle, which `mlrunner serve --model URL` fetches and serves; other tokens
    and no token get 401, and undeploying revokes the token."""
    representation = Representation(
        format=RepresentationFormat.ONNX,
        payload=LOGREG_FIXTURE.read_bytes(),
        inputs=tuple(Column(f"x{i}", SqlType.DOUBLE) for i in (1, 2, 3)),
        outputs=(Column("PREDICTION", SqlType.TEXT),),
        kind=ModelKind.CLASSIFICATION,
        classes=("alpha", "beta", "gamma"),
        method="predict",
        flavor="sklearn",
        model_uri="runs:/fixture/logreg",
    )
    server = MLManagerProcess(tmp_path / "home")
    try:
        server.wait_ready()
        engine = create_engine(server.db_url)
        with engine.begin() as conn:
            representation_id = save_representation(conn, representation, "ann")
            deployment = DeploymentStore(engine).record(
                target="kubernetes", name="logreg", user="ann", conn=conn
            )
            conn.execute(
                update(DeploymentRow.__table__)
                .where(DeploymentRow.id == deployment.id)
                .values(spec={"representation_id": representation_id})
            )
            token = issue(conn, deployment.id)
        url = f"{server.api}/deployments/{deployment.id}/model"
        assert requests.get(url, timeout=30).status_code == 401
        wrong = {"Authorization": "Bearer " + token[::-1]}
        assert (
            requests.get(url, headers=wrong, timeout=30).json()["error_code"] == "UNAUTHENTICATED"
        )
        fetched = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert fetched.status_code == 200, fetched.text
        sha256 = fetched.headers["X-Model-SHA256"]
        assert hashlib.sha256(fetched.content).hexdigest() == sha256
        assert token not in (tmp_path / "home.log").read_text()

        token_file = tmp_path / "token"
        token_file.write_text(token)
        pod = ServingProcess.mlrunner(
            url,
            sha256,
            tmp_path / "pod.log",
            "--token-file",
            str(token_file),  # type: ignore[arg-type]
        ).wait_ready()
        try:
            rows = '{"inputs": {"x1": [0.55], "x2": [-0.99], "x3": [-0.42]}}'
            assert post(pod, "application/json", rows).json() == {"predictions": ["gamma"]}
        finally:
            pod.stop()
        assert token not in (tmp_path / "pod.log").read_text()

        with engine.begin() as conn:
            DeploymentStore.retire(conn, deployment, job_id=1)
        assert (
            requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code
            == 401
        )
    finally:
        server.stop()
