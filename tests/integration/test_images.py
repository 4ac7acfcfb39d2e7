"""The serving image's entry command, run on this machine (no container engine here): the
jar that `make mlrunner` built stands at the path the image copies it to."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlmanager.serve import SERVE_JAVA_OPTS
from shared.scoring import jvm
from tests.support.dockerfiles import copies, parse_dockerfile

ROOT = Path(__file__).resolve().parents[2]


def test_the_serving_image_entry_point_starts_mlrunner_serve(tmp_path: Path) -> None:
    """The serving image's ENTRYPOINT, run with the jar `make mlrunner` built at the path
    the image copies it to: mlrunner's `serve` parses its flags and refuses a missing model
    (a served model is proved by tests/integration/test_serving.py)."""
    runtime = parse_dockerfile(ROOT / "infrastructure" / "serving.Dockerfile")[-1]
    entry = runtime.last("ENTRYPOINT")
    assert entry is not None
    jar = entry[entry.index("-jar") + 1]
    assert any(c.destination == jar for c in copies(runtime))
    assert jar == jvm.DEFAULT_JAR
    assert tuple(entry[1 : entry.index("-jar")]) == SERVE_JAVA_OPTS  # as `mlmanager serve`
    assert entry[entry.index("-jar") + 2 :] == ["serve"]
    local = jvm.find_jar()
    argv = [jvm.find_java(), *entry[1:]]
    argv[argv.index(jar)] = str(local)
    missing = tmp_path / "model.bundle"
    result = subprocess.run(
        [*argv, "--model", str(missing), "--sha256", "0" * 64, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"no model file {missing}" in result.stdout + result.stderr
