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
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.artifacts import CHUNK_SIZE
from tests.support.artifacts import Served, migrate, serving, sha
from tests.support.moto_server import Moto, running_moto

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


def _logged_through(served: Served, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    """A run's files logged, listed and downloaded through the server with MLflow's
    client; the run's artifact folder (``<experiment>/<run>/artifacts``) and what each
    file under it holds."""
    files = {
        "data/big.bin": os.urandom(2 * CHUNK_SIZE + 5),
        "tree/a.txt": b"alpha",
        "tree/sub/b.json": b'{"b": 1}',
    }
    exp, run_id = served.run_id("elsewhere")
    assert served.client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    local = tmp_path / "up"
    for name, data in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    served.client.log_artifact(run_id, str(local / "data" / "big.bin"), "data")
    served.client.log_artifacts(run_id, str(local / "tree"), "tree")

    listed = {(f.path, f.file_size) for f in served.client.list_artifacts(run_id, "tree")}
    assert listed == {("tree/a.txt", 5), ("tree/sub", None)}
    out = Path(served.client.download_artifacts(run_id, "", str(tmp_path / "down")))
    assert {name: (out / name).read_bytes() for name in files} == files
    return f"{exp}/{run_id}/artifacts", files


def test_a_folder_destination_keeps_the_files_in_that_folder(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("folder-store")
    store = base / "store"
    with serving(request, base, "sqlite", mlflow_artifacts_destination=str(store)) as served:
        folder, files = _logged_through(served, base)
        on_disk = {
            str(p.relative_to(store / folder)): p.read_bytes()
            for p in (store / folder).rglob("*")
            if p.is_file()
        }
        assert on_disk == files
        assert served.files("") == {}


def test_an_s3_destination_keeps_the_files_in_the_bucket_and_migrates_into_the_database(
    moto: Moto, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("s3-store")
    aws = {**AWS, "aws_endpoint_url": moto.url}
    source = f"s3://{BUCKET}/artifacts"
    with serving(request, base, "sqlite", mlflow_artifacts_destination=source, **aws) as served:
        folder, files = _logged_through(served, base)
        s3 = moto.client("s3")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert sorted(keys) == sorted(f"artifacts/{folder}/{name}" for name in files)
        for name, data in files.items():
            got = s3.get_object(Bucket=BUCKET, Key=f"artifacts/{folder}/{name}")["Body"].read()
            assert got == data
        assert served.files("") == {}

        # The same store copied into the database, as a team moving to the default does.
        done = migrate(served, "--from", source, "-q", **{k.upper(): v for k, v in aws.items()})
        assert done.returncode == 0, done.stderr
        assert f"copied {len(files)} files" in done.stdout, done.stdout
        assert served.files("") == {
            f"{folder}/{name}": (len(data), sha(data)) for name, data in files.items()
        }
        assert len(s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == len(files)  # left as is
