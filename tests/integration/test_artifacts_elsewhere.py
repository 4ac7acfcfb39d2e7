"""Artifacts kept in another store than the database (MLFLOW_ARTIFACTS_DESTINATION), through
a real `mlmanager up`: a folder, and S3 through boto3 pointed at moto's server
(tests/support/moto_server.py). Clients use the same ``mlflow-artifacts:`` URIs whatever
the store; nothing goes into the database's artifact tables. Then
`mlmanager artifacts migrate --from s3://...` copies the S3 store into the database.

What moto cannot show: S3's IAM and bucket policies, its real latency and throughput,
and failures of a real region.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from shared.artifacts import CHUNK_SIZE, ArtifactStore
from shared.db import make_engine
from tests.support.artifacts import ADMIN, sha
from tests.support.engines import settings_for
from tests.support.moto_server import Moto, running_moto
from tests.support.processes import clean_environment
from tests.support.servers import MLManagerProcess, tracking_as

REGION = "eu-west-1"
ACCESS_KEY = "AKIAMLMANAGERARTIFACTS"
SECRET_KEY = "moto-artifact-secret-never-in-a-log-2b8e"
BUCKET = "mlmanager-artifacts"
# The server's and the migration's AWS settings (and AWS_ENDPOINT_URL: moto's URL).
AWS = {
    "aws_access_key_id": ACCESS_KEY,
    "aws_secret_access_key": SECRET_KEY,
    "aws_default_region": REGION,
}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with running_moto(tmp_path_factory.mktemp("moto"), REGION, ACCESS_KEY, SECRET_KEY) as moto:
        moto.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield moto


def _server(home: Path, destination: str, **settings: str) -> MLManagerProcess:
    proc = MLManagerProcess(home, mlflow_artifacts_destination=destination, **settings)
    try:
        proc.wait_ready()
    except BaseException:
        proc.stop()
        raise
    return proc


def _logged_through(proc: MLManagerProcess, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    """A run's files logged, listed and downloaded through the server with MLflow's
    client; the run's artifact folder (``<experiment>/<run>/artifacts``) and what each
    file under it holds."""
    files = {
        "data/big.bin": os.urandom(2 * CHUNK_SIZE + 5),
        "tree/a.txt": b"alpha",
        "tree/sub/b.json": b'{"b": 1}',
    }
    with tracking_as(proc.url, ADMIN):
        client = MlflowClient(tracking_uri=proc.url)
        exp = mlflow.set_experiment("elsewhere").experiment_id
        run = client.create_run(exp)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        local = tmp_path / "up"
        for name, data in files.items():
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(data)
        client.log_artifact(run.info.run_id, str(local / "data" / "big.bin"), "data")
        client.log_artifacts(run.info.run_id, str(local / "tree"), "tree")

        listed = {(f.path, f.file_size) for f in client.list_artifacts(run.info.run_id, "tree")}
        assert listed == {("tree/a.txt", 5), ("tree/sub", None)}
        out = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "down")))
        assert {name: (out / name).read_bytes() for name in files} == files
    return f"{exp}/{run.info.run_id}/artifacts", files


def _database_files(proc: MLManagerProcess, base: Path) -> dict[str, tuple[int, str]]:
    engine = make_engine(settings_for(proc.db_url, base))
    try:
        return {f.path: (f.size, f.sha256) for f in ArtifactStore(engine).walk("")}
    finally:
        engine.dispose()


def test_a_folder_destination_keeps_the_files_in_that_folder(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = tmp_path_factory.mktemp("folder-store")
    store = base / "store"
    proc = _server(base / "home", str(store))
    try:
        folder, files = _logged_through(proc, base)
        on_disk = {
            str(p.relative_to(store / folder)): p.read_bytes()
            for p in (store / folder).rglob("*")
            if p.is_file()
        }
        assert on_disk == files
        assert _database_files(proc, base) == {}
    finally:
        proc.stop()


def test_an_s3_destination_keeps_the_files_in_the_bucket_and_migrates_into_the_database(
    moto: Moto, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("s3-store")
    aws = {**AWS, "aws_endpoint_url": moto.url}
    proc = _server(base / "home", f"s3://{BUCKET}/artifacts", **aws)
    try:
        folder, files = _logged_through(proc, base)
        s3 = moto.client("s3")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert sorted(keys) == sorted(f"artifacts/{folder}/{name}" for name in files)
        for name, data in files.items():
            got = s3.get_object(Bucket=BUCKET, Key=f"artifacts/{folder}/{name}")["Body"].read()
            assert got == data
        assert _database_files(proc, base) == {}

        # The same store copied into the database, as a team moving to the default does.
        env = clean_environment()
        env.update({k.upper(): v for k, v in aws.items()})
        env.update(MLMANAGER_HOME=str(proc.home), MLFLOW_DISABLE_TELEMETRY="true")
        source = f"s3://{BUCKET}/artifacts"
        done = subprocess.run(
            [sys.executable, "-m", "mlmanager", "artifacts", "migrate", "--from", source, "-q"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"copied {len(files)} files" in done.stdout, done.stdout
        assert _database_files(proc, base) == {
            f"{folder}/{name}": (len(data), sha(data)) for name, data in files.items()
        }
        assert len(s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == len(files)  # left as is
    finally:
        proc.stop()
